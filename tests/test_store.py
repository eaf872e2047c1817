import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest

from p2psync import identity
from p2psync.merge import Sibling, winner
from p2psync.store import SCHEMA_VERSION, Store, StoreError

RELEASE_0_1_0 = Path(__file__).parent / "fixtures" / "release-0.1.0"

CHILD = textwrap.dedent(
    """
    import sys
    from p2psync import entry, identity
    from p2psync.replica import Replica

    key_pem, cert_pem = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
    replica = Replica.open(sys.argv[3], identity.DeviceIdentity.from_pem(key_pem, cert_pem))
    for number in range(1_000_000):
        # three transactions per group commit, three ops per transaction
        batch = [[entry.put("d", f"{number}-{t}-{o}", b"1") for o in range(3)] for t in range(3)]
        replica.commit_many("default", batch)
        print(number, flush=True)
    """
)


def sibling(actor="A/1", seq=1, value=b"\x01"):
    return Sibling(actor, seq, 5, False, value, None)


def test_a_new_file_gets_the_current_schema_and_wal(tmp_path):
    store = Store(tmp_path / "db")
    assert store.schema_version == SCHEMA_VERSION
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_commits_that_defer_checkpoints_grow_the_wal_past_sqlites_trigger_until_one_runs(
    tmp_path,
):
    store = Store(tmp_path / "db")
    wal = tmp_path / "db-wal"
    page = store._db.execute("PRAGMA page_size").fetchone()[0]
    value = b"v" * (2 * page)  # a few pages per commit

    def commit(key):
        with store.transaction(fsync=False):
            store.set_meta(key, value)

    with store.checkpoints_deferred():
        for number in range(600):
            commit(f"deferred-{number}")
    # SQLite would have checkpointed at 1,000 pages and started the WAL over from its beginning
    assert wal.stat().st_size > 1200 * page and store.deferred_commits == 600
    in_database = (tmp_path / "db").stat().st_size
    store.checkpoint()  # the values move from the WAL into the database file
    assert (tmp_path / "db").stat().st_size > in_database + 600 * page
    assert store.deferred_commits == 0
    commit("not-deferred")
    assert store.deferred_commits == 0
    # the first transaction made outside turned SQLite's own checkpoint back on
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def traced(store: Store, containing: str) -> list[str]:
    """The statements the store runs from now on that contain `containing`."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if containing in sql else None)
    return seen


def test_the_synchronous_level_is_the_last_transactions_and_switched_only_when_it_changes(
    tmp_path,
):
    store = Store(tmp_path / "db")
    switches = traced(store, "synchronous=")

    def level():
        return store._db.execute("PRAGMA synchronous").fetchone()[0]

    for fsync in (False, False, True, True, False):
        with store.transaction(fsync=fsync):
            store.set_meta("k", b"v")
        assert level() == (2 if fsync else 1)  # FULL, NORMAL
    assert switches == [
        "PRAGMA synchronous=NORMAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA synchronous=NORMAL",
    ]


def test_the_last_position_follows_appends_deletes_and_rollbacks_without_a_query_per_call(
    tmp_path,
):
    store = Store(tmp_path / "db")
    reads = traced(store, "max(lseq)")
    assert store.last_lseq() == 0
    with store.transaction():
        assert store.append_entries("s", [("A/1", 1, b"a", None), ("A/1", 2, b"b", None)]) == 2
    assert store.last_lseq() == store.last_lseq() == 2
    assert len(reads) == 1  # the first call only: the append said where the log ends
    with pytest.raises(RuntimeError), store.transaction():
        store.append_entries("s", [("A/1", 3, b"c", None)])
        assert store.last_lseq() == 3
        raise RuntimeError("rolled back")
    assert store.last_lseq() == 2
    with store.transaction():
        store.remove_entries_after("s", "A/1", 1)  # a revocation's cut
    assert store.last_lseq() == 1
    with store.transaction():
        store.append_entries("s", [("A/1", 2, b"b2", None)])
        store.remove_entries([2])  # folded into a baseline
    assert store.last_lseq() == 1
    assert store.last_lseq() == int(
        store._db.execute("SELECT coalesce(max(lseq), 0) FROM entries").fetchone()[0]
    )


def test_an_empty_file_from_before_any_schema_is_migrated(tmp_path):
    path = tmp_path / "db"
    sqlite3.connect(path).close()
    assert Store(path).schema_version == SCHEMA_VERSION


def test_a_database_from_a_newer_version_is_refused_with_advice(tmp_path):
    path = tmp_path / "db"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer p2psync"):
        Store(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(path)


def test_records_round_trip_and_flag_conflicts(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        store.save_records(
            "s",
            {
                ("c", "one"): [sibling()],
                ("c", "two"): [sibling(), sibling("B/1", 1, b"\x02")],
                ("c", "same"): [sibling(), sibling("B/1", 1)],
            },
        )
    assert store.record("s", "c", "one") == [sibling()]
    assert [key for _, key, _ in store.conflicts("s", None, 10)] == ["two"]
    assert store.record("other-share", "c", "one") is None


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "db")
    with pytest.raises(RuntimeError), store.transaction():
        store.save_records("s", {("c", "k"): [sibling()]})
        raise RuntimeError("boom")
    assert store.record("s", "c", "k") is None


@pytest.mark.parametrize("run", range(3))
def test_acknowledged_transactions_survive_kill_9(tmp_path, run):
    device = identity.DeviceIdentity.generate()
    (tmp_path / "key").write_bytes(device.key_pem())
    (tmp_path / "cert").write_bytes(device.cert_pem)
    path = tmp_path / "replica.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "key"), str(tmp_path / "cert"), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    kill_after = random.Random(run).randint(5, 120)
    acknowledged = -1
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= kill_after:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    store = Store(path)
    for number in range(acknowledged + 1):
        for t in range(3):
            assert all(store.record("default", "d", f"{number}-{t}-{o}") for o in range(3))
    # whatever came after the last acknowledgement is all there or not there, never half
    for t in range(3):
        present = [store.record("default", "d", f"{acknowledged + 1}-{t}-{o}") for o in range(3)]
        assert all(present) or not any(present)


def test_new_records_are_inserted_and_existing_ones_reported_and_left_alone(tmp_path):
    store = Store(tmp_path / "db")
    existing = {("c", f"k{i:04}"): [sibling("B/1", i + 1, b"old")] for i in range(0, 700, 9)}
    offered = [(("c", f"k{i:04}"), tuple(sibling("A/1", 1, b"new"))) for i in range(700)]
    offered.insert(3, (("c", "k0002"), tuple(sibling("A/1", 2, b"again, same chunk"))))
    offered.append((("c", "k0001"), tuple(sibling("A/1", 2, b"again, later chunk"))))
    with store.transaction():
        store.save_records("s", existing)
        found = store.insert_new_records("s", offered)
    assert found == {
        **existing,
        ("c", "k0001"): [sibling("A/1", 1, b"new")],
        ("c", "k0002"): [sibling("A/1", 1, b"new")],
    }, "every record there before its write, in any chunk, as it was"
    for (collection, key), siblings in existing.items():
        assert store.record("s", collection, key) == siblings
    assert store.record("s", "c", "k0001") == [sibling("A/1", 1, b"new")]
    assert store.record("other", "c", "k0001") is None


def test_a_commit_with_fsync_after_unsynced_ones_is_full_again(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction(fsync=False):
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        store.save_records("s", {("c", "k"): [sibling()]})
    with pytest.raises(RuntimeError), store.transaction(fsync=False):
        raise RuntimeError("boom")
    with store.transaction():
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        store.save_records("s", {("c", "k2"): [sibling()]})
    assert store.record("s", "c", "k") == store.record("s", "c", "k2") == [sibling()]


def full_counts(store: Store, share: str) -> tuple[int, int]:
    """Live and conflicting user records, counted row by row: what the kept counts must equal."""
    row = store._db.execute(
        "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE conflict)"
        " FROM records WHERE share=? AND coll NOT LIKE '\\_%' ESCAPE '\\'",
        (store.share_id(share),),
    ).fetchone()
    return row[0], row[1]


def kept_counts(store: Store, share: str) -> tuple[int, int]:
    return store.count_records(share), store.count_conflicts(share)


@pytest.mark.parametrize("seed", range(4))
def test_the_kept_counts_follow_every_write_and_rollback(tmp_path, seed):
    """Writes as the replica makes them (insert what is new, then save the merged records it was
    told about), besides direct saves, system collections, deletes and batches rolled back
    half-way or at the end."""
    rng = random.Random(seed)
    store = Store(tmp_path / "db")
    collections, actors, values = ["c", "d", "_sys"], ["A/1", "B/1", "C/1"], [b"x", b"y"]
    last_keys: dict[str, list[tuple[str, str]]] = {"s": [], "t": []}
    for seq in range(1, 60):
        share = rng.choice(["s", "t"])
        writes = [
            (
                (rng.choice(collections), f"k{rng.randrange(300)}"),
                (rng.choice(actors), seq, seq, rng.random() < 0.2, rng.choice(values), None),
            )
            for _ in range(rng.choice([1, 3, 160, 400]))
        ]
        if rng.random() < 0.3:  # a batch whose chunks count alike: live user writes only
            writes = [((key[0].lstrip("_"), key[1]), (*w[:3], False, *w[4:])) for key, w in writes]
        # direct saves, of keys the last batch of this share wrote (maybe rolled back)
        direct = {
            record_key: [
                Sibling(rng.choice(actors), seq, seq, rng.random() < 0.3, value, None)
                for value in rng.sample(values, rng.randint(1, 2))
            ]
            for record_key in rng.sample(last_keys[share], min(len(last_keys[share]), 20))
        }
        last_keys[share] = [record_key for record_key, _ in writes]
        fail = rng.choice([None, None, "after insert", "at the end"])
        with pytest.raises(RuntimeError) if fail else nullcontext(), store.transaction():
            store.save_records(share, direct)
            found = store.insert_new_records(share, writes)
            if fail == "after insert":
                raise RuntimeError(fail)
            merged = {}
            for record_key, siblings in found.items():
                fresh = [Sibling(*w) for key, w in writes if key == record_key]
                # keep the old siblings beside the new ones or let the newest replace them
                merged[record_key] = siblings + fresh if rng.random() < 0.5 else fresh[-1:]
            store.save_records(share, merged)
            if fail == "at the end":
                raise RuntimeError(fail)
        for name in ("s", "t"):
            assert kept_counts(store, name) == full_counts(store, name), (seq, name)
    assert full_counts(store, "s")[0] > 0 and full_counts(store, "s")[1] > 0, "a test of nothing"


def test_saving_what_insert_new_records_found_does_not_read_those_rows_again(tmp_path):
    store = Store(tmp_path / "db")
    with store.transaction():
        store.save_records("s", {("c", f"k{i}"): [sibling()] for i in range(10)})
    offered = [(("c", f"k{i}"), tuple(sibling("B/1", 1, b"new"))) for i in range(20)]
    statements: list[str] = []
    with store.transaction():
        found = store.insert_new_records("s", offered)
        store._db.set_trace_callback(statements.append)
        store.save_records("s", {k: [*v, sibling("B/1", 1, b"new")] for k, v in found.items()})
        store._db.set_trace_callback(None)
    assert len(found) == 10
    assert not [s for s in statements if s.startswith("SELECT")], statements
    assert kept_counts(store, "s") == full_counts(store, "s") == (20, 10)


def test_conflicts_list_one_collection_or_every_user_collection(tmp_path):
    store = Store(tmp_path / "db")
    both = [sibling(), sibling("B/1", 1, b"\x02")]
    with store.transaction():
        store.save_records(
            "s",
            {
                ("b", "2"): both,
                ("a", "9"): both,
                ("a", "1"): both,
                ("a", "fine"): [sibling()],
                ("_sys", "1"): both,
            },
        )
        store.save_records("t", {("a", "other share"): both})
    found = [(coll, key) for coll, key, _ in store.conflicts("s", None, 10)]
    assert found == [("a", "1"), ("a", "9"), ("b", "2")]
    assert [(c, k) for c, k, _ in store.conflicts("s", None, 2)] == found[:2]
    assert [(c, k) for c, k, _ in store.conflicts("s", "a", 10)] == found[:2]
    assert [(c, k) for c, k, _ in store.conflicts("s", "_sys", 10)] == [("_sys", "1")]
    assert kept_counts(store, "s") == (3 + 1, 3)


def test_a_release_0_1_0_database_is_upgraded_with_counts_and_records_intact(tmp_path):
    path = tmp_path / "replica.db"
    shutil.copy(RELEASE_0_1_0 / "device-a" / "replica.db", path)
    old = sqlite3.connect(path)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    rows_before = old.execute("SELECT * FROM records ORDER BY 1, 2, 3").fetchall()
    entries_before = old.execute("SELECT * FROM entries ORDER BY lseq").fetchall()
    old.close()

    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION == 5
    assert store.deleted_values(0, 10**9) == {}  # the table of schema 3 is there, empty
    # schema 4's baseline is there, empty: nothing is folded
    assert store.baseline_frontier("default") == {}
    assert store.load_baseline("default", [("notes", "a")]) == {}
    assert kept_counts(store, "default") == full_counts(store, "default") == (22, 1)
    assert store._db.execute("SELECT * FROM records ORDER BY 1, 2, 3").fetchall() == rows_before
    assert store._db.execute("SELECT * FROM entries ORDER BY lseq").fetchall() == entries_before
    expected = json.loads((RELEASE_0_1_0 / "expected.json").read_text())
    for name, (value_hex, sibling_count) in expected["records"].items():
        collection, key = name.split("/", 1)
        siblings = store.record("default", collection, key)
        assert siblings is not None, name
        assert (winner(siblings).value.hex(), len(siblings)) == (value_hex, sibling_count), name
    for name in expected["deleted"]:
        siblings = store.record("default", *name.split("/", 1))
        assert siblings is not None and winner(siblings).deleted, name
    # and the counts go on from there
    with store.transaction():
        store.save_records("default", {("notes", "n0"): [Sibling("A/1", 1, 5, True, None, None)]})
    assert kept_counts(store, "default") == full_counts(store, "default") == (21, 1)


def _query_plans(store: Store, call) -> list[list[str]]:
    """The plan of each statement `call` runs on the store, as SQLite would run it now."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        call(store)
    finally:
        store._db.set_trace_callback(None)
    return [
        [row[-1] for row in store._db.execute(f"EXPLAIN QUERY PLAN {statement}")]
        for statement in statements
    ]


