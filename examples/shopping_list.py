"""A shopping list shared by every device of the household, on the blocking p2psync client.

    python examples/shopping_list.py add milk --quantity 2
    python examples/shopping_list.py check milk
    python examples/shopping_list.py list
    python examples/shopping_list.py watch          # Ctrl-C to stop

Each item is one record (key: the item's name) of type "shopping-item", schema_version 1.
`add` creates an item only if it is not there (`if_version=""`); `check` reads the item and
writes it back with `if_version` set to the version it read, so a change made meanwhile on this
device is never overwritten: it reads again and retries. Two devices that change an item while
apart leave it in conflict; `check` and `merge` resolve such a conflict with a merged value.
"""

import argparse
import contextlib
import sys
from typing import Any

from p2psync.client import CaughtUp, ChangeEvent, Client, Conflict, NotFound, Record

ITEM: dict[str, Any] = {
    "type": "shopping-item",
    "schema_version": 1,
}  # what every write of an item says


def merged_item(record: Record) -> dict:
    """One value for an item in conflict: done if any version says so, the largest quantity."""
    values = [s.value for s in record.siblings if not s.deleted and isinstance(s.value, dict)]
    return {
        "name": record.key,
        "quantity": max((v.get("quantity", 1) for v in values), default=1),
        "done": any(v.get("done", False) for v in values),
    }


def resolve_if_in_conflict(client: Client, args: argparse.Namespace, record: Record) -> Record:
    if not record.conflict:
        return record
    client.resolve(args.collection, record.key, value=merged_item(record), share=args.share, **ITEM)
    print(f"merged the versions of {record.key} written on different devices")
    return client.get(args.collection, record.key, share=args.share)


def add(client: Client, args: argparse.Namespace) -> None:
    item = {"name": args.item, "quantity": args.quantity, "done": False}
    try:
        client.put(args.collection, args.item, item, if_version="", share=args.share, **ITEM)
    except Conflict:  # if_version "": only if not there yet
        sys.exit(f"{args.item} is already on the list")
    print(f"added {args.item} x{args.quantity}")


def check(client: Client, args: argparse.Namespace) -> None:
    for _attempt in range(5):
        try:
            record = client.get(args.collection, args.item, share=args.share)
        except NotFound:
            sys.exit(f"{args.item} is not on the list")
        record = resolve_if_in_conflict(client, args, record)
        try:
            checked = {**record.value, "done": True}
            client.put(
                args.collection,
                args.item,
                checked,
                if_version=record.version,
                share=args.share,
                **ITEM,
            )
        except Conflict:  # changed since we read it: read it again
            continue
        print(f"checked off {args.item}")
        return
    sys.exit(f"{args.item} keeps changing; try again")


def show(client: Client, args: argparse.Namespace) -> None:
    for record in client.scan_all(args.collection, share=args.share):
        if record.conflict:  # scan leaves out the siblings: get has them
            record = client.get(args.collection, record.key, share=args.share)
        item = merged_item(record) if record.conflict else record.value
        mark = "x" if item.get("done") else " "
        note = "  (in conflict: run merge)" if record.conflict else ""
        print(f"[{mark}] {record.key} x{item.get('quantity', 1)}{note}")


def merge(client: Client, args: argparse.Namespace) -> None:
    in_conflict = client.conflicts(args.collection, share=args.share).items
    for record in in_conflict:  # these have their siblings
        resolve_if_in_conflict(client, args, record)
    if not in_conflict:
        print("no conflicts")


def watch(client: Client, args: argparse.Namespace) -> None:
    with client.watch(since=0, collection=args.collection, share=args.share) as events:
        for event in events:
            if isinstance(event, CaughtUp):
                print("(up to date; waiting for changes)", flush=True)
            elif isinstance(event, ChangeEvent):
                for change in event.changes:
                    done = isinstance(change.value, dict) and change.value.get("done")
                    sign = "-" if change.deleted else "x" if done else "+"
                    print(f"{sign} {change.key}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="the daemon's control socket (default: found for you)")
    parser.add_argument("--share", default="default", help="the share holding the list")
    parser.add_argument("--collection", default="shopping", help="the collection of the list")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("add", "check"):
        command = commands.add_parser(name)
        command.add_argument("item")
        if name == "add":
            command.add_argument("--quantity", type=int, default=1)
    for name in ("list", "merge", "watch"):
        commands.add_parser(name)
    args = parser.parse_args()
    run = {"add": add, "check": check, "list": show, "merge": merge, "watch": watch}
    # Ctrl-C ends `watch`
    with Client(args.socket) as client, contextlib.suppress(KeyboardInterrupt):
        run[args.command](client, args)


if __name__ == "__main__":
    main()
