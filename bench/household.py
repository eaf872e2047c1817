"""Household benchmark: N real daemons on loopback in a static full mesh, N = 2, 4, 8.

Measures how a write spreads through a household (issue 9):
- one write, fan-out: copies of the entry each device receives (the `peers` call's per-peer
  `entries_received`), sync bytes of all daemons, CPU of all daemons (from /proc); against N-1
  times what the same write costs between 2 devices (the cost of direct sends), interleaved;
  the writer's own CPU of it is printed apart (`one_write_writer_cpu_ms`).
  A write's window ends when no entry arrived for a while; the idle background of each mesh
  (keep-alive pings, timers; measured first and printed) is taken off its bytes and CPU;
- one write visible on all N (`one_write_all_ms`): put on one device until the change shows on
  every device's `watch` stream, p50 / p99;
- concurrent writes: every device puts W single-record writes at once (pipelined on its control
  socket); the duplicate ratio (entries received / entries needed: the entries the writes made,
  as every device holds them at the end, times N-1; puts that commit together share an entry, so
  `records_per_entry` says how many records an entry held) and the time until every
  device holds every record, against 2 devices writing the same number of records in total.
  Here all N daemons share this machine's processors, so that time follows the sum of their
  work; `busiest_device_cpu_ratio_to_2_devices` compares the CPU of the busiest device until
  convergence, which is what bounds the time when every device has a processor of its own;
- with `--partition SECONDS` (the issue's 180; needs root, iproute2 and nft): time to resume
  after a partition of two devices in network namespaces heals, once with a cable pulled (news
  of the link wakes the dialers) and once with frames dropped on the switch, which neither
  device can see (`bench/resume.py`, which this runs with this tree's code, whatever `--code`
  says; `resume_after_partition_s`).
Each daemon starts on one processor of this machine, spread evenly, and keeps to it as a
device keeps to its own (`process.one_cpu`); a `--code` tree from before that setting is
confined the same way, so the comparison leaves that setting out (`bench/writes.py` shows it).
Every ratio compares medians of interleaved runs (at least three) and prints the spread.

Each daemon listens on its own 127.0.0.x address with explicit config (no discovery); nothing
is sent beyond loopback and Unix sockets. Loops are bounded in count and time; the daemons are
stopped even on error. Prints figures and ends with one line `RESULT {json}`.

    .venv/bin/python bench/household.py                 # a few minutes
    .venv/bin/python bench/household.py --writes 10000  # the issue's size (much longer)
"""

import argparse
import json
import os
import selectors
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_and_report
from bench.resume import one_run as resume_run
from bench.sync import (
    CALL_TIMEOUT,
    BenchError,
    _line,
    cpu_seconds,
    percentile,
    pid_of,
    pipelined,
    record_value,
    stop_all,
)
from p2psync.client import ControlError
from p2psync.liveness import DEFAULT_LIMIT_SECONDS
from tests.daemons import DaemonProcess, free_port, introduce
from tests.netns import netns_unavailable_reason

SETTLE_SECONDS = 0.3  # counters unchanged this long after the last arrival: nothing more comes
SETTLE_LIMIT = 5.0
IDLE_SECONDS = 6.0  # two keep-alive periods
POLL_SECONDS = 0.05
CPU_TAIL_SECONDS = 0.2


