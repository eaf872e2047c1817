"""A live dashboard of a p2psync device, on asyncio with the async client.

    python examples/dashboard.py                    # Ctrl-C to stop
    python examples/dashboard.py --since 120        # resume after position 120
    python examples/dashboard.py --until-caught-up  # print what is there, then exit

It shows one share (`--share`, default "default") of the device whose socket it opens: every
change as it is applied there (written on this device or received from another one), and the
number of records per collection. It watches from a position (`--since`, default 0: replay
everything this device holds); when the replay reaches the head the daemon sends `caught_up`, and
the dashboard prints the counts. While the household is quiet the daemon sends a heartbeat every
`--heartbeat` seconds; the dashboard counts again then if anything changed since it last counted
(counting is one pass over the share: not something to do at every change). Every line about
the data starts with the position reached: pass it as `--since` to carry on from there later.
"""

import argparse
import asyncio
import io
import sys

from p2psync.client import AsyncClient, CaughtUp, ChangeEvent, Heartbeat


def shortened(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


async def print_counts(client: AsyncClient, share: str, position: int) -> None:
    collections = await client.collections(share=share)
    total = sum(info.records or 0 for info in collections)
    print(f"@{position} records: {total} in {len(collections)} collection(s)")
    for info in collections:
        print(f"@{position}   {info.name}: {info.records}")


async def run(args: argparse.Namespace) -> None:
    async with AsyncClient(args.socket) as client:
        hello = await client.hello(client="dashboard/1.0")
        print(f"device {hello.device}, daemon {hello.daemon}, protocol {hello.protocol}")
        if "watch.caught_up" not in hello.capabilities:
            raise SystemExit("this daemon is too old for the dashboard (protocol 1.0 needed)")
        watch = client.watch(since=args.since, share=args.share, heartbeat=args.heartbeat)
        counted = True  # nothing has changed since the last count
        async with watch as events:
            async for event in events:
                if isinstance(event, ChangeEvent):
                    for change in event.changes:
                        if change.collection.startswith("_"):
                            continue  # p2psync's own (membership): not counted either
                        what = "deleted" if change.deleted else f"= {shortened(change.value)}"
                        print(f"@{event.position} {change.collection}/{change.key} {what}")
                    counted = False
                elif isinstance(event, CaughtUp):
                    print(f"@{event.position} caught up: what follows is live")
                    await print_counts(client, args.share, event.position)
                    counted = True
                    if args.until_caught_up:
                        return
                elif isinstance(event, Heartbeat) and not counted:
                    await print_counts(client, args.share, event.position)
                    counted = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="the daemon's control socket (default: found for you)")
    parser.add_argument("--share", default="default", help="the share to show")
    parser.add_argument("--since", type=int, default=0, help="start after this position")
    parser.add_argument("--heartbeat", type=float, default=10, help="seconds between heartbeats")
    parser.add_argument(
        "--until-caught-up",
        "--once",
        action="store_true",
        help="exit once the replay has reached the head",
    )
    args = parser.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):  # each line as it comes, even into a pipe
        sys.stdout.reconfigure(line_buffering=True)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        print("stopped")


if __name__ == "__main__":
    main()