# The queries that run per change, per status call or per request, and the one way each may
# reach its rows: by key, or by a range of an index that holds only what is asked for.
HOT_QUERIES = {
    "conflicts of the user collections": (
        lambda st: st.conflicts("s", None, 10),
        "SEARCH records USING INDEX records_conflicts (share=?)",
    ),
    "conflicts of one collection": (
        lambda st: st.conflicts("s", "c", 10),
        "SEARCH records USING INDEX records_conflicts (share=? AND coll=?)",
    ),
    "record count": (
        lambda st: st.count_records("s"),
        "SEARCH counts USING INTEGER PRIMARY KEY (rowid=?)",
    ),
    "conflict count": (
        lambda st: st.count_conflicts("s"),
        "SEARCH counts USING INTEGER PRIMARY KEY (rowid=?)",
    ),
    "scan": (
        lambda st: st.scan("s", "c", "k", "k1", 10),
        "SEARCH records USING PRIMARY KEY (share=? AND coll=? AND key>? AND key<?)",
    ),
    "record lookups": (
        lambda st: st.load_records("s", [("c", "k1"), ("c", "k2")]),
        "SEARCH records USING PRIMARY KEY (share=? AND coll=? AND key=?)",
    ),
    "entries after, one share": (
        lambda st: st.entries_after("s", 1, 10),
        "SEARCH entries USING INDEX entries_by_share (share=? AND lseq>?)",
    ),
    "entries after, one share, some actors skipped": (
        lambda st: st.entries_after("s", 1, 10, skip=["A/1", "B/1"]),
        "SEARCH entries USING INDEX entries_by_share (share=? AND lseq>?)",
    ),
    "entries after, every share": (
        lambda st: st.entries_after(None, 1, 10),
        "SEARCH entries USING INTEGER PRIMARY KEY (rowid>?)",
    ),
    "lseq of": (
        lambda st: st.lseq_of("s", "A/1", 2),
        "SEARCH entries USING COVERING INDEX entries_by_actor (share=? AND actor=? AND seq=?)",
    ),
    "entry": (
        lambda st: st.entry("s", "A/1", 2),
        "SEARCH entries USING INDEX entries_by_actor (share=? AND actor=? AND seq=?)",
    ),
    # read once, then kept (the read is what a restart or a deletion costs)
    "last lseq": (lambda st: (st.forget_last_position(), st.last_lseq()), "SEARCH entries"),
    "scan with deleted records in conflict": (
        lambda st: st.scan("s", "c", "k", "k1", 10, deleted=True),
        "SEARCH records USING PRIMARY KEY (share=? AND coll=? AND key>? AND key<?)",
    ),
    # one pass over the share's records (documented as not for polling), but in key order:
    # grouping by collection needs no sorting
    "collections": (
        lambda st: st.collections("s"),
        "SEARCH records USING PRIMARY KEY (share=?)",
    ),
    "values replaced by deletes": (
        lambda st: st.deleted_values(3, 9),
        "SEARCH deleted_values USING PRIMARY KEY (lseq>? AND lseq<?)",
    ),
    # one row per writer of the share, however many records it holds
    "heads": (lambda st: st.heads("s"), "SEARCH heads USING PRIMARY KEY (share=?)"),
}


