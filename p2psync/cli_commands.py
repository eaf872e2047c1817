"""What each `p2psync` subcommand does: its calls to the daemon and what it prints.

One `cmd_*` function per subcommand (but `daemon`, and those about records, which are
`cli_records.py`'s), each given a `Command`: the connected client, the parsed arguments and where
to print. `Command`, the exit codes and the output helpers here serve every cli_*.py module. It
prints for people (aligned tables, values as compact JSON, via `cli_format.py`) or, with --json,
for programs, and returns the exit code. It never parses the command line (`cli.py` does, and maps
errors to exit codes), and never opens the database or the network itself: everything goes
through `client.Client`.
"""

import argparse
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
from .client import Client, ControlError

# exit codes, of every command and of `cli.main`
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_NOT_FOUND = 4  # the daemon answered not_found: no such record, share, device or grant
EXIT_INTERRUPTED = 130
CELL_WIDTH = 80
JOIN_TIMEOUT_SECONDS = 120.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


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


def device_names(client: Client) -> dict[str, str]:
    """Device id -> name, for showing who wrote what; none for an app, which may not ask."""
    try:
        devices = client.call("devices")
    except ControlError:
        return {}
    return {d["device"]: d["name"] for d in devices if d.get("name")}



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
