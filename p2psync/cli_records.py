"""The commands about records: `put`, `resolve`, `rm`, `get`, `ls`, `watch` and `conflicts`
(their parser, help, calls and output).

`cli.py` hands this module its `command` helper, `add_share_option` and its number types
(`add_record_commands`) and runs the `cmd_*` functions like those of `cli_commands.py`, with the
same `Command`. It owns how a VALUE argument becomes a value (JSON, or text as it is) and how a
version given to --pick is found among a record's. It never opens the database or the network
itself: everything goes through `client.Client`.
"""

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from . import cli_format
from .cli_commands import (
    EXIT_OK,
    Command,
    UsageError,
    device_names,
    value_cell,
    when,
    write_lines,
)
from .cli_format import DEFAULT_SHARE, compact, fit, safe_text, table
from .client import ControlError, NotFound
from .identity import short_id

LS_PAGE = 1000

WINNER_NOTE = (
    "* the version every device shows until the conflict is resolved; keep one of them with "
    "`p2psync resolve COLLECTION KEY --pick VERSION`\n"
)


# helpers --------------------------------------------------------------------------------------


def _where(args: argparse.Namespace) -> str:
    return f"{args.collection}/{args.key}{_in_share(args)}"


def _in_share(args: argparse.Namespace) -> str:
    """` in share NAME`, for messages about another share than the one every device is in."""
    return "" if args.share == DEFAULT_SHARE else f" in share {safe_text(args.share)}"


def _share_flag(args: argparse.Namespace) -> str:
    """The --share option that repeats this command's share in a suggested command."""
    return "" if args.share == DEFAULT_SHARE else f" --share {args.share}"


# parser ---------------------------------------------------------------------------------------


def add_record_commands(
    command: Callable[..., argparse.ArgumentParser],
    add_share_option: Callable[[argparse.ArgumentParser], None],
    positive: Callable[[str], int],
    natural: Callable[[str], int],
) -> None:
    """The record commands' subparsers, in the order `p2psync --help` lists them."""
    value_help = (
        "the value as JSON (e.g. 42, true, '{\"a\": 1}'); anything else is stored as a string, "
        "but text starting with {, [ or \" must be valid JSON (or pass --string); '-' reads it "
        "from stdin"
    )
    put = command("put", cmd_put, "write a record")
    put.add_argument("collection", metavar="COLLECTION")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help=value_help)
    _add_value_options(put, add_share_option)
    resolve = command(
        "resolve",
        cmd_resolve,
        "settle a conflict by writing the value to keep, or by keeping one of the versions",
        "`p2psync get COLLECTION KEY --all` and `p2psync conflicts` show the versions, each with "
        "its VERSION; --pick takes it whole or its start. A record without a conflict (or that "
        "does not exist) is refused, since resolving it would only overwrite it: --force writes "
        "anyway. Exit 1 when there is no conflict or the picked version is gone, 4 when there is "
        "no such record.",
        '  p2psync resolve notes shopping \'{"items": ["milk", "eggs"]}\'\n'
        "  p2psync resolve notes shopping --pick q2Xo0dW3mL8yJc1V\n"
        "  p2psync resolve notes shopping --pick q2Xo    (the start of a version is enough)\n",
    )
    resolve.add_argument("collection", metavar="COLLECTION")
    resolve.add_argument("key", metavar="KEY")
    resolve.add_argument("value", metavar="VALUE", nargs="?", help=f"{value_help} (or use --pick)")
    resolve.add_argument(
        "--pick",
        metavar="VERSION",
        help="keep this existing version (as `get --all` shows it), with its type and schema "
        "version; a deleted one deletes",
    )
    resolve.add_argument(
        "--force",
        action="store_true",
        help="write even if the record has no conflict or does not exist",
    )
    _add_value_options(resolve, add_share_option)
    get = command("get", cmd_get, "print a record's value as JSON")
    get.add_argument("collection", metavar="COLLECTION")
    get.add_argument("key", metavar="KEY")
    get.add_argument("--all", action="store_true", help="show every version (conflicts)")
    add_share_option(get)
    rm = command("rm", cmd_rm, "delete a record")
    rm.add_argument("collection", metavar="COLLECTION")
    rm.add_argument("key", metavar="KEY")
    add_share_option(rm)
    ls = command(
        "ls",
        cmd_ls,
        "list the records of a collection, by key; without one, the collections and their counts",
        "",
        "  p2psync ls                  every collection, with its live records\n"
        "  p2psync ls notes            the records of notes\n"
        "  p2psync ls notes 2024-      those whose key starts with 2024-\n",
    )
    ls.add_argument(
        "collection",
        metavar="COLLECTION",
        nargs="?",
        help="list its records (without it: the collections)",
    )
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="only keys with it")
    ls.add_argument("--limit", metavar="N", type=positive, help="at most N records")
    add_share_option(ls)
    watch = command(
        "watch",
        cmd_watch,
        "print changes as they happen",
        "To resume without missing or repeating anything, pass the last position printed.",
    )
    watch.add_argument("--since", metavar="N", type=natural, help="start after position N")
    watch.add_argument("--collection", metavar="C", help="only changes of collection C")
    add_share_option(watch)
    conflicts = command("conflicts", cmd_conflicts, "list records with conflicting versions")
    conflicts.add_argument("collection", metavar="COLLECTION", nargs="?")
    add_share_option(conflicts)


