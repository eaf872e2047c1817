"""The `p2psync` command line: a thin client of the control socket, plus `p2psync daemon`.

It parses arguments, calls the daemon through `client.Client` and prints the results for people
(aligned tables, values as compact JSON) or, with --json, for programs. It never opens the
database or the network itself. Exit codes: 0 ok, 1 the daemon refused, 2 usage, 3 no daemon.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import cli_format, config, doctor, hlc
from .cli_format import compact, fit, safe_text, table
from .client import Client, ClientError, ControlError, DaemonNotRunning

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_INTERRUPTED = 130
ENV_SOCKET = "P2PSYNC_SOCKET"
LS_PAGE = 1000
CELL_WIDTH = 80
JOIN_TIMEOUT_SECONDS = 120.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class UsageError(Exception):
    """Bad input on our side (a file that cannot be read, a value that is not text)."""


def default_socket_path(env: Mapping[str, str] = os.environ, euid: int | None = None) -> Path:
    """$P2PSYNC_SOCKET; else the socket a daemon run by this user in this environment would use
    (its config file, $P2PSYNC_CONTROL_SOCKET...) when one is there; else the system daemon's."""
    if env.get(ENV_SOCKET):
        return Path(env[ENV_SOCKET])
    euid = os.geteuid() if euid is None else euid
    try:
        found = config.load_config_file(
            config.find_config_path(env, euid), env=env, euid=euid, hostname=""
        )
        own = config.apply_overrides(
            found,
            state_dir=env.get(config.ENV_STATE_DIR),
            control_socket=env.get(config.ENV_CONTROL_SOCKET),
        ).control_socket
    except config.ConfigError:  # the daemon would say what is wrong; we fall back to the system
        return config.SYSTEM_CONTROL_SOCKET
    return own if own.exists() else config.SYSTEM_CONTROL_SOCKET


# output ---------------------------------------------------------------------------------------


def _value_cell(value: Any) -> str:
    return fit(safe_text(compact(value)), CELL_WIDTH)


