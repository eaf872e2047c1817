"""Catch-up speed of the replication core against a plain SQLite bulk insert, in one process.

Builds a source replica with N small records, then times a fresh replica catching up through
`cursor_for` -> `entries_after` -> `apply` (verify, causal order, merge, store), and a plain
SQLite bulk insert of the same rows with the same durability settings as the baseline. The two
are timed in interleaved rounds (3 by default) and compared by their medians, with the spread
printed: on a shared machine the baseline alone swings by a factor of two. Prints figures and
ends with one line `RESULT {json}`.

    python bench/apply.py --records 1000000
"""

import argparse
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psync import entry, identity
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE


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
        items, cursor = source.entries_after(DEFAULT_SHARE, cursor, vector, max_bytes=256 * 1024)
        if not items:
            return applied
        applied += sink.apply(DEFAULT_SHARE, items).applied
        vector = sink.summary_vector(DEFAULT_SHARE)


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

        baseline_rates, catch_up_rates = [], []
        for round_number in range(args.rounds):
            started = time.perf_counter()
            plain_insert(directory / f"plain-{round_number}.db", rows)
            baseline_rates.append(args.records / (time.perf_counter() - started))

            sink = Replica.open(directory / f"sink-{round_number}.db", sink_id)
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
            catch_up_rates.append(args.records / (time.perf_counter() - started))
            assert sink.store.count_records(DEFAULT_SHARE) == args.records
            assert (
                sink.summary_vector(DEFAULT_SHARE)[source.actor]
                == source.summary_vector(DEFAULT_SHARE)[source.actor]
            )
            sink.close()

    baseline_rate = statistics.median(baseline_rates)
    catch_up_rate = statistics.median(catch_up_rates)
    result = {
        "records": args.records,
        "rounds": args.rounds,
        "entries_applied": applied,
        "records_per_transaction": args.per_transaction,
        "local_commit_records_per_s": round(args.records / build_seconds),
        "catch_up_records_per_s": round(catch_up_rate),
        "catch_up_spread": [round(min(catch_up_rates)), round(max(catch_up_rates))],
        "plain_sqlite_records_per_s": round(baseline_rate),
        "plain_sqlite_spread": [round(min(baseline_rates)), round(max(baseline_rates))],
        "ratio_to_plain_sqlite": round(catch_up_rate / baseline_rate, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"local commits:        {result['local_commit_records_per_s']:>10,} records/s")
    low, high = result["plain_sqlite_spread"]
    print(
        f"plain SQLite insert:  {result['plain_sqlite_records_per_s']:>10,} records/s (baseline,"
        f" median of {args.rounds}; {low:,}..{high:,})"
    )
    low, high = result["catch_up_spread"]
    print(
        f"catch-up (apply):     {result['catch_up_records_per_s']:>10,} records/s"
        f"  = {result['ratio_to_plain_sqlite']:.0%} of baseline (median; {low:,}..{high:,})"
    )
    print(f"peak RSS:             {result['peak_rss_mb']:>10} MB")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
