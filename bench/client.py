"""Client benchmark: single puts through the Python clients against raw pipelined socket writes.

One real `p2psync daemon` (127.0.0.1, its own config and state in a temporary directory). Each
round times, in an order that rotates from round to round (so neither the database's growth nor
the machine's warming favours one):

- `raw`: request lines built beforehand, written by a thread on a plain socket while this one
  reads the answers (bench/sync.py's `pipelined`): what the daemon takes at most;
- `raw_window`: the same lines on a plain socket, but never more than 128 ahead of the answers
  that arrived (what the clients keep to): how much of the gap to `raw` is the window's;
- `put_many`: `Client.put_many`, which encodes and pipelines each put within the 128 window;
- `pipeline`: `with client.pipeline() as batch: batch.put(...)`, then every answer read;
- `async_put_many`: `AsyncClient.put_many` under asyncio;
- `sequential`: `Client.put`, one call after another (each waits for its answer).

Prints the median puts/s of every mode with its spread (lowest-highest), the ratios of the
medians to `raw` (the issue's target: pipelined client >= 80%) and of the clients to
`raw_window`, and ends with one line `RESULT {json}`; asserts nothing. Sends traffic only over
Unix sockets, stops its daemon even on error.

    .venv/bin/python bench/client.py --puts 20000 --sequential-puts 1000 --rounds 5
"""

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_and_report
from bench.sync import CALL_TIMEOUT, pipelined, put_lines, record_value
from p2psync.client import DEFAULT_WINDOW, AsyncClient, Client
from tests.daemons import DaemonProcess, running

PIPELINED_MODES = ("raw", "raw_window", "put_many", "pipeline", "async_put_many")
MODES = (*PIPELINED_MODES, "sequential")


def puts(collection: str, count: int) -> list[tuple[str, str, Any]]:
    """The same puts as bench/sync.py's put_lines, as (collection, key, value)."""
    return [(collection, f"item-{n:08d}", record_value(n)) for n in range(count)]


def time_raw(daemon: DaemonProcess, collection: str, count: int) -> float:
    return pipelined(daemon.socket_path, put_lines(collection, count))


def time_raw_window(daemon: DaemonProcess, collection: str, count: int) -> float:
    lines = put_lines(collection, count)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CALL_TIMEOUT)
        sock.connect(str(daemon.socket_path))
        started = time.perf_counter()
        sent = answered = 0
        pending = b""
        while answered < count:
            if sent - answered < DEFAULT_WINDOW and sent < count:
                upto = min(count, answered + DEFAULT_WINDOW)
                sock.sendall(b"".join(lines[sent:upto]))
                sent = upto
            pending += sock.recv(256 * 1024)
            *answers, pending = pending.split(b"\n")
            if any(b'"ok":true' not in answer for answer in answers):
                raise RuntimeError(f"a put failed: {answers[:3]}")
            answered += len(answers)
        return time.perf_counter() - started


def time_put_many(daemon: DaemonProcess, collection: str, count: int) -> float:
    writes = puts(collection, count)
    with Client(daemon.socket_path, timeout=CALL_TIMEOUT) as client:
        client.call("id")  # connect before the clock starts, as the raw baseline does
        started = time.perf_counter()
        written = client.put_many(writes)
        seconds = time.perf_counter() - started
    _check(written, count)
    return seconds


def time_pipeline(daemon: DaemonProcess, collection: str, count: int) -> float:
    writes = puts(collection, count)
    with Client(daemon.socket_path, timeout=CALL_TIMEOUT) as client:
        client.call("id")
        started = time.perf_counter()
        with client.pipeline() as batch:
            answers = [batch.put(c, key, value) for c, key, value in writes]
        seconds = time.perf_counter() - started
    _check([answer.result() for answer in answers], count)
    return seconds


