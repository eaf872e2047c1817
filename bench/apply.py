"""Catch-up speed of the replication core against a plain SQLite bulk insert, in one process.

Builds a source replica with N small records, then times a fresh replica catching up through
`cursor_for` -> `entries_after` -> `apply` (verify, causal order, merge, store), and a plain
SQLite bulk insert of the same rows with the same durability settings as the baseline. The two
are timed in interleaved rounds (3 by default) and compared by their medians, with the spread
printed: on a shared machine the baseline alone swings by a factor of two.

In the same rounds it times the floor of this design, which no apply of it can go below: the
rows a catch-up stores (log rows and record rows, as the store holds them), inserted by SQLite
alone into a fresh store of the same schema in the same transactions, and the decode of every
received entry (msgpack, checks, SHA-256) alone. Their sum against the baseline is the best
ratio a catch-up could reach while each entry is a log row of its own decoded in Python; the
apply's distance from it is what the Python around them costs.
Prints figures and ends with one line `RESULT {json}`.

    python bench/apply.py --records 1000000
"""

import argparse
import gc
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync import entry, identity
from p2psync.replica import Replica, WireItem
from p2psync.shares import DEFAULT_SHARE
from p2psync.store import Store
from p2psync.store_log import ROWS_PER_INSERT

FRAME_BYTES = 256 * 1024  # what a sender puts in one `entries` message, about
MEASURED = ("plain_sqlite", "catch_up", "rows_only", "decode_only", "floor")


def make_rows(count: int) -> tuple[tuple[str, str, bytes], ...]:
    """Small records: a short key and a two-field map, as msgpack (what the replica stores).

    A tuple of tuples of strings and bytes, which the garbage collector stops tracking: the
    bench's own million rows must not be walked by every collection during the timed phases."""
    return tuple(
        ("items", f"item-{number:08d}", msgpack.packb({"n": number, "done": False}))
        for number in range(count)
    )


def build_source(path: Path, rows, per_transaction: int, source_id, sink_id) -> Replica:
    """Group commits of ten transactions each; each group's ops are made just before its commit,
    as a writer would, so a million live ops do not sit in memory slowing the garbage collector."""
    source = Replica.open(path, source_id)
    source.commit(DEFAULT_SHARE, [source.device_op(sink_id.cert_pem, "sink")])
    per_group = 10 * per_transaction
    for group_start in range(0, len(rows), per_group):
        group = rows[group_start : group_start + per_group]
        transactions = [
            [
                entry.put(collection, key, value)
                for collection, key, value in group[i : i + per_transaction]
            ]
            for i in range(0, len(group), per_transaction)
        ]
        source.commit_many(DEFAULT_SHARE, transactions)
    return source


def catch_up(source: Replica, sink: Replica) -> int:
    vector = sink.summary_vector(DEFAULT_SHARE)
    cursor = source.cursor_for(DEFAULT_SHARE, vector)
    applied = 0
    while True:
        items, cursor = source.entries_after(DEFAULT_SHARE, cursor, vector, max_bytes=FRAME_BYTES)
        if not items:
            return applied
        applied += sink.apply(DEFAULT_SHARE, items).applied
        vector = sink.summary_vector(DEFAULT_SHARE)


def frames_of(source: Replica) -> list[list[WireItem]]:
    """What a sender sends a fresh device, frame by frame (as `catch_up` reads it)."""
    cursor, frames = source.cursor_for(DEFAULT_SHARE, {}), []
    while True:
        items, cursor = source.entries_after(DEFAULT_SHARE, cursor, {}, max_bytes=FRAME_BYTES)
        if not items:
            return frames
        frames.append(items)


Statement = tuple[str, list[object]]


def stored_rows(path: Path, frames: list[list[WireItem]]) -> list[list[Statement]]:
    """The log rows and record rows a catch-up stored, as the store holds them, as the store's
    statements would write them (rows of `ROWS_PER_INSERT` per INSERT), cut where its
    transactions were (a frame's entries, and the records their ops wrote)."""
    with closing(sqlite3.connect(path)) as db:
        (share_id,) = db.execute("SELECT id FROM shares WHERE name=?", (DEFAULT_SHARE,)).fetchone()
        log = db.execute(
            "SELECT share, actor, seq, raw, sig FROM entries WHERE share=? ORDER BY lseq",
            (share_id,),
        ).fetchall()
        records = db.execute(
            "SELECT share, coll, key, siblings, deleted, conflict FROM records"
            " WHERE share=? AND coll=? ORDER BY key",
            (share_id, "items"),
        ).fetchall()
    transactions, logged, written = [], 0, 0
    for items in frames:
        ops = sum(len(entry.decode(raw).ops) for raw, _ in items)
        transactions.append(
            _inserts("entries(share, actor, seq, raw, sig)", log[logged : logged + len(items)])
            + _inserts("records", records[written : written + ops])
        )
        logged, written = logged + len(items), written + ops
    return transactions


def _inserts(table: str, rows: list[tuple[object, ...]]) -> list[Statement]:
    statements = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        values = ",".join(["(" + ",".join("?" * len(chunk[0])) + ")"] * len(chunk))
        statements.append(
            (f"INSERT INTO {table} VALUES {values}", [v for row in chunk for v in row])
        )
    return statements


