"""The control socket: newline-delimited JSON requests from local applications and the CLI.

It owns the Unix socket file (stale-file cleanup, permissions), per-connection framing and limits,
and the translation between JSON requests and replica calls, values included (JSON <-> msgpack).
Each connection is served on its own: a slow, stuck or malicious client must never stall another
one, crash the daemon or make it buffer without bound, and clients never see a traceback. It holds
no merge, sync or membership logic; the protocol is documented in docs/control-protocol.md.
"""

import contextlib
import grp
import json
import logging
import math
import os
import secrets
import stat
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Protocol

import trio

from . import entry as entries
from .control_api import (
    BAD_REQUEST,
    CONFLICT,
    DISK_FULL,
    DISK_FULL_MESSAGE,
    NOT_FOUND,
    PAIRING_FAILED,
    SURROGATE_ESCAPE,
    TOO_LARGE,
    UNKNOWN_METHOD,
    RequestError,
    change_json,
    collection_param,
    is_disk_full,
    param,
    record_json,
    reject_lone_surrogates,
    share_param,
    transaction_ops,
    write_op,
)
from .entry import Op
from .identity import device_id_from_certificate
from .node import Node, Transaction
from .pairing_service import Invitation, PairingFailed
from .replica import Change, ReplicaError
from .vectors import device_of

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 128  # pipelined requests per connection before we stop reading from it
MAX_UNSENT_BYTES = 1024 * 1024  # answers waiting for a client to read them, per connection
MAX_UNCOMMITTED_BYTES = 1024 * 1024  # write requests waiting for their commit, per connection
SCAN_DEFAULT_LIMIT = 100
SCAN_MAX_LIMIT = 1000
SCAN_PAGE_VALUE_BYTES = 4 * 1024 * 1024  # a scan page ends early rather than grow past this
CONFLICTS_LIMIT = 1000
WATCH_PAGE_ENTRIES = 64
WATCH_SEND_BYTES = 64 * 1024  # events go out together up to this much, not one send each
PROBE_TIMEOUT_SECONDS = 2.0
UNIX_PATH_MAX = 107

DEFAULT_PAIRING_TTL = 300.0
INTERNAL = "internal"
INTERNAL_MESSAGE = "internal error; the daemon's log has the details"


class ControlContext(Protocol):
    """What the control socket needs from the daemon."""

    @property
    def node(self) -> Node: ...
    @property
    def device_id(self) -> str: ...
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
    async def pair(self, ttl_seconds: float, readmit: bool = False) -> Invitation: ...
    def end_pairing(self, invitation: Invitation) -> None: ...
    async def join(self, code_text: str, address: str | None) -> dict[str, Any]: ...


Follow = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]


class ControlSocketError(OSError):
    """The control socket cannot be created; the message says why and what to do."""


