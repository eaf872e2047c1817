import sqlite3

from p2psync.merge import Sibling
from p2psync.store import MIGRATIONS, SCHEMA_VERSION, Store


def sibling(actor="A/1", seq=1, deleted=False):
    return Sibling(actor, seq, seq, deleted, None if deleted else b"\x01", None)


def test_the_baseline_and_its_frontier_round_trip_and_tombstones_are_found(tmp_path):
    store = Store(tmp_path / "r.db")
    with store.transaction():
        assert store.baseline_frontier("s") == {} and store.folded_writes("s") == {}
        store.set_baseline_frontier("s", {"A/1": 4}, {"A/1": 3})
        keys = [("c", f"k{n}") for n in range(1000)]  # more than one IN list
        store.save_baseline("s", {k: [sibling(seq=2)] for k in keys})
        store.save_baseline("s", {("c", "gone"): [sibling(seq=3, deleted=True)]})
        store.save_baseline(
            "s", {("c", "both"): [sibling(seq=3, deleted=True), sibling("B/1", 1, deleted=True)]}
        )
        store.save_baseline("s", {("c", "torn"): [sibling(seq=4, deleted=True), sibling("B/1", 2)]})
    again = Store(tmp_path / "r.db")
    assert again.baseline_frontier("s") == {"A/1": 4} and again.folded_writes("s") == {"A/1": 3}
    assert len(again.load_baseline("s", keys)) == 1000
    assert again.load_baseline("s", [("c", "none")]) == {}
    # records that are deletes and nothing else; one with a live sibling is not
    assert sorted(k for k, _ in again.baseline_tombstones("s")) == [("c", "both"), ("c", "gone")]
    with again.transaction():
        again.remove_baseline("s", [("c", "gone")])
    assert again.load_baseline("s", [("c", "gone")]) == {}
    assert again.baseline_frontier("other") == {}


def test_folded_entries_leave_the_log_with_what_their_deletes_replaced(tmp_path):
    store = Store(tmp_path / "r.db")
    with store.transaction():
        store.append_entries("s", [("A/1", n, bytes([n]), None) for n in range(1, 6)])
        store.save_deleted_values([(3, "c", "k", b"old")])
    assert list(store.entries_down("s", "A/1", 5, 2)) == [b"\x05", b"\x04", b"\x03"]
    with store.transaction():
        store.remove_entries([2, 3])
    assert list(store.entries_down("s", "A/1", 5, 0)) == [b"\x05", b"\x04", b"\x01"]
    assert store.deleted_values(0, 10) == {}


def test_a_schema_3_database_opens_at_schema_4_with_its_data_untouched(tmp_path):
    path = tmp_path / "r.db"
    old = sqlite3.connect(path, isolation_level=None)
    for step in (1, 2, 3):  # what the code of schema 3 made
        for statement in MIGRATIONS[step]:
            old.execute(statement)
    old.execute("PRAGMA user_version=3")
    old.execute("INSERT INTO shares(id, name) VALUES(1, 's')")
    old.execute("INSERT INTO actors(id, name) VALUES(1, 'A/1')")
    old.execute("INSERT INTO entries(share, actor, seq, raw, sig) VALUES(1, 1, 1, x'01', NULL)")
    old.execute(
        "INSERT INTO records(share, coll, key, siblings, deleted, conflict)"
        " VALUES(1, 'c', 'k', x'91960101010000c0c0', 0, 0)"
    )
    tables = {
        "records": old.execute("SELECT * FROM records").fetchall(),
        "entries": old.execute("SELECT * FROM entries").fetchall(),
    }
    old.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION == 5
    for table, rows in tables.items():
        assert store._db.execute(f"SELECT * FROM {table}").fetchall() == rows, table
    assert store.baseline_frontier("s") == {} and store.baseline_tombstones("s") == []


