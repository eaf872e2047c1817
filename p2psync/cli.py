"""The `p2psync` command line: a thin client of the control socket, plus `p2psync daemon`.

It owns the command line itself: the parser (every subcommand, flag and help text), which control
socket to use, and the mapping of errors to exit codes: 0 ok, 1 the daemon refused, 2 usage, 3 no
daemon, 4 not found (with --json, an error is one JSON line on stderr, with its code). What each
subcommand asks the daemon and prints is `cli_commands.py`'s. It never opens the database or the
network itself, and `p2psync daemon` only hands over to `daemon.main`.
The `share` command's parser and help are `cli_shares.py`'s, beside what its subcommands do; so
are the `schema` command's `cli_schema.py`'s.
The commands that need no daemon (install-service, completion, man) and -q/-v are
`cli_setup.py`'s; put, resolve, rm, get, ls, watch and conflicts are `cli_records.py`'s; backup,
restore, export, import and history are `cli_data.py`'s.
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__, config
from .cli_commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DAEMON,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    UsageError,
    cmd_devices,
    cmd_doctor,
    cmd_export_cert,
    cmd_grant,
    cmd_grants,
    cmd_id,
    cmd_join,
    cmd_pair,
    cmd_peers,
    cmd_reload,
    cmd_rename,
    cmd_revoke,
    cmd_revoke_grant,
    cmd_status,
    cmd_trust,
    cmd_ui,
    report_error,
)
from .cli_data import add_data_commands
from .cli_format import DEFAULT_SHARE
from .cli_records import add_record_commands
from .cli_schema import add_schema_command
from .cli_setup import (
    add_daemon_verbosity_options,
    add_setup_commands,
    add_verbosity_options,
    daemon_log_level,
    is_verbose,
)
from .cli_shares import DEVICE_HELP, add_share_command
from .client import (
    ENV_SOCKET,
    Client,
    ClientError,
    ConnectionFailed,
    ControlError,
    default_socket_path,
)


def cmd_daemon(args: argparse.Namespace) -> int:
    from .daemon import main as daemon_main  # the daemon's imports are not the CLI's business

    args.log_level = daemon_log_level(args)
    return daemon_main(args)


READMIT_HELP = (
    "let a revoked device back in (it starts on a new epoch; what it wrote after its revocation "
    "stays out)"
)


def add_share_option(parser: argparse.ArgumentParser) -> None:
    """`--share NAME` of the commands that read or write records."""
    parser.add_argument(
        "--share",
        metavar="NAME",
        default=DEFAULT_SHARE,
        help=f"the share whose records to use (default: {DEFAULT_SHARE}, which every device of "
        "the household is in; see `p2psync share list`)",
    )


# parser ---------------------------------------------------------------------------------------

EPILOG = """\
exit codes: 0 ok, 1 the daemon refused, 2 usage, 3 no daemon running, 4 not found.
With --json, an error is one line of JSON on stderr: {"error": {"code": ..., "message": ...}}.
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
        help="print JSON for programs (one object per line for ls and watch); errors too, on "
        'stderr: {"error": {"code": ..., "message": ...}}',
    )
    add_verbosity_options(common)
    parser = argparse.ArgumentParser(
        prog="p2psync",
        parents=[common],
        epilog=GETTING_STARTED + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Peer-to-peer sync of records between the devices of a household.",
    )
    parser.add_argument("--version", action="version", version=f"p2psync {__version__}")
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
    add_daemon_verbosity_options(daemon)
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
            f"  p2psync {name} 'Anna laptop'\n"
            f"  p2psync {name} TPSDW    (the short id `peers` shows)\n",
        ).add_argument("device", metavar="DEVICE", help=DEVICE_HELP)
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
    command(
        "devices",
        cmd_devices,
        "list every device of the household, this one included",
        "STATE is `this device`, `online`, `silent` (connected, but its pings are overdue), "
        "`offline` or `revoked`; LAST SEEN is kept across restarts (--json: ISO 8601, UTC).",
    )
    command(
        "rename",
        cmd_rename,
        "give this device a new name, on every device of the household",
        "The name travels with sync; device.name in the config counts again only once it is "
        "changed there.",
        "  p2psync rename 'Küche'\n",
    ).add_argument("name", metavar="NAME")
    pair = command(
        "pair",
        cmd_pair,
        "invite a device into the household with a one-time code",
        "Prints a code and waits until the other device runs `p2psync join CODE` (exit 0), the "
        "attempt fails or the code expires (exit 1). One wrong attempt burns the code; Ctrl-C "
        "withdraws it.",
        "  p2psync pair\n  p2psync pair --ttl 600\n  p2psync pair --readmit\n"
        "  p2psync pair --share parents --share shopping\n",
    )
    pair.add_argument(
        "--ttl", metavar="SECONDS", type=_positive, help="how long the code stays valid"
    )
    pair.add_argument("--readmit", action="store_true", help=READMIT_HELP)
    pair.add_argument(
        "--share",
        dest="shares",
        metavar="NAME",
        action="append",
        help=f"also put the new device in share NAME (repeat for several; it is always in "
        f"{DEFAULT_SHARE}); only shares this device is a member of",
    )
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
    ui = command(
        "ui",
        cmd_ui,
        "log a browser into this device's web UI",
        "Prints a one-time link to the daemon's web UI (on 127.0.0.1 only) and opens it in a "
        "browser when this session has a display. The link works once, for 2 minutes; the "
        "browser then stays logged in for 12 hours.",
        "  p2psync ui\n  p2psync ui --no-open\n",
    )
    ui.add_argument(
        "--no-open", action="store_true", help="only print the link, do not start a browser"
    )
    command(
        "doctor",
        cmd_doctor,
        "check this device's setup and say what to fix",
        "Checks the control socket, the daemon, its port (over loopback only), discovery, peers, "
        "clocks and conflicts. Exit 0 when nothing failed (warnings allowed), 1 otherwise.",
        "  p2psync doctor\n  p2psync doctor --json\n",
    )
    command("reload", cmd_reload, "re-read the configuration file")
    add_share_command(commands, common, EPILOG)
    add_schema_command(commands, common, EPILOG)
    _add_grant_commands(command)
    add_record_commands(command, add_share_option, _positive, _natural)
    add_data_commands(command, commands, add_share_option)
    add_setup_commands(commands)
    return parser