async def serve_control(
    path: Path,
    context: ControlContext,
    *,
    mode: int = 0o660,
    group: str | None = "p2psync",
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `path` until cancelled; `task_status.started()` once clients can connect."""
    path = Path(path)
    listener = await _listen(path, mode, group)
    inode = os.stat(path).st_ino
    server = _Server(context)
    try:
        await trio.serve_listeners(server.serve_connection, [listener], task_status=task_status)
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
    await _remove_stale_socket(path)
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


async def _remove_stale_socket(path: Path) -> None:
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise ControlSocketError(
            f"{path} exists and is not a socket; move it away or choose another control socket path"
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
        f"another p2psync daemon is answering on {path}; stop it first, or give this daemon "
        f"another control socket path"
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
    try:
        os.chown(socket_path, -1, gid)
    except PermissionError:
        log.warning(
            "cannot give %s to group %r (not a member); only this user can use it", shown_as, group
        )


# connections ----------------------------------------------------------------------------------


class _NotFinite(ValueError):
    """A number JSON cannot mean (the protocol forbids NaN and infinities, docs say why)."""


def _reject_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not a JSON number; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity, which JSON cannot carry back
        raise _NotFinite(
            f"number {text[:40]} is beyond a 64-bit float; numbers must be finite (send a "
            "string for such values)"
        )
    return value


# made once: json.loads/dumps with options build a new decoder/encoder on every call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _line(response: dict[str, Any]) -> bytes:
    try:
        return _ENCODER.encode(response).encode() + b"\n"
    except UnicodeEncodeError:  # lone surrogates sent to us in an id come back escaped
        return _ASCII_ENCODER.encode(response).encode() + b"\n"


def _error(request_id: Any, code: str, message: str) -> bytes:
    return _line({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


class _Reply:
    """One response slot; slots are sent in request order, each once it is done."""

    counted = True  # in unsent_bytes; write acknowledgements are tiny and are not

    def __init__(self, line: bytes) -> None:
        self.done = trio.Event()
        self.done.set()
        self.line = line


class _WriteReply:
    """The slot of a write: done when its transaction committed or failed."""

    counted = False

    def __init__(self, request_id: Any, transaction: Transaction, size: int) -> None:
        self.request_id = request_id
        self.transaction = transaction
        self.done = transaction.done
        self.size = size  # of the request line

    @property
    def line(self) -> bytes:
        """Read once, when the reply is sent."""
        commit, error = self.transaction.commit, self.transaction.error
        if commit is not None:
            result = {"position": commit.lseq, "seq": commit.seq, "hlc": commit.hlc}
            return _line({"id": self.request_id, "ok": True, "result": result})
        if error is not None and is_disk_full(error):
            log.warning("a control write was refused: the disk is full (%s)", error)
            return _error(self.request_id, DISK_FULL, DISK_FULL_MESSAGE)
        if isinstance(error, ReplicaError):
            return _error(self.request_id, BAD_REQUEST, str(error))
        log.error("control write failed", exc_info=error)
        return _error(self.request_id, INTERNAL, INTERNAL_MESSAGE)


class _Lines:
    """Lines from a stream; a line longer than the limit comes out as None and is skipped."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.searched = 0
        self.skipping = False

    async def next(self) -> bytes | None:
        """The next complete line, None for an oversized one; raises EOFError at the end."""
        while True:
            newline = self.buffer.find(b"\n", self.searched)
            if newline >= 0:
                line = bytes(self.buffer[:newline])
                del self.buffer[: newline + 1]
                self.searched = 0
                if self.skipping:
                    self.skipping = False
                    continue
                return None if len(line) > MAX_LINE_BYTES else line
            if len(self.buffer) > MAX_LINE_BYTES:
                self.buffer.clear()
                self.searched = 0
                if not self.skipping:
                    self.skipping = True
                    return None
            self.searched = len(self.buffer)
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                if self.buffer and not self.skipping:  # a last request without its newline
                    self.buffer += b"\n"
                    continue
                raise EOFError
            self.buffer += chunk


@dataclass
class _Watch:
    since: int
    collection: str | None
    share: str | None

    def wants(self, change: Change) -> bool:
        collection_wanted = self.collection in (None, change.op.collection)
        return collection_wanted and self.share in (None, change.share)


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
        }
        self.writes: dict[str, Callable[[dict[str, Any]], list[Op]]] = {
            "put": lambda request: [write_op(request, "put")],
            "delete": lambda request: [write_op(request, "delete")],
            "transaction": transaction_ops,
        }
        self.methods = sorted([*self.calls, *self.writes, "watch", "pair"])

    @property
    def node(self) -> Node:
        return self.context.node

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await _Connection(self, stream).serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("control connection failed")

    async def answer(self, request_id: Any, method: str, request: dict[str, Any]) -> bytes:
        try:
            result = await self.calls[method](request)
            return _line({"id": request_id, "ok": True, "result": result})
        except RequestError as exc:
            return _error(request_id, exc.code, exc.message)
        except ReplicaError as exc:
            return _error(request_id, BAD_REQUEST, str(exc))
        except Exception as exc:
            if is_disk_full(exc):  # resolve, trust and revoke write too
                log.warning("control request %r was refused: the disk is full (%s)", method, exc)
                return _error(request_id, DISK_FULL, DISK_FULL_MESSAGE)
            log.exception("control request %r failed", method)
            return _error(request_id, INTERNAL, INTERNAL_MESSAGE)

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

    async def start_pairing(self, request: dict[str, Any]) -> tuple[dict[str, Any], Follow]:
        """`pair` answers with the code, then one event line when the pairing ends."""
        ttl: float = param(request, "ttl", int, DEFAULT_PAIRING_TTL)
        if not 10 <= ttl <= 3600:
            raise RequestError(BAD_REQUEST, "'ttl' must be between 10 and 3600 seconds")
        readmit: bool = param(request, "readmit", bool, False)
        invitation = await self.context.pair(ttl, readmit)

        async def follow(send: Callable[[bytes], Awaitable[None]]) -> None:
            try:
                with trio.move_on_after(invitation.expires_in()):
                    await invitation.done.wait()
                if not invitation.done.is_set():
                    invitation.error = "the code expired unused; run `p2psync pair` for a new one"
            finally:  # also when the client hangs up: the code dies with its connection
                self.context.end_pairing(invitation)
            event: dict[str, Any]
            if invitation.result is not None:
                from_cert = device_id_from_certificate(invitation.result.peer_cert_pem)
                event = {
                    "event": "paired",
                    "device": from_cert,
                    "name": invitation.result.peer_name,
                }
            else:
                message = invitation.error or "the pairing failed"
                event = {
                    "event": "pairing_failed",
                    "error": {"code": PAIRING_FAILED, "message": message},
                }
            await send(_line(event))

        result = {"code": str(invitation.code), "expires_in": round(invitation.expires_in())}
        return result, follow


