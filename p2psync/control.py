"""The control socket's requests: what each method means, from a parsed request to its answer.

It serves the Unix socket `control_socket.py` creates, each connection through
`control_connection.py` (framing, order, limits), and owns the dispatch: which methods exist, their
parameters and answers, and the two that turn a connection into a stream (`watch`, `pair`). The
JSON <-> replica translation is `control_api.py`'s. It holds no merge, sync or membership logic
(the daemon and the replica do), and a failing request gets an error answer, never a traceback;
the protocol is documented in docs/control-protocol.md.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any, Protocol

import trio

from . import entry as entries
from .control_access import ControlAccess
from .control_api import (
    BAD_REQUEST,
    CONFLICT,
    DISK_FULL,
    DISK_FULL_MESSAGE,
    NOT_FOUND,
    PAIRING_FAILED,
    RequestError,
    change_json,
    collection_param,
    is_disk_full,
    param,
    record_json,
    share_param,
    transaction_ops,
    write_op,
)
from .control_connection import (
    INTERNAL,
    INTERNAL_MESSAGE,
    Follow,
    Send,
    StartStream,
    error_line,
    json_line,
)
from .control_socket import control_listener
from .entry import Op
from .identity import device_id_from_certificate
from .node import Node
from .pairing_service import Invitation, PairingFailed
from .replica import DEFAULT_SHARE, Change, ReplicaError
from .shares.commands import ShareContext, share_calls
from .shares.rules import ShareError, unknown_share
from .vectors import device_of

log = logging.getLogger(__name__)

SCAN_DEFAULT_LIMIT = 100
SCAN_MAX_LIMIT = 1000
SCAN_PAGE_VALUE_BYTES = 4 * 1024 * 1024  # a scan page ends early rather than grow past this
CONFLICTS_LIMIT = 1000
WATCH_PAGE_ENTRIES = 64
WATCH_SEND_BYTES = 64 * 1024  # events go out together up to this much, not one send each

DEFAULT_PAIRING_TTL = 300.0


class ControlContext(ShareContext, Protocol):
    """What the control socket needs from the daemon (the share methods' needs included)."""

    @property
    def device_name(self) -> str: ...
    async def status(self) -> dict[str, Any]: ...
    async def peers_status(self) -> list[dict[str, Any]]: ...

    # may raise ValueError (-> bad_request), LookupError (-> not_found) or RequestError
    async def trust(
        self, cert_pem: bytes, name: str | None, address: str | None, readmit: bool = False
    ) -> dict[str, Any]: ...
    async def revoke(self, device_id: str) -> dict[str, Any]: ...
    async def reload(self) -> dict[str, Any]: ...
    def nearby(self) -> list[dict[str, Any]]: ...
    async def pair(
        self, ttl_seconds: float, readmit: bool = False, shares: Sequence[str] = ()
    ) -> Invitation: ...
    def end_pairing(self, invitation: Invitation) -> None: ...
    async def join(self, code_text: str, address: str | None) -> dict[str, Any]: ...


async def serve_control(
    path: Path,
    context: ControlContext,
    *,
    mode: int = 0o660,
    group: str | None = "p2psync",
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `path` until cancelled; `task_status.started()` once clients can connect.
    Clients that are not admins (root, this user, members of `group`) are apps, held to their
    grants (`control_access.py`)."""
    server = _Server(context)
    access = ControlAccess(context.node, context, Path(path), group)
    await access.load()
    server.add_calls(access.calls)
    async with control_listener(Path(path), mode, group) as listener:
        access.warn_if_apps_cannot_connect(mode)
        await trio.serve_listeners(
            partial(access.serve, server), [listener], task_status=task_status
        )


@dataclass
class _Watch:
    since: int
    collection: str | None
    share: str | None
    # an app's watch: whether its grants let it read (share, collection), asked per change
    covers: Callable[[str, str], bool] | None = None

    def wants(self, change: Change) -> bool:
        collection_wanted = self.collection in (None, change.op.collection)
        wanted = collection_wanted and self.share in (None, change.share)
        return wanted and (self.covers is None or self.covers(change.share, change.op.collection))


class _Server:
    def __init__(self, context: ControlContext) -> None:
        self.context = context
        self.calls: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "status": self._status,
            "peers": self._peers,
            "id": self._id,
            "get": self._get,
            "scan": self._scan,
            "conflicts": self._conflicts,
            "resolve": self._resolve,
            "trust": self._trust,
            "revoke": self._revoke,
            "forget": self._revoke,
            "reload": self._reload,
            "nearby": self._nearby,
            "join": self._join,
            **share_calls(context),
        }
        self.writes: dict[str, Callable[[dict[str, Any]], list[Op]]] = {
            "put": lambda request: [write_op(request, "put")],
            "delete": lambda request: [write_op(request, "delete")],
            "transaction": transaction_ops,
        }
        self.streams: dict[str, StartStream] = {
            "watch": self.start_watch,
            "pair": self.start_pairing,
        }
        self.methods = sorted([*self.calls, *self.writes, *self.streams])

    def add_calls(self, calls: Mapping[str, Callable[[dict[str, Any]], Awaitable[Any]]]) -> None:
        """Methods served elsewhere (`grant`, `revoke_grant`, `grants` of control_access.py)."""
        self.calls.update(calls)
        self.methods = sorted([*self.calls, *self.writes, *self.streams])

    @property
    def node(self) -> Node:
        return self.context.node

    async def answer(self, request_id: Any, method: str, request: dict[str, Any]) -> bytes:
        try:
            result = await self.calls[method](request)
            return json_line({"id": request_id, "ok": True, "result": result})
        except RequestError as exc:
            return error_line(request_id, exc.code, exc.message)
        except ShareError as exc:
            return error_line(request_id, exc.code, str(exc))
        except ReplicaError as exc:
            return error_line(request_id, BAD_REQUEST, str(exc))
        except Exception as exc:
            if is_disk_full(exc):  # resolve, trust and revoke write too
                log.warning("control request %r was refused: the disk is full (%s)", method, exc)
                return error_line(request_id, DISK_FULL, DISK_FULL_MESSAGE)
            log.exception("control request %r failed", method)
            return error_line(request_id, INTERNAL, INTERNAL_MESSAGE)

    # methods ------------------------------------------------------------------------------

    async def _status(self, request: dict[str, Any]) -> Any:
        return await self.context.status()

    async def _peers(self, request: dict[str, Any]) -> Any:
        return await self.context.peers_status()

    async def _id(self, request: dict[str, Any]) -> Any:
        cert_pem: bytes = self.node.replica.identity.cert_pem
        return {
            "device": self.context.device_id,
            "name": self.context.device_name,
            "cert": cert_pem.decode("ascii"),
        }

    async def _get(self, request: dict[str, Any]) -> Any:
        share, collection = share_param(request), collection_param(request)
        key: str = param(request, "key", str)
        everything: bool = param(request, "all", bool, False)
        view = await self.node.call(self.node.replica.get, share, collection, key)
        if view is None:
            raise RequestError(NOT_FOUND, f"no record {collection}/{key}")
        if view.deleted and not view.conflict and not everything:
            raise RequestError(
                NOT_FOUND, f"{collection}/{key} was deleted (by {device_of(view.winner.actor)})"
            )
        return record_json(view, siblings=everything or view.conflict)

    async def _scan(self, request: dict[str, Any]) -> Any:
        share, collection = share_param(request), collection_param(request)
        prefix: str = param(request, "prefix", str, "")
        after: str | None = param(request, "after", str, None)
        limit: int = param(request, "limit", int, SCAN_DEFAULT_LIMIT)
        if not 1 <= limit <= SCAN_MAX_LIMIT:
            raise RequestError(BAD_REQUEST, f"'limit' must be between 1 and {SCAN_MAX_LIMIT}")
        views = await self.node.call(
            self.node.replica.scan, share, collection, prefix, after, limit
        )
        items: list[dict[str, Any]] = []
        size = 0
        for view in views:
            size += len(view.winner.value or b"")
            if items and size > SCAN_PAGE_VALUE_BYTES:
                break
            items.append(record_json(view, siblings=False))
        more = len(views) == limit or len(items) < len(views)
        return {"items": items, "next": items[-1]["key"] if more and items else None}

    async def _conflicts(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        collection = collection_param(request) if request.get("collection") is not None else None
        views = await self.node.call(
            self.node.replica.conflicts, share, collection, CONFLICTS_LIMIT + 1
        )
        return {
            "items": [record_json(v, siblings=True) for v in views[:CONFLICTS_LIMIT]],
            "more": len(views) > CONFLICTS_LIMIT,
        }

    async def _resolve(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        pick = param(request, "pick", dict, None)
        if (pick is None) == ("value" not in request):
            raise RequestError(BAD_REQUEST, "give either 'value' or 'pick': {origin, hlc}")
        if pick is None:
            op = write_op(request, "put")
        else:
            op = await self._picked_op(share, request, pick)
        done = await self.node.commit(share, [op])
        return {"position": done.lseq, "seq": done.seq, "hlc": done.hlc}

    async def _picked_op(self, share: str, request: dict[str, Any], pick: dict[str, Any]) -> Op:
        collection = collection_param(request, writing=True)
        key: str = param(request, "key", str)
        origin: str = param(pick, "origin", str)
        hlc: int = param(pick, "hlc", int)
        view = await self.node.call(self.node.replica.get, share, collection, key)
        if view is None:
            raise RequestError(NOT_FOUND, f"no record {collection}/{key}")
        for sibling in view.siblings:
            if device_of(sibling.actor) == origin and sibling.hlc == hlc:
                if sibling.deleted:
                    return Op(entries.DELETE, collection, key, None, sibling.meta)
                return Op(entries.PUT, collection, key, sibling.value, sibling.meta)
        raise RequestError(
            CONFLICT,
            f"{collection}/{key} has no version from {origin} at hlc {hlc} (any more); "
            "look again with get and all=true",
        )

    async def _trust(self, request: dict[str, Any]) -> Any:
        cert: str = param(request, "cert", str)
        name: str | None = param(request, "name", str, None)
        address: str | None = param(request, "address", str, None)
        readmit: bool = param(request, "readmit", bool, False)
        return await _membership_call(self.context.trust(cert.encode(), name, address, readmit))

    async def _revoke(self, request: dict[str, Any]) -> Any:
        device: str = param(request, "device", str)
        return await _membership_call(self.context.revoke(device))

    async def _reload(self, request: dict[str, Any]) -> Any:
        return await _membership_call(self.context.reload())

    async def _nearby(self, request: dict[str, Any]) -> Any:
        return self.context.nearby()

    async def _join(self, request: dict[str, Any]) -> Any:
        code: str = param(request, "code", str)
        address: str | None = param(request, "address", str, None)
        try:
            return await self.context.join(code, address)
        except PairingFailed as exc:
            raise RequestError(PAIRING_FAILED, str(exc)) from None
        except ValueError as exc:  # an unreadable code or address
            raise RequestError(BAD_REQUEST, str(exc)) from None

    async def start_watch(
        self, request: dict[str, Any], covers: Callable[[str, str], bool] | None = None
    ) -> tuple[dict[str, Any], Follow]:
        """`watch` answers with its start position, then sends change events as they come;
        with `covers`, only the changes of the (share, collection) it allows."""
        since: int | None = param(request, "since", int, None)
        collection = collection_param(request) if request.get("collection") is not None else None
        share = share_param(request) if request.get("share") is not None else None
        if share is not None and not await self.node.call(self.node.replica.holds, share):
            raise RequestError(NOT_FOUND, str(unknown_share(share)))
        last = await self.node.call(self.node.replica.last_position)
        if since is None:
            since = last
        elif not 0 <= since <= last:
            raise RequestError(
                BAD_REQUEST,
                f"'since' must be between 0 and this daemon's last position {last}; a position "
                "from another database is meaningless here: start again with since null",
            )
        watch = _Watch(since, collection, share, covers)
        return {"position": since}, lambda send: self._send_changes(watch, send)

    async def _send_changes(self, watch: _Watch, send: Send) -> None:
        node = self.node
        position = watch.since
        while True:
            changes = await node.call(node.replica.changes, position, WATCH_PAGE_ENTRIES)
            unsent = bytearray()
            entries = 0
            for lseq, ops in groupby(changes, key=lambda change: change.lseq):
                entries += 1
                position = lseq
                wanted = [c for c in ops if watch.wants(c)]
                if wanted:
                    event = {
                        "event": "change",
                        "position": lseq,
                        "share": wanted[0].share,
                        "hlc": wanted[0].hlc,
                        "changes": [change_json(c) for c in wanted],
                    }
                    unsent += json_line(event)
                    if len(unsent) >= WATCH_SEND_BYTES:
                        await send(bytes(unsent))
                        unsent.clear()
            if unsent:
                await send(bytes(unsent))
            if entries < WATCH_PAGE_ENTRIES:
                # A short page ended at the last entry there was; positions are announced only
                # once their entries are stored, so nothing is missed by waiting now.
                await node.changes.wait_beyond(position)

    async def start_pairing(self, request: dict[str, Any]) -> tuple[dict[str, Any], Follow]:
        """`pair` answers with the code, then one event line when the pairing ends."""
        ttl: float = param(request, "ttl", int, DEFAULT_PAIRING_TTL)
        if not 10 <= ttl <= 3600:
            raise RequestError(BAD_REQUEST, "'ttl' must be between 10 and 3600 seconds")
        readmit: bool = param(request, "readmit", bool, False)
        shares: list[Any] = param(request, "shares", list, [])
        if not all(isinstance(share, str) for share in shares):
            raise RequestError(BAD_REQUEST, "'shares' must be a list of share names")
        shares = [share for share in dict.fromkeys(shares) if share != DEFAULT_SHARE]
        for share in shares:
            if not await self.node.call(
                self.node.replica.is_share_member, share, self.context.device_id
            ) or not await self.node.call(self.node.replica.holds, share):
                raise RequestError(NOT_FOUND, f"this device is in no share {share!r}")
        invitation = await self.context.pair(ttl, readmit, shares)

        async def follow(send: Send) -> None:
            try:
                with trio.move_on_after(invitation.expires_in()):
                    await invitation.done.wait()
                if not invitation.done.is_set():
                    invitation.expire()
            finally:  # also when the client hangs up: the code dies with its connection
                self.context.end_pairing(invitation)
            event: dict[str, Any]
            if invitation.result is not None:
                from_cert = device_id_from_certificate(invitation.result.peer_cert_pem)
                event = {
                    "event": "paired",
                    "device": from_cert,
                    "name": invitation.result.peer_name,
                    "shares": [DEFAULT_SHARE, *shares],
                }
            else:
                message = invitation.error or "the pairing failed"
                event = {
                    "event": "pairing_failed",
                    "error": {"code": PAIRING_FAILED, "message": message},
                }
            await send(json_line(event))

        result = {"code": str(invitation.code), "expires_in": round(invitation.expires_in())}
        return result, follow


async def _membership_call(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await call
    except LookupError as exc:
        raise RequestError(NOT_FOUND, str(exc).strip("'\"")) from None
    except ValueError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
