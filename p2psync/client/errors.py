"""The client's one exception hierarchy: every failure of a call is a `ControlError` with a code.

    ClientError                      anything that went wrong with a call
    └── ControlError(code, message)  a failure with a stable code (`.code`) and a text for people
        ├── BadRequest               bad_request: a parameter missing, misspelt or mistyped, a
        │                            value that cannot be stored, a reserved collection
        ├── UnknownMethod            unknown_method: the daemon has no such method (it is older)
        ├── NotFound                 not_found: no such record (or deleted), share, device, grant
        ├── Forbidden                forbidden: outside this app's grants, or for admins only
        ├── TooLarge                 too_large: the request line is longer than the daemon reads
        ├── Conflict                 conflict: `if_version` or `resolve(pick=...)` no longer matches
        ├── InvalidValue             invalid_value: the share's schema manifest refuses the value
        │                            (its type's JSON Schema, or a version no longer written)
        ├── DiskFull                 disk_full: nothing was written; free space and retry
        ├── Internal                 internal: a bug or I/O failure in the daemon (see its log)
        ├── PairingFailed            pairing_failed: a wrong, used or expired pairing code
        ├── Timeout                  timeout (client side): no answer in time
        ├── ProtocolViolation        protocol (client side): the answer was not the protocol
        └── ConnectionFailed         the daemon cannot be used (client side)
            ├── NotRunning           not_running: no daemon at the socket, or it went away
            └── PermissionDenied     permission_denied: the socket is not ours to open

The daemon's codes are those of docs/control-protocol.md; a code this client does not know yet
comes as a plain `ControlError` carrying it. `DaemonNotRunning` is the former name of
`ConnectionFailed`, kept for existing callers.
"""

from typing import Final


class ClientError(Exception):
    """Any failure of a control socket call."""


class ControlError(ClientError):
    """A failure with a stable `code` (see the module docstring) and a `message` for people."""

    code: str = "unknown"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type["ControlError"], tuple[str, str]]:
        # so that errors survive pickling (multiprocessing, pytest-xdist) with their two fields
        return (ControlError, (self.code, self.message))


class _Coded(ControlError):
    """A ControlError whose class says the code: `NotFound("no such record")`."""

    code = "unknown"

    def __init__(self, message: str) -> None:
        super().__init__(type(self).code, message)

    def __reduce__(self) -> tuple[type[ControlError], tuple[str]]:  # type: ignore[override]
        return (type(self), (self.message,))


class BadRequest(_Coded):
    """The daemon refused the request as malformed (`bad_request`); the message names what."""

    code = "bad_request"


class UnknownMethod(_Coded):
    """The daemon has no such method (`unknown_method`): it is older than this client."""

    code = "unknown_method"


class NotFound(_Coded):
    """No such record, share, device, user or grant (`not_found`); a deleted record too."""

    code = "not_found"


class Forbidden(_Coded):
    """Outside this app's grants, or a method for admins only (`forbidden`)."""

    code = "forbidden"


class TooLarge(_Coded):
    """The request line is longer than the daemon reads (`too_large`, 1 MiB); it was skipped."""

    code = "too_large"


class Conflict(_Coded):
    """A compare-and-set failed (`conflict`): `if_version` or a picked version is not current."""

    code = "conflict"


class InvalidValue(_Coded):
    """The share's schema manifest refuses the write (`invalid_value`): the value fails its
    type's JSON Schema (the message says where and why), or its version is no longer written."""

    code = "invalid_value"


class DiskFull(_Coded):
    """The daemon's disk is full (`disk_full`): nothing was written; reads keep working."""

    code = "disk_full"


class Internal(_Coded):
    """A bug or an I/O failure in the daemon (`internal`); the details are in its log."""

    code = "internal"


class PairingFailed(_Coded):
    """A pairing code was wrong, used or expired, or no inviter was found (`pairing_failed`)."""

    code = "pairing_failed"


class Timeout(_Coded):
    """No answer within the client's timeout (`timeout`); the connection was closed."""

    code = "timeout"


class ProtocolViolation(_Coded):
    """What came back was not the control protocol (`protocol`); the connection was closed."""

    code = "protocol"


class ConnectionFailed(_Coded):
    """The daemon cannot be used: nobody listens on the socket, or we may not open it."""

    code = "not_running"


class NotRunning(ConnectionFailed):
    """No daemon at the socket (`not_running`): no file, nobody listening, or it went away."""

    code = "not_running"


class PermissionDenied(ConnectionFailed):
    """The socket is there but not ours to open (`permission_denied`): join its group."""

    code = "permission_denied"


DaemonNotRunning = ConnectionFailed  # the name before the hierarchy had codes

ERRORS_BY_CODE: Final[dict[str, type[_Coded]]] = {
    error.code: error
    for error in (
        BadRequest,
        UnknownMethod,
        NotFound,
        Forbidden,
        TooLarge,
        Conflict,
        InvalidValue,
        DiskFull,
        Internal,
        PairingFailed,
        Timeout,
        ProtocolViolation,
        NotRunning,
        PermissionDenied,
    )
}


def error_for(code: str, message: str) -> ControlError:
    """The exception for an error answer: its class by code, a plain ControlError otherwise."""
    known = ERRORS_BY_CODE.get(code)
    return known(message) if known is not None else ControlError(code, message)


# what to tell people when the socket cannot be used --------------------------------------------

DAEMON_HINT: Final = "start it with `p2psync daemon` or `systemctl start p2psync`"


def connect_failure(path: object, exc: OSError, advice: str = "") -> ControlError:
    """The error for a failed connect() to the socket at `path`, saying what to do about it
    (`advice`: for a refused permission, what keeps us out; see `paths.permission_advice`)."""
    if isinstance(exc, FileNotFoundError):
        return NotRunning(
            f"no control socket at {path}: is the daemon running? {DAEMON_HINT} "
            "(or pass --socket / set P2PSYNC_SOCKET if it uses another path)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return NotRunning(f"nobody answers on {path}: the daemon has stopped; {DAEMON_HINT}")
    if isinstance(exc, PermissionError):
        return PermissionDenied(
            f"permission denied on {path}: "
            + (advice or "ask whoever runs the daemon for access to the socket")
        )
    if isinstance(exc, TimeoutError):
        return Timeout(f"the daemon at {path} does not accept connections")
    return NotRunning(f"cannot connect to {path}: {exc.strerror or exc}")


def connection_lost(reason: object) -> NotRunning:
    """The error for a connection that broke or was closed by the daemon."""
    return NotRunning(f"lost the connection to the daemon ({reason}); {DAEMON_HINT}")


def timed_out(seconds: float | None) -> Timeout:
    waited = "in time" if seconds is None else f"within {seconds:g} s"
    return Timeout(
        f"nothing from the daemon {waited}; it may be busy or stuck (see `journalctl -u p2psync`)"
    )
