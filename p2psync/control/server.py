"""The control socket's server: which methods exist, and the answer to each request (trio).

It serves the Unix socket `socket_file.py` creates, each connection through `connection.py`
(framing, order, limits) as its client is allowed (`access.py`), and owns the dispatch: the
table of methods (`methods_data.py`, `methods_admin.py`, the share methods, the grant methods),
the ones that turn a connection into a stream (`watch`, `pair`, `backup`), and turning a
method's failure into an error answer, never a traceback. It holds no merge, sync or membership
logic (the daemon and the replica do); the protocol is documented in docs/control-protocol.md.
"""

import logging
from collections.abc import Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..backup.stream import start_backup
from ..node import Node
from ..replica import ReplicaError
from ..schemas.commands import schema_calls
from ..schemas.manifest import InvalidValue, ManifestError
from ..shares.commands import share_calls
from ..shares.rules import ShareError
from .access import ControlAccess
from .connection import Follow, Reads, StartStream
from .errors import (
    BAD_REQUEST,
    DISK_FULL,
    DISK_FULL_MESSAGE,
    INTERNAL,
    INTERNAL_MESSAGE,
    INVALID_VALUE,
    RequestError,
    is_disk_full,
)
from .front_ends import serve_with_front_end
from .lines import error_line, json_line
from .methods_admin import AdminMethods, ControlContext
from .methods_data import Call, DataMethods, WriteRequest
from .schema import PARAMETERS
from .socket_file import control_listener
from .watch import Covers, start_watch

log = logging.getLogger("p2psync.control")  # the name these lines have always been logged under


async def serve_control(
    path: Path,
    context: ControlContext,
    *,
    mode: int = 0o660,
    group: str | None = "p2psync",
    front_end: Collection[int] | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `path` until cancelled; `task_status.started()` once clients can connect.
    Clients that are not admins (root, this user, members of `group`) are apps, held to their
    grants (`access.py`). `front_end`: accept through a front-end process on those processors
    (empty: the daemon's; `front_ends.py`), None: here."""
    server = Server(context)
    access = ControlAccess(context.node, context, Path(path), group)
    await access.load()
    server.add_calls(access.calls)
    server.check_declared()
    async with control_listener(Path(path), mode, group) as listener:
        access.warn_if_apps_cannot_connect(mode)
        serve = partial(access.serve, server)
        if front_end is None:
            await trio.serve_listeners(serve, [listener], task_status=task_status)
        else:
            await serve_with_front_end(
                listener, serve, context.node, front_end, task_status=task_status
            )


class Server:
    """The dispatcher of an admin's connection (an app's wraps it: `access._AppConnection`)."""

    def __init__(self, context: ControlContext) -> None:
        self.context = context
        self.data = DataMethods(context.node)
        self.admin = AdminMethods(context)
        self.calls: dict[str, Call] = {
            **self.admin.calls,
            **self.data.calls,
            **share_calls(context),
            **schema_calls(context.node),
            # an admin may use every declared method (check_declared: every one served)
            "hello": lambda request: self.admin.hello(request, list(PARAMETERS)),
        }
        self.writes: dict[str, WriteRequest] = self.data.writes
        self.streams: dict[str, StartStream] = {
            "watch": self.start_watch,
            "pair": lambda request, reads: self.admin.start_pairing(request),
            "backup": lambda request, reads: start_backup(self.node, context.device_name, request),
        }
        self.methods = sorted([*self.calls, *self.writes, *self.streams])

    def add_calls(self, calls: Mapping[str, Call]) -> None:
        """Methods served elsewhere (`grant`, `revoke_grant`, `grants` of access.py)."""
        self.calls.update(calls)
        self.methods = sorted([*self.calls, *self.writes, *self.streams])

    def check_declared(self) -> None:
        """Every method served has its parameters declared (schema.py), and only those: a
        method added without them would take any parameter, misspelt ones included."""
        served, declared = set(self.methods), set(PARAMETERS)
        if served != declared:
            raise RuntimeError(
                f"control methods served but not declared: {sorted(served - declared)}; "
                f"declared but not served: {sorted(declared - served)}"
            )

    @property
    def node(self) -> Node:
        return self.context.node

    async def answer(
        self, request_id: Any, method: str, request: dict[str, Any], call: Call | None = None
    ) -> bytes:
        """The answer line to a request of `method`, run by `call` (default: the method's)."""
        try:
            result = await (call or self.calls[method])(request)
            return json_line({"id": request_id, "ok": True, "result": result})
        except RequestError as exc:
            return error_line(request_id, exc.code, exc.message)
        except ShareError as exc:
            return error_line(request_id, exc.code, str(exc))
        except InvalidValue as exc:  # resolve with a value
            return error_line(request_id, INVALID_VALUE, str(exc))
        except ManifestError as exc:
            return error_line(request_id, BAD_REQUEST, str(exc))
        except ReplicaError as exc:
            return error_line(request_id, BAD_REQUEST, str(exc))
        except Exception as exc:
            if is_disk_full(exc):  # resolve, trust and revoke write too
                log.warning("control request %r was refused: the disk is full (%s)", method, exc)
                return error_line(request_id, DISK_FULL, DISK_FULL_MESSAGE)
            log.exception("control request %r failed", method)
            return error_line(request_id, INTERNAL, INTERNAL_MESSAGE)

    async def start_watch(
        self, request: dict[str, Any], reads: Reads, covers: Covers | None = None
    ) -> tuple[dict[str, Any], Follow]:
        return await start_watch(self.node, request, reads, covers)
