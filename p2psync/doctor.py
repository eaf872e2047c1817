"""`p2psync doctor`: checks of a device's setup, each saying what is wrong and what to do.

The checks are small pure functions from facts (the daemon's status and peers answers, the
outcome of a connection attempt) to a `Check` (level, message, advice); `run_doctor` gathers the
facts with thin I/O. It only ever connects to the control socket and to the daemon's own port over
loopback: it must never send anything to another address.
"""

import enum
import grp
import ipaddress
import os
import pwd
import socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli_format import format_ago, format_count, format_duration, safe_text
from .client import DAEMON_HINT, Client, ClientError, ControlError
from .identity import short_id

PROBE_TIMEOUT_SECONDS = 3.0
CLOCK_SKEW_LIMIT_MS = 1000
DEFAULT_GROUP = "p2psync"
PEERS_ADVICE = "run `p2psync pair` here and `p2psync join CODE` on the other device"
MULTICAST_ADVICE = (
    "multicast may be blocked: add static peers (network.peers) or use --address with join"
)


class Level(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


SYMBOLS = {Level.OK: "✓", Level.INFO: "i", Level.WARN: "!", Level.FAIL: "✗"}


@dataclass(frozen=True)
class Check:
    level: Level
    message: str
    advice: str = ""

    def as_json(self) -> dict[str, str]:
        return {"level": self.level.value, "message": self.message, "advice": self.advice}


Peer = Mapping[str, Any]


# control socket -------------------------------------------------------------------------------


class SocketProblem(enum.Enum):
    MISSING = "missing"
    NOT_A_SOCKET = "not a socket"
    PERMISSION = "permission denied"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    OTHER = "other"


@dataclass(frozen=True)
class GroupAccess:
    """Who may use the socket, and whether we are among them (in the group database / now)."""

    group: str
    listed: bool
    effective: bool


def control_socket_check(
    path: Path,
    problem: SocketProblem | None,
    detail: str = "",
    access: GroupAccess | None = None,
) -> Check:
    if problem is None:
        return Check(Level.OK, f"control socket {path} answers")
    if problem is SocketProblem.MISSING:
        return Check(
            Level.FAIL,
            f"no control socket at {path}: the daemon is not running (or uses another path)",
            f"{DAEMON_HINT}; if it uses another socket, pass --socket PATH or set P2PSYNC_SOCKET",
        )
    if problem is SocketProblem.NOT_A_SOCKET:
        return Check(
            Level.FAIL,
            f"{path} is not a socket",
            "check --socket / P2PSYNC_SOCKET and control.socket in the daemon's configuration",
        )
    if problem is SocketProblem.PERMISSION:
        return Check(Level.FAIL, f"permission denied on {path}", _permission_advice(access))
    if problem is SocketProblem.REFUSED:
        return Check(
            Level.FAIL,
            f"nobody answers on {path}: a stale socket left by a daemon that stopped",
            f"{DAEMON_HINT} (it replaces the stale socket); `journalctl -u p2psync` says why it "
            "stopped",
        )
    if problem is SocketProblem.TIMEOUT:
        return Check(
            Level.FAIL,
            f"the daemon at {path} does not accept connections in time",
            "it may be stuck: look at `journalctl -u p2psync`, then `systemctl restart p2psync`",
        )
    return Check(Level.FAIL, f"cannot connect to {path}: {detail}", DAEMON_HINT)


def _permission_advice(access: GroupAccess | None) -> str:
    group = access.group if access else DEFAULT_GROUP
    if access and access.effective:
        return (
            f"you are in group {group}, but the socket does not let the group in: check "
            "control.mode and control.group in the daemon's configuration"
        )
    if access and access.listed:
        return (
            f"you were added to group {group} after this session started: log out and in "
            f"again (or run `newgrp {group}`)"
        )
    return f"add yourself to group {group}: `sudo usermod -aG {group} $USER`, then log in again"


# the daemon's answers -------------------------------------------------------------------------


def daemon_check(status: Mapping[str, Any]) -> Check:
    name = safe_text(status.get("name") or "?")
    uptime = status.get("uptime")
    up = f", up {format_duration(uptime)}" if isinstance(uptime, int | float) else ""
    version = status.get("version") or "?"
    device = short_id(str(status.get("device") or "?"))
    return Check(Level.OK, f"daemon running: {name} ({device}), p2psync {version}{up}")


def loopback_target(listen_address: str) -> tuple[str, int] | None:
    """Where to reach a listen address over loopback: a wildcard address becomes 127.0.0.1 or
    ::1; a specific non-loopback address gets None (doctor never connects elsewhere)."""
    host, _, port = listen_address.rpartition(":")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        number = int(port)
    except ValueError:
        return None
    if address.is_loopback:
        return str(address), number
    if address.is_unspecified:
        return ("127.0.0.1" if address.version == 4 else "::1"), number
    return None


def port_check(listen_address: str, target: tuple[str, int] | None, error: str | None) -> Check:
    if target is None:
        return Check(
            Level.INFO,
            f"listening on {listen_address} (not checked: doctor only connects over loopback)",
        )
    host, port = target
    if error is None:
        return Check(
            Level.OK,
            f"listening on {listen_address}: port {port} accepts connections (other devices "
            f"need TCP port {port} allowed by this machine's firewall)",
        )
    return Check(
        Level.FAIL,
        f"the daemon says it listens on {listen_address}, but connecting to {host} port {port} "
        f"failed: {error}",
        "a local firewall may block it, or the daemon is stuck: see `journalctl -u p2psync`, "
        "then `systemctl restart p2psync`",
    )


def _members(peers: Sequence[Peer]) -> list[Peer]:
    return [peer for peer in peers if not peer.get("revoked")]


def _nearby_count(status: Mapping[str, Any], nearby: Sequence[Any] | None) -> int | None:
    if nearby is not None:
        return len(nearby)
    seen = (status.get("discovery") or {}).get("nearby")
    return len(seen) if isinstance(seen, list) else seen if isinstance(seen, int) else None


def discovery_check(
    status: Mapping[str, Any], peers: Sequence[Peer], nearby: Sequence[Any] | None
) -> Check | None:
    discovery = status.get("discovery")
    if not isinstance(discovery, Mapping):
        return None  # a daemon that does not report on discovery
    if not discovery.get("enabled"):
        return Check(
            Level.INFO,
            "discovery is off: other devices are reached only through network.peers and the "
            "addresses saved when pairing",
        )
    seen = _nearby_count(status, nearby)
    if seen:
        plural = "device" if seen == 1 else "devices"
        return Check(Level.OK, f"discovery is on: {seen} {plural} seen on the LAN")
    if any(peer.get("connected") for peer in _members(peers)):
        return Check(
            Level.OK,
            "discovery is on: no device seen on the LAN, but peers connect through static "
            "addresses",
        )
    return Check(
        Level.WARN,
        "discovery is on, but no device was seen on the LAN and no peer is connected",
        MULTICAST_ADVICE,
    )


def peer_checks(peers: Sequence[Peer]) -> list[Check]:
    members = _members(peers)
    if not members:
        return [Check(Level.WARN, "no other device in this household yet", PEERS_ADVICE)]
    return [_peer_check(peer) for peer in members]


def _peer_check(peer: Peer) -> Check:
    name = safe_text(peer.get("name") or short_id(str(peer.get("device") or "?")))
    if peer.get("connected"):
        lacking = peer.get("we_lack")
        if isinstance(lacking, int) and lacking > 0:
            sync = f", catching up ({format_count(lacking)} entries to receive)"
        else:
            sync = ", in sync" if peer.get("in_sync") else ""
        return Check(Level.OK, f"{name} online at {safe_text(peer.get('address') or '?')}{sync}")
    return Check(
        Level.WARN,
        f"{name} offline, last seen {format_ago(peer.get('last_seen_seconds_ago'))}",
        "check that it is on and its daemon runs (`p2psync doctor` there); if multicast does "
        "not reach it, add its address to network.peers",
    )


def clock_check(peers: Sequence[Peer]) -> Check | None:
    offsets = [
        (safe_text(peer.get("name") or "?"), float(offset))
        for peer in _members(peers)
        if isinstance(offset := peer.get("clock_offset_ms"), int | float)
    ]
    if not offsets:
        return None
    skewed = [(name, offset) for name, offset in offsets if abs(offset) > CLOCK_SKEW_LIMIT_MS]
    if not skewed:
        plural = "peer" if len(offsets) == 1 else "peers"
        return Check(Level.OK, f"clocks agree within 1 s with {len(offsets)} {plural}")
    differences = ", ".join(f"{name} by {abs(offset) / 1000:.1f} s" for name, offset in skewed)
    return Check(
        Level.WARN,
        f"clocks differ: {differences}",
        "enable time sync on every device (`sudo timedatectl set-ntp true`, systemd-timesyncd "
        "or another NTP client): concurrent writes are ordered by time, so a wrong clock picks "
        "the wrong winner of a conflict",
    )


def conflicts_check(status: Mapping[str, Any]) -> Check | None:
    count = status.get("conflicts")
    if not isinstance(count, int):
        return None
    if count == 0:
        return Check(Level.OK, "no conflicts")
    return Check(
        Level.INFO,
        f"{format_count(count)} record{'' if count == 1 else 's'} in conflict",
        "see them with `p2psync conflicts`; settle each with `p2psync resolve COLLECTION KEY "
        "VALUE`",
    )


def trust_checks(status: Mapping[str, Any]) -> list[Check]:
    """Revocation of this device, and copies or restores of any device's state."""
    return _noted(
        status.get("revoked"),
        Level.FAIL,
        "a member has to re-admit this device (pair it again) before it syncs again",
        "this device was revoked",
    ) + _noted(
        status.get("notices"),
        Level.WARN,
        "if a machine was cloned or its state restored, stop the copy that should not run; "
        "both copies' writes are kept",
    )


def history_checks(status: Mapping[str, Any]) -> list[Check]:
    """Members whose history every device keeps: away ones, and ones that never reported."""
    history = status.get("history")
    if not isinstance(history, Mapping):
        return []
    return _noted(
        history.get("away"),
        Level.INFO,
        "turn it on so that it syncs; if it is gone for good, `p2psync revoke` it",
    ) + _noted(
        history.get("unreported"),
        Level.WARN,
        "until it reports, no device folds its log or drops deletes: upgrade p2psync there"
        " (0.4.0 or newer) and leave [history] compaction on",
    )


def _noted(rows: object, level: Level, advice: str, untold: str = "") -> list[Check]:
    """One check per row of a status list whose rows carry a `text` (anything else skipped)."""
    if not isinstance(rows, list):
        return []
    return [
        Check(level, safe_text(str(row.get("text", untold))), advice)
        for row in rows
        if isinstance(row, Mapping)
    ]


def diagnose(
    status: Mapping[str, Any], peers: Sequence[Peer], nearby: Sequence[Any] | None
) -> list[Check]:
    """The checks that need only the daemon's answers (`nearby`: None when not available)."""
    found = [daemon_check(status), discovery_check(status, peers, nearby), *peer_checks(peers)]
    found += [clock_check(peers), conflicts_check(status), *trust_checks(status)]
    found += history_checks(status)
    return [check for check in found if check is not None]


def failed(checks: Sequence[Check]) -> bool:
    return any(check.level is Level.FAIL for check in checks)


def render(checks: Sequence[Check]) -> list[str]:
    lines = []
    for check in checks:
        lines.append(f"{SYMBOLS[check.level]} {check.message}")
        if check.advice:
            lines.append(f"    {check.advice}")
    counts = {level: sum(1 for c in checks if c.level is level) for level in Level}
    summary = [
        f"{counts[level]} {word}{'' if counts[level] == 1 else 's'}"
        for level, word in ((Level.FAIL, "problem"), (Level.WARN, "warning"))
        if counts[level]
    ]
    lines += ["", ", ".join(summary) if summary else "no problems found"]
    return lines


# gathering the facts (I/O) --------------------------------------------------------------------


def probe_control_socket(path: Path) -> Check:
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return control_socket_check(path, SocketProblem.NOT_A_SOCKET)
    except FileNotFoundError:
        return control_socket_check(path, SocketProblem.MISSING)
    except PermissionError:
        return control_socket_check(path, SocketProblem.PERMISSION, access=_group_access(path))
    except OSError as exc:
        return control_socket_check(path, SocketProblem.OTHER, exc.strerror or str(exc))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_SECONDS)
        try:
            probe.connect(str(path))
        except PermissionError:
            return control_socket_check(path, SocketProblem.PERMISSION, access=_group_access(path))
        except ConnectionRefusedError:
            return control_socket_check(path, SocketProblem.REFUSED)
        except TimeoutError:
            return control_socket_check(path, SocketProblem.TIMEOUT)
        except OSError as exc:
            return control_socket_check(path, SocketProblem.OTHER, exc.strerror or str(exc))
    return control_socket_check(path, None)