async def _membership_call(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await call
    except LookupError as exc:
        raise RequestError(NOT_FOUND, str(exc).strip("'\"")) from None
    except ValueError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None


class _Connection:
    def __init__(self, server: _Server, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.lines = _Lines(stream)
        self.replies_in, self.replies_out = trio.open_memory_channel[_Reply | _WriteReply](
            MAX_IN_FLIGHT
        )
        self.writes_in_flight: deque[_WriteReply] = deque()  # in commit order
        self.uncommitted_bytes = 0
        self.replies_sent = trio.Event()
        self.unsent_bytes = 0  # answers computed but not yet taken by the client's socket
        self.some_sent = trio.Event()

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_replies, nursery.cancel_scope)
            async with self.replies_in:
                follow = await self._read_requests()
            await self.replies_sent.wait()
            if follow is not None:
                nursery.start_soon(self._stream, follow, nursery.cancel_scope)
                await self._read_until_closed()
                nursery.cancel_scope.cancel()

    async def _send_replies(self, connection: trio.CancelScope) -> None:
        try:
            waiting: _Reply | _WriteReply | None = None
            while True:
                try:
                    reply = waiting or await self.replies_out.receive()
                except trio.EndOfChannel:
                    return
                waiting = None
                await reply.done.wait()
                batch = [reply]
                while len(batch) < 64:  # send replies that are ready together
                    try:
                        following = self.replies_out.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if not following.done.is_set():
                        waiting = following
                        break
                    batch.append(following)
                await self.stream.send_all(b"".join(r.line for r in batch))
                self.unsent_bytes -= sum(len(r.line) for r in batch if r.counted)
                self.some_sent.set()
                self.some_sent = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            connection.cancel()  # the client is gone: stop everything it asked for
        finally:
            self.replies_sent.set()

    async def _read_requests(self) -> Follow | None:
        """Answer requests until the client closes or turns the connection into a stream
        (`watch`, `pair`): then return what follows the first answer."""
        while True:
            try:
                line = await self.lines.next()
            except (EOFError, trio.BrokenResourceError):
                return None
            if line is None:
                message = f"request line longer than {MAX_LINE_BYTES} bytes; it was skipped"
                await self._send(_error(None, TOO_LARGE, message))
                continue
            if not line.strip():
                continue
            request_id = None
            try:
                request = _parse(line)
                request_id = request.get("id")
                if SURROGATE_ESCAPE.search(line):  # rare: only then walk the whole request
                    reject_lone_surrogates(request)
                method = request["method"]
                if method in self.server.writes:
                    share, ops = share_param(request), self.server.writes[method](request)
                    await self._room_for_write(len(line))
                    # queued at once, in request order: a connection's writes commit in order
                    reply = _WriteReply(request_id, self.server.node.submit(share, ops), len(line))
                    self.writes_in_flight.append(reply)
                    self.uncommitted_bytes += reply.size
                    try:  # no checkpoint per request: a pipelined burst is read in one go
                        self.replies_in.send_nowait(reply)
                    except trio.WouldBlock:
                        await self.replies_in.send(reply)
                    continue
                await self._writes_settled()
                await self._room_for_answers()
                if method in ("watch", "pair"):
                    start = self._start_watch if method == "watch" else self.server.start_pairing
                    started, follow = await start(request)
                    await self._send(_line({"id": request_id, "ok": True, "result": started}))
                    return follow
                if method not in self.server.calls:
                    raise RequestError(
                        UNKNOWN_METHOD,
                        f"unknown method {method!r}; known: {', '.join(self.server.methods)}",
                    )
                await self._send(await self.server.answer(request_id, method, request))
            except RequestError as exc:
                await self._send(_error(request_id, exc.code, exc.message))

    async def _send(self, line: bytes) -> None:
        self.unsent_bytes += len(line)
        await self.replies_in.send(_Reply(line))

    async def _room_for_answers(self) -> None:
        """A client that sends requests without reading the answers gets no more computed."""
        while self.unsent_bytes > MAX_UNSENT_BYTES:
            await self.some_sent.wait()

    async def _room_for_write(self, size: int) -> None:
        """Writes waiting for their commit hold their ops in memory: a connection may queue
        many small ones, or a few big ones, not 128 transactions of a thousand ops each."""
        self._forget_committed()
        while self.writes_in_flight and self.uncommitted_bytes + size > MAX_UNCOMMITTED_BYTES:
            await self.writes_in_flight[0].done.wait()
            self._forget_committed()

    async def _writes_settled(self) -> None:
        """Reads see every write sent before them on this connection."""
        while self.writes_in_flight:
            await self.writes_in_flight[0].done.wait()
            self._forget_committed()

    def _forget_committed(self) -> None:
        while self.writes_in_flight and self.writes_in_flight[0].done.is_set():
            self.uncommitted_bytes -= self.writes_in_flight.popleft().size

    async def _start_watch(self, request: dict[str, Any]) -> tuple[dict[str, Any], Follow]:
        since: int | None = param(request, "since", int, None)
        collection = collection_param(request) if request.get("collection") is not None else None
        share = share_param(request) if request.get("share") is not None else None
        last = await self.server.node.call(self.server.node.replica.last_position)
        if since is None:
            since = last
        elif not 0 <= since <= last:
            raise RequestError(
                BAD_REQUEST,
                f"'since' must be between 0 and this daemon's last position {last}; a position "
                "from another database is meaningless here: start again with since null",
            )
        watch = _Watch(since, collection, share)
        return {"position": since}, lambda send: self._send_changes(watch, send)

    async def _stream(self, follow: Follow, connection: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await follow(self.stream.send_all)  # until it ends or the client is gone
        connection.cancel()  # a finished stream ends its connection

    async def _send_changes(self, watch: _Watch, send: Callable[[bytes], Awaitable[None]]) -> None:
        node = self.server.node
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
                    unsent += _line(event)
                    if len(unsent) >= WATCH_SEND_BYTES:
                        await send(bytes(unsent))
                        unsent.clear()
            if unsent:
                await send(bytes(unsent))
            if entries < WATCH_PAGE_ENTRIES:
                # A short page ended at the last entry there was; positions are announced only
                # once their entries are stored, so nothing is missed by waiting now.
                await node.changes.wait_beyond(position)

    async def _read_until_closed(self) -> None:
        """A streaming connection takes no more requests; its end is the end of the stream."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass


def _parse(line: bytes) -> dict[str, Any]:
    try:
        request = _DECODER.decode(line.decode())
    except _NotFinite as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
    except (ValueError, RecursionError):
        raise RequestError(BAD_REQUEST, "request is not valid JSON (one object per line)") from None
    if not isinstance(request, dict):
        raise RequestError(BAD_REQUEST, "request must be a JSON object")
    method = request.get("method")
    if not isinstance(method, str):
        raise RequestError(BAD_REQUEST, "request needs a 'method' string")
    return request
