"""Python clients of the daemon's control socket (docs/control-protocol.md, docs/python-client.md).

    from p2psync.client import Client, NotFound

    with Client() as client:                       # the socket of default_socket_path()
        written = client.put("notes", "shopping", {"items": ["milk"]})
        record = client.get("notes", "shopping")   # a Record: .value, .version, .siblings...
        with client.pipeline() as batch:           # many requests, answers read in order
            answers = [batch.put("notes", f"n{i}", i) for i in range(1000)]
        for event in client.watch(since=0):        # ChangeEvent, CaughtUp, Heartbeat...
            ...

`AsyncClient` has the same methods as coroutines, on anyio (asyncio or trio):
`async with AsyncClient() as client: await client.get(...)`, `async for event in client.watch()`.

Modules: `blocking` (Client), `connection` (its connections, Stream and Watch), `asynchronous`
(AsyncClient), `calls` (what each request sends, Pipeline), `exchange` (the pipelining window,
shared by both), `results` and `events` (typed results), `values` (JSON and bytes), `errors` (the
exception hierarchy and its codes), `paths` (default_socket_path).

Errors: every failure is a `ControlError` with a stable `code`; its subclasses say which
(`NotFound`, `Conflict`, `InvalidValue`, `Forbidden`, `BadRequest`, `TooLarge`, `DiskFull`,
`Internal`, `UnknownMethod`, `PairingFailed`, and on the client's side `Timeout`,
`ProtocolViolation`, `ConnectionFailed` = `NotRunning` | `PermissionDenied`); see errors.py for
what each means.
"""

from .asynchronous import AsyncClient, AsyncPipeline, AsyncStream, AsyncWatch
from .blocking import DEFAULT_TIMEOUT_SECONDS, BlockingPipeline, Client
from .calls import MISSING, Pending, Pipeline
from .connection import Stream, Watch
from .errors import (
    DAEMON_HINT,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    ControlError,
    DaemonNotRunning,
    DiskFull,
    Forbidden,
    Internal,
    InvalidValue,
    NotFound,
    NotRunning,
    PairingFailed,
    PermissionDenied,
    ProtocolViolation,
    Timeout,
    TooLarge,
    UnknownMethod,
)
from .events import (
    CaughtUp,
    Change,
    ChangeEvent,
    ConflictEvent,
    Heartbeat,
    MembershipEvent,
    OutdatedEvent,
    PeerEvent,
    SyncedEvent,
    UnknownEvent,
    WatchEvent,
)
from .exchange import DEFAULT_WINDOW
from .paths import ENV_SOCKET, default_socket_path
from .results import (
    CollectionInfo,
    ConflictsPage,
    Delete,
    Hello,
    History,
    HistoryVersion,
    Put,
    Record,
    ScanPage,
    Sibling,
    TypeSchema,
    Write,
    WriteResult,
)

__all__ = [
    "DAEMON_HINT",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_WINDOW",
    "ENV_SOCKET",
    "MISSING",
    "AsyncClient",
    "AsyncPipeline",
    "AsyncStream",
    "AsyncWatch",
    "BadRequest",
    "BlockingPipeline",
    "CaughtUp",
    "Change",
    "ChangeEvent",
    "Client",
    "ClientError",
    "CollectionInfo",
    "Conflict",
    "ConflictEvent",
    "ConflictsPage",
    "ConnectionFailed",
    "ControlError",
    "DaemonNotRunning",
    "Delete",
    "DiskFull",
    "Forbidden",
    "Heartbeat",
    "Hello",
    "History",
    "HistoryVersion",
    "Internal",
    "InvalidValue",
    "MembershipEvent",
    "NotFound",
    "NotRunning",
    "OutdatedEvent",
    "PairingFailed",
    "PeerEvent",
    "Pending",
    "PermissionDenied",
    "Pipeline",
    "ProtocolViolation",
    "Put",
    "Record",
    "ScanPage",
    "Sibling",
    "Stream",
    "SyncedEvent",
    "Timeout",
    "TooLarge",
    "TypeSchema",
    "UnknownEvent",
    "UnknownMethod",
    "Watch",
    "WatchEvent",
    "Write",
    "WriteResult",
    "default_socket_path",
]
