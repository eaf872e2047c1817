"""End-to-end sync benchmark: real `p2psync daemon` processes talking TLS on 127.0.0.1.

Measures, in one run: the initial sync of N records from A to an empty B (its speed, CPU and
bytes), live propagation latency put-on-A -> change-event-on-B, write throughput through the
control socket, the cost of a reconnect with nothing new, peak RSS and idle CPU of the daemons.
Then the initial sync against plain SQLite: fresh devices sync from a source in 3 rounds, each
after a plain SQLite bulk insert of as many rows, once at `--batch` records per entry and once
at one record per entry (what apps and the CLI write one after another, written into the
source's store directly: requests that arrive together share entries; `--single-entry-records`,
0 to skip); ratios are of the medians. Prints figures and ends with one line `RESULT {json}`;
asserts nothing. Sends traffic only to 127.0.0.1 and Unix sockets, stops by itself, and stops its
daemons even on error.

    .venv/bin/python bench/sync.py --records 100000
"""

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apply import make_rows, plain_insert
from bench.report import run_and_report
from p2psync import entry, keystore
from p2psync.client import ChangeEvent, Client, ControlError, Watch
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE
from tests.daemons import DaemonProcess, introduce

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SEND_CHUNK_BYTES = 256 * 1024
PROGRESS_SECONDS = 5.0
SYNC_ROUNDS = 3  # fresh devices syncing in turn, for ratios of medians
ENTRIES_PER_OFFLINE_COMMIT = 1000
CALL_TIMEOUT = 120.0


class BenchError(Exception):
    """Something the benchmark waited for did not happen; the message says what."""


# requests ---------------------------------------------------------------------------------------


def _line(request: dict[str, Any]) -> bytes:
    return json.dumps(request, separators=(",", ":")).encode() + b"\n"


def record_value(number: int) -> dict[str, Any]:
    """The value bench/apply.py's make_rows stores (as msgpack) for the same number."""
    return {"n": number, "done": False}


def transaction_lines(collection: str, count: int, batch: int) -> list[bytes]:
    return [
        _line(
            {
                "method": "transaction",
                "ops": [
                    {
                        "op": "put",
                        "collection": collection,
                        "key": f"item-{number:08d}",
                        "value": record_value(number),
                    }
                    for number in range(start, min(start + batch, count))
                ],
            }
        )
        for start in range(0, count, batch)
    ]


def put_lines(collection: str, count: int) -> list[bytes]:
    return [
        _line(
            {
                "method": "put",
                "collection": collection,
                "key": f"item-{number:08d}",
                "value": record_value(number),
            }
        )
        for number in range(count)
    ]


def last_key(count: int) -> str:
    return f"item-{count - 1:08d}"


def pipelined(socket_path: Path, lines: list[bytes]) -> float:
    """Send every request on one connection without waiting for answers (a thread writes while
    this one reads), check every answer; returns the seconds from first send to last answer."""
    failures: list[BaseException] = []

    def send_everything(sock: socket.socket) -> None:
        try:
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                chunk.append(line)
                size += len(line)
                if size >= SEND_CHUNK_BYTES:
                    sock.sendall(b"".join(chunk))
                    chunk, size = [], 0
            if chunk:
                sock.sendall(b"".join(chunk))
        except OSError as exc:
            failures.append(exc)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CALL_TIMEOUT)
        sock.connect(str(socket_path))
        with sock.makefile("rb") as answers:
            started = time.perf_counter()
            sender = threading.Thread(target=send_everything, args=(sock,), daemon=True)
            sender.start()
            for number in range(len(lines)):
                answer = answers.readline()
                if b'"ok":true' not in answer:
                    raise BenchError(
                        f"pipelined request {number} failed: {answer[:300]!r} {failures}"
                    )
            seconds = time.perf_counter() - started
            sender.join(CALL_TIMEOUT)
    return seconds


