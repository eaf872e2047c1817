"""Control-socket writes at the issue's targets, against a durable SQLite commit in the same run.

One real `p2psync daemon` per code tree (127.0.0.1 and Unix sockets only, its own config and state
in a temporary directory); with `--compare DIR` a second daemon runs the p2psync of DIR (say the
main checkout) side by side, so before and after are measured in the same session. Each round
times, in an order that rotates from round to round, for each daemon:

- `single`: 16 connections (`--clients`), each doing sequential `put`s (each waits for its
  answer before sending the next), driven from one thread by a selector with the request lines
  built beforehand (so the load generator costs little of the 2 cores): puts/s in all, and each
  put's ack latency (p50, p99 over every put of the round);
- `alone`: one connection doing sequential puts: the ack latency of an unloaded daemon;
- `transaction`: `transaction` requests of `--batch` puts each, pipelined on one connection:
  records/s;
- for each of those, the daemon's CPU time (all its threads) per record written: a figure the
  machine's load and the disk's fsync time move far less than rates and latencies;
- and the baseline, `sqlite`: plain SQLite with the store's settings (WAL, synchronous=FULL) in
  the same directory: one-row insert+commit latency (p50) and commits/s, and `--batch`-row
  commits in records/s.

Prints medians over the rounds with their spread (lowest-highest), the ratios of the medians to
the baseline, and ends with one line `RESULT {json}`; asserts nothing. Stops its daemons even on
error.

    .venv/bin/python bench/writes.py --rounds 5 --compare /work/main

The daemons run with this checkout's p2psync (or DIR's) whatever the working directory; the
machine's load average is in the RESULT, as the rates follow the CPU share the daemon gets.
"""

import argparse
import os
import selectors
import socket
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_and_report
from bench.shares import cpu_between, thread_times
from bench.sync import CALL_TIMEOUT, BenchError, pipelined, put_lines, transaction_lines
from tests.daemons import DaemonProcess, running

TARGETS = {"single_puts_per_s": 20_000, "batched_records_per_s": 200_000, "ack_p50_ms": 1.0}
MODES = ("single", "alone", "transaction", "sqlite")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def concurrent_puts(
    socket_path: Path, collection: str, clients: int, puts_each: int
) -> tuple[float, list[float]]:
    """`clients` connections, each sending its next put once the last one is answered; the
    seconds from the first send to the last answer, and every put's ack latency in seconds."""
    lines = [put_lines(f"{collection}-{client}", puts_each) for client in range(clients)]
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    latencies: list[float] = []
    try:
        for _ in range(clients):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.connect(str(socket_path))
        sent_at = [0.0] * clients
        answered = [0] * clients
        pending = [b""] * clients
        started = time.perf_counter()
        for client, sock in enumerate(sockets):
            selector.register(sock, selectors.EVENT_READ, client)
            sent_at[client] = time.perf_counter()
            sock.sendall(lines[client][0])
        remaining = clients
        deadline = time.monotonic() + CALL_TIMEOUT
        while remaining:
            ready = selector.select(timeout=1.0)
            if not ready and time.monotonic() > deadline:
                raise BenchError(f"no answer for {CALL_TIMEOUT} s; answered {answered}")
            for key, _ in ready:
                client, sock = key.data, key.fileobj
                assert isinstance(sock, socket.socket)
                chunk = sock.recv(65536)
                if not chunk:
                    raise BenchError(f"the daemon closed connection {client}")
                pending[client] += chunk
                while b"\n" in pending[client]:
                    answer, pending[client] = pending[client].split(b"\n", 1)
                    now = time.perf_counter()
                    if b'"ok":true' not in answer:
                        raise BenchError(f"a put failed: {answer[:300]!r}")
                    latencies.append(now - sent_at[client])
                    answered[client] += 1
                    if answered[client] == puts_each:
                        remaining -= 1
                        selector.unregister(sock)
                    else:
                        sent_at[client] = time.perf_counter()
                        sock.sendall(lines[client][answered[client]])
        return time.perf_counter() - started, latencies
    finally:
        selector.close()
        for sock in sockets:
            sock.close()