class Cluster:
    """N daemons, every one told every other's address (as discovery would), all trusted."""

    def __init__(
        self, directory: Path, number: int, size: int, history: str = "", code: Path | None = None
    ) -> None:
        self.size = size
        self.daemons = []
        for i in range(size):
            daemon = DaemonProcess(
                directory / f"n{size}",
                f"d{i}",
                host=f"127.0.0.{10 * number + i + 1}",
                extra_config=history,
                code=code,
            )
            daemon.port = free_port()
            self.daemons.append(daemon)
        for daemon in self.daemons:
            daemon.peers = [other.address for other in self.daemons if other is not daemon]
            daemon.write_config()

    def start(self) -> None:
        processors = sorted(os.sched_getaffinity(0))
        for number, daemon in enumerate(self.daemons):
            # as devices each with a processor of their own would be, as far as this machine
            # goes: each daemon keeps to one (`process.one_cpu`), and they are spread evenly
            daemon.processor = processors[number % len(processors)]
            daemon.start(wait=False)
        for daemon in self.daemons:
            daemon.wait_for_notification("READY=1")
        introduce(*self.daemons)
        deadline = time.monotonic() + 60
        while not all(self.connected(d) for d in self.daemons):
            if time.monotonic() > deadline:
                raise BenchError(f"the mesh of {self.size} did not connect in 60 s")
            time.sleep(0.05)

    def connected(self, daemon: DaemonProcess) -> bool:
        peers = daemon.call("peers")
        return sum(1 for p in peers if p["connected"]) == self.size - 1

    def counters(self) -> dict[str, int]:
        """Entries received and sync bytes sent, summed over every daemon and peer."""
        received = sent = 0
        for daemon in self.daemons:
            for peer in daemon.call("peers"):
                received += peer["entries_received"]
                sent += peer["bytes_sent"]
        return {"entries_received": received, "bytes_sent": sent}

    def cpu(self) -> float:
        return sum(self.cpu_of_each())

    def cpu_of_each(self) -> list[float]:
        return [cpu_seconds(pid_of(d)) for d in self.daemons]

    def settled_counters(self) -> dict[str, float]:
        """Counters once no entry arrived for a while (late duplicates are counted too), with
        the moment they were read. Bytes never settle: keep-alive pings go on while idle."""
        last = self.counters()
        stable_since = time.monotonic()
        deadline = stable_since + SETTLE_LIMIT
        while time.monotonic() - stable_since < SETTLE_SECONDS and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            now = self.counters()
            if now["entries_received"] != last["entries_received"]:
                stable_since = time.monotonic()
            last = now
        return {**last, "at": time.monotonic(), "cpu": self.cpu()}

    def idle_rates(self, seconds: float) -> dict[str, float]:
        """Sync bytes and CPU per second of all daemons while nothing is written and nobody
        asks them anything: the background (keep-alive pings, timers) a write's window holds."""
        before = self.settled_counters()
        time.sleep(seconds)
        after = self.counters()
        elapsed = time.monotonic() - before["at"]
        cpu = self.cpu()
        return {
            "bytes": (after["bytes_sent"] - before["bytes_sent"]) / elapsed,
            "cpu_ms": 1000 * (cpu - before["cpu"]) / elapsed,
        }


class Arrivals:
    """Follows every daemon's `watch` stream of one collection and notes when each key first
    showed on each daemon. One thread reads all the streams (a selector over raw sockets, as
    `bench/writes.py` drives its clients): a thread per stream would take the GIL in turn for
    every event and add the bench's own contention to what it measures."""

    def __init__(self, daemons: list[DaemonProcess], collection: str) -> None:
        self.seen: list[dict[str, float]] = [{} for _ in daemons]
        self.condition = threading.Condition()
        self.failure: str | None = None
        self.selector = selectors.DefaultSelector()
        request = json.dumps({"id": 1, "method": "watch", "collection": collection})
        self.sockets = []
        for index, daemon in enumerate(daemons):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket_path))
            sock.sendall(request.encode() + b"\n")
            answer = bytearray()
            while b"\n" not in answer:  # the stream follows from its answer on: nothing missed
                answer += sock.recv(1 << 16) or b"closed\n"
            line, _, rest = answer.partition(b"\n")
            if not json.loads(line).get("ok"):
                raise BenchError(f"{daemon.name} refused the watch: {line!r}")
            self.sockets.append(sock)
            self.selector.register(sock, selectors.EVENT_READ, (index, bytearray(rest)))
        self.stopping = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.2):
                index, buffer = key.data
                chunk = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                now = time.perf_counter()
                if not chunk:
                    self._fail(f"daemon {index} closed its watch stream")
                    return
                buffer += chunk
                *lines, rest = buffer.split(b"\n")
                buffer[:] = rest
                keys = [
                    change["key"]
                    for line in lines
                    if b'"change"' in line
                    for change in json.loads(line).get("changes", ())
                ]
                if any(b'"error"' in line for line in lines):
                    self._fail(f"daemon {index}'s watch failed: {lines}")
                    return
                if keys:
                    with self.condition:
                        for key_seen in keys:
                            self.seen[index].setdefault(key_seen, now)
                        self.condition.notify_all()

    def _fail(self, reason: str) -> None:
        with self.condition:
            self.failure = self.failure or reason
            self.condition.notify_all()

    def wait_everywhere(self, key: str, timeout: float) -> float:
        """When the key showed on the last daemon."""
        with self.condition:
            done = self.condition.wait_for(
                lambda: self.failure is not None or all(key in seen for seen in self.seen),
                timeout,
            )
            if self.failure is not None:
                raise BenchError(f"a watch stream failed: {self.failure}")
            if not done:
                raise BenchError(f"{key} did not reach every device in {timeout} s")
            return max(seen[key] for seen in self.seen)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()
        self.selector.close()


