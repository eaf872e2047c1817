"""What each `p2psync` subcommand does: its calls to the daemon and what it prints.

One `cmd_*` function per subcommand (but `daemon`), each given a `Command`: the connected client,
the parsed arguments and where to print. It prints for people (aligned tables, values as compact
JSON, via `cli_format.py`) or, with --json, for programs, and returns the exit code. It never
parses the command line (`cli.py` does, and maps errors to exit codes), and never opens the
database or the network itself: everything goes through `client.Client`.
"""

import argparse
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import cli_format, doctor, hlc
from .cli_format import DEFAULT_SHARE, compact, fit, safe_text, table
from .client import Client, ControlError, NotFound
from .identity import short_id

# exit codes, of every command and of `cli.main`
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_NOT_FOUND = 4  # the daemon answered not_found: no such record, share, device or grant
EXIT_INTERRUPTED = 130
LS_PAGE = 1000
CELL_WIDTH = 80
JOIN_TIMEOUT_SECONDS = 120.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"
WINNER_NOTE = (
    "* the version every device shows until the conflict is resolved; keep one of them with "
    "`p2psync resolve COLLECTION KEY --pick VERSION`\n"
)


class UsageError(Exception):
    """Bad input on our side (a file that cannot be read, a value that is not text)."""


# output ---------------------------------------------------------------------------------------


def report_error(as_json: bool, code: str, message: str, exit_code: int) -> int:
    """Say on stderr why a command failed and return its exit code: prose for people, or with
    --json one line `{"error": {"code": ..., "message": ...}}` (the daemon's code, or a client
    side one: not_running, permission_denied, timeout, protocol, usage...)."""
    if as_json:
        sys.stderr.write(compact({"error": {"code": code, "message": message}}) + "\n")
    else:
        sys.stderr.write(f"p2psync: {message}\n")
    return exit_code


def value_cell(value: Any) -> str:
    return fit(safe_text(compact(value)), CELL_WIDTH)


