"""Shares benchmark: what shares a device is NOT in, and how many shares it is in, cost it.

Two measurements, each against a baseline taken in the same run, interleaved:

(i) Catch-up beside a big share. A holds the share `small`, which B is in, and the share `big`
    (--big records, default 200,000; `--big 1000000` for the issue's size), which B is not in.
    B is stopped, A writes --small single puts to `small` (1,000 by default), B starts again:
    the time from B's READY to B holding the last of them (its watch stream), against the same
    catch-up of a pair whose A holds no big share. Also B's received bytes and A's CPU during it.
(ii) Idle with 20 shares. Two pairs, one in 20 shares (a few records each), one in 1 share:
    sync bytes per minute of the idle session (the daemons' `peers` bytes_sent/received) and
    CPU per minute of both daemons (/proc/<pid>/task/*/schedstat: nanoseconds, where stat's
    10 ms ticks are too coarse for a few ms a minute), both pairs in the same windows; and the
    bytes of a reconnect with nothing new (B restarted: hello, one digest per share).

Every ratio compares medians of at least three interleaved runs and prints their spread. Each
daemon listens on its own 127.0.0.x address with explicit config (no discovery); nothing is sent
beyond loopback and Unix sockets. The daemons are stopped even on error. Prints figures and ends
with one line `RESULT {json}`.

    .venv/bin/python bench/shares.py                 # about 2-3 minutes
    .venv/bin/python bench/shares.py --big 1000000   # the issue's size (longer: the load)
"""

import argparse
import signal
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.household import SETTLE_LIMIT, SETTLE_SECONDS, median_spread
from bench.report import run_and_report
from bench.sync import (
    CALL_TIMEOUT,
    BenchError,
    _line,
    pid_of,
    pipelined,
    poll,
    record_value,
    stop_all,
    with_helpers,
)
from p2psync.client import ControlError
from tests.daemons import DaemonProcess, free_port, introduce

SMALL = "small"
BIG = "big"

# CPU time per thread, from /proc/<pid>/task/<tid>/schedstat (nanoseconds): /proc/<pid>/stat
# counts 10 ms ticks, too coarse for an idle daemon's few milliseconds a minute
ThreadTimes = dict[int, int]


def thread_times(pid: int) -> ThreadTimes:
    """CPU nanoseconds of each thread of a daemon and of its helper processes."""
    found: ThreadTimes = {}
    for process in with_helpers(pid):
        for task in Path(f"/proc/{process}/task").iterdir():
            try:
                found[int(task.name)] = int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a worker thread that just ended
    return found