def concurrent_puts(daemon: DaemonProcess, collection: str, count: int, connections: int) -> float:
    """`connections` threads, each with its own connection, doing sequential puts."""
    barrier = threading.Barrier(connections + 1)
    failures: list[BaseException] = []

    def put_sequentially(worker: int) -> None:
        try:
            with daemon.client(timeout=CALL_TIMEOUT) as client:
                client.call("status")  # connect before the clock starts
                barrier.wait()
                for number in range(worker, count, connections):
                    client.call(
                        "put",
                        collection=collection,
                        key=f"item-{number:08d}",
                        value=record_value(number),
                    )
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    workers = [
        threading.Thread(target=put_sequentially, args=(worker,), daemon=True)
        for worker in range(connections)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(CALL_TIMEOUT)
    started = time.perf_counter()
    for worker in workers:
        worker.join(CALL_TIMEOUT)
    seconds = time.perf_counter() - started
    if failures or any(worker.is_alive() for worker in workers):
        raise BenchError(f"concurrent puts failed: {failures[:3]}")
    return seconds


def sequential_transactions(daemon: DaemonProcess, lines: list[bytes]) -> float:
    """One transaction at a time on one connection, each waited for."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CALL_TIMEOUT)
        sock.connect(str(daemon.socket_path))
        with sock.makefile("rb") as answers:
            started = time.perf_counter()
            for line in lines:
                sock.sendall(line)
                answer = answers.readline()
                if b'"ok":true' not in answer:
                    raise BenchError(f"transaction failed: {answer[:300]!r}")
            return time.perf_counter() - started


# waiting ----------------------------------------------------------------------------------------


def poll(condition: Callable[[], bool], what: str, timeout: float, interval: float = 0.02) -> float:
    """Call `condition` every `interval` until true; returns when it was last seen false."""
    deadline = time.monotonic() + timeout
    last_false = time.perf_counter()
    while True:
        if condition():
            return last_false
        last_false = time.perf_counter()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def has_record(client: Client, collection: str, key: str) -> bool:
    try:
        client.call("get", collection=collection, key=key)
    except ControlError as exc:
        if exc.code == "not_found":
            return False
        raise
    return True


def wait_for_record(daemon: DaemonProcess, collection: str, key: str, timeout: float) -> None:
    """Entries from one origin apply in order, so its last key present means all of it is."""
    with daemon.client(timeout=CALL_TIMEOUT) as client:
        poll(lambda: has_record(client, collection, key), f"{daemon.name}: {key}", timeout)


def catch_up_after_writes(
    a: DaemonProcess, b: DaemonProcess, collection: str, key: str, result: dict[str, Any]
) -> None:
    """Wait until B has A's last write. B has been seen to stop applying A's entries after the
    concurrent puts (all received, none applied, nothing logged, until a restart): that is
    reported, then B is restarted so the remaining figures can still be taken."""
    try:
        wait_for_record(b, collection, key, timeout=60)
        result["b_stalled_after_writes"] = None
        return
    except BenchError as exc:
        stalled = f"{exc}; A sees B: {peer_entry(a, b)}; B sees A: {peer_entry(b, a)}"
    result["b_stalled_after_writes"] = stalled[:1000]
    print(f"!! B stopped applying A's writes: {stalled}\n!! restarting B to carry on")
    b.stop()
    b.start()
    wait_for_record(b, collection, key, timeout=120)


def peer_entry(daemon: DaemonProcess, other: DaemonProcess) -> dict[str, Any]:
    for peer in daemon.call("peers"):
        if peer["name"] == other.name:
            return dict(peer)
    raise BenchError(f"{daemon.name} does not list {other.name} among its peers")


class ChangeArrivals:
    """Reads a watch stream in a thread and notes when each key's change arrived."""

    def __init__(self, daemon: DaemonProcess, collection: str, stop_key: str, timeout: float):
        # opened here, so the watch is in place before the caller writes anything
        self.watch: Watch = daemon.client(timeout=CALL_TIMEOUT).watch(
            since=None, collection=collection, idle_timeout=timeout
        )
        self.stop_key = stop_key
        self.arrived: dict[str, float] = {}
        self.failure: BaseException | None = None
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.watch:
                if not isinstance(event, ChangeEvent):
                    continue  # caught_up, heartbeat: nothing arrived
                now = time.perf_counter()
                with self.condition:
                    for change in event.changes:
                        self.arrived[change.key] = now
                    self.condition.notify_all()
                    if self.stop_key in self.arrived:
                        return
        except BaseException as exc:
            with self.condition:
                self.failure = exc
                self.condition.notify_all()
        finally:
            self.watch.close()

    def wait_for(self, key: str, timeout: float) -> float:
        with self.condition:
            found = self.condition.wait_for(
                lambda: key in self.arrived or self.failure is not None, timeout
            )
            if self.failure is not None:
                raise BenchError(f"watch stream failed: {self.failure}")
            if not found:
                raise BenchError(f"the change of {key} never arrived")
            return self.arrived[key]


# the daemons from outside -----------------------------------------------------------------------


def pid_of(daemon: DaemonProcess) -> int:
    assert daemon.process is not None
    return daemon.process.pid


def with_helpers(pid: int) -> list[int]:
    """A daemon's process and the processes it started (its control front-end): the CPU of a
    write is all of theirs."""
    found = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """CPU seconds of a process and its helpers, or of one of its threads."""
    if task is None:
        return sum(_stat_seconds(f"/proc/{process}/stat") for process in with_helpers(pid))
    return _stat_seconds(f"/proc/{pid}/task/{task}/stat")


def _stat_seconds(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id (trio renames its worker threads after each job, so names
    cannot tell them apart)."""
    found: dict[int, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(task)] = cpu_seconds(pid, int(task))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a worker thread that just ended
    return found


def thread_cpu_delta(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, Any]:
    """CPU seconds of the event loop thread and of the busiest worker thread (the database
    thread: replica calls run one at a time), and of all worker threads together."""
    used = {tid: seconds - before.get(tid, 0.0) for tid, seconds in after.items()}
    workers = [seconds for tid, seconds in used.items() if tid != pid]
    return {
        "event_loop": round(used.get(pid, 0.0), 2),
        "busiest_worker": round(max(workers, default=0.0), 2),
        "all_workers": round(sum(workers), 2),
    }


def memory_mb(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


def tcp_counters(port: int) -> dict[str, int] | None:
    """Kernel TCP counters (payload bytes: TLS included) of established connections whose local
    port is `port`, summed; None when `ss` cannot tell."""
    try:
        shown = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    counters: dict[str, int] = {"connections": 0}
    for line in shown.splitlines():
        if not line.startswith((" ", "\t")):
            counters["connections"] += 1
        for name in ("bytes_sent", "bytes_received", "data_segs_out", "data_segs_in"):
            found = re.search(rf"\b{name}:(\d+)", line)
            if found:
                counters[name] = counters.get(name, 0) + int(found.group(1))
    return counters


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def stop_all(daemons: list[DaemonProcess]) -> None:
    for daemon in daemons:
        process = daemon.process
        if process is None:
            continue
        try:
            daemon.stop(timeout=15)
        except Exception:
            process.kill()
            process.wait(15)


# the phases -------------------------------------------------------------------------------------


def load(a: DaemonProcess, args: argparse.Namespace, result: dict[str, Any]) -> None:
    lines = transaction_lines("items", args.records, args.batch)
    seconds = pipelined(a.socket_path, lines)
    rate = args.records / seconds
    result["load_records_per_s"] = round(rate)
    print(
        f"load into A (control-socket batched writes, {args.batch}/transaction, pipelined): "
        f"{rate:,.0f} records/s ({seconds:.1f} s)"
    )


def connected_after_introducing(a: DaemonProcess, b: DaemonProcess, client: Client) -> float:
    """Introduce `b` to `a`; when `b` (whose `client` this is) was last seen not connected."""
    introduce(a, b)
    return poll(lambda: client.call("status")["peers_connected"] > 0, "B to connect to A", 30)


def holding_all(client: Client, records: int, since: float, timeout: float) -> float:
    """Poll until the daemon of `client` holds `records` records, printing progress; when."""
    next_progress = time.monotonic() + PROGRESS_SECONDS

    def done() -> bool:
        nonlocal next_progress
        # status's record count is one row the store keeps as it writes (schema 2): polling
        # it costs B the same at any size and runs no scan beside the sync being measured
        held = client.call("status")["records"]
        if time.monotonic() > next_progress:
            next_progress += PROGRESS_SECONDS
            print(f"  ... {time.perf_counter() - since:5.0f} s: B holds {held:,} records")
        return bool(held >= records)

    poll(done, "B to have every record", timeout)
    return time.perf_counter()


def initial_sync(
    a: DaemonProcess, b: DaemonProcess, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    introduced = time.perf_counter()
    with b.client(timeout=CALL_TIMEOUT) as client:
        connected = connected_after_introducing(a, b, client)
        cpu_before = {d.name: cpu_seconds(pid_of(d)) for d in (a, b)}
        threads_before = {d.name: thread_cpu(pid_of(d)) for d in (a, b)}
        finished = holding_all(client, args.records, connected, args.sync_timeout)
    cpu_percent = {
        d.name: round(
            100 * (cpu_seconds(pid_of(d)) - cpu_before[d.name]) / (finished - connected), 1
        )
        for d in (a, b)
    }
    threads = {
        d.name: thread_cpu_delta(pid_of(d), threads_before[d.name], thread_cpu(pid_of(d)))
        for d in (a, b)
    }
    seconds = finished - connected
    rate = args.records / seconds
    peer = peer_entry(b, a)
    result.update(
        sync_seconds=round(seconds, 2),
        sync_records_per_s=round(rate),
        sync_introduce_to_connected_s=round(connected - introduced, 2),
        sync_entries_received=peer["entries_received"],
        sync_bytes_received=peer["bytes_received"],
        sync_cpu_percent=cpu_percent,
        sync_thread_cpu_s=threads,
    )
    print(
        f"initial sync A -> B:             {rate:>12,.0f} records/s ({seconds:.1f} s from "
        f"connection; connected {connected - introduced:.2f} s after introduce)"
    )
    print("  (its ratio to plain SQLite: from fresh devices in rounds, at the end)")
    print(
        f"  {peer['entries_received']:,} entries, {peer['bytes_received']:,} bytes; CPU during "
        f"sync: {result['sync_cpu_percent']} %"
    )
    print(f"  CPU seconds by thread: {result['sync_thread_cpu_s']}")


def fresh_sync_rounds(
    directory: Path, label: str, count: int, batch: int, timeout: float
) -> tuple[list[float], list[float]]:
    """A device holding `count` records written `batch` per entry; fresh devices sync from it
    in 3 rounds, each after a plain SQLite insert of as many rows: (their rates, SQLite's)."""
    rows = make_rows(count)
    here = directory / label
    processors = sorted(os.sched_getaffinity(0))
    source = DaemonProcess(here, "source")
    source.processor = processors[0]
    plain_rates: list[float] = []
    sync_rates: list[float] = []
    try:
        source.start()
        if batch == 1:
            seconds = written_one_per_entry(source, rows)
        else:
            seconds = pipelined(source.socket_path, transaction_lines(label, count, batch))
        print(f"\n{label}: loaded {count:,} records, {batch} per entry, in {seconds:.1f} s")
        for round_number in range(SYNC_ROUNDS):
            started = time.perf_counter()
            plain_insert(here / f"plain-{round_number}.db", rows)
            plain_rates.append(count / (time.perf_counter() - started))
            receiver = DaemonProcess(here, f"fresh-{round_number}", peers=[source.address])
            receiver.processor = processors[-1]
            try:
                receiver.start()
                with receiver.client(timeout=CALL_TIMEOUT) as client:
                    connected = connected_after_introducing(source, receiver, client)
                    finished = holding_all(client, count, connected, timeout)
                sync_rates.append(count / (finished - connected))
            finally:
                stop_all([receiver])
    finally:
        stop_all([source])
    return sync_rates, plain_rates


def written_one_per_entry(source: DaemonProcess, rows: tuple[tuple[str, str, bytes], ...]) -> float:
    """`rows` written into the source's store while it is stopped, each its own entry, as the
    daemon keeps a device's writes made one after another; the seconds it took. (Through the
    control socket, requests that arrive together commit together and share entries.)"""
    started = time.perf_counter()
    source.stop()
    device = keystore.load_or_create_identity(source.state_dir)
    replica = Replica.open(source.state_dir / "replica.db", device)
    try:
        for start in range(0, len(rows), ENTRIES_PER_OFFLINE_COMMIT):
            group = rows[start : start + ENTRIES_PER_OFFLINE_COMMIT]
            replica.commit_many(DEFAULT_SHARE, [[entry.put(*row)] for row in group])
    finally:
        replica.close()
    source.start()
    return time.perf_counter() - started


def sync_rounds(
    directory: Path, label: str, count: int, batch: int, timeout: float, result: dict[str, Any]
) -> None:
    """`fresh_sync_rounds`, its ratio of medians into `result` as `<label>_...`."""
    rates, plain = fresh_sync_rounds(directory, label, count, batch, timeout)
    rate, baseline = statistics.median(rates), statistics.median(plain)
    result.update(
        {
            f"{label}_rounds_records": count,
            f"{label}_rounds_records_per_s": round(rate),
            f"{label}_rounds_spread": [round(min(rates)), round(max(rates))],
            f"{label}_rounds_plain_sqlite_records_per_s": round(baseline),
            f"{label}_rounds_plain_sqlite_spread": [round(min(plain)), round(max(plain))],
            f"{label}_ratio_to_plain_sqlite": round(rate / baseline, 3),
        }
    )
    target = "30%" if batch == 1 else "100k/s and 50%"
    print(
        f"initial sync, {batch} record{'s' if batch > 1 else ''} per entry, into a fresh device "
        f"({count:,} records, {SYNC_ROUNDS} rounds): {rate:,.0f} records/s (median; "
        f"{min(rates):,.0f}..{max(rates):,.0f}) = {rate / baseline:.0%} of plain SQLite inserts "
        f"of as many rows ({baseline:,.0f}; {min(plain):,.0f}..{max(plain):,.0f})   target >= "
        f"{target}"
    )


def live_propagation(
    a: DaemonProcess, b: DaemonProcess, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    stop_key = "stop"
    arrivals = ChangeArrivals(b, "live", stop_key, timeout=30)
    latencies, acks = [], []
    with a.client(timeout=CALL_TIMEOUT) as client:
        for number in range(args.live_puts):
            key = f"live-{number:06d}"
            started = time.perf_counter()
            client.call("put", collection="live", key=key, value=record_value(number))
            acks.append(time.perf_counter() - started)
            latencies.append(arrivals.wait_for(key, timeout=10) - started)
        client.call("put", collection="live", key=stop_key, value=None)
    arrivals.wait_for(stop_key, timeout=10)
    figures = {
        name: round(1000 * percentile(latencies, fraction), 2)
        for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    }
    ack_figures = {
        name: round(1000 * percentile(acks, fraction), 2)
        for name, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    }
    result["live_ms"] = figures
    result["live_put_ack_ms"] = ack_figures
    print(
        f"live propagation ({args.live_puts} puts on A -> change on B's watch): p50 "
        f"{figures['p50']} ms, p99 {figures['p99']} ms, max {figures['max']} ms "
        "(targets p50 <= 2, p99 <= 10)"
    )
    print(
        f"  the put's own acknowledgement on A: p50 {ack_figures['p50']} ms, "
        f"p99 {ack_figures['p99']} ms"
    )


def control_writes(a: DaemonProcess, args: argparse.Namespace, result: dict[str, Any]) -> str:
    """Returns the collection written last (its last key marks the end of A's writes)."""
    client_cpu = os.times()
    seconds = pipelined(a.socket_path, put_lines("puts-pipelined", args.single_puts))
    pipelined_rate = args.single_puts / seconds
    client_pipelined = _client_cpu_percent(client_cpu, seconds)

    client_cpu = os.times()
    seconds = concurrent_puts(a, "puts-concurrent", args.single_puts, args.connections)
    concurrent_rate = args.single_puts / seconds
    client_concurrent = _client_cpu_percent(client_cpu, seconds)

    batched = min(args.records, args.batched_records)
    seconds = sequential_transactions(a, transaction_lines("batched", batched, args.batch))
    batched_rate = batched / seconds
    result.update(
        single_puts_per_s_pipelined=round(pipelined_rate),
        single_puts_per_s_concurrent=round(concurrent_rate),
        concurrent_connections=args.connections,
        batched_records_per_s=round(batched_rate),
    )
    print(
        f"single puts, one connection pipelined: {pipelined_rate:>9,.0f} puts/s "
        f"(this client used {client_pipelined:.0f}% CPU)"
    )
    print(
        f"single puts, {args.connections} connections in turn:  {concurrent_rate:>9,.0f} puts/s "
        f"(this client used {client_concurrent:.0f}% CPU)   target >= 20k/s"
    )
    print(
        f"batched transactions of {args.batch}, one at a time: {batched_rate:>9,.0f} records/s"
        "   target >= 200k/s"
    )
    return "batched"


def _client_cpu_percent(before: os.times_result, seconds: float) -> float:
    after = os.times()
    return 100 * (after.user - before.user + after.system - before.system) / seconds


def idle_cpu(
    a: DaemonProcess, b: DaemonProcess, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    """CPU over a quiet window, after a first second reported apart: right after a burst of
    writes the daemons still finish up (a tail that is not what "idle" means)."""
    daemons = {d.name: pid_of(d) for d in (a, b)}
    settle = _cpu_over(daemons, 1.0)
    steady = _cpu_over(daemons, args.idle_seconds)
    result["idle_cpu_percent"] = {name: found["percent"] for name, found in steady.items()}
    result["idle_settle_cpu_percent"] = {name: found["percent"] for name, found in settle.items()}
    result["idle_thread_cpu_s"] = {name: found["threads"] for name, found in steady.items()}
    print(
        f"idle CPU over {args.idle_seconds:g} s, A and B connected: "
        f"{result['idle_cpu_percent']} %   target ~0%"
    )
    print(
        f"  (the second before it, right after the writes: {result['idle_settle_cpu_percent']} %;"
        f" CPU seconds by thread in the window: {result['idle_thread_cpu_s']})"
    )


def _cpu_over(pids: dict[str, int], seconds: float) -> dict[str, dict[str, Any]]:
    before = {name: (cpu_seconds(pid), thread_cpu(pid)) for name, pid in pids.items()}
    started = time.perf_counter()
    time.sleep(seconds)  # measuring a quiet interval, not waiting for anything
    elapsed = time.perf_counter() - started
    return {
        name: {
            "percent": round(100 * (cpu_seconds(pid) - before[name][0]) / elapsed, 2),
            "threads": thread_cpu_delta(pid, before[name][1], thread_cpu(pid)),
        }
        for name, pid in pids.items()
    }


def reconnect(a: DaemonProcess, b: DaemonProcess, result: dict[str, Any]) -> None:
    b.stop()
    with a.client(timeout=CALL_TIMEOUT) as client:
        poll(lambda: not peer_in(client, b.name)["connected"], "A to notice B has stopped", 30)
    b.start()
    restarted = time.perf_counter()
    with a.client(timeout=CALL_TIMEOUT) as on_a, b.client(timeout=CALL_TIMEOUT) as on_b:

        def both_in_sync() -> bool:
            seen = (peer_in(on_a, b.name), peer_in(on_b, a.name))
            return all(peer["connected"] and peer["in_sync"] for peer in seen)

        poll(both_in_sync, "A and B in sync after B's restart", 30)
        seconds = time.perf_counter() - restarted
        a_side, b_side = peer_in(on_a, b.name), peer_in(on_b, a.name)
    tcp = tcp_counters(a.port)
    app_bytes = a_side["bytes_sent"] + a_side["bytes_received"]
    figures = {
        "app_bytes_a_to_b": a_side["bytes_sent"],
        "app_bytes_b_to_a": a_side["bytes_received"],
        "app_bytes_seen_by_b": b_side["bytes_sent"] + b_side["bytes_received"],
        "app_bytes_total": app_bytes,
        "entries_exchanged": a_side["entries_sent"] + a_side["entries_received"],
        "tcp": tcp,
        "seconds_to_in_sync": round(seconds, 3),
    }
    result["reconnect"] = figures
    print(
        f"reconnect with nothing new: {app_bytes} bytes of sync messages "
        f"(A->B {a_side['bytes_sent']}, B->A {a_side['bytes_received']}; "
        f"{figures['entries_exchanged']} entries)   target < 1 KiB, one round trip"
    )
    if tcp:
        print(
            f"  on the wire (TCP payload, TLS handshake included): A->B {tcp.get('bytes_sent')}, "
            f"B->A {tcp.get('bytes_received')} bytes; data segments A->B "
            f"{tcp.get('data_segs_out')}, B->A {tcp.get('data_segs_in')}"
        )
    print(f"  in sync {seconds:.2f} s after B was ready (polled every 20 ms)")


def peer_in(client: Client, name: str) -> dict[str, Any]:
    for peer in client.call("peers"):
        if peer["name"] == name:
            return dict(peer)
    raise BenchError(f"no peer named {name}")


def run(directory: Path, args: argparse.Namespace, result: dict[str, Any]) -> None:
    a = DaemonProcess(directory, "a")
    b = DaemonProcess(directory, "b", peers=[a.address])
    daemons = [a, b]
    processors = sorted(os.sched_getaffinity(0))  # two devices: a processor each, where there are
    a.processor, b.processor = processors[0], processors[-1]
    try:
        a.start()
        load(a, args, result)
        peaks = {"a_after_load": memory_mb(pid_of(a))["VmHWM"]}
        b.start()
        initial_sync(a, b, args, result)
        peaks.update(
            a_after_sync=memory_mb(pid_of(a))["VmHWM"], b_after_sync=memory_mb(pid_of(b))["VmHWM"]
        )
        result["rss_peak_by_phase_mb"] = peaks
        live_propagation(a, b, args, result)
        last_collection = control_writes(a, args, result)
        rss = {"b_before_restart": memory_mb(pid_of(b))}
        last_written = last_key(min(args.records, args.batched_records))
        catch_up_after_writes(a, b, last_collection, last_written, result)
        idle_cpu(a, b, args, result)
        reconnect(a, b, result)
        rss.update(a=memory_mb(pid_of(a)), b_after_restart=memory_mb(pid_of(b)))
        result["rss_mb"] = {name: found["VmHWM"] for name, found in rss.items()}
        result["rss_now_mb"] = {name: found["VmRSS"] for name, found in rss.items()}
        print(
            f"peak RSS (VmHWM): A {rss['a']['VmHWM']} MB, B {rss['b_before_restart']['VmHWM']} "
            f"MB (through the sync), B after its restart {rss['b_after_restart']['VmHWM']} MB"
            "   target <= 80 MB with 1M records"
        )
        print(f"  peak so far at each step: {peaks} MB")
        stop_all(daemons)  # idle, but the rounds below should have the machine to themselves
        sync_rounds(directory, "sync", args.records, args.batch, args.sync_timeout, result)
        if args.single_entry_records:
            single = args.single_entry_records
            sync_rounds(directory, "single_entry_sync", single, 1, args.sync_timeout, result)
    except BaseException:
        for daemon in daemons:
            if daemon.process is not None:
                print(f"--- {daemon.name} log (tail) ---\n{daemon.log()}", file=sys.stderr)
        raise
    finally:
        stop_all(daemons)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the sync")
    parser.add_argument("--batch", type=int, default=1000, help="records per transaction")
    parser.add_argument("--live-puts", type=int, default=1000, help="puts timed A -> B")
    parser.add_argument(
        "--single-puts", type=int, default=20_000, help="single puts in each write test"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="connections for concurrent puts"
    )
    parser.add_argument(
        "--batched-records",
        type=int,
        default=200_000,
        help="records for the batched write test (at most --records)",
    )
    parser.add_argument(
        "--single-entry-records",
        type=int,
        default=200_000,
        help="records written one per entry for the second initial sync (0: skip it)",
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU window")
    parser.add_argument(
        "--sync-timeout", type=float, default=1800.0, help="give up on the initial sync after"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the temporary state directories"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"records": args.records, "batch": args.batch}
    sys.exit(run_and_report("p2psync-sync-", args.dir, lambda tmp: run(tmp, args, result), result))


if __name__ == "__main__":
    main()