def write_lines(out: TextIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(line + "\n")


def when(stamp: int | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(hlc.to_millis(stamp) / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _where(args: argparse.Namespace) -> str:
    return f"{args.collection}/{args.key}{_in_share(args)}"


def _in_share(args: argparse.Namespace) -> str:
    """` in share NAME`, for messages about another share than the one every device is in."""
    return "" if args.share == DEFAULT_SHARE else f" in share {safe_text(args.share)}"


def _share_flag(args: argparse.Namespace) -> str:
    """The --share option that repeats this command's share in a suggested command."""
    return "" if args.share == DEFAULT_SHARE else f" --share {args.share}"


# commands -------------------------------------------------------------------------------------


class Command:
    """One subcommand run: the client, the parsed arguments and where to print."""

    def __init__(self, client: Client, args: argparse.Namespace, out: TextIO) -> None:
        self.client = client
        self.args = args
        self.out = out
        self.json = bool(getattr(args, "json", False))
        self.quiet = getattr(args, "verbosity", 0) < 0  # -q

    def say(self, result: Any, human: str | Callable[[], object]) -> int:
        if self.json:
            self.out.write(compact(result) + "\n")
        elif callable(human):
            human()
        else:
            self.out.write(human + "\n")
        return EXIT_OK

    def done(self, result: Any, human: str | Callable[[], object]) -> int:
        """Say what a command did: like `say`, but -q leaves it out (not --json's answer)."""
        if self.quiet and not self.json:
            return EXIT_OK
        return self.say(result, human)


def cmd_id(c: Command) -> int:
    own = c.client.call("id")
    return c.say(own, f"device  {own['device']}\nname    {own['name']}")


def cmd_export_cert(c: Command) -> int:
    own = c.client.call("id")
    if c.args.out is None:
        return c.say(own, lambda: c.out.write(own["cert"]))
    try:
        Path(c.args.out).write_text(own["cert"])
    except OSError as exc:
        raise UsageError(f"cannot write {c.args.out}: {exc.strerror or exc}") from None
    return c.done(
        {**own, "out": c.args.out},
        f"wrote the certificate of {own['name']} ({own['device']}) to {c.args.out}; on the other "
        f"device run: p2psync trust {Path(c.args.out).name}",
    )


def cmd_trust(c: Command) -> int:
    try:
        cert = _read_text(c.args.certfile)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read certificate {c.args.certfile}: {exc}") from None
    done = c.client.call(
        "trust", cert=cert, name=c.args.name, address=c.args.address, readmit=c.args.readmit
    )
    return c.done(
        done,
        f"trusted {done.get('name')} ({done.get('device')}); it syncs when both daemons can reach "
        "each other",
    )


def _read_text(name: str) -> str:
    return sys.stdin.read() if name == "-" else Path(name).read_text()


def cmd_revoke(c: Command) -> int:
    done = c.client.call("revoke", device=c.args.device)
    return c.done(done, cli_format.revoked_message(done))


def cmd_reload(c: Command) -> int:
    done = c.client.call("reload")
    c.done(done, lambda: _print_mapping(c.out, done))
    # `systemctl reload` runs this command: a refused config file must fail it
    return EXIT_OK if done.get("reloaded", True) else EXIT_FAILED


def _print_mapping(out: TextIO, found: Mapping[str, Any]) -> None:
    rows = [[name, v if isinstance(v, str) else compact(v)] for name, v in found.items()]
    write_lines(out, table(None, [[name, fit(safe_text(text), 200)] for name, text in rows]))


def _status_and_peers(client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status = client.call("status")
    return status, [] if _is_app(status) else client.call("peers")


def _is_app(status: Mapping[str, Any]) -> bool:
    """An app (not an admin) gets a reduced status and may not ask for peers."""
    access = status.get("access")
    return isinstance(access, Mapping) and access.get("admin") is False


def _status_screen(
    status: dict[str, Any],
    peers: list[dict[str, Any]],
    rates: Mapping[str, float] | None = None,
) -> list[str]:
    if _is_app(status):
        return cli_format.app_status_lines(status)
    return cli_format.status_lines(status, peers, rates)


def cmd_status(c: Command) -> int:
    if c.args.watch:
        return _watch_status(c)
    status, peers = _status_and_peers(c.client)
    return c.say(
        status if _is_app(status) else {**status, "peers": peers},
        lambda: write_lines(c.out, _status_screen(status, peers)),
    )


def _watch_status(c: Command) -> int:
    """Redraw the status every interval until Ctrl-C; rates come from successive samples."""
    meter = cli_format.RateMeter()
    clear = CLEAR_SCREEN if c.out.isatty() else ""
    try:
        while True:
            status, peers = _status_and_peers(c.client)
            rates = meter.update(time.monotonic(), peers)
            if c.json:
                c.out.write(compact({**status, "peers": peers}) + "\n")
            else:
                heading = f"{time.strftime('%H:%M:%S')}  every {c.args.interval:g} s, Ctrl-C stops"
                frame = [heading, "", *_status_screen(status, peers, rates)]
                # Without a terminal (a log, a pipe), snapshots follow each other, blank-separated.
                c.out.write(clear + "\n".join(frame) + ("\n" if clear else "\n\n"))
            c.out.flush()
            time.sleep(c.args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_peers(c: Command) -> int:
    peers = c.client.call("peers")
    nearby = c.client.call("nearby") if c.args.nearby else None

    def human() -> None:
        write_lines(c.out, cli_format.peers_table(peers) if peers else [cli_format.NO_PEERS])
        if nearby is not None:
            discovery = {} if nearby else c.client.call("status").get("discovery") or {}
            shown = cli_format.nearby_lines(nearby, discovery_on=discovery.get("enabled", True))
            write_lines(c.out, ["", "nearby on the LAN:", *shown])

    return c.say(peers if nearby is None else {"members": peers, "nearby": nearby}, human)


def cmd_devices(c: Command) -> int:
    devices = c.client.call("devices")
    now = time.time()
    return c.say(devices, lambda: write_lines(c.out, cli_format.devices_table(devices, now)))


def cmd_rename(c: Command) -> int:
    done = c.client.call("rename", name=c.args.name)
    return c.done(
        done,
        f"this device is now called {safe_text(done['name'])} (was {safe_text(done['previous'])});"
        " the other devices learn it when they sync",
    )


def cmd_pair(c: Command) -> int:
    pairing_params = {"ttl": c.args.ttl, "readmit": c.args.readmit, "shares": c.args.shares}
    with c.client.stream("pair", **pairing_params) as pairing:
        # Ctrl-C any time after the code is shown withdraws it (closing the connection does
        # that on the daemon): the try starts before the code is printed, so a signal that
        # lands right after the print is caught here too.
        try:
            if c.json:
                c.out.write(compact(pairing.result) + "\n")
            else:
                c.out.write(cli_format.pairing_instructions(pairing.result))
                others = [s for s in c.args.shares or [] if s != DEFAULT_SHARE]
                if others:
                    given = ", ".join(map(safe_text, others))
                    c.out.write(f"It will be put in shares {given} as well as {DEFAULT_SHARE}.\n")
                c.out.write("Waiting for the other device...\n")
            c.out.flush()
            event = next(pairing)
        except KeyboardInterrupt:
            sys.stderr.write("p2psync: pairing cancelled; that code no longer works\n")
            return EXIT_INTERRUPTED
    if c.json:
        c.out.write(compact(event) + "\n")
    if event.get("event") == "paired":
        if not c.json:
            c.out.write(cli_format.paired_message(event) + "\n")
        return EXIT_OK
    error = event.get("error") if event.get("event") == "pairing_failed" else None
    if not isinstance(error, dict):
        raise ControlError("protocol", f"the daemon ended the pairing with {compact(event)}")
    message = str(error.get("message") or error.get("code"))
    if "p2psync pair" not in message:
        message += "; each code works once: run `p2psync pair` again for a new one"
    code = str(error.get("code") or "pairing_failed")
    return report_error(c.json, code, f"pairing failed: {message}", EXIT_FAILED)


def cmd_join(c: Command) -> int:
    if not c.json:
        where = c.args.address or "the device showing that code on the LAN"
        sys.stderr.write(f"p2psync: contacting {where}...\n")
    # Finding the device and the key exchange take longer than an ordinary request.
    with Client(c.client.socket_path, timeout=JOIN_TIMEOUT_SECONDS) as client:
        done = client.call("join", code=c.args.code, address=c.args.address)
    return c.done(done, cli_format.joined_message(done))


def cmd_ui(c: Command) -> int:
    link = c.client.call("ui_link")
    opened = not c.args.no_open and not c.json and _has_display() and webbrowser.open(link["url"])
    return c.say(
        link,
        f"{link['url']}\n(works once, within {link['expires_in']} s"
        + ("; opened in your browser)" if opened else "; open it in a browser on this device)"),
    )


def _has_display() -> bool:
    """A browser can only show the page where a graphical session is: over SSH without one,
    `webbrowser` would start a text browser in the terminal instead."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_doctor(c: Command) -> int:
    checks = doctor.run_doctor(c.client.socket_path)
    if c.json:
        c.out.write(compact([check.as_json() for check in checks]) + "\n")
    else:
        write_lines(c.out, doctor.render(checks))
    return EXIT_FAILED if doctor.failed(checks) else EXIT_OK


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


def device_names(client: Client) -> dict[str, str]:
    """Device id -> name, for showing who wrote what; none for an app, which may not ask."""
    try:
        devices = client.call("devices")
    except ControlError:
        return {}
    return {d["device"]: d["name"] for d in devices if d.get("name")}


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


def cmd_grant(c: Command) -> int:
    done = c.client.call(
        "grant",
        app=c.args.app,
        share=c.args.share,
        collection=c.args.collection,
        read_only=c.args.read_only,
    )
    if done.get("note") and not c.json:  # what keeps the grant from working yet
        sys.stderr.write(f"p2psync: note: {done['note']}\n")
    return c.say(done, cli_format.granted_message(done))


def cmd_revoke_grant(c: Command) -> int:
    done = c.client.call(
        "revoke_grant", app=c.args.app, share=c.args.share, collection=c.args.collection
    )
    lines = [
        f"The apps of {cli_format.grant_app(g)} may no longer use {cli_format.grant_scope(g)}."
        for g in done.get("removed") or []
    ]
    return c.say(done, lambda: write_lines(c.out, lines))


def cmd_grants(c: Command) -> int:
    found = c.client.call("grants")
    if found.get("note") and not c.json:
        sys.stderr.write(f"p2psync: note: {found['note']}\n")
    return c.say(found, lambda: write_lines(c.out, cli_format.grants_table(found["grants"])))
