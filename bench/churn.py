"""Churn benchmark (issue 11): what a household's storage costs per byte of live data, with the
log compacted and kept whole, and what compaction costs the writes and the sync.

Two households of 3 real `p2psync daemon`s on 127.0.0.1, run one after the other: one with
`[history] compaction = true` (reports every `--interval` s; turned on once the household is
made), one with compaction off
(PouchDB-style: everything kept). Each takes the same churn: `--updates` puts and a tenth as many
deletes over `--keys` keys, spread over the three devices, sent as pipelined one-op transactions.

Figures, per device: `state_bytes_per_live_byte`: the log's entries with their signatures, the
records and the baseline (keys and packed siblings), over the live records' keys and values
(`database_bytes` and `wal_bytes` give the files); `keep_everything_state_bytes_per_live_byte`
the same for the other household. `write_rate_vs_no_compaction` (the puts' rate) and
`sync_rate_vs_no_compaction` (from the first put sent until every device holds the same history)
compare the two households. `join_full_replay_seconds`: a fourth device introduced to
the household that keeps everything, until it holds the same history; `join_snapshot_seconds`:
the same in the compacted household, where it gets the baseline by snapshot and then the log
after it; `join_snapshot_vs_full_replay`: the ratio of the two times. Both households stay up
until the joins are done, so that `--join-rounds` joins (a fresh device each) alternate between
them; with more than one, each figure is the median, with its spread.

`--records N` builds a share of N live records instead of the churn (each key written once, no
deletes; `--batch` ops per transaction): the issue's join of a new device to a 1M-record share.

Prints the figures and ends with `RESULT {json}`; asserts nothing. Loopback and Unix sockets only;
stops its daemons even on error.

    .venv/bin/python bench/churn.py                      # 1M updates, 100k deletes, 10k keys
    .venv/bin/python bench/churn.py --updates 30000 --keys 1000   # a quick run
    .venv/bin/python bench/churn.py --records 1000000 --join-rounds 3   # join a 1M-record share
"""

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_and_report
from bench.sync import pipelined, poll, stop_all
from tests.daemons import DaemonProcess, introduce, running

SETTLE_SECONDS = 600.0
# a value the size of a short note (about 100 bytes packed): a record's own overhead (its
# version, writer and clock, ~60 bytes) counts as storage, not as live data
NOTE = "milk, eggs, bread, two lemons, coffee beans (the dark ones), washing-up liquid, tea"


def churn_lines(device: int, updates: int, keys: int, seed: int) -> list[bytes]:
    """This device's share of the churn: its puts, and a delete after every tenth."""
    rng = random.Random(seed * 31 + device)
    lines = []
    for number in range(device, updates, 3):
        key = f"key-{rng.randrange(keys):06d}"
        value = {"n": number, "by": device, "text": NOTE}
        put = {"op": "put", "collection": "churn", "key": key, "value": value}
        lines.append(_line([put]))
        if number % 10 == device % 10:
            gone = {"op": "delete", "collection": "churn", "key": f"key-{rng.randrange(keys):06d}"}
            lines.append(_line([gone]))
    return lines


def fill_lines(device: int, records: int, batch: int) -> list[bytes]:
    """This device's third of `records` distinct keys, each written once, `batch` per line."""
    numbers = range(device, records, 3)
    return [
        _line(
            [
                {"op": "put", "collection": "churn", "key": f"key-{n:07d}", "value": {"n": n}}
                for n in numbers[start : start + batch]
            ]
        )
        for start in range(0, len(numbers), batch)
    ]


def _line(ops: list[dict[str, Any]]) -> bytes:
    return json.dumps({"method": "transaction", "ops": ops}, separators=(",", ":")).encode() + b"\n"


def database(daemon: DaemonProcess) -> sqlite3.Connection:
    path = daemon.state_dir / "replica.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def history_of(daemon: DaemonProcess) -> dict[str, int]:
    """The device's summary vector of the default share, read from its database."""
    with closing(database(daemon)) as db:
        rows = db.execute(
            "SELECT actors.name, heads.seq FROM heads JOIN actors ON actors.id = heads.actor"
            " JOIN shares ON shares.id = heads.share WHERE shares.name = 'default'"
        )
        return dict(rows)


