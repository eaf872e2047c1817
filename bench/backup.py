"""Backup benchmark: `p2psync backup` of a running daemon against SQLite's own backup of the same
file, and what a backup costs the writes that go on meanwhile; export and import rates.

One real `p2psync daemon` (127.0.0.1, its own config and state in a temporary directory), filled
with `--records` records. Each round, in turn:

- `sqlite_backup`: this process copies the daemon's replica.db with `sqlite3.Connection.backup`
  (the floor: what any online copy of the file costs);
- `backup`: `p2psync backup FILE` (the daemon's copy, streamed over the control socket as base64
  lines, checked and written by the CLI);
- `writes_idle` and `writes_during_backup`: `--writes` single puts, pipelined, alone and while a
  thread runs `p2psync backup` over and over (the copy runs on its own connection; WAL readers
  never block the writer, so the ratio should stay near 1);
- `export` and `import`: `p2psync export` of everything, `p2psync import` of it into a second
  share-less daemon, against `raw` pipelined transactions of 1000 puts (the floor of import).

Prints medians with their spread and the ratios to each baseline, and ends with one line
`RESULT {json}`; asserts nothing. Sends traffic only over Unix sockets and loopback; stops its
daemons even on error.

    .venv/bin/python bench/backup.py --records 200000 --writes 5000 --rounds 3
"""

import argparse
import contextlib
import io
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_and_report
from bench.sync import pipelined, put_lines, transaction_lines
from p2psync.cli import main as cli
from tests.daemons import DaemonProcess, running


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_cli(daemon: DaemonProcess, *argv: str, stdin: bytes | None = None) -> str:
    """The CLI in this process (as a person runs it, without the interpreter's start-up)."""
    out = io.StringIO()
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out):
            code = cli(["--socket", str(daemon.socket_path), "-q", *argv])
    finally:
        sys.stdin = saved_stdin
    if code != 0:
        raise RuntimeError(f"p2psync {' '.join(argv)} exited {code}")
    return out.getvalue()


def sqlite_backup(daemon: DaemonProcess, target: Path) -> None:
    target.unlink(missing_ok=True)
    source = sqlite3.connect(daemon.state_dir / "replica.db")
    with closing(source), closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


def writes_during(daemon: DaemonProcess, lines: list[bytes], target: Path) -> float:
    """Pipelined puts while a thread takes backups one after another; returns the puts' time."""
    stop = threading.Event()
    backups: list[float] = []

    def keep_backing_up() -> None:
        while not stop.is_set():
            backups.append(timed(lambda: run_cli(daemon, "backup", str(target), "--force")))

    thread = threading.Thread(target=keep_backing_up)
    thread.start()
    try:
        return pipelined(daemon.socket_path, lines)
    finally:
        stop.set()
        thread.join()


def one_round(
    source: DaemonProcess, target: DaemonProcess, tmp: Path, round_: int, args: argparse.Namespace
) -> dict[str, float]:
    backup_file = tmp / "backup.tar"
    measured = {
        "sqlite_backup": timed(lambda: sqlite_backup(source, tmp / "plain.db")),
        "backup": timed(lambda: run_cli(source, "backup", str(backup_file), "--force")),
        "writes_idle": pipelined(source.socket_path, put_lines(f"idle{round_}", args.writes)),
        "writes_during_backup": writes_during(
            source, put_lines(f"busy{round_}", args.writes), tmp / "busy.tar"
        ),
    }
    started = time.perf_counter()
    exported = run_cli(source, "export", "--collection", "bench")
    measured["export"] = time.perf_counter() - started
    measured["import"] = timed(
        lambda: run_cli(target, "import", "-", "--share", "default", stdin=exported.encode())
    )
    measured["raw_transactions"] = pipelined(
        target.socket_path, transaction_lines(f"raw{round_}", args.records, 1000)
    )
    return measured


def spread(samples: list[float]) -> str:
    return f"{statistics.median(samples):.3f} s ({min(samples):.3f}-{max(samples):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--writes", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where the daemons' state goes (default: /tmp)")
    args = parser.parse_args()
    result: dict[str, Any] = {"records": args.records, "writes": args.writes}

    def run(tmp: Path) -> None:
        source, target = DaemonProcess(tmp, "source"), DaemonProcess(tmp, "target")
        with running(source, target):
            pipelined(source.socket_path, transaction_lines("bench", args.records, 1000))
            database = source.state_dir / "replica.db"
            samples: dict[str, list[float]] = {}
            for round_ in range(args.rounds):
                measured = one_round(source, target, tmp, round_, args)
                for name, seconds in measured.items():
                    samples.setdefault(name, []).append(seconds)
            median = {name: statistics.median(found) for name, found in samples.items()}
            for name, found in samples.items():
                print(f"{name:22} {spread(found)}")
            size = database.stat().st_size + (source.state_dir / "replica.db-wal").stat().st_size
            ratios = {
                "backup_time_vs_sqlite_backup": median["backup"] / median["sqlite_backup"],
                "write_rate_during_backup_vs_idle": median["writes_idle"]
                / median["writes_during_backup"],
                "import_time_vs_raw_transactions": median["import"] / median["raw_transactions"],
            }
            for name, ratio in ratios.items():
                print(f"{name:34} {ratio:.2f}")
            result.update(
                {
                    "database_bytes": size,
                    "backup_seconds": round(median["backup"], 3),
                    "sqlite_backup_seconds": round(median["sqlite_backup"], 3),
                    "export_records_per_second": round(args.records / median["export"]),
                    "import_records_per_second": round(args.records / median["import"]),
                    **{name: round(ratio, 3) for name, ratio in ratios.items()},
                }
            )

    return run_and_report("p2psync-bench-backup-", args.dir, run, result)


if __name__ == "__main__":
    sys.exit(main())
