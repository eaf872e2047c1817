"""Epochs benchmark (issue 11, "vectors stay small"): what a device keeps per epoch after many
restarts, with compaction on and off.

Two households of 2 real `p2psync daemon`s on 127.0.0.1: one with `[history] compaction = true`
(reports every `--interval` s), one keeping everything. Device a of each is restarted
`--restarts` times (every start is a new epoch) with one put in between, which b must hold before
the next restart; the two households take turns, so their restart times are measured side by
side. Then the compacted household gets `--settle` s to fold what is stable.

Figures per device, read from its database: `heads_rows` (the summary vector, hence the hello's
and `have`'s vectors), `baseline_frontier_actors` (B) and `folded_writes_actors` (W),
`report_vector_actors` and `report_bytes` (its `_stable` record), `epochs_ever` (actors a's
device ever wrote as, for scale) and `first_entries` (log rows of seq 1: kept per epoch, see
docs/architecture.md). `restart_seconds`: median restart-to-synced time per household with its
spread (p10, p90); `restart_time_vs_keep_everything` their ratio.

Prints the figures and ends with `RESULT {json}`; asserts nothing. Loopback and Unix sockets only;
stops its daemons even on error.

    .venv/bin/python bench/epochs.py                   # 200 restarts
    .venv/bin/python bench/epochs.py --restarts 20     # a quick run
"""

import argparse
import json
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.churn import database
from bench.report import run_and_report
from bench.sync import poll, stop_all
from p2psync.client import ControlError
from tests.daemons import DaemonProcess, introduce, running


def household(tmp: Path, name: str, compaction: bool, interval: float) -> list[DaemonProcess]:
    extra = f"[history]\ncompaction = true\ninterval = {interval}\n" if compaction else ""
    a = DaemonProcess(tmp, f"{name}-a", extra_config=extra)
    b = DaemonProcess(tmp, f"{name}-b", peers=[a.address], extra_config=extra)
    return [a, b]


def kept_per_epoch(daemon: DaemonProcess, writer: str) -> dict[str, int]:
    with closing(database(daemon)) as db:
        share = db.execute("SELECT id FROM shares WHERE name = 'default'").fetchone()[0]
        heads = db.execute("SELECT count(*) FROM heads WHERE share = ?", (share,)).fetchone()[0]
        row = db.execute(
            "SELECT frontier, written FROM baselines WHERE share = ?", (share,)
        ).fetchone()
        frontier, written = (msgpack.unpackb(blob) for blob in row) if row else ({}, {})
        own = db.execute(
            "SELECT siblings FROM records WHERE share = ? AND coll = '_stable' AND key = ?",
            (share, daemon.device_id),
        ).fetchone()
        report: dict[str, Any] = {}
        if own is not None:
            newest = max(msgpack.unpackb(own[0]), key=lambda s: s[2])
            report = msgpack.unpackb(newest[4]) if newest[4] else {}
        epochs = db.execute(
            "SELECT count(*) FROM actors WHERE name LIKE ?", (f"{writer}/%",)
        ).fetchone()[0]
        firsts = db.execute(
            "SELECT count(*) FROM entries WHERE share = ? AND seq = 1", (share,)
        ).fetchone()[0]
    return {
        "heads_rows": heads,
        "baseline_frontier_actors": len(frontier),
        "folded_writes_actors": len(written),
        "report_vector_actors": len(report.get("v", {})),
        "report_bytes": len(own[0]) if own is not None else 0,
        "epochs_ever": epochs,
        "first_entries": firsts,
    }


def restart_and_write(daemons: list[DaemonProcess], round_: int) -> float:
    """Restart a, put one record there, wait until b holds it; returns the seconds taken."""
    a, b = daemons
    started = time.perf_counter()
    a.stop()
    a.start()
    key = f"k{round_ % 10}"
    a.call("put", collection="notes", key=key, value=round_)
    poll(lambda: holds(b, key, round_), "b to hold a's write", 60)
    return time.perf_counter() - started


def holds(daemon: DaemonProcess, key: str, value: int) -> bool:
    try:
        return bool(daemon.call("get", collection="notes", key=key)["value"] == value)
    except ControlError:  # not there yet
        return False


def settled(figures: dict[str, int]) -> bool:
    """Folded down to the epochs still writing: each device's one, and the one a just retired."""
    return figures["heads_rows"] <= 3 and figures["report_vector_actors"] <= 3


def spread(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median": round(statistics.median(ordered), 3),
        "p10": round(ordered[len(ordered) // 10], 3),
        "p90": round(ordered[(len(ordered) * 9) // 10], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.5, help="history.interval (s)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to settle, at most")
    parser.add_argument("--dir", type=Path, help="where the daemons' state goes (default: /tmp)")
    args = parser.parse_args()
    result: dict[str, Any] = {"restarts": args.restarts, "interval": args.interval}

    def run(tmp: Path) -> None:
        households = {
            "compacted": household(tmp, "compacted", True, args.interval),
            "kept": household(tmp, "kept", False, args.interval),
        }
        everyone = [d for pair in households.values() for d in pair]
        try:
            with running(*everyone):
                for pair in households.values():
                    introduce(*pair)
                writer = {name: pair[0].device_id for name, pair in households.items()}
                times: dict[str, list[float]] = {name: [] for name in households}
                for round_ in range(args.restarts):
                    for name, pair in households.items():  # side by side, in turns
                        times[name].append(restart_and_write(pair, round_))
                compacted = households["compacted"]
                started = time.perf_counter()
                try:
                    poll(
                        lambda: all(
                            settled(kept_per_epoch(d, writer["compacted"])) for d in compacted
                        ),
                        "the compacted household to fold",
                        args.settle,
                        0.5,
                    )
                    result["settle_seconds"] = round(time.perf_counter() - started, 2)
                except Exception:
                    result["settle_seconds"] = None  # the figures below say how far it got
                for name, pair in households.items():
                    result[name] = {
                        "restart_seconds": spread(times[name]),
                        "devices": {d.name: kept_per_epoch(d, writer[name]) for d in pair},
                    }
                    for device, figures in result[name]["devices"].items():
                        print(f"{device:14} {json.dumps(figures)}")
                    print(f"{name:14} restart to synced {json.dumps(spread(times[name]))}")
        finally:
            stop_all(everyone)
        result["restart_time_vs_keep_everything"] = round(
            result["compacted"]["restart_seconds"]["median"]
            / result["kept"]["restart_seconds"]["median"],
            3,
        )
        result["heads_rows"] = {
            name: max(f["heads_rows"] for f in result[name]["devices"].values())
            for name in households
        }
        print(f"{'heads_rows':34} {result['heads_rows']}")
        print(f"{'restart_time_vs_keep_everything':34} {result['restart_time_vs_keep_everything']}")

    return run_and_report("p2psync-bench-epochs-", args.dir, run, result)


if __name__ == "__main__":
    sys.exit(main())
