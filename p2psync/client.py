"""A small blocking Python client of the control socket (the CLI is built on it).

It speaks the newline-delimited JSON protocol of docs/control-protocol.md over a plain Unix
socket and turns failures into three exceptions that say what to do next. It never talks to the
replica or the network directly and holds no state besides its connection.
"""

import itertools
import json
import socket
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
        raise DaemonNotRunning(
            f"permission denied on {path}: add yourself to group p2psync "
            "(`sudo usermod -aG p2psync $USER`, then log in again)"
        ) from None
    except TimeoutError:
        sock.close()
        raise ControlError("timeout", f"the daemon at {path} does not accept connections") from None
    except OSError as exc:
        sock.close()
        raise DaemonNotRunning(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


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