def sqlite_baseline(path: Path, commits: int, batch: int) -> tuple[list[float], float]:
    """Plain SQLite as the store opens it (WAL, synchronous=FULL): the latency of each of
    `commits` one-row insert+commits, and the seconds `batch`-row commits of 20 * batch rows
    take in all."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE records(coll TEXT, key TEXT, value BLOB, PRIMARY KEY(coll, key))")
        value = b"\x82\xa1n\xcd\x01\x00\xa4done\xc2"
        latencies = []
        for number in range(commits):
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute("INSERT INTO records VALUES('one', ?, ?)", (f"item-{number:08d}", value))
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        for start in range(0, 20 * batch, batch):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO records VALUES('many', ?, ?)",
                ((f"item-{n:08d}", value) for n in range(start, start + batch)),
            )
            db.execute("COMMIT")
        return latencies, time.perf_counter() - started
    finally:
        db.close()


def summary(samples: list[float], digits: int = 0) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), digits),
        "low": round(min(samples), digits),
        "high": round(max(samples), digits),
    }


def run(directory: Path, args: argparse.Namespace, result: dict[str, Any]) -> None:
    trees = {"this": None, **({"compare": str(args.compare)} if args.compare else {})}
    daemons = {name: DaemonProcess(directory, f"bench-{name}") for name in trees}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in [*trees, "sqlite"]}

    def note(tree: str, name: str, value: float) -> None:
        figures[tree].setdefault(name, []).append(value)

    # `python -m p2psync` looks in its working directory first: in a tree's checkout, that
    # tree's p2psync would run whatever PYTHONPATH says
    os.chdir(directory)
    for name, code in trees.items():
        if code is not None:  # the daemon runs the other tree's p2psync
            daemons[name].start(wait=False, env={"PYTHONPATH": code})
    with running(*daemons.values()):
        for name, code in trees.items():
            if code is not None:  # `running` waits only for the daemons it started
                daemons[name].wait_for_notification("READY=1")
        for round_number in range(args.rounds):
            steps = [(tree, mode) for mode in MODES for tree in trees if mode != "sqlite"]
            steps.append(("sqlite", "sqlite"))
            shift = round_number % len(steps)
            for tree, mode in steps[shift:] + steps[:shift]:
                tag = f"{mode}-{round_number}"
                if mode == "sqlite":
                    path = directory / f"{tag}.db"
                    one, many = sqlite_baseline(path, args.alone_puts, args.batch)
                    note(tree, "commit_p50_ms", percentile(one, 0.5) * 1000)
                    note(tree, "commits_per_s", len(one) / sum(one))
                    note(tree, "batched_records_per_s", 20 * args.batch / many)
                    continue
                socket_path = daemons[tree].socket_path
                pid = daemons[tree].process.pid  # type: ignore[union-attr]
                cpu_before = thread_times(pid)
                if mode == "single":
                    puts_each = args.puts // args.clients
                    seconds, acks = concurrent_puts(socket_path, tag, args.clients, puts_each)
                    note(tree, "single_puts_per_s", puts_each * args.clients / seconds)
                    note(tree, "single_ack_p50_ms", percentile(acks, 0.5) * 1000)
                    note(tree, "single_ack_p99_ms", percentile(acks, 0.99) * 1000)
                elif mode == "alone":
                    seconds, acks = concurrent_puts(socket_path, tag, 1, args.alone_puts)
                    note(tree, "alone_puts_per_s", args.alone_puts / seconds)
                    note(tree, "alone_ack_p50_ms", percentile(acks, 0.5) * 1000)
                    note(tree, "alone_ack_p99_ms", percentile(acks, 0.99) * 1000)
                else:
                    lines = transaction_lines(tag, args.records, args.batch)
                    seconds = pipelined(socket_path, lines)
                    note(tree, "batched_records_per_s", args.records / seconds)
                # the daemon's CPU (both threads) per write: what the machine's load and the
                # disk's fsync time change least
                written = {"single": args.puts // args.clients * args.clients}.get(
                    mode, args.alone_puts if mode == "alone" else args.records
                )
                cpu_us = cpu_between(cpu_before, thread_times(pid)) / written * 1e6
                note(tree, f"{mode}_cpu_us_per_record", cpu_us)
            shown = "; ".join(
                f"{tree}: "
                + ", ".join(f"{name} {values[-1]:,.2f}" for name, values in figures[tree].items())
                for tree in figures
            )
            print(f"round {round_number + 1}/{args.rounds}: {shown}", flush=True)
    # on a shared machine the rates follow the CPU share the daemon gets: say what it was
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    report(figures, result)


def report(figures: dict[str, dict[str, list[float]]], result: dict[str, Any]) -> None:
    baseline = {name: statistics.median(values) for name, values in figures["sqlite"].items()}
    result["sqlite"] = {name: summary(values, 3) for name, values in figures["sqlite"].items()}
    print(f"\nmedians over the rounds (lowest-highest); load average {result['load_average_1min']}")
    print(
        f"  sqlite baseline: one-row commit p50 {baseline['commit_p50_ms']:.3f} ms, "
        f"{baseline['commits_per_s']:,.0f} commits/s; {baseline['batched_records_per_s']:,.0f} "
        "records/s in batches"
    )
    for tree, measured in figures.items():
        if tree == "sqlite":
            continue
        result[tree] = {name: summary(values, 3) for name, values in measured.items()}
        median = {name: statistics.median(values) for name, values in measured.items()}
        result[tree]["ratios"] = {
            "single_puts_to_sqlite_commits": round(
                median["single_puts_per_s"] / baseline["commits_per_s"], 3
            ),
            "alone_ack_p50_to_sqlite_commit": round(
                median["alone_ack_p50_ms"] / baseline["commit_p50_ms"], 3
            ),
            "batched_to_sqlite_batched": round(
                median["batched_records_per_s"] / baseline["batched_records_per_s"], 3
            ),
        }
        result[tree]["targets_met"] = {
            "single_puts_per_s": median["single_puts_per_s"] >= TARGETS["single_puts_per_s"],
            "batched_records_per_s": median["batched_records_per_s"]
            >= TARGETS["batched_records_per_s"],
            "ack_p50_ms": median["single_ack_p50_ms"] <= TARGETS["ack_p50_ms"],
            "alone_ack_p50_ms": median["alone_ack_p50_ms"] <= TARGETS["ack_p50_ms"],
        }
        print(f"  {tree}:")
        for name, values in measured.items():
            print(
                f"    {name:<24} {statistics.median(values):>12,.3f} "
                f"({min(values):,.3f}-{max(values):,.3f})"
            )
        print(f"    ratios to the baseline: {result[tree]['ratios']}")
        print(f"    targets {TARGETS}: {result[tree]['targets_met']}")
    if "compare" in figures:  # before (the other tree) and after (this one), same rounds
        result["this_to_compare"] = {
            name: round(statistics.median(figures["this"][name]) / statistics.median(values), 3)
            for name, values in figures["compare"].items()
        }
        print(f"  this / compare (medians): {result['this_to_compare']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent sequential writers")
    parser.add_argument("--puts", type=int, default=32_000, help="single puts per round in all")
    parser.add_argument("--alone-puts", type=int, default=1000, help="puts of the lone client")
    parser.add_argument("--records", type=int, default=100_000, help="records per batched run")
    parser.add_argument("--batch", type=int, default=1000, help="puts per transaction")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 3)")
    parser.add_argument(
        "--compare", type=Path, default=None, help="a tree whose p2psync a second daemon runs"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the temporary state directory"
    )
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (a median of fewer says little)")
    result: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("clients", "puts", "alone_puts", "records", "batch", "rounds")
    }
    result["compare"] = str(args.compare) if args.compare else None
    result["targets"] = TARGETS
    sys.exit(
        run_and_report("p2psync-writes-", args.dir, lambda tmp: run(tmp, args, result), result)
    )


if __name__ == "__main__":
    main()