def one_write(
    cluster: Cluster, arrivals: Arrivals, number: int, idle: dict[str, float]
) -> dict[str, float]:
    """One put on one device (in turn), until every device shows it and no entry arrives any
    more. Bytes and CPU less the idle background of the same time; CPU is read a moment after
    the write showed everywhere, before this bench's polling (its `peers` calls cost CPU)."""
    writer = cluster.daemons[number % cluster.size]
    before = cluster.settled_counters()
    cpu_before, cpu_since = cluster.cpu(), time.monotonic()
    writer_before = cpu_seconds(pid_of(writer))
    key = f"one-{number:05d}"
    started = time.perf_counter()
    writer.call("put", collection="one", key=key, value={"n": number})
    visible = arrivals.wait_everywhere(key, timeout=30)
    time.sleep(CPU_TAIL_SECONDS)  # the work that follows the write: acks, senders going idle
    idle_share = idle["cpu_ms"] * (time.monotonic() - cpu_since)
    cpu_ms = 1000 * (cluster.cpu() - cpu_before) - idle_share
    writer_cpu_ms = 1000 * (cpu_seconds(pid_of(writer)) - writer_before) - idle_share / cluster.size
    after = cluster.settled_counters()
    return {
        "all_ms": 1000 * (visible - started),
        "copies_per_device": (after["entries_received"] - before["entries_received"])
        / (cluster.size - 1),
        "bytes": after["bytes_sent"]
        - before["bytes_sent"]
        - idle["bytes"] * (after["at"] - before["at"]),
        "cpu_ms": cpu_ms,
        "writer_cpu_ms": writer_cpu_ms,
    }


def concurrent_writes(cluster: Cluster, per_device: int, run: int) -> dict[str, float]:
    """Every device puts `per_device` records at once; until every device holds them all."""
    collection = f"many-{run}"
    before = cluster.settled_counters()
    position_before = cluster.daemons[0].call("status")["position"]
    last_keys = {f"item-{per_device - 1:08d}@{d.name}" for d in cluster.daemons}
    lines = {d.name: device_put_lines(collection, per_device, d.name) for d in cluster.daemons}
    cpu_before = cluster.cpu_of_each()
    started = time.perf_counter()
    with ThreadPoolExecutor(cluster.size) as pool:
        writes = [pool.submit(pipelined, d.socket_path, lines[d.name]) for d in cluster.daemons]
        converged = wait_for_keys(cluster, collection, last_keys, started, timeout=600)
        cpu_after = cluster.cpu_of_each()
        for write in writes:
            write.result()
    after = cluster.settled_counters()
    needed = cluster.size * (cluster.size - 1) * per_device
    # the entries the writes made, as every device holds them once converged (puts that commit
    # together share an entry: fewer entries than records)
    entries = cluster.daemons[0].call("status")["position"] - position_before
    return {
        "seconds": converged - started,
        # the busiest device's CPU until convergence: what bounds the time when every device
        # has a processor of its own, as in a household (here N daemons share this machine's)
        "busiest_device_cpu_seconds": max(
            b - a for a, b in zip(cpu_before, cpu_after, strict=True)
        ),
        "duplicate_ratio": (after["entries_received"] - before["entries_received"])
        / ((cluster.size - 1) * entries),
        "records_per_entry": cluster.size * per_device / entries,
        "bytes_per_record": (after["bytes_sent"] - before["bytes_sent"]) / needed,
    }