def cpu_between(before: ThreadTimes, after: ThreadTimes) -> float:
    """CPU seconds the threads used between two readings. A thread that ended meanwhile is
    left out: trio ends its worker threads after 10 s without work, so it used ~nothing."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9


class Pair:
    """Two daemons, A and B, trusting each other. Only B knows A's address: B's restarts
    make one connection, not two that race (each dialler's, one of which is dropped)."""

    def __init__(self, directory: Path, label: str, number: int) -> None:
        self.label = label
        self.a = DaemonProcess(directory / label, "a", host=f"127.0.0.{10 * number + 1}")
        self.b = DaemonProcess(directory / label, "b", host=f"127.0.0.{10 * number + 2}")
        for daemon in (self.a, self.b):
            daemon.port = free_port()
        self.b.peers = [self.a.address]
        for daemon in (self.a, self.b):
            daemon.write_config()

    @property
    def daemons(self) -> list[DaemonProcess]:
        return [self.a, self.b]

    def start(self) -> None:
        for daemon in self.daemons:
            daemon.start(wait=False)
        for daemon in self.daemons:
            daemon.wait_for_notification("READY=1")
        introduce(self.a, self.b)
        poll(self.connected, f"{self.label}: A and B to connect", 30)

    def connected(self) -> bool:
        rows = self.b.call("peers")  # empty until B has taken in A's membership record
        return bool(rows and rows[0]["connected"])

    def b_row_of_a(self) -> dict[str, Any]:
        """B's `peers` row about A: B's side of their session."""
        [row] = self.b.call("peers")
        return dict(row)

    def a_row_of_b(self) -> dict[str, Any]:
        [row] = self.a.call("peers")
        return dict(row)

    def share_with_b(self, share: str, records: int) -> None:
        """A creates the share, adds B, writes `records`; until B holds the last of them."""
        self.a.call("share_create", share=share)
        self.a.call("share_add", share=share, device=self.b.device_id)
        lines = put_lines(share, "seed", records)
        pipelined(self.a.socket_path, lines)
        wait_for_key(self.b, share, "seed", key_of("seed", records - 1), timeout=60)


def key_of(prefix: str, number: int) -> str:
    return f"{prefix}-{number:08d}"


def put_lines(share: str, collection: str, count: int) -> list[bytes]:
    return [
        _line(
            {
                "method": "put",
                "share": share,
                "collection": collection,
                "key": key_of(collection, number),
                "value": record_value(number),
            }
        )
        for number in range(count)
    ]


def transaction_lines(share: str, collection: str, count: int, batch: int) -> list[bytes]:
    return [
        _line(
            {
                "method": "transaction",
                "share": share,
                "ops": [
                    {
                        "op": "put",
                        "collection": collection,
                        "key": key_of(collection, number),
                        "value": record_value(number),
                    }
                    for number in range(start, min(start + batch, count))
                ],
            }
        )
        for start in range(0, count, batch)
    ]


def has_key(daemon: DaemonProcess, share: str, collection: str, key: str) -> bool:
    try:
        daemon.call("get", share=share, collection=collection, key=key)
    except ControlError as exc:
        if exc.code == "not_found":
            return False
        raise
    return True


def wait_for_key(
    daemon: DaemonProcess, share: str, collection: str, key: str, timeout: float
) -> None:
    """Entries from one origin apply in order: its last key present means all of it is."""
    poll(lambda: has_key(daemon, share, collection, key), f"{daemon.name}: {key}", timeout)


def watch_position(daemon: DaemonProcess) -> int:
    with daemon.client(timeout=CALL_TIMEOUT).watch(since=None) as watch:
        return watch.position


def arrival_of(
    daemon: DaemonProcess, since: int, collection: str, key: str, timeout: float
) -> float:
    """When `key` showed on the daemon's watch stream of changes after `since`."""
    client = daemon.client(timeout=CALL_TIMEOUT)
    with client.watch(since=since, collection=collection, idle_timeout=timeout) as watch:
        for event in watch:
            if any(change["key"] == key for change in event.get("changes", [])):
                return time.perf_counter()
    raise BenchError(f"{daemon.name}: the watch stream ended before {key}")


# (i) catch-up beside a big share -----------------------------------------------------------


def catch_up(pair: Pair, run: int, count: int) -> dict[str, float]:
    """B stopped, A writes `count` puts to `small`, B started: until B holds them all."""
    collection = f"run{run}"
    since = watch_position(pair.b)
    pair.b.stop()
    pipelined(pair.a.socket_path, put_lines(SMALL, collection, count))
    a_before = thread_times(pid_of(pair.a))
    pair.b.start()
    ready = time.perf_counter()
    done = arrival_of(pair.b, since, collection, key_of(collection, count - 1), timeout=120)
    a_cpu = cpu_between(a_before, thread_times(pid_of(pair.a)))
    row = pair.b_row_of_a()  # a new process: its counters are this session's
    return {
        "seconds": done - ready,
        "bytes_received": row["bytes_received"],
        "entries_received": row["entries_received"],
        "a_cpu_ms": 1000 * a_cpu,
    }


def catch_up_beside_a_big_share(
    directory: Path, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    plain, big = Pair(directory, "plain", 1), Pair(directory, "big", 2)
    pairs = {"without": plain, "with": big}
    try:
        for pair in pairs.values():
            pair.start()
            pair.share_with_b(SMALL, 10)
        big.a.call("share_create", share=BIG)
        loading = time.perf_counter()
        pipelined(big.a.socket_path, transaction_lines(BIG, "bulk", args.big, args.big_batch))
        seconds = time.perf_counter() - loading
        held = big.a.call("share_show", share=BIG)
        b_shares = [s["share"] for s in big.b.call("share_list")["shares"]]
        print(
            f"(i) A holds a share B is not in: {held['records']:,} records, "
            f"{held['bytes'] / 1e6:.0f} MB ({args.big_batch} per transaction, loaded in "
            f"{seconds:.1f} s); B's shares: {b_shares}"
        )
        if BIG in b_shares:
            raise BenchError("B holds the big share: the measurement would be meaningless")
        result["big_records"] = held["records"]
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in pairs}
        for run in range(args.runs):
            order = list(pairs) if run % 2 == 0 else list(reversed(pairs))
            for name in order:
                samples[name].append(catch_up(pairs[name], run, args.small))
    finally:
        for pair in pairs.values():
            stop_all(pair.daemons)
    seconds_of = {name: [s["seconds"] for s in found] for name, found in samples.items()}
    ratio = statistics.median(seconds_of["with"]) / statistics.median(seconds_of["without"])
    result["catch_up"] = {
        name: {
            "seconds": round(statistics.median(seconds_of[name]), 3),
            "seconds_runs": [round(s, 3) for s in seconds_of[name]],
            "bytes_received": round(statistics.median(s["bytes_received"] for s in found)),
            "a_cpu_ms": round(statistics.median(s["a_cpu_ms"] for s in found), 1),
        }
        for name, found in samples.items()
    }
    result["catch_up_ratio_with_big_share"] = round(ratio, 2)
    cpu_ratio = result["catch_up"]["with"]["a_cpu_ms"] / max(
        result["catch_up"]["without"]["a_cpu_ms"], 1
    )
    result["catch_up_a_cpu_ratio_with_big_share"] = round(cpu_ratio, 2)
    print(
        f"    catch-up of {args.small:,} puts to `{SMALL}` by B, from B's READY ({args.runs} runs):"
    )
    for name, found in samples.items():
        print(
            f"      {name} the big share on A: {median_spread(seconds_of[name])} s; "
            f"B received {median_spread([s['bytes_received'] for s in found])} bytes; "
            f"A's CPU {median_spread([s['a_cpu_ms'] for s in found])} ms"
        )
    print(
        f"    ratio with / without: {ratio:.2f}   (target ~1: a share B is not in costs nothing);"
        f" of A's CPU: {cpu_ratio:.2f}"
    )


# (ii) idle with 20 shares ------------------------------------------------------------------


def session_bytes(pair: Pair) -> int:
    """Sync bytes both ways of the pair's session, as A counts them."""
    row = pair.a_row_of_b()
    return int(row["bytes_sent"] + row["bytes_received"])


def pair_times(pair: Pair) -> list[ThreadTimes]:
    return [thread_times(pid_of(d)) for d in pair.daemons]


def idle_window(pairs: dict[str, Pair], seconds: float) -> dict[str, dict[str, float]]:
    """Bytes and CPU (A and B together) per minute of every pair over the same quiet window."""
    before = {name: (session_bytes(p), pair_times(p)) for name, p in pairs.items()}
    started = time.perf_counter()
    time.sleep(seconds)  # measuring a quiet interval, not waiting for anything
    elapsed = time.perf_counter() - started
    found = {}
    for name, pair in pairs.items():
        if not pair.connected():
            raise BenchError(f"{pair.label}: the session ended during the idle window")
        per_minute = 60 / elapsed
        cpu = sum(map(cpu_between, before[name][1], pair_times(pair)))
        found[name] = {
            "bytes_per_minute": (session_bytes(pair) - before[name][0]) * per_minute,
            "cpu_ms_per_minute": 1000 * cpu * per_minute,
        }
    return found


def settled(read: Callable[[], int]) -> int:
    """A counter once it stopped moving for SETTLE_SECONDS (at most SETTLE_LIMIT)."""
    last = read()
    stable_since = time.monotonic()
    deadline = stable_since + SETTLE_LIMIT
    while time.monotonic() - stable_since < SETTLE_SECONDS and time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def reconnect(pair: Pair) -> dict[str, float]:
    """B restarted with nothing new: the bytes of its new session once it went quiet."""
    pair.b.stop()
    pair.b.start()
    poll(pair.connected, f"{pair.label}: B to reconnect", 30)

    def bytes_of_b() -> int:
        row = pair.b_row_of_a()
        return int(row["bytes_sent"] + row["bytes_received"])

    return {"bytes": settled(bytes_of_b)}


def idle_with_many_shares(
    directory: Path, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    pairs = {"1": Pair(directory, "one-share", 3), "20": Pair(directory, "twenty-shares", 4)}
    try:
        for name, pair in pairs.items():
            pair.start()
            for number in range(int(name)):
                pair.share_with_b(f"s{number:02d}", args.records_per_share)
        for pair in pairs.values():  # quiet after the writes: nothing left to exchange
            settled(partial(session_bytes, pair))
        windows: dict[str, list[dict[str, float]]] = {name: [] for name in pairs}
        reconnects: dict[str, list[dict[str, float]]] = {name: [] for name in pairs}
        for run in range(args.idle_windows):
            for name, found in idle_window(pairs, args.idle_seconds).items():
                windows[name].append(found)
            order = list(pairs) if run % 2 == 0 else list(reversed(pairs))
            for name in order:
                reconnects[name].append(reconnect(pairs[name]))
    finally:
        for pair in pairs.values():
            stop_all(pair.daemons)
    print(
        f"(ii) idle session, 20 shares against 1 ({args.idle_windows} windows of "
        f"{args.idle_seconds:g} s,"
        f" both pairs in the same windows; {args.records_per_share} records per share):"
    )
    figures: dict[str, Any] = {}
    for name in pairs:
        idle_bytes = [w["bytes_per_minute"] for w in windows[name]]
        idle_cpu = [w["cpu_ms_per_minute"] for w in windows[name]]
        hello = [r["bytes"] for r in reconnects[name]]
        figures[name] = {
            "idle_bytes_per_minute": round(statistics.median(idle_bytes)),
            "idle_cpu_ms_per_minute": round(statistics.median(idle_cpu), 1),
            "reconnect_bytes": round(statistics.median(hello)),
        }
        print(
            f"    {name:>2} share(s): {median_spread(idle_bytes)} bytes/min; "
            f"CPU of A and B {median_spread(idle_cpu)} ms/min; "
            f"reconnect with nothing new {median_spread(hello)} bytes"
        )
    ratios = {
        figure: round(figures["20"][figure] / max(figures["1"][figure], 1e-9), 2)
        for figure in ("idle_bytes_per_minute", "idle_cpu_ms_per_minute", "reconnect_bytes")
    }
    per_share = (figures["20"]["reconnect_bytes"] - figures["1"]["reconnect_bytes"]) / 19
    result["idle"] = figures
    result["idle_ratio_20_to_1_share"] = ratios
    result["reconnect_bytes_per_extra_share"] = round(per_share)
    print(f"    ratios 20 shares / 1 share: {ratios}   (target: small)")
    print(f"    a reconnect costs {per_share:.0f} bytes more per share (both ways together)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--big", type=int, default=200_000, help="records of the big share")
    parser.add_argument("--big-batch", type=int, default=100, help="records per transaction")
    parser.add_argument("--small", type=int, default=1000, help="puts B catches up on")
    parser.add_argument("--records-per-share", type=int, default=20, help="(ii) per share")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="(ii) idle window")
    parser.add_argument("--runs", type=int, default=7, help="(i) interleaved runs (>= 3)")
    parser.add_argument(
        "--idle-windows", type=int, default=3, help="(ii) idle windows and reconnects (>= 3)"
    )
    parser.add_argument("--only", choices=("catch-up", "idle"), default=None)
    parser.add_argument("--dir", type=Path, default=None, help="where the state dirs go")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # so `timeout` still stops the daemons
    if args.runs < 3 or args.idle_windows < 3:
        parser.error("ratios need at least three runs")
    result: dict[str, Any] = {"big": args.big, "small": args.small, "runs": args.runs}
    started = time.monotonic()

    def measured(tmp: Path) -> None:
        if args.only in (None, "catch-up"):
            catch_up_beside_a_big_share(tmp, args, result)
        if args.only in (None, "idle"):
            idle_with_many_shares(tmp, args, result)
        result["bench_seconds"] = round(time.monotonic() - started, 1)
        print(f"({result['bench_seconds']} s)")

    sys.exit(run_and_report("p2psync-shares-", args.dir, measured, result))


if __name__ == "__main__":
    main()