def state_bytes(daemon: DaemonProcess) -> dict[str, int]:
    with closing(database(daemon)) as db:
        log = db.execute(
            "SELECT coalesce(sum(length(raw) + coalesce(length(sig), 0)), 0), count(*) FROM entries"
        ).fetchone()
        records = db.execute(
            "SELECT coalesce(sum(length(siblings) + length(key) + length(coll)), 0) FROM records"
        ).fetchone()[0]
        baseline = db.execute(
            "SELECT coalesce(sum(length(siblings) + length(key) + length(coll)), 0) FROM baseline"
        ).fetchone()[0]
        live = 0
        for key, blob in db.execute(
            "SELECT key, siblings FROM records WHERE NOT deleted AND coll = 'churn'"
        ):
            winner = max(msgpack.unpackb(blob), key=lambda s: (s[2], s[0]))
            live += len(key.encode()) + len(winner[4] or b"")
    path = daemon.state_dir / "replica.db"
    wal = path.with_name("replica.db-wal")
    return {
        "log_bytes": int(log[0]),
        "log_entries": int(log[1]),
        "records_bytes": int(records),
        "baseline_bytes": int(baseline),
        "live_bytes": live,
        "database_bytes": path.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
    }


def household(tmp: Path, name: str, compaction: bool, interval: float) -> list[DaemonProcess]:
    a = DaemonProcess(tmp, f"{name}-a")
    b = DaemonProcess(tmp, f"{name}-b", peers=[a.address])
    c = DaemonProcess(tmp, f"{name}-c", peers=[a.address, b.address])
    daemons = [a, b, c]
    if not compaction:  # compaction is on by default: this household keeps everything
        for daemon in daemons:
            daemon.extra_config = "[history]\ncompaction = false\n"
            daemon.write_config()
    for daemon in daemons:
        daemon.start(wait=False)
    for daemon in daemons:
        daemon.wait_for_notification("READY=1")
    introduce(*daemons)
    poll(lambda: all(len(d.call("devices")) == 3 for d in daemons), "introductions", 60)
    if compaction:
        for daemon in daemons:
            daemon.stop()
            daemon.extra_config = f"[history]\ncompaction = true\ninterval = {interval}\n"
            daemon.write_config()
            daemon.start()
    return daemons


def same_history(daemons: list[DaemonProcess]) -> bool:
    vectors = [history_of(d) for d in daemons]
    return all(v == vectors[0] for v in vectors)


def joined(daemons: list[DaemonProcess], joiner: DaemonProcess) -> bool:
    """The household holds one history and the joiner holds it: every head of the members.
    The joiner may hold more heads: those of epochs retired before the snapshot's frontier,
    which the snapshot names and which members drop as they compact (the joiner does not)."""
    if not same_history(daemons):
        return False
    held = history_of(joiner)
    return all(held.get(actor) == seq for actor, seq in history_of(daemons[0]).items())