APPS_HELP = (
    "Admins (root, the daemon's own user, members of its control group, p2psync by default) may "
    "do everything. Every other local user is an app: the daemon knows it by the user id the "
    "kernel reports for its connection, and lets it do only what a grant allows. Apps can open "
    "the control socket only when the daemon runs with control.apps = true. Grants belong to "
    "this device alone."
)


def _add_grant_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    grant = command(
        "grant",
        cmd_grant,
        "let the apps of a local user read (and write) a share or one collection of it",
        f"{APPS_HELP} A user holds one grant per share and collection; granting again replaces "
        "it. Read access includes get, ls, conflicts and watch; write access also put, rm, "
        "transactions and resolve.",
        "  p2psync grant alice --share photos --read-only\n"
        "  p2psync grant alice --share family --collection shopping\n"
        "  p2psync grant 4242 --share family --collection shopping    a uid without a user\n",
    )
    grant.add_argument("app", metavar="APP", help="the user (name or uid) whose apps it is for")
    grant.add_argument("--share", metavar="NAME", required=True, help="the share")
    grant.add_argument(
        "--collection", metavar="NAME", help="only this collection (default: all of the share)"
    )
    grant.add_argument("--read-only", action="store_true", help="read and watch, never write")
    revoke = command(
        "revoke-grant",
        cmd_revoke_grant,
        "take back what the apps of a local user may do in a share",
        "Without --collection every grant of that user on the share goes. Open connections of "
        "its apps are refused from their next request.",
        "  p2psync revoke-grant alice --share photos\n"
        "  p2psync revoke-grant alice --share family --collection shopping\n",
    )
    revoke.add_argument("app", metavar="APP", help="the user (name or uid)")
    revoke.add_argument("--share", metavar="NAME", required=True, help="the share")
    revoke.add_argument("--collection", metavar="NAME", help="only the grant of this collection")
    command(
        "grants",
        cmd_grants,
        "list what the apps of local users may do",
        f"{APPS_HELP} COLLECTION * means every collection of the share.",
        "  p2psync grants\n  p2psync grants --json\n",
    )


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


# Options whose values may start with "-": a version is base64url, so one in 64 begins with it,
# and argparse would take `--pick -Xy4` for two options.
DASHED_VALUE_OPTIONS = frozenset({"--pick"})


def with_dashed_values_joined(argv: list[str]) -> list[str]:
    """`--pick -Xy4` as `--pick=-Xy4`, so a version is taken as shown, whatever it starts with."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            joined += [word, *words]
            break
        if word in DASHED_VALUE_OPTIONS:
            value = next(words, None)
            joined.append(word if value is None else f"{word}={value}")
        else:
            joined.append(word)
    return joined


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(with_dashed_values_joined(argv))
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if getattr(args, "daemon", False):
        return cmd_daemon(args)
    if getattr(args, "without_daemon", None):  # install-service, completion, man
        return int(args.without_daemon(args))
    path = Path(getattr(args, "socket", None) or default_socket_path())
    if is_verbose(args):
        print(f"p2psync: control socket {path}", file=sys.stderr)
    as_json = bool(getattr(args, "json", False))
    try:
        with Client(path) as client:
            return int(args.run(Command(client, args, sys.stdout)))
    except ConnectionFailed as exc:
        return report_error(as_json, exc.code, exc.message, EXIT_NO_DAEMON)
    except ControlError as exc:
        return report_error(as_json, exc.code, f"{exc.message}{_hint(exc.code)}", _exit_code(exc))
    except ClientError as exc:
        return report_error(as_json, "client", str(exc), EXIT_FAILED)
    except UsageError as exc:
        return report_error(as_json, "usage", str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `p2psync ls notes | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _exit_code(exc: ControlError) -> int:
    return EXIT_NOT_FOUND if exc.code == "not_found" else EXIT_FAILED


def _hint(code: str) -> str:
    if code == "internal":
        return " (journalctl -u p2psync shows what went wrong)"
    if code == "unknown_method":
        return " (the daemon is older than this command: upgrade it and restart it)"
    if code == "forbidden":
        return " (an admin of this device decides what apps may do: `p2psync grants`)"
    return ""
