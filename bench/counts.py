"""What `status` and the once-a-second conflict report cost the database thread on a big store.

Fills a replica through the Replica API (--records puts in transactions of --batch, then
--conflicts of them written concurrently by a second device and merged in), then times, with
whatever p2psync is next to this script, the daemon's own `_counts` (what `status` and the
conflict report run) and a conflict listing: medians of --repeat calls; then the rate of
--updates puts over existing records, one per transaction, 100 transactions per group commit
(the write path that keeps the counts, and the merge path at that). Run it with an older
checkout first and with this one after on the same --db to compare; opening an older file with
this one migrates it, and that is timed too. One process, no network; prints figures and ends
with `RESULT {json}`; asserts nothing.

    (old checkout)/.venv/bin/python bench/counts.py --db /tmp/counts/replica.db
    .venv/bin/python bench/counts.py --db /tmp/counts/replica.db
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apply import build_source, catch_up, make_rows
from p2psync import daemon_reports, entry, identity, store
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE


def device(directory: Path, name: str) -> identity.DeviceIdentity:
    """The same device on every run over this directory: a replica file belongs to one."""
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    if not key.exists():
        made = identity.DeviceIdentity.generate()
        key.write_bytes(made.key_pem())
        cert.write_bytes(made.cert_pem)
    return identity.DeviceIdentity.from_pem(key.read_bytes(), cert.read_bytes())


def fill(path: Path, records: int, batch: int, conflicts: int) -> float:
    """Returns the seconds the fill took."""
    owner, other = device(path.parent, "owner"), device(path.parent, "other")
    started = time.perf_counter()
    replica = build_source(path, make_rows(records), batch, owner, other)
    rival = Replica.open(":memory:", other)
    rival.commit(DEFAULT_SHARE, [rival.device_op(owner.cert_pem, "owner")])
    for start in range(0, conflicts, batch):
        numbers = range(start, min(start + batch, conflicts))
        rival.commit(
            DEFAULT_SHARE,
            [entry.put("items", f"item-{n:08d}", msgpack.packb({"n": -n})) for n in numbers],
        )
    catch_up(rival, replica)
    seconds = time.perf_counter() - started
    replica.close()
    return seconds


def update_rate(replica: Replica, updates: int, records: int, run: int) -> float:
    """Puts over the last `updates` records (not the conflicting first ones), records/s."""
    started = time.perf_counter()
    for start in range(records - updates, records, 100):
        replica.commit_many(
            DEFAULT_SHARE,
            [
                [entry.put("items", f"item-{n:08d}", msgpack.packb({"n": n, "run": run}))]
                for n in range(start, min(start + 100, records))
            ],
        )
    return updates / (time.perf_counter() - started)


def median_ms(call, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return {
        "median": round(statistics.median(times), 3),
        "min": round(min(times), 3),
        "max": round(max(times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--db", type=Path, required=True, help="replica file (made if missing)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="puts per transaction")
    parser.add_argument("--conflicts", type=int, default=1000, help="records made to conflict")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--updates", type=int, default=20_000, help="puts over existing records")
    args = parser.parse_args()
    result: dict[str, object] = {"schema": store.SCHEMA_VERSION}
    if not args.db.exists():
        args.db.parent.mkdir(parents=True, exist_ok=True)
        result["fill_s"] = round(fill(args.db, args.records, args.batch, args.conflicts), 1)
    started = time.perf_counter()
    replica = Replica.open(args.db, device(args.db.parent, "owner"))
    result["open_s"] = round(time.perf_counter() - started, 3)  # includes any migration
    counts = daemon_reports._counts(replica)
    result.update(counts)
    result["status_counts_ms"] = median_ms(lambda: daemon_reports._counts(replica), args.repeat)
    result["conflict_report_ms"] = median_ms(
        lambda: daemon_reports._count_conflicts(replica), args.repeat
    )
    result["list_conflicts_ms"] = median_ms(
        lambda: replica.conflicts(DEFAULT_SHARE, limit=1001), args.repeat
    )
    run = int(time.time())
    result["update_records_per_s"] = round(
        update_rate(replica, args.updates, counts["records"], run)
    )
    replica.close()
    print(
        f"schema {result['schema']}: {counts['records']:,} records, {counts['conflicts']:,} "
        f"conflicts; opened in {result['open_s']} s"
    )
    for name in ("status_counts_ms", "conflict_report_ms", "list_conflicts_ms"):
        print(f"  {name:<20} {result[name]}")
    print(f"  {args.updates:,} puts over existing records: {result['update_records_per_s']:,}/s")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