def _add_value_options(
    write: argparse.ArgumentParser, add_share_option: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The options of put and resolve beside their VALUE."""
    write.add_argument(
        "--string",
        action="store_true",
        help="store VALUE as a string, as it is (even if it looks like JSON)",
    )
    write.add_argument("--type", metavar="TYPE", help="record type, kept with the value")
    write.add_argument("--schema-version", metavar="N", type=int, help="schema version")
    add_share_option(write)




# commands -------------------------------------------------------------------------------------


JSON_OPENERS = ("{", "[", '"')


def parse_value(text: str) -> Any:
    """JSON when it parses as JSON, else the text itself; but text that starts like a JSON
    object, array or string (`{`, `[`, `"`) and does not parse is a UsageError: it is much more
    likely broken JSON (`{"a":`) than a string meant to be stored as is (that takes --string)."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        if text.lstrip().startswith(JSON_OPENERS):
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise UsageError(
                f"the value looks like JSON but is not valid JSON ({reason}{where}): fix it, or "
                "pass --string to store the text as it is"
            ) from None
        return text


def _not_json(name: str) -> Any:
    raise ValueError(name)


def _value_argument(args: argparse.Namespace) -> Any:
    text: str = args.value
    if text == "-":
        try:
            text = sys.stdin.buffer.read().decode()
        except UnicodeDecodeError:
            raise UsageError("standard input is not UTF-8 text") from None
        text = text.removesuffix("\n")
    return text if args.string else parse_value(text)


def _write_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "collection": args.collection,
        "key": args.key,
        "value": _value_argument(args),
        "type": args.type,
        "schema_version": args.schema_version,
        "share": args.share,
    }


def cmd_put(c: Command) -> int:
    done = c.client.call("put", **_write_params(c.args))
    return c.done(done, f"wrote {_where(c.args)} (position {done['position']})")


