"""A todo list moving from schema v1 to v2 while the old app keeps running on other devices.

    python examples/todo_migration.py --app 2 setup           # the manifest: v1 and v2 (admin)
    python examples/todo_migration.py --app 1 add milk        # the old app writes v1
    python examples/todo_migration.py --app 2 add tea         # the new app writes v2
    python examples/todo_migration.py --app 1 list            # v1 only, and what it cannot read
    python examples/todo_migration.py --app 2 list            # both: v1 converted as it is read
    python examples/todo_migration.py --app 2 migrate         # v1 records written again as v2
    python examples/todo_migration.py --app 1 outdated        # does the share hold newer todos?
    python examples/todo_migration.py --app 2 setup --retire-v1   # once no device runs app 1

v1 values are {"title", "done": bool}; v2 values {"title", "state": "open"|"doing"|"done"}. The
new app reads both and writes v2; nothing is rewritten when it is read. `migrate` writes each
v1 record again as v2 with a value computed from the v1 value alone, so two devices that run it
while apart write the same value, which is one value when they meet, not a conflict; it writes
with `if_version`, so a record changed meanwhile on this device is read again, not overwritten.
The old app declares that it reads v1 (`reads`), lists only v1 records (a type filter) and is
told (`outdated`) when the share holds newer ones. Once `oldest_written` is raised to 2, every
daemon that has the manifest refuses the old app's writes with a message saying why.
"""

import argparse
import sys
from typing import Any

from p2psync.client import CaughtUp, Client, Conflict, InvalidValue, OutdatedEvent, Record

TYPE = "todo"
V1 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "done": {"type": "boolean"}},
    "required": ["title", "done"],
    "additionalProperties": False,
}
V2 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "state": {"enum": ["open", "doing", "done"]}},
    "required": ["title", "state"],
    "additionalProperties": False,
}


def as_v2(record: Record) -> dict[str, Any]:
    """A record of either version as v2, in memory (the stored record stays as it is). Only the
    v1 value decides the result: the same on every device."""
    if record.schema_version == 1:
        return {"title": record.value["title"], "state": "done" if record.value["done"] else "open"}
    return dict(record.value)


def setup(client: Client, args: argparse.Namespace) -> None:
    known = client.schema_get(share=args.share).get(TYPE)
    if known is None:
        client.schema_set(TYPE, 1, json_schema=V1, share=args.share)
    if known is None or known.current < 2:
        client.schema_set(TYPE, 2, json_schema=V2, share=args.share)
    if args.retire_v1:
        client.schema_set(TYPE, 2, oldest_written=2, share=args.share)
    now = client.schema_get(share=args.share)[TYPE]
    print(f"{TYPE}: current v{now.current}, written from v{now.oldest_written}")


def add(client: Client, args: argparse.Namespace) -> None:
    value: dict[str, Any] = {"title": args.title}
    value.update({"done": False} if args.app == 1 else {"state": "open"})
    try:
        client.put(
            args.collection, args.title, value, type=TYPE, schema_version=args.app, share=args.share
        )
    except InvalidValue as refused:  # e.g. v1 is no longer written: this app is too old
        sys.exit(f"cannot add {args.title}: {refused.message}")
    print(f"added {args.title} (v{args.app})")


def show(client: Client, args: argparse.Namespace) -> None:
    newest = args.app  # app 1 reads v1 only; app 2 reads v1 and v2
    for record in client.scan_all(
        args.collection, type=TYPE, max_schema_version=newest, share=args.share
    ):
        if args.app == 1:
            mark = "x" if record.value["done"] else " "
        else:
            mark = {"open": " ", "doing": "~", "done": "x"}[as_v2(record)["state"]]
        print(f"[{mark}] {record.key}  (v{record.schema_version})")
    if args.app == 1:
        hidden = sum(
            1
            for _ in client.scan_all(
                args.collection, type=TYPE, min_schema_version=2, share=args.share
            )
        )
        if hidden:
            print(f"({hidden} todo(s) of a newer version not shown: upgrade this app)")


def migrate(client: Client, args: argparse.Namespace) -> None:
    if args.app < 2:
        sys.exit("app 1 knows no newer version to migrate to")
    migrated = 0
    for record in client.scan_all(
        args.collection, type=TYPE, max_schema_version=1, share=args.share
    ):
        try:
            client.put(
                args.collection,
                record.key,
                as_v2(record),
                type=TYPE,
                schema_version=2,
                if_version=record.version,
                share=args.share,
            )
            migrated += 1
        except Conflict:  # written meanwhile: the next run reads it again
            print(f"{record.key} changed meanwhile; run migrate again")
    print(f"migrated {migrated} todo(s) to v2")


def outdated(client: Client, args: argparse.Namespace) -> None:
    """What the share holds that is newer than this app reads, then exit."""
    told = []
    with client.watch(
        collection=args.collection, share=args.share, reads={TYPE: args.app}, idle_timeout=30
    ) as events:
        for event in events:
            if isinstance(event, OutdatedEvent):
                told.append(event)
            elif isinstance(event, CaughtUp):
                break
    for event in told:
        print(
            f"the share holds {event.type} v{event.schema_version}; this app reads v{event.reads}"
        )
    if not told:
        print("up to date")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="the daemon's control socket (default: found for you)")
    parser.add_argument("--share", default="default", help="the share holding the todos")
    parser.add_argument("--collection", default="todos", help="the collection of the todos")
    parser.add_argument("--app", type=int, choices=(1, 2), default=2, help="the app's version")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("add").add_argument("title")
    commands.add_parser("setup").add_argument(
        "--retire-v1", action="store_true", help="refuse v1 writes from now on (oldest_written 2)"
    )
    for name in ("list", "migrate", "outdated"):
        commands.add_parser(name)
    args = parser.parse_args()
    run = {"setup": setup, "add": add, "list": show, "migrate": migrate, "outdated": outdated}
    with Client(args.socket) as client:
        run[args.command](client, args)


if __name__ == "__main__":
    main()