def write_lines(out: TextIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(line + "\n")


def _time(stamp: int | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(hlc.to_millis(stamp) / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _where(args: argparse.Namespace) -> str:
    return f"{args.collection}/{args.key}"


# commands -------------------------------------------------------------------------------------


class Command:
    """One subcommand run: the client, the parsed arguments and where to print."""

    def __init__(self, client: Client, args: argparse.Namespace, out: TextIO) -> None:
        self.client = client
        self.args = args
        self.out = out
        self.json = bool(getattr(args, "json", False))

    def say(self, result: Any, human: str | Callable[[], object]) -> int:
        if self.json:
            self.out.write(compact(result) + "\n")
        elif callable(human):
            human()
        else:
            self.out.write(human + "\n")
        return EXIT_OK


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
    return c.say(
        {**own, "out": c.args.out},
        f"wrote the certificate of {own['name']} ({own['device']}) to {c.args.out}; on the other "
        f"device run: p2psync trust {Path(c.args.out).name}",
    )


READMIT_HELP = (
    "let a revoked device back in (it starts on a new epoch; what it wrote after its revocation "
    "stays out)"
)


def cmd_trust(c: Command) -> int:
    try:
        cert = _read_text(c.args.certfile)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read certificate {c.args.certfile}: {exc}") from None
    done = c.client.call(
        "trust", cert=cert, name=c.args.name, address=c.args.address, readmit=c.args.readmit
    )
    return c.say(
        done,
        f"trusted {done.get('name')} ({done.get('device')}); it syncs when both daemons can reach "
        "each other",
    )


def _read_text(name: str) -> str:
    return sys.stdin.read() if name == "-" else Path(name).read_text()


def cmd_revoke(c: Command) -> int:
    done = c.client.call("revoke", device=c.args.device)
    return c.say(done, cli_format.revoked_message(done))


def cmd_reload(c: Command) -> int:
    done = c.client.call("reload")
    return c.say(done, lambda: _print_mapping(c.out, done))


def _print_mapping(out: TextIO, found: Mapping[str, Any]) -> None:
    rows = [[name, v if isinstance(v, str) else compact(v)] for name, v in found.items()]
    write_lines(out, table(None, [[name, fit(safe_text(text), 200)] for name, text in rows]))


def _status_and_peers(client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return client.call("status"), client.call("peers")


def cmd_status(c: Command) -> int:
    if c.args.watch:
        return _watch_status(c)
    status, peers = _status_and_peers(c.client)
    return c.say(
        {**status, "peers": peers},
        lambda: write_lines(c.out, cli_format.status_lines(status, peers)),
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
                frame = [heading, "", *cli_format.status_lines(status, peers, rates)]
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


def cmd_pair(c: Command) -> int:
    with c.client.stream("pair", ttl=c.args.ttl, readmit=c.args.readmit) as pairing:
        if c.json:
            c.out.write(compact(pairing.result) + "\n")
        else:
            c.out.write(cli_format.pairing_instructions(pairing.result))
            c.out.write("Waiting for the other device...\n")
        c.out.flush()
        try:
            event = next(pairing)
        except KeyboardInterrupt:  # closing the connection withdraws the code on the daemon
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
    sys.stderr.write(f"p2psync: pairing failed: {message}\n")
    return EXIT_FAILED


def cmd_join(c: Command) -> int:
    if not c.json:
        where = c.args.address or "the device showing that code on the LAN"
        sys.stderr.write(f"p2psync: contacting {where}...\n")
    # Finding the device and the key exchange take longer than an ordinary request.
    with Client(c.client.socket_path, timeout=JOIN_TIMEOUT_SECONDS) as client:
        done = client.call("join", code=c.args.code, address=c.args.address)
    return c.say(done, cli_format.joined_message(done))


def cmd_doctor(c: Command) -> int:
    checks = doctor.run_doctor(c.client.socket_path)
    if c.json:
        c.out.write(compact([check.as_json() for check in checks]) + "\n")
    else:
        write_lines(c.out, doctor.render(checks))
    return EXIT_FAILED if doctor.failed(checks) else EXIT_OK


def parse_value(text: str) -> Any:
    """JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
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
    }


def cmd_put(c: Command) -> int:
    done = c.client.call("put", **_write_params(c.args))
    return c.say(done, f"wrote {_where(c.args)} (position {done['position']})")


def cmd_resolve(c: Command) -> int:
    done = c.client.call("resolve", **_write_params(c.args))
    return c.say(done, f"resolved {_where(c.args)} (position {done['position']})")


def cmd_rm(c: Command) -> int:
    done = c.client.call("delete", collection=c.args.collection, key=c.args.key)
    return c.say(done, f"deleted {_where(c.args)} (position {done['position']})")


def cmd_get(c: Command) -> int:
    found = c.client.call("get", collection=c.args.collection, key=c.args.key, all=c.args.all)
    if c.json:
        return c.say(found, "")
    if c.args.all:
        _print_siblings(c.out, found["siblings"])
        return EXIT_OK
    c.out.write(compact(found["value"]) + "\n")
    if found["conflict"]:
        sys.stderr.write(
            f"p2psync: note: {_where(c.args)} has {len(found['siblings'])} conflicting versions; "
            f"this is the newest. See them with `p2psync get {c.args.collection} {c.args.key} "
            f"--all` and settle with `p2psync resolve {c.args.collection} {c.args.key} VALUE`\n"
        )
    return EXIT_OK


def _print_siblings(out: TextIO, siblings: list[dict[str, Any]], indent: str = "") -> None:
    rows = [
        [
            indent + s["origin"],
            _time(s["hlc"]),
            "(deleted)" if s["deleted"] else _value_cell(s["value"]),
        ]
        for s in siblings
    ]
    write_lines(out, table([f"{indent}ORIGIN", "TIME", "VALUE"], rows))


def cmd_ls(c: Command) -> int:
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
        )
        for item in page["items"]:
            if c.json:
                c.out.write(compact(item) + "\n")
            else:
                value = _value_cell(item["value"]) + ("  (in conflict)" if item["conflict"] else "")
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
            sys.stderr.write(f"p2psync: no records in {c.args.collection}\n")
    return EXIT_OK


def cmd_watch(c: Command) -> int:
    with c.client.watch(since=c.args.since, collection=c.args.collection) as events:
        if not c.json:
            sys.stderr.write(f"p2psync: watching from position {events.position}; Ctrl-C stops\n")
        for event in events:
            if c.json:
                c.out.write(compact(event) + "\n")
            else:
                for change in event["changes"]:
                    where = safe_text(f"{change['collection']}/{change['key']}")
                    shown = "" if change["deleted"] else "  " + _value_cell(change["value"])
                    c.out.write(f"{event['position']}  {change['op']:<6}  {where}{shown}\n")
            c.out.flush()
    return EXIT_OK


def cmd_conflicts(c: Command) -> int:
    found = c.client.call("conflicts", collection=c.args.collection)

    def human() -> None:
        if not found["items"]:
            c.out.write("no conflicts\n")
        for item in found["items"]:
            where = safe_text(f"{item['collection']}/{item['key']}")
            c.out.write(f"{where}: {len(item['siblings'])} versions\n")
            _print_siblings(c.out, item["siblings"], indent="  ")
        if found.get("more"):
            c.out.write("(more not shown: resolve these first, or ask for one collection)\n")

    return c.say(found, human)


def cmd_daemon(args: argparse.Namespace) -> int:
    from .daemon import main as daemon_main  # the daemon's imports are not the CLI's business

    return daemon_main(args)


# parser ---------------------------------------------------------------------------------------

EPILOG = """\
exit codes: 0 ok, 1 the daemon refused (e.g. not found), 2 usage, 3 no daemon running.
The CLI talks to the daemon over its control socket; see docs/control-protocol.md."""
GETTING_STARTED = """\
examples:
  p2psync status                 this device, its peers, how far behind they are
  p2psync pair                   invite another device: prints a code like 7-guitar-orbit
  p2psync join 7-guitar-orbit    on the other device: join this household with the code
  p2psync doctor                 check the setup and say what to fix
  p2psync put notes a '{"x": 1}' / get notes a / ls notes / watch

"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"control socket of the daemon (default: ${ENV_SOCKET}, else your own daemon's, "
        f"else {config.SYSTEM_CONTROL_SOCKET})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON for programs (one object per line for ls and watch)",
    )
    parser = argparse.ArgumentParser(
        prog="p2psync",
        parents=[common],
        epilog=GETTING_STARTED + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Peer-to-peer sync of records between the devices of a household.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str,
        run: Callable[[Command], int],
        summary: str,
        details: str = "",
        examples: str = "",
    ):
        sentence = f"{summary[0].upper()}{summary[1:]}."
        sub = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=f"{sentence} {details}".strip(),
            epilog=f"examples:\n{examples}\n{EPILOG}" if examples else EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    daemon = commands.add_parser(
        "daemon",
        help="run the sync daemon in the foreground",
        description="Run the sync daemon in the foreground (systemd runs it this way).",
    )
    daemon.add_argument("--config", metavar="FILE", help="configuration file")
    daemon.add_argument("--state-dir", metavar="DIR", help="where keys and the database live")
    daemon.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    daemon.set_defaults(daemon=True)

    command("id", cmd_id, "show this device's id and name")
    command(
        "export-cert",
        cmd_export_cert,
        "print this device's certificate",
        "Give it to another device of the household, which then runs `p2psync trust FILE`.",
    ).add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    trust = command(
        "trust",
        cmd_trust,
        "add a device to the household by its certificate",
        "Membership is household-wide: every device learns about it through sync.",
    )
    trust.add_argument("certfile", metavar="CERTFILE", help="certificate file ('-': stdin)")
    trust.add_argument("--address", metavar="HOST:PORT", help="where to reach that device")
    trust.add_argument("--name", metavar="NAME", help="a name for it (default: from its id)")
    trust.add_argument("--readmit", action="store_true", help=READMIT_HELP)
    for name in ("revoke", "forget"):
        command(
            name,
            cmd_revoke,
            "remove a device from the household",
            "Membership is household-wide: revoke and forget are the same, and every device "
            "stops syncing with it. The removed device keeps the records it already has but "
            "gets no new changes.",
            f"  p2psync {name} TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI\n",
        ).add_argument("device", metavar="DEVICE", help="device id (see `p2psync peers`)")
    status = command(
        "status",
        cmd_status,
        "show this device, its peers and how far behind they are",
        "BEHIND counts the entries a peer has that we lack, AHEAD the other way round; RATE is "
        "entries received per second. --json prints the status with a `peers` list.",
        "  p2psync status\n  p2psync status --watch --interval 1    follow a catch-up\n",
    )
    status.add_argument("--watch", action="store_true", help="redraw every interval until Ctrl-C")
    status.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_seconds,
        default=2.0,
        help="time between redraws with --watch (default: 2)",
    )
    command(
        "peers",
        cmd_peers,
        "list the other devices of the household and their sync state",
        "With --nearby, also the devices announcing themselves on the LAN, paired or not.",
        "  p2psync peers\n  p2psync peers --nearby\n",
    ).add_argument("--nearby", action="store_true", help="also list devices seen on the LAN")
    pair = command(
        "pair",
        cmd_pair,
        "invite a device into the household with a one-time code",
        "Prints a code and waits until the other device runs `p2psync join CODE` (exit 0), the "
        "attempt fails or the code expires (exit 1). One wrong attempt burns the code; Ctrl-C "
        "withdraws it.",
        "  p2psync pair\n  p2psync pair --ttl 600\n  p2psync pair --readmit\n",
    )
    pair.add_argument(
        "--ttl", metavar="SECONDS", type=_positive, help="how long the code stays valid"
    )
    pair.add_argument("--readmit", action="store_true", help=READMIT_HELP)
    join = command(
        "join",
        cmd_join,
        "join a household with the code shown by `p2psync pair` on one of its devices",
        "The device showing the code is found on the LAN; where multicast does not pass, give "
        "its address. A mistyped code can be retyped; a wrong one burns it (ask for a new one).",
        "  p2psync join 7-guitar-orbit\n"
        "  p2psync join 7-guitar-orbit --address 192.168.1.20:47100\n",
    )
    join.add_argument("code", metavar="CODE", help="the code, e.g. 7-guitar-orbit")
    join.add_argument("--address", metavar="HOST:PORT", help="where the inviting device listens")
    command(
        "doctor",
        cmd_doctor,
        "check this device's setup and say what to fix",
        "Checks the control socket, the daemon, its port (over loopback only), discovery, peers, "
        "clocks and conflicts. Exit 0 when nothing failed (warnings allowed), 1 otherwise.",
        "  p2psync doctor\n  p2psync doctor --json\n",
    )
    command("reload", cmd_reload, "re-read the configuration file")

    value_help = (
        "the value as JSON (e.g. 42, true, '{\"a\": 1}'); anything that is not JSON is stored "
        "as a string; '-' reads it from stdin"
    )
    for name, run, summary in (
        ("put", cmd_put, "write a record"),
        ("resolve", cmd_resolve, "settle a conflict by writing the value to keep"),
    ):
        write = command(name, run, summary)
        write.add_argument("collection", metavar="COLLECTION")
        write.add_argument("key", metavar="KEY")
        write.add_argument("value", metavar="VALUE", help=value_help)
        write.add_argument("--string", action="store_true", help="store VALUE as a string as is")
        write.add_argument("--type", metavar="TYPE", help="record type, kept with the value")
        write.add_argument("--schema-version", metavar="N", type=int, help="schema version")
    get = command("get", cmd_get, "print a record's value as JSON")
    get.add_argument("collection", metavar="COLLECTION")
    get.add_argument("key", metavar="KEY")
    get.add_argument("--all", action="store_true", help="show every version (conflicts)")
    rm = command("rm", cmd_rm, "delete a record")
    rm.add_argument("collection", metavar="COLLECTION")
    rm.add_argument("key", metavar="KEY")
    ls = command("ls", cmd_ls, "list the records of a collection, by key")
    ls.add_argument("collection", metavar="COLLECTION")
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", default="", help="only keys with it")
    ls.add_argument("--limit", metavar="N", type=_positive, help="at most N records")
    watch = command(
        "watch",
        cmd_watch,
        "print changes as they happen",
        "To resume without missing or repeating anything, pass the last position printed.",
    )
    watch.add_argument("--since", metavar="N", type=_natural, help="start after position N")
    watch.add_argument("--collection", metavar="C", help="only changes of collection C")
    command("conflicts", cmd_conflicts, "list records with conflicting versions").add_argument(
        "collection", metavar="COLLECTION", nargs="?"
    )
    return parser


def _positive(text: str) -> int:
    number = _natural(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 0.1:
        raise argparse.ArgumentTypeError("must be at least 0.1 seconds")
    return seconds


def _natural(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if getattr(args, "daemon", False):
        return cmd_daemon(args)
    path = Path(getattr(args, "socket", None) or default_socket_path())
    try:
        with Client(path) as client:
            return int(args.run(Command(client, args, sys.stdout)))
    except DaemonNotRunning as exc:
        print(f"p2psync: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except ControlError as exc:
        print(f"p2psync: {exc.message}{_hint(exc.code)}", file=sys.stderr)
        return EXIT_FAILED
    except ClientError as exc:
        print(f"p2psync: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as exc:
        print(f"p2psync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `p2psync ls notes | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _hint(code: str) -> str:
    if code == "internal":
        return " (journalctl -u p2psync shows what went wrong)"
    if code == "unknown_method":
        return " (the daemon is older than this command: upgrade it and restart it)"
    return ""