def cmd_resolve(c: Command) -> int:
    """Settle a conflict with a new VALUE or by keeping one version (--pick). Unless --force, a
    record without a conflict is refused (`no_conflict`): resolving it would only overwrite it,
    most often a mistyped key or a conflict someone else already settled."""
    args = c.args
    if (args.value is None) == (args.pick is None):
        raise UsageError(
            "give either the VALUE to keep or --pick VERSION (one of the versions `p2psync get "
            f"{args.collection} {args.key} --all{_share_flag(args)}` shows)"
        )
    if args.pick is not None and (args.string or args.type or args.schema_version is not None):
        raise UsageError(
            "--pick keeps a version as it is: --string, --type and --schema-version go with VALUE"
        )
    if args.pick is None:
        params = _write_params(args)  # a broken VALUE is a usage error before anything is asked
        if not args.force:
            _record_to_resolve(c)
        done = c.client.call("resolve", **params)
        return c.done(done, f"resolved {_where(args)} (position {done['position']})")
    version = _picked_version(c, _record_to_resolve(c))
    done = c.client.call(
        "resolve",
        collection=args.collection,
        key=args.key,
        pick={"version": version},
        share=args.share,
    )
    return c.done(
        {**done, "picked": version},
        f"resolved {_where(args)}: kept version {version} (position {done['position']})",
    )


def _record_to_resolve(c: Command) -> dict[str, Any] | None:
    """The record with all its versions; refused when it has no conflict, unless --force (then
    None when it does not exist: the daemon decides)."""
    args = c.args
    try:
        record: dict[str, Any] = c.client.call(
            "get", collection=args.collection, key=args.key, all=True, share=args.share
        )
    except NotFound as exc:
        if args.force:
            return None
        raise NotFound(
            f"{exc.message}: nothing to resolve (check the collection and key: `p2psync ls "
            f"{args.collection}{_share_flag(args)}`)"
        ) from None
    if not record.get("conflict") and not args.force:
        state = "was deleted and has" if record.get("deleted") else "has"
        raise ControlError(
            "no_conflict",
            f"{_where(args)} {state} no conflict: there is nothing to resolve (someone may have "
            "resolved it already; `p2psync put` changes a record; --force writes anyway)",
        )
    return record


def _picked_version(c: Command, record: Mapping[str, Any] | None) -> str:
    """The whole version that --pick names: a version of the record, or the start of exactly one
    (as `get --all` and `conflicts` show them)."""
    wanted: str = c.args.pick
    if record is None:  # --force on a record that is not there: the daemon will say
        return wanted
    versions = [str(s["version"]) for s in record.get("siblings") or () if s.get("version")]
    if wanted in versions:
        return wanted
    matching = [version for version in versions if wanted and version.startswith(wanted)]
    if len(matching) == 1:
        return matching[0]
    shown = ", ".join(versions) or "none"
    if matching:
        raise UsageError(f"--pick {wanted} matches several versions ({', '.join(matching)})")
    raise ControlError(
        "conflict",
        f"{_where(c.args)} has no version {safe_text(wanted)}; its versions are: {shown} "
        f"(`p2psync get {c.args.collection} {c.args.key} --all{_share_flag(c.args)}`)",
    )


def cmd_rm(c: Command) -> int:
    done = c.client.call("delete", collection=c.args.collection, key=c.args.key, share=c.args.share)
    return c.done(done, f"deleted {_where(c.args)} (position {done['position']})")


def cmd_get(c: Command) -> int:
    found = c.client.call(
        "get", collection=c.args.collection, key=c.args.key, all=c.args.all, share=c.args.share
    )
    if c.json:
        return c.say(found, "")
    if c.args.all:
        _print_siblings(c.out, found, device_names(c.client))
        if found["conflict"]:
            c.out.write(WINNER_NOTE)
        return EXIT_OK
    c.out.write(compact(found["value"]) + "\n")
    if found["conflict"]:
        sys.stderr.write(
            f"p2psync: note: {_where(c.args)} has {len(found['siblings'])} conflicting versions; "
            f"this is the newest. See them with `p2psync get {c.args.collection} {c.args.key} "
            f"--all{_share_flag(c.args)}` and settle with `p2psync resolve {c.args.collection} "
            f"{c.args.key} VALUE{_share_flag(c.args)}` (a new value) or `--pick VERSION` (keep "
            "one of them)\n"
        )
    return EXIT_OK