@pytest.mark.parametrize("name", HOT_QUERIES)
def test_hot_queries_reach_their_rows_by_index_never_by_a_scan(tmp_path, name):
    store = Store(tmp_path / "db")
    both = [sibling(), sibling("B/1", 1, b"\x02")]
    with store.transaction():
        store.save_records("s", {("c", f"k{i}"): both if i % 3 else [sibling()] for i in range(50)})
        store.append_entries("s", [("A/1", seq, b"x", None) for seq in range(1, 20)])
        store.set_head("s", "A/1", 19, b"h")
    call, expected = HOT_QUERIES[name]
    plans = _query_plans(store, call)
    assert plans, "the call ran no query"
    for plan in plans:
        text = "; ".join(plan)
        assert expected in text, f"{name}: {text}"
        assert not [line for line in plan if line.startswith("SCAN")], f"{name}: {text}"
        assert "TEMP B-TREE" not in text, f"{name} sorts what it found: {text}"


def test_scan_can_include_deleted_records_in_conflict_and_collections_count_live_ones(tmp_path):
    store = Store(tmp_path / "db")
    tombstone = Sibling("A/1", 2, 9, True, None, None)
    with store.transaction():
        store.save_records(
            "s",
            {
                ("c", "live"): [sibling()],
                ("c", "gone"): [tombstone],
                ("c", "gone but contested"): [tombstone, sibling("B/1", 1, b"\x02")],
                ("d", "only"): [tombstone],
                ("_sys", "x"): [sibling()],
                ("e", "one"): [sibling()],
            },
        )
    plain = [key for key, _ in store.scan("s", "c", "", None, 10)]
    assert plain == ["live"]
    with_deleted = [key for key, _ in store.scan("s", "c", "", None, 10, deleted=True)]
    assert with_deleted == ["gone but contested", "live"]
    # user collections with live records; the one of only tombstones and the system one are not
    assert store.collections("s") == [("c", 1), ("e", 1)]


def test_conflicts_that_appear_or_go_are_told_once_committed(tmp_path):
    store = Store(tmp_path / "db")
    both = [sibling(), sibling("B/1", 1, b"\x02")]
    with store.transaction():
        store.save_records("s", {("c", "k"): [sibling()], ("_sys", "k"): [sibling()]})
    assert store.take_conflict_flips() == []
    with store.transaction():
        store.save_records("s", {("c", "k"): both, ("_sys", "k"): both})
    assert store.take_conflict_flips() == [("s", "c", "k", True)]  # user collections only
    assert store.take_conflict_flips() == []  # each told once
    with pytest.raises(RuntimeError), store.transaction():
        store.save_records("s", {("c", "k"): [sibling()]})
        raise RuntimeError("rolled back")
    assert store.take_conflict_flips() == []  # nothing committed, nothing changed
    with store.transaction():  # out and back in within one transaction: no news
        store.save_records("s", {("c", "k"): [sibling()]})
        store.save_records("s", {("c", "k"): both})
    assert store.take_conflict_flips() == []
    with store.transaction():
        store.remove_records("s", [("c", "k")])
    assert store.take_conflict_flips() == [("s", "c", "k", False)]