def rows_only(path: Path, transactions: Sequence[list[Statement]]) -> None:
    """SQLite alone storing what a catch-up stores: a fresh store's schema, the same rows in
    statements of the same shape, the same transactions, with the apply's durability (its
    commits skip the fsync)."""
    Store(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statements in transactions:
            db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                db.execute(sql, params)
            db.execute("COMMIT")


def decode_only(frames: list[list[WireItem]]) -> None:
    for items in frames:
        decoded = [entry.decode(raw) for raw, _ in items]
        del decoded  # freed frame by frame, as the apply frees them


def plain_insert(path: Path, rows) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE records(coll TEXT, key TEXT, value BLOB, PRIMARY KEY(coll, key))")
    db.execute("BEGIN")
    db.executemany("INSERT INTO records VALUES(?, ?, ?)", rows)
    db.execute("COMMIT")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--per-transaction",
        type=int,
        default=1000,
        help="records per local transaction (one log entry) on the source",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the catch-up")
    args = parser.parse_args()
    source_id, sink_id = identity.DeviceIdentity.generate(), identity.DeviceIdentity.generate()
    with tempfile.TemporaryDirectory(prefix="p2psync-bench-") as tmp:
        directory = Path(tmp)
        rows = make_rows(args.records)
        started = time.perf_counter()
        source = build_source(
            directory / "source.db", rows, args.per_transaction, source_id, sink_id
        )
        build_seconds = time.perf_counter() - started

        frames = frames_of(source)
        gc.freeze()  # the bench's own data: no collection of the timed code should walk it
        rates: dict[str, list[float]] = {name: [] for name in MEASURED}
        stored: list[list[Statement]] = []
        for round_number in range(args.rounds):
            started = time.perf_counter()
            plain_insert(directory / f"plain-{round_number}.db", rows)
            rates["plain_sqlite"].append(args.records / (time.perf_counter() - started))

            sink_path = directory / f"sink-{round_number}.db"
            sink = Replica.open(sink_path, sink_id)
            sink.commit(DEFAULT_SHARE, [sink.device_op(source_id.cert_pem, "source")])
            started = time.perf_counter()
            if args.profile and round_number == 0:
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                applied = profiler.runcall(catch_up, source, sink)
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
            else:
                applied = catch_up(source, sink)
            rates["catch_up"].append(args.records / (time.perf_counter() - started))
            assert sink.store.count_records(DEFAULT_SHARE) == args.records
            assert (
                sink.summary_vector(DEFAULT_SHARE)[source.actor]
                == source.summary_vector(DEFAULT_SHARE)[source.actor]
            )
            sink.close()

            if not stored:
                stored = stored_rows(sink_path, frames)
                gc.freeze()
            started = time.perf_counter()
            rows_only(directory / f"rows-{round_number}.db", stored)
            rows_seconds = time.perf_counter() - started
            started = time.perf_counter()
            decode_only(frames)
            decode_seconds = time.perf_counter() - started
            rates["rows_only"].append(args.records / rows_seconds)
            rates["decode_only"].append(args.records / decode_seconds)
            rates["floor"].append(args.records / (rows_seconds + decode_seconds))

    median = {name: statistics.median(found) for name, found in rates.items()}
    result = {
        "records": args.records,
        "rounds": args.rounds,
        "entries_applied": applied,
        "records_per_transaction": args.per_transaction,
        "local_commit_records_per_s": round(args.records / build_seconds),
        **{f"{name}_records_per_s": round(median[name]) for name in MEASURED},
        **{
            f"{name}_spread": [round(min(rates[name])), round(max(rates[name]))]
            for name in MEASURED
        },
        "ratio_to_plain_sqlite": round(median["catch_up"] / median["plain_sqlite"], 3),
        "floor_ratio_to_plain_sqlite": round(median["floor"] / median["plain_sqlite"], 3),
        "catch_up_ratio_to_floor": round(median["catch_up"] / median["floor"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"local commits:        {result['local_commit_records_per_s']:>10,} records/s")
    for name, label, against in (
        ("plain_sqlite", "plain SQLite insert:", None),
        ("catch_up", "catch-up (apply):", "plain_sqlite"),
        ("rows_only", "  its rows, SQLite:", "plain_sqlite"),
        ("decode_only", "  its decode alone:", "plain_sqlite"),
        ("floor", "  floor (both):", "plain_sqlite"),
    ):
        low, high = result[f"{name}_spread"]
        share = f" = {median[name] / median[against]:.0%} of plain SQLite" if against else ""
        print(
            f"{label:<21} {round(median[name]):>10,} records/s{share} (median of {args.rounds};"
            f" {low:,}..{high:,}; {1e6 / median[name]:.2f} us per record)"
        )
    print(
        f"the catch-up runs at {result['catch_up_ratio_to_floor']:.0%} of the floor: the rest is"
        " the Python around them (intake, readiness, merge, heads, counts)"
    )
    print(f"peak RSS:             {result['peak_rss_mb']:>10} MB (the floor's rows included)")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