def churn(daemons: list[DaemonProcess], args: argparse.Namespace) -> dict[str, float]:
    """Every device's puts at once (a thread each); returns the rate and the sync time."""
    import threading

    if args.records:
        lines = [fill_lines(i, args.records, args.batch) for i in range(3)]
    else:
        lines = [churn_lines(i, args.updates, args.keys, args.seed) for i in range(3)]
    took: list[float] = [0.0] * 3

    def push(index: int) -> None:
        took[index] = pipelined(daemons[index].socket_path, lines[index])

    started = time.perf_counter()
    threads = [threading.Thread(target=push, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = time.perf_counter()
    poll(lambda: same_history(daemons), "the devices to hold one history", SETTLE_SECONDS, 0.2)
    synced = time.perf_counter()
    transactions = sum(len(found) for found in lines)
    return {
        "transactions": transactions,
        "write_seconds": written - started,
        "sync_seconds": synced - written,
    }


def settled(daemons: list[DaemonProcess], keys: int) -> bool:
    """Compaction has caught up: every log is down to a few entries per writer."""
    return all(state_bytes(d)["log_entries"] < 200 for d in daemons)


def run_household(
    stack: ExitStack,
    tmp: Path,
    name: str,
    compaction: bool,
    args: argparse.Namespace,
    result: dict[str, Any],
) -> list[DaemonProcess]:
    """Make a household, churn it and measure its storage; it stays up until `stack` closes."""
    daemons = household(tmp, name, compaction, args.interval)
    stack.enter_context(running(*daemons))
    stack.callback(stop_all, daemons)  # first: stopped cleanly, then anything left is killed
    timing = churn(daemons, args)
    if compaction:
        started = time.perf_counter()
        poll(lambda: settled(daemons, args.keys), "compaction to settle", args.settle_seconds, 0.5)
        timing["settle_seconds"] = time.perf_counter() - started
    sizes = {d.name: state_bytes(d) for d in daemons}
    result[name] = {"timing": {k: round(v, 3) for k, v in timing.items()}, "devices": sizes}
    for device, size in sizes.items():
        state = size["log_bytes"] + size["records_bytes"] + size["baseline_bytes"]
        size["state_bytes_per_live_byte"] = round(state / max(1, size["live_bytes"]), 2)
        print(f"{device:24} {json.dumps(size)}")
    print(f"{name:24} {json.dumps(timing)}")
    return daemons


def join(tmp: Path, name: str, daemons: list[DaemonProcess], round_number: int) -> float:
    """A fresh device introduced to the household, until it holds the same history (s); its
    state goes afterwards (a 1M-record copy per round would add up)."""
    joiner = DaemonProcess(tmp, f"{name}-join{round_number}", peers=[daemons[0].address])
    try:
        with running(joiner):
            started = time.perf_counter()
            introduce(joiner, *daemons)
            poll(lambda: joined(daemons, joiner), "the join", SETTLE_SECONDS, 0.2)
            took = time.perf_counter() - started
        if name == "compacted" and "installed the snapshot" not in joiner.log():
            raise RuntimeError("the device joined the compacted household without a snapshot")
    finally:
        stop_all([joiner])
        shutil.rmtree(joiner.directory, ignore_errors=True)
    return took


def joins(
    households: dict[str, list[DaemonProcess]],
    args: argparse.Namespace,
    tmp: Path,
    result: dict[str, Any],
) -> None:
    """`--join-rounds` joins to each household, alternating which goes first."""
    figures = {"compacted": "join_snapshot_seconds", "kept": "join_full_replay_seconds"}
    taken: dict[str, list[float]] = {name: [] for name in figures}
    for round_number in range(args.join_rounds):
        order = ["compacted", "kept"] if round_number % 2 == 0 else ["kept", "compacted"]
        for name in order:
            taken[name].append(join(tmp, name, households[name], round_number))
            print(f"{figures[name]:24} round {round_number}: {taken[name][-1]:.2f} s")
    for name, figure in figures.items():
        result[figure] = round(statistics.median(taken[name]), 2)
        result[f"{figure}_all"] = [round(t, 2) for t in taken[name]]
    result["join_snapshot_vs_full_replay"] = round(
        result["join_snapshot_seconds"] / result["join_full_replay_seconds"], 3
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=1.0, help="history.interval (s)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--records", type=int, default=0, help="N live records, no churn")
    parser.add_argument("--batch", type=int, default=1, help="ops per transaction (--records)")
    parser.add_argument("--join-rounds", type=int, default=1)
    parser.add_argument("--settle-seconds", type=float, default=SETTLE_SECONDS)
    parser.add_argument("--no-join", dest="join", action="store_false")
    parser.add_argument("--dir", type=Path, help="where the daemons' state goes (default: /tmp)")
    args = parser.parse_args()
    if args.records:
        result: dict[str, Any] = {"records": args.records, "batch": args.batch}
    else:
        result = {"updates": args.updates, "deletes": args.updates // 10, "keys": args.keys}

    def run(tmp: Path) -> None:
        with ExitStack() as stack:
            households = {
                name: run_household(stack, tmp, name, name == "compacted", args, result)
                for name in ("compacted", "kept")
            }
            if args.join:
                joins(households, args, tmp, result)
        compacted, kept = result["compacted"], result["kept"]
        result["state_bytes_per_live_byte"] = {
            name: size["state_bytes_per_live_byte"] for name, size in compacted["devices"].items()
        }
        result["keep_everything_state_bytes_per_live_byte"] = {
            name: size["state_bytes_per_live_byte"] for name, size in kept["devices"].items()
        }
        rate = compacted["timing"]["write_seconds"], kept["timing"]["write_seconds"]
        sync = (
            compacted["timing"]["write_seconds"] + compacted["timing"]["sync_seconds"],
            kept["timing"]["write_seconds"] + kept["timing"]["sync_seconds"],
        )
        result["write_rate_vs_no_compaction"] = round(rate[1] / rate[0], 3)
        result["sync_rate_vs_no_compaction"] = round(sync[1] / sync[0], 3)
        for name in (
            "state_bytes_per_live_byte",
            "keep_everything_state_bytes_per_live_byte",
            "write_rate_vs_no_compaction",
            "sync_rate_vs_no_compaction",
            *(["join_snapshot_vs_full_replay"] if args.join else []),
        ):
            print(f"{name:42} {result[name]}")

    return run_and_report("p2psync-bench-churn-", args.dir, run, result)


if __name__ == "__main__":
    sys.exit(main())