def _group_access(path: Path) -> GroupAccess:
    """The group owning the socket (or the first directory above it we can see)."""
    for candidate in (path, *path.parents):
        try:
            gid = candidate.stat().st_gid
            group = grp.getgrgid(gid)
        except (OSError, KeyError):
            continue
        user = _user_name()
        listed = user in group.gr_mem or os.getgid() == gid
        return GroupAccess(group.gr_name, listed, gid in os.getgroups() or os.getegid() == gid)
    return GroupAccess(DEFAULT_GROUP, listed=False, effective=False)


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return ""


def probe_port(host: str, port: int) -> str | None:
    """None when a TCP connection to (loopback) host:port opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS):
            return None
    except TimeoutError:
        return "no answer (timed out)"
    except OSError as exc:
        return exc.strerror or str(exc)


def run_doctor(socket_path: Path) -> list[Check]:
    reachable = probe_control_socket(socket_path)
    if reachable.level is Level.FAIL:
        return [reachable]
    try:
        with Client(socket_path) as client:
            status = client.call("status")
            if _as_app(status):
                return [reachable, _app_check(status)]
            peers = client.call("peers")
            nearby = _nearby(client)
    except ClientError as exc:
        return [
            reachable,
            Check(
                Level.FAIL,
                f"the daemon does not answer: {exc}",
                "see `journalctl -u p2psync`; `systemctl restart p2psync` restarts it",
            ),
        ]
    return report(reachable, listen_checks(status), diagnose(status, peers, nearby))


def listen_checks(status: Mapping[str, Any]) -> list[Check]:
    """Whether each address the daemon listens on accepts a connection over loopback (blocking:
    up to PROBE_TIMEOUT_SECONDS an address)."""
    checks = []
    for address in status.get("listen") or []:
        target = loopback_target(str(address))
        error = probe_port(*target) if target else None
        checks.append(port_check(str(address), target, error))
    return checks


def report(reachable: Check, ports: Sequence[Check], diagnosed: Sequence[Check]) -> list[Check]:
    """Every check in the order people read them: the socket, the daemon, its ports, the rest."""
    daemon, *rest = diagnosed
    return [reachable, daemon, *ports, *rest]


def _as_app(status: Mapping[str, Any]) -> bool:
    access = status.get("access")
    return isinstance(access, Mapping) and access.get("admin") is False


def _app_check(status: Mapping[str, Any]) -> Check:
    """An app (not an admin) may not see peers and the rest: say so instead of failing."""
    access = status.get("access") or {}
    user = access.get("user")
    who = f"uid {access.get('uid')}" + (f" ({safe_text(user)})" if user else "")
    grants = len(access.get("grants") or [])
    return Check(
        Level.INFO,
        f"the daemon answers, but you are an app here ({who}, {grants} grant(s)): only its "
        "admins can check peers, ports and discovery",
        "run `p2psync doctor` as root or as a member of the daemon's control group",
    )


def _nearby(client: Client) -> list[Any] | None:
    try:
        found = client.call("nearby")
    except ControlError as exc:
        if exc.code == "unknown_method":  # a daemon from before discovery reporting
            return None
        raise
    return found if isinstance(found, list) else None
