"""One control-socket connection: request lines in, answer lines out, in order and within limits.

It owns the framing (newline-delimited JSON, oversized lines skipped, non-finite numbers refused),
the order of answers (a connection's writes commit in request order and reads see them), and the
per-connection limits: pipelined requests in flight, answers the client has not read, writes
waiting for their commit. What a request means is the dispatcher's (`server.py`). A slow, stuck
or malicious client must never stall another connection, make the daemon buffer without bound or
see a traceback; a failure here ends this connection only.
"""

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from ..node import Node, Transaction
from ..replica import ReplicaError, VersionConflict
from ..schemas.manifest import InvalidValue
from ..shares.rules import ShareError
from .api import reads_param, written
from .errors import (
    BAD_REQUEST,
    CONFLICT,
    DISK_FULL,
    DISK_FULL_MESSAGE,
    INTERNAL,
    INTERNAL_MESSAGE,
    INVALID_VALUE,
    TOO_LARGE,
    UNKNOWN_METHOD,
    RequestError,
    is_disk_full,
)
from .lines import (
    MAX_IN_FLIGHT,
    MAX_LINE_BYTES,
    MAX_UNCOMMITTED_BYTES,
    MAX_UNSENT_BYTES,
    error_line,
    json_line,
    parse_request,
)
from .schema import check_parameters
from .values import SURROGATE_ESCAPE, reject_lone_surrogates
from .writes import Outcome, Write, answer_line, share_param

log = logging.getLogger("p2psync.control")  # the name these lines have always been logged under


Send = Callable[[bytes], Awaitable[None]]
Follow = Callable[[Send], Awaitable[None]]
# what the client said in `hello` it reads: type -> the newest schema_version it understands
Reads = Mapping[str, int]
# a streaming method (given the request and the connection's reads): its first answer, and what
# follows it on the connection
StartStream = Callable[[dict[str, Any], Reads], Awaitable[tuple[dict[str, Any], Follow]]]


class Dispatcher(Protocol):
    """What a connection needs from the request dispatcher (`server.Server`)."""

    @property
    def node(self) -> Node: ...

    calls: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]  # answered by `answer`
    writes: dict[str, Callable[[dict[str, Any]], Write]]  # method -> what to commit
    streams: dict[str, StartStream]  # methods that turn the connection into a stream of events
    methods: list[str]

    async def answer(self, request_id: Any, method: str, request: dict[str, Any]) -> bytes: ...


async def serve_connection(
    dispatcher: Dispatcher, stream: trio.SocketStream, unread: bytes = b""
) -> None:
    """Serve one client until it hangs up; never raises. `unread`: what the client sent that a
    front-end process read before it handed the connection over (`front_end.py`)."""
    try:
        async with stream:
            await _Connection(dispatcher, stream, unread).serve()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("control connection failed")


# lines ----------------------------------------------------------------------------------------


class _Lines:
    """Lines from a stream; a line longer than the limit comes out as None and is skipped."""

    def __init__(self, stream: trio.abc.ReceiveStream, unread: bytes = b"") -> None:
        self.stream = stream
        self.buffer = bytearray(unread)
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


# replies --------------------------------------------------------------------------------------


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
        return answer_line(self.request_id, write_outcome(self.transaction))


def write_outcome(transaction: Transaction) -> Outcome:
    """How a committed or refused write went (the front-end's answers are made of these too,
    `front_end.py`)."""
    commit, error = transaction.commit, transaction.error
    if commit is not None:
        return written(commit), "", ""
    if isinstance(error, VersionConflict):
        return None, CONFLICT, str(error)
    if isinstance(error, InvalidValue):
        return None, INVALID_VALUE, str(error)
    if error is not None and is_disk_full(error):
        log.warning("a control write was refused: the disk is full (%s)", error)
        return None, DISK_FULL, DISK_FULL_MESSAGE
    if isinstance(error, ShareError):
        return None, error.code, str(error)
    if isinstance(error, ReplicaError):
        return None, BAD_REQUEST, str(error)
    log.error("control write failed", exc_info=error)
    return None, INTERNAL, INTERNAL_MESSAGE


# the connection -------------------------------------------------------------------------------


class _Connection:
    def __init__(self, server: Dispatcher, stream: trio.SocketStream, unread: bytes) -> None:
        self.server = server
        self.stream = stream
        self.lines = _Lines(stream, unread)
        self.replies_in, self.replies_out = trio.open_memory_channel[_Reply | _WriteReply](
            MAX_IN_FLIGHT
        )
        self.writes_in_flight: deque[_WriteReply] = deque()  # in commit order
        self.uncommitted_bytes = 0
        self.replies_sent = trio.Event()
        self.unsent_bytes = 0  # answers computed but not yet taken by the client's socket
        self.some_sent = trio.Event()
        self.reads: Reads = {}  # from `hello`, for this connection's watch

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
                await self._send(error_line(None, TOO_LARGE, message))
                continue
            if not line.strip():
                continue
            request_id = None
            try:
                request = parse_request(line)
                request_id = request.get("id")
                if SURROGATE_ESCAPE.search(line):  # rare: only then walk the whole request
                    reject_lone_surrogates(request)
                method = request["method"]
                if method not in self.server.methods:
                    raise RequestError(
                        UNKNOWN_METHOD,
                        f"unknown method {method!r}; known: {', '.join(self.server.methods)}",
                    )
                check_parameters(method, request)
                if method in self.server.writes:
                    share, write = share_param(request), self.server.writes[method](request)
                    await self._room_for_write(len(line))
                    # queued at once, in request order: a connection's writes commit in order
                    queued = self.server.node.submit(
                        share, write.ops, write.preconditions, checked=True
                    )
                    reply = _WriteReply(request_id, queued, len(line))
                    self.writes_in_flight.append(reply)
                    self.uncommitted_bytes += reply.size
                    try:  # no checkpoint per request: a pipelined burst is read in one go
                        self.replies_in.send_nowait(reply)
                    except trio.WouldBlock:
                        await self.replies_in.send(reply)
                    continue
                await self._writes_settled()
                await self._room_for_answers()
                if method in self.server.streams:
                    started, follow = await self.server.streams[method](request, self.reads)
                    await self._send(json_line({"id": request_id, "ok": True, "result": started}))
                    return follow
                if method == "hello" and request.get("reads") is not None:
                    self.reads = reads_param(request)
                await self._send(await self.server.answer(request_id, method, request))
            except RequestError as exc:
                await self._send(error_line(request_id, exc.code, exc.message))

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

    async def _stream(self, follow: Follow, connection: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await follow(self.stream.send_all)  # until it ends or the client is gone
        connection.cancel()  # a finished stream ends its connection

    async def _read_until_closed(self) -> None:
        """A streaming connection takes no more requests; its end is the end of the stream."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