def _print_siblings(
    out: TextIO, record: Mapping[str, Any], names: Mapping[str, str], indent: str = ""
) -> None:
    """A record's versions, each with the name of the device that wrote it; `*` marks the one
    every device shows (the winner) until the conflict is resolved."""
    rows = [
        [
            indent + ("*" if s.get("version") == record.get("version") else " "),
            fit(safe_text(names.get(s["origin"], s["origin"])), cli_format.NAME_WIDTH),
            short_id(s["origin"]),
            when(s["hlc"]),
            safe_text(str(s.get("version") or "-")),
            "(deleted)" if s["deleted"] else value_cell(s["value"]),
        ]
        for s in record["siblings"]
    ]
    write_lines(out, table([f"{indent} ", "ORIGIN", "ID", "TIME", "VERSION", "VALUE"], rows))


def cmd_ls(c: Command) -> int:
    if c.args.collection is None:
        return _ls_collections(c)
    wanted = c.args.limit
    after = None
    rows = []
    while wanted is None or wanted > 0:
        page = c.client.call(
            "scan",
            collection=c.args.collection,
            prefix=c.args.prefix,
            after=after,
            limit=min(LS_PAGE, wanted or LS_PAGE),
            share=c.args.share,
        )
        for item in page["items"]:
            if c.json:
                c.out.write(compact(item) + "\n")
            else:
                value = value_cell(item["value"]) + ("  (in conflict)" if item["conflict"] else "")
                rows.append([safe_text(item["key"]), value])
        if wanted is not None:
            wanted -= len(page["items"])
        after = page["next"]
        if after is None:
            break
    if not c.json:
        if rows:
            write_lines(c.out, table(["KEY", "VALUE"], rows))
        else:
            sys.stderr.write(f"p2psync: no records in {c.args.collection}{_in_share(c.args)}\n")
    return EXIT_OK


def _ls_collections(c: Command) -> int:
    """The share's collections with their live records (--json: one object per line)."""
    found = c.client.call("collections", share=c.args.share)["collections"]
    if c.json:
        write_lines(c.out, (compact(item) for item in found))
    elif found:
        rows = [[safe_text(item["collection"]), str(item["records"])] for item in found]
        write_lines(c.out, table(["COLLECTION", "RECORDS"], rows))
    else:
        sys.stderr.write(f"p2psync: no records{_in_share(c.args)}\n")
    return EXIT_OK


def cmd_watch(c: Command) -> int:
    # the lines as the daemon sends them: --json passes on what the typed events would drop
    with c.client.stream(
        "watch", since=c.args.since, collection=c.args.collection, share=c.args.share
    ) as events:
        if not c.json:
            position = events.result["position"]
            sys.stderr.write(f"p2psync: watching from position {position}; Ctrl-C stops\n")
        for event in events:
            if event.get("event") != "change":  # caught_up: the CLI shows only changes
                continue
            if c.json:
                c.out.write(compact(event) + "\n")
            else:
                for change in event.get("changes", ()):  # other events (caught_up...) say nothing
                    where = safe_text(f"{change['collection']}/{change['key']}")
                    shown = "" if change["deleted"] else "  " + value_cell(change["value"])
                    c.out.write(f"{event['position']}  {change['op']:<6}  {where}{shown}\n")
            c.out.flush()
    return EXIT_OK


def cmd_conflicts(c: Command) -> int:
    found = c.client.call("conflicts", collection=c.args.collection, share=c.args.share)

    def human() -> None:
        names = device_names(c.client) if found["items"] else {}
        if not found["items"]:
            c.out.write(f"no conflicts{_in_share(c.args)}\n")
        for item in found["items"]:
            where = safe_text(f"{item['collection']}/{item['key']}")
            c.out.write(f"{where}: {len(item['siblings'])} versions\n")
            _print_siblings(c.out, item, names, indent="  ")
        if found["items"]:
            c.out.write(WINNER_NOTE)
        if found.get("more"):
            c.out.write("(more not shown: resolve these first, or ask for one collection)\n")

    return c.say(found, human)