def device_put_lines(collection: str, count: int, device: str) -> list[bytes]:
    """Single puts whose keys end in the writing device's name, so one origin's last key marks
    the end of its writes (entries from one origin apply in order)."""
    return [
        _line(
            {
                "method": "put",
                "collection": collection,
                "key": f"item-{number:08d}@{device}",
                "value": record_value(number),
            }
        )
        for number in range(count)
    ]


def wait_for_keys(
    cluster: Cluster, collection: str, keys: set[str], started: float, timeout: float
) -> float:
    """Poll `get` of each device's missing last keys every 50 ms; when the last one showed."""
    missing = {d.name: set(keys) for d in cluster.daemons}
    clients = {d.name: d.client(timeout=CALL_TIMEOUT) for d in cluster.daemons}
    try:
        while True:
            for name, client in clients.items():
                for key in sorted(missing[name]):
                    try:
                        client.call("get", collection=collection, key=key)
                        missing[name].discard(key)
                    except ControlError as exc:
                        if exc.code != "not_found":
                            raise
            now = time.perf_counter()
            if not any(missing.values()):
                return now
            if now - started > timeout:
                raise BenchError(f"not converged after {timeout} s: missing {missing}")
            time.sleep(0.05)
    finally:
        for client in clients.values():
            client.close()


def median_spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g})"


def interleaved(
    runs: int, measures: dict[str, Callable[[int], dict[str, float]]]
) -> dict[str, list[dict[str, float]]]:
    found: dict[str, list[dict[str, float]]] = {name: [] for name in measures}
    for run in range(runs):
        for name, measure in measures.items():
            found[name].append(measure(run))
    return found


def fan_out(clusters: dict[int, Cluster], args: argparse.Namespace, result: dict[str, Any]) -> None:
    idle = {n: cluster.idle_rates(IDLE_SECONDS) for n, cluster in clusters.items()}
    print(f"\nidle background ({IDLE_SECONDS:g} s, nothing written; taken off each write's):")
    for n, rates in idle.items():
        sessions = n * (n - 1) // 2
        print(
            f"  N={n}: {rates['bytes']:.0f} sync bytes/s ({rates['bytes'] / sessions:.0f} per "
            f"session), CPU {rates['cpu_ms']:.1f} ms/s of all daemons"
        )
        result["idle_bytes_per_second"][str(n)] = round(rates["bytes"])
        result["idle_cpu_ms_per_second"][str(n)] = round(rates["cpu_ms"], 1)
    arrivals = {n: Arrivals(c.daemons, "one") for n, c in clusters.items()}
    try:
        samples = interleaved(
            args.one_writes,
            {
                str(n): (lambda i, n=n: one_write(clusters[n], arrivals[n], i, idle[n]))
                for n in clusters
            },
        )
    finally:
        for watching in arrivals.values():
            watching.close()
    base = samples["2"]
    base_bytes = statistics.median(s["bytes"] for s in base)
    # /proc counts CPU in ticks of 10 ms, more than one write costs: CPU is the mean of the
    # windows (their total over the number of writes), which the ticks do not skew
    base_cpu = statistics.fmean(s["cpu_ms"] for s in base)
    print(f"\none write, fan-out ({args.one_writes} interleaved writes per size):")
    for n in clusters:
        found = samples[str(n)]
        copies = [s["copies_per_device"] for s in found]
        latencies = [s["all_ms"] for s in found]
        bytes_ = [s["bytes"] for s in found]
        cpu = [s["cpu_ms"] for s in found]
        direct_bytes, direct_cpu = (n - 1) * base_bytes, (n - 1) * base_cpu
        result["copies_per_device"][str(n)] = round(statistics.median(copies), 2)
        result["one_write_all_ms"][str(n)] = {
            "p50": round(percentile(latencies, 0.5), 1),
            "p99": round(percentile(latencies, 0.99), 1),
        }
        result["one_write_bytes"][str(n)] = round(statistics.median(bytes_))
        result["one_write_cpu_ms"][str(n)] = round(statistics.fmean(cpu), 1)
        writer_cpu = statistics.fmean(s["writer_cpu_ms"] for s in found)
        result["one_write_writer_cpu_ms"][str(n)] = round(writer_cpu, 1)
        result["one_write_bytes_ratio_to_direct"][str(n)] = round(
            statistics.median(bytes_) / direct_bytes, 2
        )
        # a few writes may fall within one tick of the 2-device base: no ratio then
        cpu_ratio = round(statistics.fmean(cpu) / direct_cpu, 2) if direct_cpu > 0 else None
        result["one_write_cpu_ratio_to_direct"][str(n)] = cpu_ratio
        print(
            f"  N={n}: copies per device {median_spread(copies)}; visible on all "
            f"p50 {percentile(latencies, 0.5):.1f} ms p99 {percentile(latencies, 0.99):.1f} ms"
        )
        print(
            f"        sync bytes {median_spread(bytes_)} = "
            f"{statistics.median(bytes_) / direct_bytes:.2f}x {n - 1} direct sends; "
            f"CPU of all daemons, mean {statistics.fmean(cpu):.3g} ms = "
            f"{cpu_ratio if cpu_ratio is not None else 'n/a'}x {n - 1} direct sends, "
            f"of which the writer's {writer_cpu:.3g} ms"
        )


