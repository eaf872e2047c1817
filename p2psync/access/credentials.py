"""Who is on the other end of a control connection (I/O: socket options, user database, /proc).

It owns asking the kernel for a client's credentials (SO_PEERCRED: pid, uid, gid, recorded when
the client connected; SO_PEERGROUPS: its supplementary groups), looking users and groups up, and
noticing a user namespace that hides users from the daemon. It caches nothing that decides: a user
added to or removed from the control group counts from the next connection (only the names of
root and the daemon's own user are kept, for display). Lookups may block on NSS (LDAP, sssd), so
the trio side runs them in a thread, except for root and the daemon's own user, who are admins
by rule and need none (`admin_by_rule`). It never decides what a client may do (that is
`grants.py`) and never reads a request.
"""

import array
import grp
import os
import platform
import pwd
import socket
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

from .grants import Peer, is_admin

_UCRED = struct.Struct("iII")  # struct ucred: pid_t, uid_t, gid_t
# Linux 4.13+; Python does not name it. 59 wherever the kernel uses the generic socket numbers.
_GENERIC_SOCKET_NUMBERS = {"x86_64", "i686", "aarch64", "armv7l", "armv6l", "riscv64", "ppc64le"}
_SO_PEERGROUPS: int | None = getattr(
    socket, "SO_PEERGROUPS", 59 if platform.machine() in _GENERIC_SOCKET_NUMBERS else None
)
_GROUP_BYTES = 1024  # the most Python's getsockopt takes: 256 groups
UID_MAP = Path("/proc/self/uid_map")
OVERFLOW_UID = Path("/proc/sys/kernel/overflowuid")
ALL_UIDS = 2**32 - 1  # what an unrestricted uid_map covers ("0 0 4294967295")


class _Socket(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


@dataclass(frozen=True)
class Credentials:
    """What the kernel says about a client process, as of its connect()."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups; () when the kernel cannot say


def peer_credentials(sock: _Socket) -> Credentials:
    """The client's credentials on an accepted Unix socket; raises OSError."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Credentials(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: _Socket) -> tuple[int, ...]:
    if _SO_PEERGROUPS is None:
        return ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _GROUP_BYTES)
    except OSError:  # ERANGE: more than 256 groups; ENOPROTOOPT: an older kernel
        return ()
    return tuple(array.array("I", raw))


def identify(credentials: Credentials, admin_group: str | None) -> Peer:
    """The client as a Peer: its user name, and whether it is an admin. Blocking (NSS)."""
    identified = not (
        uids_hidden() and credentials.uid == overflow_uid() and credentials.uid != os.geteuid()
    )
    entry = _user(credentials.uid) if identified else None
    user_gids = os.getgrouplist(entry.pw_name, entry.pw_gid) if entry else []
    admin = is_admin(
        credentials.uid,
        identified=identified,
        process_gids=(credentials.gid, *credentials.groups),
        user_gids=user_gids,
        daemon_uid=os.geteuid(),
        admin_gid=admin_gid(admin_group),
    )
    user = entry.pw_name if entry else None
    return Peer(credentials.uid, user, admin, identified, credentials.pid)


def admin_by_rule(credentials: Credentials) -> Peer | None:
    """The client as a Peer when it is root or the daemon's own user: admins whatever the user
    database says, so no lookup (and no thread) is needed; None for anyone else. Their uids are
    always identified: a namespace that hides users shows them as the overflow uid, never as 0
    or as the daemon's own."""
    if credentials.uid not in (0, os.geteuid()):
        return None
    return Peer(credentials.uid, _privileged_name(credentials.uid), True, True, credentials.pid)


@cache
def _privileged_name(uid: int) -> str | None:
    """Root's or the daemon user's name, looked up once (a daemon's first connection of them)."""
    return user_name(uid)


def user_is_admin(uid: int, admin_group: str | None) -> bool:
    """Whether `uid` is an admin by the user database alone (blocking)."""
    entry = _user(uid)
    return is_admin(
        uid,
        identified=True,
        process_gids=(),
        user_gids=os.getgrouplist(entry.pw_name, entry.pw_gid) if entry else [],
        daemon_uid=os.geteuid(),
        admin_gid=admin_gid(admin_group),
    )


def admin_gid(admin_group: str | None) -> int:
    """The control group's gid: the named group; else (none named, or no such group) the
    daemon's own, which the socket then keeps."""
    if admin_group:
        try:
            return grp.getgrnam(admin_group).gr_gid
        except KeyError:
            pass
    return os.getegid()


def admins_text(admin_group: str | None) -> str:
    """Who the admins are, for messages: "root, user p2psync and members of group p2psync"."""
    gid = admin_gid(admin_group)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    daemon_user = user_name(os.geteuid()) or f"uid {os.geteuid()}"
    own = "" if os.geteuid() == 0 else f", user {daemon_user}"
    return f"root{own} and members of group {group}"


def find_user(app: int | str) -> tuple[int, str | None]:
    """(uid, user name) of a grant's app; LookupError for a name nobody has here (blocking)."""
    if isinstance(app, int):
        return app, user_name(app)
    try:
        entry = pwd.getpwnam(app)
    except KeyError:
        raise LookupError(
            f"no user {app!r} on this device (`getent passwd` lists them); name a user or give "
            "a uid"
        ) from None
    return entry.pw_uid, entry.pw_name


def user_name(uid: int) -> str | None:
    entry = _user(uid)
    return entry.pw_name if entry else None


def _user(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except (KeyError, OverflowError):
        return None


# user namespaces --------------------------------------------------------------------------------


def parse_uid_map(text: str) -> list[tuple[int, int]]:
    """/proc/PID/uid_map as (first uid inside, count) ranges; lines are "inside outside count"."""
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(field.isdigit() for field in fields):
            ranges.append((int(fields[0]), int(fields[2])))
    return ranges


def _uid_ranges() -> list[tuple[int, int]]:
    try:
        return parse_uid_map(UID_MAP.read_text())
    except OSError:  # no /proc: assume the initial namespace, where every uid is itself
        return [(0, ALL_UIDS)]


def uids_hidden() -> bool:
    """Whether this daemon runs in a user namespace that maps only some users (as systemd's
    PrivateUsers=yes does); the others all show as the overflow uid."""
    return sum(count for _, count in _uid_ranges()) < ALL_UIDS


def uid_visible(uid: int) -> bool:
    return any(first <= uid < first + count for first, count in _uid_ranges())


def overflow_uid() -> int:
    try:
        return int(OVERFLOW_UID.read_text())
    except (OSError, ValueError):
        return 65534
