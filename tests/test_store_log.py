"""The store's entry log (store_log.py): entries in apply order, read forwards and back within a
byte budget, signed runs, chain heads, and the values deletes replaced going with their entries."""

from p2psync.store import Store


def test_signed_run_reaches_the_first_signature_at_or_after_the_seq_asked_for(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        store.append_entries(
            "s",
            [
                ("A/1", seq, b"e%d" % seq, b"sig" if seq in (2, 4) else None)
                for seq in (1, 2, 3, 4, 5)
            ],
        )
    assert store.signed_run("s", "A/1", 1, 3) == [
        (b"e1", None),
        (b"e2", b"sig"),
        (b"e3", None),
        (b"e4", b"sig"),
    ]
    assert store.signed_run("s", "A/1", 5, 5) == [], "no signature from there on"
    assert store.signed_entry("s", "A/1", 4) == (b"e4", b"sig")
    assert store.signed_entry("s", "A/1", 3) is None
    assert store.lseq_of("s", "A/1", 3) == 3 and store.lseq_of("s", "never/1", 1) is None


def test_heads_are_kept_per_share_and_writer(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        store.set_head("s", "A/1", 3, b"a")
        store.set_head("s", "A/1", 4, b"b")
        store.set_head("s", "B/1", 1, b"c")
        store.set_head("other", "A/1", 9, b"d")
        store.remove_head("s", "B/1")
    assert store.heads("s") == {"A/1": (4, b"b")}
    assert store.heads("other") == {"A/1": (9, b"d")}


def test_entries_after_stops_at_the_byte_budget(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        store.append_entries("s", [("A/1", seq, b"x" * 1000, None) for seq in range(1, 11)])
    assert [row[2] for row in store.entries_after("s", 0, 100, max_bytes=2500)] == [1, 2, 3]
    assert len(store.entries_after("s", 0, 100)) == 10


def test_entries_after_leaves_out_the_skipped_actors_and_goes_past_them(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        store.append_entries("s", [(f"A{seq % 3}/1", seq, b"e", None) for seq in range(1, 10)])
        store.append_entries("other", [("A1/1", 1, b"o", None)])
    found = store.entries_after("s", 0, 100, skip=["A0/1", "A2/1", "never-stored/1"])
    assert [(actor, seq) for _, actor, seq, _, _ in found] == [
        ("A1/1", 1),
        ("A1/1", 4),
        ("A1/1", 7),
    ]
    assert store.entries_after("s", 7, 100, skip=["A0/1", "A1/1", "A2/1"]) == []


def test_appended_entries_keep_their_order_across_statements(tmp_path):
    store = Store(tmp_path / "db")
    # more rows than one statement takes, from several actors, some signed
    rows = [
        (f"A{seq % 3}/1", seq, b"e%d" % seq, b"sig" if seq % 7 else None) for seq in range(1, 402)
    ]
    with store.transaction():
        last = store.append_entries("s", rows)
    stored = store.entries_after("s", 0, 1000)
    assert last == len(rows)
    assert [(actor, seq, raw, sig) for _, actor, seq, raw, sig in stored] == rows
    assert [lseq for lseq, *_ in stored] == list(range(1, len(rows) + 1))


def test_entries_before_reads_one_share_back_from_the_newest_without_sorting(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        for seq in range(1, 6):
            store.append_entries("s", [("A/1", seq, b"s%d" % seq, None)])
            store.append_entries("other", [("A/1", seq, b"o", None)])
    newest = store.entries_before("s", None, 2)
    assert [(actor, seq, raw) for _, actor, seq, raw in newest] == [
        ("A/1", 5, b"s5"),
        ("A/1", 4, b"s4"),
    ]
    older = store.entries_before("s", newest[-1][0], 10)
    assert [row[2] for row in older] == [3, 2, 1]
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.entries_before("s", None, 10)
    store._db.set_trace_callback(None)
    (query,) = statements
    plan = " ".join(row[-1] for row in store._db.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "TEMP B-TREE" not in plan, plan


def test_reading_a_share_from_a_point_does_not_sort_the_whole_log(tmp_path):
    store = Store(tmp_path / "db")
    store.share_id("s")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.entries_after("s", 0, 10)
    store._db.set_trace_callback(None)
    (query,) = statements
    plan = " ".join(row[-1] for row in store._db.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "TEMP B-TREE" not in plan, f"sorts every entry of the share on each call: {plan}"


def test_values_replaced_by_deletes_go_with_the_entries_taken_back(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        last = store.append_entries("s", [("A/1", seq, b"x", None) for seq in range(1, 4)])
        store.save_deleted_values([(last - 1, "c", "k", b"old"), (last, "c", "j", b"older")])
    assert store.deleted_values(last - 1, last) == {
        (last - 1, "c", "k"): b"old",
        (last, "c", "j"): b"older",
    }
    with store.transaction():
        store.remove_entries_after("s", "A/1", 2)  # the entry at `last` is taken back
    assert store.deleted_values(0, last) == {(last - 1, "c", "k"): b"old"}