def test_the_pages_folding_freed_go_back_to_the_filesystem(tmp_path):
    path = tmp_path / "r.db"
    store = Store(path)
    with store.transaction():
        store.append_entries("s", [("A/1", n, bytes(4000), None) for n in range(1, 1001)])
    assert store.reclaim_free_pages(1) == 0, "nothing free yet"
    with store.transaction():
        store.remove_entries(list(range(2, 1001)))
    assert store.reclaim_free_pages(64 << 20) == 0, "too little to be worth a rewrite"
    before = path.stat().st_size
    assert store.reclaim_free_pages(1 << 20) > 3_000_000
    assert path.stat().st_size < before / 4
    assert list(store.entries_down("s", "A/1", 1000, 0)) == [bytes(4000)]
    wal = path.with_name("r.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_baseline_fields_read_in_key_order_with_actor_names_from_one_read(tmp_path):
    store = Store(tmp_path / "r.db")
    with store.transaction():
        store.save_baseline(
            "s",
            {
                ("c", "b"): [sibling(seq=2)],
                ("c", "a"): [sibling("B/1", 5), sibling(seq=1, deleted=True)],
                ("b", "z"): [sibling(seq=3)],
            },
        )
    read = list(store.baseline_fields("s"))
    assert [(c, k) for c, k, _ in read] == [("b", "z"), ("c", "a"), ("c", "b")]
    assert read[1][2] == [list(sibling("B/1", 5)), list(sibling(seq=1, deleted=True))]
    assert [k for _, k, _ in store.baseline_fields("s", ("c", "a"))] == ["b"]
    rows = store.baseline_fields("s")
    next(rows)
    rows.close()  # stopped early: the read ends, and the store writes on
    with store.transaction():
        store.clear_baseline("s")
    assert list(store.baseline_fields("s")) == []


def test_each_write_to_the_baseline_and_each_rollback_tells_a_cache_of_its_totals(tmp_path):
    store = Store(tmp_path / "r.db")
    seen = [store.baseline_changes]
    with store.transaction():
        store.save_baseline("s", {("c", "k"): [sibling()]})
    seen.append(store.baseline_changes)
    with store.transaction():
        store.insert_baseline("s", [("c", "j", store.pack_fields([list(sibling())]), False)])
    seen.append(store.baseline_changes)
    try:
        with store.transaction():
            raise RuntimeError("rolled back")
    except RuntimeError:
        seen.append(store.baseline_changes)
    assert len(set(seen)) == 4
    assert store.load_baseline("s", [("c", "j")]) == {("c", "j"): [sibling()]}


def test_records_taken_from_the_baseline_count_and_flip_as_written_one_by_one(tmp_path):
    store = Store(tmp_path / "r.db")
    torn = [sibling("A/1", 1), Sibling("B/1", 1, 1, False, b"\x02", None)]  # a conflict
    with store.transaction():
        store.save_records(
            "s",
            {
                ("c", "was-torn"): torn,
                ("c", "stays-torn"): torn,
                ("c", "gone"): [sibling()],
                ("_sys", "x"): [sibling()],
            },
        )
    store.take_conflict_flips()
    baseline = {
        ("c", "plain"): [sibling(seq=2)],
        ("c", "dead"): [sibling(seq=3, deleted=True)],
        ("c", "was-torn"): [sibling(seq=4)],
        ("c", "stays-torn"): torn,
        ("c", "new-torn"): torn,
        ("_sys", "y"): [sibling()],
    }
    rebuilt = {  # what the merge rules give for rows of several siblings and replayed ones
        ("c", "stays-torn"): torn,
        ("c", "new-torn"): torn,
        ("c", "offline"): [sibling("C/1", 1)],
    }
    with store.transaction():
        store.save_baseline("s", baseline)
        store.records_from_baseline("s", rebuilt)
    expected = {**baseline, **rebuilt}
    keys = [*expected, ("c", "gone"), ("_sys", "x")]
    assert store.load_records("s", keys) == expected
    assert store.count_records("s") == 5 and store.count_conflicts("s") == 2
    assert sorted(store.take_conflict_flips()) == [
        ("s", "c", "new-torn", True),
        ("s", "c", "was-torn", False),
    ]