def time_async_put_many(daemon: DaemonProcess, collection: str, count: int) -> float:
    writes = puts(collection, count)

    async def run() -> float:
        async with AsyncClient(daemon.socket_path, timeout=CALL_TIMEOUT) as client:
            await client.call("id")
            started = time.perf_counter()
            written = await client.put_many(writes)
            seconds = time.perf_counter() - started
        _check(written, count)
        return seconds

    return anyio.run(run, backend="asyncio")


def time_sequential(daemon: DaemonProcess, collection: str, count: int) -> float:
    writes = puts(collection, count)
    with Client(daemon.socket_path, timeout=CALL_TIMEOUT) as client:
        client.call("id")
        started = time.perf_counter()
        written = [client.put(c, key, value) for c, key, value in writes]
        seconds = time.perf_counter() - started
    _check(written, count)
    return seconds


def _check(written: list[Any], count: int) -> None:
    positions = [w.position for w in written]
    if len(positions) != count or positions != sorted(positions):
        raise RuntimeError(f"{len(positions)} answers of {count}, in order: {positions[:5]}...")


TIMERS: dict[str, Callable[[DaemonProcess, str, int], float]] = {
    "raw": time_raw,
    "raw_window": time_raw_window,
    "put_many": time_put_many,
    "pipeline": time_pipeline,
    "async_put_many": time_async_put_many,
    "sequential": time_sequential,
}


def summary(rates: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(rates)),
        "low": round(min(rates)),
        "high": round(max(rates)),
    }


def run(directory: Path, args: argparse.Namespace, result: dict[str, Any]) -> None:
    daemon = DaemonProcess(directory, "bench")
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with running(daemon):
        for round_number in range(args.rounds):
            shift = round_number % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                count = args.sequential_puts if mode == "sequential" else args.puts
                seconds = TIMERS[mode](daemon, f"{mode}-{round_number}", count)
                rates[mode].append(count / seconds)
            shown = ", ".join(f"{mode} {rates[mode][-1]:,.0f}" for mode in MODES)
            print(f"round {round_number + 1}/{args.rounds} (puts/s): {shown}", flush=True)
    raw = statistics.median(rates["raw"])
    result["puts_per_s"] = {mode: summary(rates[mode]) for mode in MODES}
    result["ratio_to_raw"] = {
        mode: round(statistics.median(rates[mode]) / raw, 3) for mode in MODES if mode != "raw"
    }
    within_window = statistics.median(rates["raw_window"])
    result["ratio_to_raw_window"] = {
        mode: round(statistics.median(rates[mode]) / within_window, 3)
        for mode in PIPELINED_MODES[2:]
    }
    # the same ratio round by round: how much of the spread is the machine's, not the client's
    result["ratio_to_raw_by_round"] = {
        mode: [round(r / b, 3) for r, b in zip(rates[mode], rates["raw"], strict=True)]
        for mode in PIPELINED_MODES[1:]
    }
    print(f"\nmedian puts/s over {args.rounds} rounds (lowest-highest), ratio to raw:")
    for mode in MODES:
        figures = result["puts_per_s"][mode]
        ratio = "" if mode == "raw" else f"  {result['ratio_to_raw'][mode]:.0%} of raw"
        print(
            f"  {mode:<15} {figures['median']:>9,} ({figures['low']:,}-{figures['high']:,}){ratio}"
        )
    against_window = result["ratio_to_raw_window"].items()
    shown = ", ".join(f"{mode} {ratio:.0%}" for mode, ratio in against_window)
    print(f"clients against raw_window (the same 128 window): {shown}")
    print("target: pipelined client >= 80% of raw")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--puts", type=int, default=20_000, help="puts per pipelined run")
    parser.add_argument("--sequential-puts", type=int, default=1000, help="puts per sequential run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (at least 3)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the temporary state directory"
    )
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (a median of fewer says little)")
    result: dict[str, Any] = {
        "puts": args.puts,
        "sequential_puts": args.sequential_puts,
        "rounds": args.rounds,
    }
    sys.exit(
        run_and_report("p2psync-client-", args.dir, lambda tmp: run(tmp, args, result), result)
    )


if __name__ == "__main__":
    main()
