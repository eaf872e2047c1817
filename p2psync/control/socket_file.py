"""The control socket's file: creating it with the right permissions, and removing it again.

It owns the Unix socket path: binding under a temporary name and renaming into place (so the
socket is never reachable with the umask's permissions), its mode and group, telling a stale
socket file from a live daemon's, and unlinking only the socket it created. It must never remove
a file that is not a socket or a socket another daemon answers on, and it never reads a request:
connections are `connection.py`'s, their meaning `server.py`'s.
"""

import grp
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

log = logging.getLogger("p2psync.control")  # the name these lines have always been logged under

PROBE_TIMEOUT_SECONDS = 2.0
UNIX_PATH_MAX = 107
# what a person can change when the path is taken: the option, and the environment variable
# that the daemon and the CLI both read
CHANGE_IT = "control.socket in the config file, or P2PSYNC_SOCKET=PATH"


class ControlSocketError(OSError):
    """The control socket cannot be created; the message says why and what to do."""


@asynccontextmanager
async def control_listener(
    path: Path, mode: int, group: str | None
) -> AsyncIterator[trio.SocketListener]:
    """A listener on `path`; on the way out it is closed and the file removed if still ours."""
    listener = await _listen(path, mode, group)
    inode = os.stat(path).st_ino
    try:
        yield listener
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass


async def _listen(path: Path, mode: int, group: str | None) -> trio.SocketListener:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    await remove_stale_socket(path)
    # Bind under a temporary name and rename into place, so the socket is never reachable with
    # the umask's permissions instead of ours.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(3)}")
    if len(os.fsencode(temporary)) > UNIX_PATH_MAX:
        raise ControlSocketError(f"control socket path {path} is too long; choose a shorter one")
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(str(temporary))
        os.chmod(temporary, mode)
        if group is not None:
            _give_to_group(temporary, group, path)
        sock.listen(128)
        os.rename(temporary, path)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    return trio.SocketListener(sock)


async def remove_stale_socket(path: Path) -> None:
    """Make way for our socket at `path`: a socket nobody answers on is removed; a daemon that
    answers there, or a file that is not a socket, is a `ControlSocketError` naming the path
    and what to change. The daemon calls this first of all, so that it stops before it starts
    anything else (listeners, discovery) rather than after."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise ControlSocketError(
            f"control socket {path} exists and is not a socket; move it away, or choose another "
            f"path with {CHANGE_IT}"
        )
    try:
        with trio.fail_after(PROBE_TIMEOUT_SECONDS):
            probe = await trio.open_unix_socket(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        log.info("removed stale control socket %s", path)
        return
    except trio.TooSlowError:
        pass  # someone holds it but does not accept: treat as in use
    except PermissionError:
        raise ControlSocketError(
            f"cannot check whether {path} is in use (permission denied); remove it, or run as "
            "its owner"
        ) from None
    else:
        await probe.aclose()
    raise ControlSocketError(
        f"control socket {path} is in use: another p2psync daemon answers there; stop it, or "
        f"give this daemon a socket of its own with {CHANGE_IT}"
    )


def _give_to_group(socket_path: Path, group: str, shown_as: Path) -> None:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning(
            "group %r does not exist, so only this user can use %s; create it with "
            "`groupadd --system %s`",
            group,
            shown_as,
            group,
        )
        return
    current = os.stat(socket_path).st_gid
    if current == gid:
        # already the group's (the daemon runs with it, as under systemd's Group=): nothing to
        # ask, and the chown a system call filter may refuse is never tried
        return
    try:
        os.chown(socket_path, -1, gid)
    except PermissionError:
        try:
            kept = grp.getgrgid(current).gr_name
        except KeyError:
            kept = str(current)
        log.warning(
            "cannot give %s to group %r (this user is not a member, or the system refuses "
            "chown here); it stays with group %r",
            shown_as,
            group,
            kept,
        )


def why_others_cannot_connect(path: Path) -> str | None:
    """Why users other than the socket's owner and group cannot connect to it, as advice; None
    when they can (connect() needs write permission on the socket and search permission on every
    directory above it)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & 0o002:
            return (
                f"other users cannot open {path} (mode {mode:04o}): set control.apps = true in "
                "the daemon's configuration and restart it"
            )
        for directory in Path(os.path.abspath(path)).parents:
            mode = stat.S_IMODE(os.stat(directory).st_mode)
            if not mode & 0o001:
                return (
                    f"other users cannot reach {path}: its directory {directory} is mode "
                    f"{mode:04o}; give it o+x (for the system service, RuntimeDirectoryMode=0751 "
                    "via `systemctl edit p2psync`)"
                )
    except OSError as exc:
        return f"cannot check who may open {path}: {exc.strerror or exc}"
    return None