def convergence(
    clusters: dict[int, Cluster], args: argparse.Namespace, result: dict[str, Any]
) -> None:
    print(
        f"\nconcurrent writes ({args.writes} single puts per device, {args.runs} interleaved runs):"
    )
    two = clusters[2]
    for n, cluster in clusters.items():
        if n == 2:
            continue
        total = n * args.writes
        samples = interleaved(
            args.runs,
            {
                "two": lambda run, total=total, n=n: concurrent_writes(
                    two, total // 2, 100 * n + run
                ),
                "mesh": lambda run, cluster=cluster, n=n: concurrent_writes(
                    cluster, args.writes, 100 * n + run
                ),
            },
        )
        mesh_seconds = [s["seconds"] for s in samples["mesh"]]
        two_seconds = [s["seconds"] for s in samples["two"]]
        duplicates = [s["duplicate_ratio"] for s in samples["mesh"]]
        ratio = statistics.median(mesh_seconds) / statistics.median(two_seconds)
        mesh_cpu = [s["busiest_device_cpu_seconds"] for s in samples["mesh"]]
        two_cpu = [s["busiest_device_cpu_seconds"] for s in samples["two"]]
        cpu_ratio = statistics.median(mesh_cpu) / statistics.median(two_cpu)
        result["busiest_device_cpu_ratio_to_2_devices"][str(n)] = round(cpu_ratio, 2)
        result["duplicate_ratio"][str(n)] = round(statistics.median(duplicates), 2)
        result["converge_ratio_to_2_devices"][str(n)] = round(ratio, 2)
        result["converge_seconds"][str(n)] = round(statistics.median(mesh_seconds), 2)
        result["converge_seconds_2_devices"][str(n)] = round(statistics.median(two_seconds), 2)
        result["bytes_per_record"][str(n)] = round(
            statistics.median(s["bytes_per_record"] for s in samples["mesh"])
        )
        result["records_per_entry"][str(n)] = round(
            statistics.median(s["records_per_entry"] for s in samples["mesh"]), 1
        )
        print(
            f"  N={n}, {total:,} records: converged in {median_spread(mesh_seconds)} s; "
            f"2 devices, same records: {median_spread(two_seconds)} s; ratio {ratio:.2f}"
        )
        print(
            f"        busiest device's CPU until converged: {median_spread(mesh_cpu)} s; "
            f"2 devices: {median_spread(two_cpu)} s; ratio {cpu_ratio:.2f} (the work one device "
            f"does: with a processor each, as in a household, not the sum on this machine's)"
        )
        print(
            f"        duplicate ratio {median_spread(duplicates)}; "
            f"{result['records_per_entry'][str(n)]} records per entry (puts that commit together "
            f"share one); {result['bytes_per_record'][str(n)]} sync bytes per delivered record; "
            "2 devices: "
            f"duplicate ratio {median_spread([s['duplicate_ratio'] for s in samples['two']])}"
        )


