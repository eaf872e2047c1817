"""A small blocking Python client of the control socket (the CLI is built on it).

It speaks the newline-delimited JSON protocol of docs/control-protocol.md over a plain Unix
socket and turns failures into three exceptions that say what to do next. It never talks to the
replica or the network directly and holds no state besides its connection.
"""

import grp
import itertools
import json
import os
import pwd
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 30.0
DAEMON_HINT = "start it with `p2psync daemon` or `systemctl start p2psync`"


class ClientError(Exception):
    """Any failure of a control socket call."""


class ControlError(ClientError):
    """The daemon answered with an error (or, for codes `timeout` and `protocol`, did not)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class DaemonNotRunning(ClientError):
    """Nobody answers on the control socket, or we may not use it."""


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise DaemonNotRunning(
            f"no control socket at {path}: is the daemon running? {DAEMON_HINT} "
            "(or pass --socket / set P2PSYNC_SOCKET if it uses another path)"
        ) from None
    except ConnectionRefusedError:
        sock.close()
        raise DaemonNotRunning(
            f"nobody answers on {path}: the daemon has stopped; {DAEMON_HINT}"
        ) from None
    except PermissionError:
        sock.close()
        raise DaemonNotRunning(f"permission denied on {path}: {_permission_advice(path)}") from None
    except TimeoutError:
        sock.close()
        raise ControlError("timeout", f"the daemon at {path} does not accept connections") from None
    except OSError as exc:
        sock.close()
        raise DaemonNotRunning(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def _permission_advice(path: Path) -> str:
    """What keeps us out of the socket at `path` and how to get in: the group of the socket,
    or of the directory on its way that we may not enter (whatever group that is)."""
    for where in (path, *path.parents):
        try:
            found = os.stat(where)
        except OSError:
            continue  # we may not look in the directory holding it: that one keeps us out
        break
    else:
        return "ask whoever runs the daemon for access"
    # a socket is used by writing to it; a directory is passed through by searching it
    needed = stat.S_IWGRP if where == path else stat.S_IXGRP
    thing = "the socket" if where == path else f"the directory {where}"
    group = _name(grp.getgrgid, found.st_gid)
    if not found.st_mode & needed:
        owner = _name(pwd.getpwuid, found.st_uid)
        return (
            f"{thing} is open to its owner {owner} only (mode {stat.S_IMODE(found.st_mode):04o}); "
            f'run as {owner}, or have the daemon share it with a group (control.mode = "0660" '
            "and control.group in its config file)"
        )
    if found.st_gid not in os.getgroups() and _listed_in(found.st_gid):
        return f"you are in group {group} since your last login: log in again (or `newgrp {group}`)"
    return (
        f"{thing} belongs to group {group}: add yourself to it "
        f"(`sudo usermod -aG {group} $USER`, then log in again)"
    )


def _name(lookup: Any, number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _listed_in(gid: int) -> bool:
    """Whether this user is a member of `gid` in the group database (not necessarily yet in
    this login's groups)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


class _LineConnection:
    def __init__(self, path: Path, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self.sock = _connect(path, timeout)
        self.reader = self.sock.makefile("rb")

    def send(self, request: dict[str, Any]) -> None:
        line = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            self.sock.sendall(line)
        except TimeoutError:
            raise self._timed_out() from None
        except OSError as exc:
            raise _lost(exc) from None

    def receive(self) -> dict[str, Any]:
        try:
            line = self.reader.readline()
        except TimeoutError:
            raise self._timed_out() from None
        except OSError as exc:
            raise _lost(exc) from None
        if not line.endswith(b"\n"):
            raise _lost("it closed the connection: did it stop?")
        try:
            message = json.loads(line)
        except ValueError:
            raise ControlError("protocol", "the daemon sent something that is not JSON") from None
        if not isinstance(message, dict):
            raise ControlError("protocol", "the daemon sent something that is not a JSON object")
        return message

    def _timed_out(self) -> ControlError:
        self.close()
        return ControlError(
            "timeout",
            f"nothing from the daemon within {self.timeout:g} s; it may be busy or stuck "
            "(see `journalctl -u p2psync`)",
        )

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _result(response: dict[str, Any]) -> Any:
    if response.get("ok") is True:
        return response.get("result")
    error = response.get("error")
    if not isinstance(error, dict):
        raise ControlError("protocol", "the daemon sent an error without details")
    raise ControlError(str(error.get("code", "unknown")), str(error.get("message", "")))


class Client:
    """`Client(path).call("get", collection="notes", key="a")`; one connection, reused."""

    def __init__(self, socket_path: str | Path, timeout: float | None = DEFAULT_TIMEOUT_SECONDS):
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._connection: _LineConnection | None = None
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> Any:
        """Run one request; returns its result or raises ControlError / DaemonNotRunning."""
        if self._connection is None:
            self._connection = _LineConnection(self.socket_path, self.timeout)
        connection = self._connection
        request_id = next(self._ids)
        try:
            connection.send(_request(request_id, method, params))
            response = connection.receive()
        except ClientError:
            self.close()
            raise
        if response.get("id") != request_id:
            self.close()
            raise ControlError("protocol", "the daemon answered another request than ours")
        return _result(response)

    def watch(
        self,
        since: int | None = None,
        collection: str | None = None,
        *,
        idle_timeout: float | None = None,
        share: str | None = None,
    ) -> "Watch":
        """Changes after position `since` (None: from now), on a connection of their own; only
        those of `share` when given. With `idle_timeout`, waiting longer than that for the next
        event raises ControlError `timeout`; without, the iterator waits as long as it takes."""
        return Watch(self.socket_path, self.timeout, since, collection, idle_timeout, share)

    def stream(self, method: str, *, idle_timeout: float | None = None, **params: Any) -> "Stream":
        """Start a streaming request (like `pair`): `.result` is its first answer, iterating
        gives the event lines that follow. With `idle_timeout`, waiting longer than that for an
        event raises ControlError `timeout`."""
        return Stream(self.socket_path, self.timeout, method, params, idle_timeout)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Stream:
    """A request answered by one result and then event lines, on a connection of its own
    (`watch`, `pair`). Closing it ends the stream on the daemon's side too."""

    def __init__(
        self,
        path: Path,
        timeout: float | None,
        method: str,
        params: dict[str, Any],
        idle_timeout: float | None = None,
    ) -> None:
        self._connection = _LineConnection(path, timeout)
        try:
            self._connection.send(_request(0, method, params))
            self.result: Any = _result(self._connection.receive())
        except BaseException:
            self._connection.close()
            raise
        self._connection.timeout = idle_timeout
        self._connection.sock.settimeout(idle_timeout)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return self._connection.receive()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Watch(Stream):
    """An iterator of change events; `position` is the last one received (resume from it)."""

    def __init__(
        self,
        path: Path,
        timeout: float | None,
        since: int | None,
        collection: str | None,
        idle_timeout: float | None = None,
        share: str | None = None,
    ) -> None:
        params = {"since": since, "collection": collection, "share": share}
        super().__init__(path, timeout, "watch", params, idle_timeout)
        self.position: int = self.result["position"]

    def __next__(self) -> dict[str, Any]:
        event = super().__next__()
        self.position = event.get("position", self.position)
        return event

    def __enter__(self) -> "Watch":
        return self


def _request(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    # null is how the protocol says "not given" for optional parameters, and a put's value may be
    # null, so parameters are sent as they are
    return {"id": request_id, "method": method, **params}


def _lost(reason: object) -> DaemonNotRunning:
    return DaemonNotRunning(f"lost the connection to the daemon ({reason}); {DAEMON_HINT}")
