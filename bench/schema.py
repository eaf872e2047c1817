"""What a share's schema manifest costs single puts: pipelined puts with and without one.

One real `p2psync daemon` (127.0.0.1, its own config and state in a temporary directory), with
three shares, each timed in every round, in an order that rotates from round to round:

- `no_manifest`: typed puts in a share that has no schema manifest (the baseline: what every
  share without one pays, a dict lookup per transaction);
- `unlisted_type`: the same puts in a share whose manifest lists other types only;
- `json_schema`: the same puts in a share whose manifest gives their type a JSON Schema, so
  each value is validated before it is committed.

The puts are request lines built beforehand and pipelined on a plain socket (bench/sync.py's
`pipelined`), so the daemon's work is what is timed. The check runs on the database thread while
the event loop parses the next requests, so a pipelined run can hide it: the check alone is also
timed in-process (`Replica.check_values` on a temporary replica, per op, same three cases). Prints
the median puts/s of each mode with its spread, the ratios of the medians to `no_manifest`, the
check's microseconds per op, and ends with one line `RESULT {json}`; asserts nothing. Sends
traffic only over Unix sockets, stops its daemon even on error.

    .venv/bin/python bench/schema.py --puts 20000 --rounds 5
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import run_and_report
from bench.sync import pipelined, record_value
from p2psync import entry, identity
from p2psync.replica import Replica
from tests.daemons import DaemonProcess, running

MODES = ("no_manifest", "unlisted_type", "json_schema")
TYPE = "item"
ITEM_SCHEMA = {  # what record_value() writes
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0}, "done": {"type": "boolean"}},
    "required": ["n", "done"],
    "additionalProperties": False,
}


def typed_put_lines(share: str, collection: str, count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "method": "put",
                "share": share,
                "collection": collection,
                "key": f"item-{number:08d}",
                "value": record_value(number),
                "type": TYPE,
                "schema_version": 1,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for number in range(count)
    ]


def prepare(daemon: DaemonProcess) -> None:
    for share in MODES:
        daemon.call("share_create", share=share.replace("_", "-"))
    daemon.call("schema_set", share="unlisted-type", type="other", current=1, json_schema={})
    daemon.call("schema_set", share="json-schema", type=TYPE, current=1, json_schema=ITEM_SCHEMA)


def check_cost(tmp: Path, count: int) -> dict[str, float]:
    """Microseconds per op of the check alone, median of 5 passes over `count` typed puts."""
    replica = Replica.open(tmp / "check.db", identity.DeviceIdentity.generate())
    try:
        for mode in MODES:
            replica.commit(mode.replace("_", "-"), replica.share_create_ops(mode.replace("_", "-")))
        for share, name, schema in (
            ("unlisted-type", "other", {}),
            ("json-schema", TYPE, ITEM_SCHEMA),
        ):
            ops, _ = replica.schema_set_ops(share, name, 1, None, schema)
            replica.commit(share, ops)
        ops = [
            entry.put("c", f"k{n}", msgpack.packb(record_value(n)), type=TYPE, schema_version=1)
            for n in range(count)
        ]
        cost = {}
        for mode in MODES:
            share = mode.replace("_", "-")
            passes = []
            for _ in range(5):
                started = time.perf_counter()
                for op in ops:  # one check per transaction of one put, as pipelined puts are
                    replica.check_values(share, (op,))
                passes.append((time.perf_counter() - started) / count * 1e6)
            cost[mode] = round(statistics.median(passes), 2)
        return cost
    finally:
        replica.close()


def run(tmp: Path, args: argparse.Namespace, result: dict[str, Any]) -> None:
    daemon = DaemonProcess(tmp, "bench")
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    with running(daemon):
        prepare(daemon)
        for round_number in range(args.rounds):
            turn = round_number % len(MODES)
            for mode in MODES[turn:] + MODES[:turn]:
                lines = typed_put_lines(mode.replace("_", "-"), f"r{round_number}", args.puts)
                seconds[mode].append(pipelined(daemon.socket_path, lines))
        written = daemon.call("scan", share="json-schema", collection="r0", limit=1)["items"]
        if not written:
            raise RuntimeError("the validated puts wrote nothing")
    rates = {mode: sorted(args.puts / s for s in seconds[mode]) for mode in MODES}
    medians = {mode: statistics.median(found) for mode, found in rates.items()}
    baseline = medians["no_manifest"]
    print(f"{args.puts} pipelined single puts per run, {args.rounds} rounds, median (spread):")
    for mode in MODES:
        low, high = rates[mode][0], rates[mode][-1]
        ratio = medians[mode] / baseline
        print(
            f"  {mode:14} {medians[mode]:9,.0f} puts/s ({low:,.0f}-{high:,.0f})"
            f"  {ratio:5.2f}x no_manifest"
        )
    result["puts_per_second"] = {mode: round(median) for mode, median in medians.items()}
    result["ratio_to_no_manifest"] = {mode: round(medians[mode] / baseline, 3) for mode in MODES}
    cost = check_cost(tmp, args.puts)
    print("the check alone, microseconds per put (in-process):")
    for mode in MODES:
        print(f"  {mode:14} {cost[mode]:8.2f} us")
    result["check_us_per_put"] = cost


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--puts", type=int, default=20_000, help="puts per run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (at least 3)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the temporary state directory"
    )
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (a median of fewer says little)")
    result: dict[str, Any] = {"puts": args.puts, "rounds": args.rounds}
    sys.exit(
        run_and_report("p2psync-schema-", args.dir, lambda tmp: run(tmp, args, result), result)
    )


if __name__ == "__main__":
    main()