def run(directory: Path, args: argparse.Namespace, result: dict[str, Any]) -> None:
    sizes = sorted({2, *args.sizes})
    history = history_config(args)
    clusters = {
        n: Cluster(directory, number, n, history, args.code) for number, n in enumerate(sizes)
    }
    try:
        for cluster in clusters.values():
            cluster.start()
        print(f"meshes of {sizes} connected")
        fan_out(clusters, args, result)
        convergence(clusters, args, result)
        if args.partition:
            for cluster in clusters.values():
                stop_all(cluster.daemons)  # their CPU would slow the partitioned pair
            resume_after_partition(directory / "partition", args, result)
    except BaseException:
        for cluster in clusters.values():
            for daemon in cluster.daemons:
                if daemon.process is not None:
                    print(
                        f"--- {daemon.directory} log (tail) ---\n{daemon.log()[-1500:]}",
                        file=sys.stderr,
                    )
        raise
    finally:
        for cluster in clusters.values():
            stop_all(cluster.daemons)


def resume_after_partition(
    directory: Path, args: argparse.Namespace, result: dict[str, Any]
) -> None:
    print(f"\nresume after a {args.partition:g} s partition of 2 devices (network namespaces):")
    for cut in ("link", "drop"):
        figures = resume_run(
            directory / cut,
            args.partition,
            cut,
            reconnect_max=60.0,
            idle_timeout=DEFAULT_LIMIT_SECONDS,
        )
        result["resume_after_partition_s"][cut] = figures["resume_s"]
        how = "cable pulled" if cut == "link" else "frames dropped on the switch, unseen"
        print(
            f"  {how}: both sides had each other's write {figures['resume_s']:.2f} s after healing"
        )


def history_config(args: argparse.Namespace) -> str:
    """The daemons' `[history]` section: compaction as by default, at another interval, or off."""
    if args.compaction == "off":
        return "[history]\ncompaction = false\n"
    return "" if args.interval is None else f"[history]\ninterval = {args.interval}\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4, 8])
    parser.add_argument("--one-writes", type=int, default=30, help="one-write samples per size")
    parser.add_argument("--writes", type=int, default=1000, help="concurrent puts per device")
    parser.add_argument("--runs", type=int, default=3, help="interleaved convergence runs (>= 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where the state dirs go")
    parser.add_argument(
        "--code",
        type=Path,
        default=None,
        help="run the daemons of this tree's p2psync (say the code before a change) under this"
        " bench, for before/after figures from one bench",
    )
    parser.add_argument(
        "--compaction", choices=("default", "off"), default="default", help="[history] compaction"
    )
    parser.add_argument(
        "--interval", type=float, default=None, help="[history] interval (s) when compacting"
    )
    parser.add_argument(
        "--partition",
        type=float,
        default=0.0,
        help="seconds of partition before measuring the time to resume (0: skip; needs root)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # so `timeout` still stops the daemons
    if args.runs < 3 or args.one_writes < 3:
        parser.error("ratios need at least three runs")
    if args.partition and (reason := netns_unavailable_reason()) is not None:
        parser.error(f"--partition needs network namespaces: {reason}")
    result: dict[str, Any] = {
        name: {}
        for name in (
            "copies_per_device",
            "duplicate_ratio",
            "converge_ratio_to_2_devices",
            "busiest_device_cpu_ratio_to_2_devices",
            "one_write_all_ms",
            "one_write_bytes",
            "one_write_cpu_ms",
            "one_write_writer_cpu_ms",
            "one_write_bytes_ratio_to_direct",
            "one_write_cpu_ratio_to_direct",
            "converge_seconds",
            "converge_seconds_2_devices",
            "bytes_per_record",
            "records_per_entry",
            "idle_bytes_per_second",
            "idle_cpu_ms_per_second",
            "resume_after_partition_s",
        )
    }
    result["writes_per_device"] = args.writes
    result["history"] = {"compaction": args.compaction, "interval": args.interval}
    result["code"] = str(args.code) if args.code else None
    started = time.monotonic()

    def measured(tmp: Path) -> None:
        run(tmp, args, result)
        result["bench_seconds"] = round(time.monotonic() - started, 1)

    sys.exit(run_and_report("p2psync-household-", args.dir, measured, result))


if __name__ == "__main__":
    main()
