"""The control front-end's rules: which lines it answers, in what order, and its frames (pure).

The daemon's event loop and its database thread share one interpreter lock, and single `put`s
spent most of it on the socket's framing: reading, parsing, checking and answering each request
(docs/architecture.md, "The control front-end"). A front-end process (`front_end_process.py`)
therefore accepts control connections for the daemon. An admin's `put`, `delete` and
`transaction` requests it reads, parses and checks itself, sends the daemon only what to commit,
in batches, over one socket pair, and answers them when the daemon says how each went. Any other
line (another method, a request the checks refuse, a line over the limit, an app's connection)
is the daemon's: once every write before it is answered, the daemon gets the socket itself, with
the bytes read but not used, and serves it as it always did, to the end of the connection.

This module owns when a line is the front-end's, the per-connection limits (the daemon's own,
`lines.py`), the answers' order and the frames between the two processes. It never touches
sockets, and never imports trio, the replica or the store: the process must start quickly.
"""

import struct
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack

from ..entry import Op
from ..merge import Precondition
from .errors import RequestError
from .lines import (
    MAX_IN_FLIGHT,
    MAX_LINE_BYTES,
    MAX_UNCOMMITTED_BYTES,
    MAX_UNSENT_BYTES,
    parse_request,
)
from .schema import check_parameters
from .values import SURROGATE_ESCAPE
from .writes import WRITE_REQUESTS, Outcome, Write, answer_line, share_param

# front-end -> daemon: [WRITES, [[token, share, ops, preconditions], ...]] or [HAND_OVER, bytes]
# with the client's socket attached (SCM_RIGHTS); daemon -> front-end: [[token, outcome], ...]
WRITES, HAND_OVER = 0, 1
# A connection alone with the front-end whose first write is smaller than this goes to the
# daemon: the hop costs such a client ~0.1 ms of latency and saves the daemon little (a pipelined
# burst on one connection it reads in one go); a larger request's parsing is worth moving.
ALONE_LINE_BYTES = 16 * 1024
# A frame carries at most a batch of writes, each within the limits above (or the bytes of one
# handed-over connection): both processes are ours, so this only stops a bug from eating memory.
MAX_FRAME_BYTES = 256 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class Queued(NamedTuple):
    """A write the daemon is to commit: `token` names it in the daemon's answer."""

    token: int
    share: str
    write: Write


class _Answer:
    """One request's place in the answers: its line once the daemon said how it went."""

    __slots__ = ("line", "request_id", "size")

    def __init__(self, request_id: Any, size: int) -> None:
        self.request_id = request_id
        self.size = size  # of the request line, held against MAX_UNCOMMITTED_BYTES
        self.line: bytes | None = None


class ClientConnection:
    """One client's connection while the front-end serves it: lines in, answers out in order.

    `take` finds the writes to send the daemon in what the client sent; `answered` puts the
    daemon's outcome in its place; `unsent` holds answers ready for the client. Once a line is
    not the front-end's (`handing_over`), nothing more is taken: when `settled` (every answer
    sent), the daemon gets the socket and `buffer` (what was read and not taken)."""

    def __init__(self, admin: bool) -> None:
        self.buffer = bytearray()
        self.answers: deque[_Answer] = deque()  # in request order
        self.uncommitted_bytes = 0
        self.unsent = bytearray()
        self.handing_over = not admin  # an app's requests are held to its grants by the daemon
        self.ended = False  # the client sent all it will send
        self.full = False  # a limit stopped `take`: read no more until answers free room
        self.served = False  # the front-end took a write of it: it keeps it
    @property
    def reading(self) -> bool:
        """Whether to read from the client: not while a limit holds, nor once the rest is the
        daemon's, so a client that sends without reading answers is held as the daemon holds it."""
        return not (self.handing_over or self.ended or self.full)

    @property
    def settled(self) -> bool:
        return not self.answers and not self.unsent

    def take(self, tokens: Iterator[int], alone: bool = False) -> list[tuple[Queued, _Answer]]:
        """The writes in the complete lines received so far, up to the limits, in order.
        `alone`: no other connection is with the front-end (see ALONE_LINE_BYTES)."""
        taken: list[tuple[Queued, _Answer]] = []
        self.full = False
        while not self.handing_over:
            newline = self.buffer.find(b"\n")
            if newline < 0:
                # a line over the limit is the daemon's to skip, and to say so
                self.handing_over = len(self.buffer) > MAX_LINE_BYTES
                break
            if self._no_room(newline):
                self.full = True
                break
            if not self.served and alone and newline < ALONE_LINE_BYTES:
                self.handing_over = True
                break
            line = bytes(self.buffer[:newline])
            if line.strip():
                found = _write_in(line)
                if found is None:
                    self.handing_over = True
                    break
                request_id, share, write = found
                self.served = True
                answer = _Answer(request_id, len(line))
                self.answers.append(answer)
                self.uncommitted_bytes += answer.size
                taken.append((Queued(next(tokens), share, write), answer))
            del self.buffer[: newline + 1]
        return taken

    def _no_room(self, line_bytes: int) -> bool:
        if len(self.unsent) > MAX_UNSENT_BYTES or len(self.answers) >= MAX_IN_FLIGHT:
            return True
        return bool(self.answers) and self.uncommitted_bytes + line_bytes > MAX_UNCOMMITTED_BYTES

    def answered(self, answer: _Answer, outcome: Outcome) -> None:
        answer.line = answer_line(answer.request_id, outcome)
        self.uncommitted_bytes -= answer.size
        while self.answers and (ready := self.answers[0].line) is not None:
            self.unsent += ready
            self.answers.popleft()

    def sent(self, count: int) -> None:
        del self.unsent[:count]


def _write_in(line: bytes) -> tuple[Any, str, Write] | None:
    """The request id, share and write of a line that is a valid write request; None for any
    other line, which the daemon then reads again and answers (with the same words for an error,
    since the checks are the same)."""
    try:
        request = parse_request(line)
        method = request["method"]
        make = WRITE_REQUESTS.get(method)
        if make is None or SURROGATE_ESCAPE.search(line):
            return None
        check_parameters(method, request)
        return request.get("id"), share_param(request), make(request)
    except RequestError:
        return None


# frames ---------------------------------------------------------------------------------------


def frame(body: Any) -> bytes:
    packed: bytes = msgpack.packb(body)
    return _LENGTH.pack(len(packed)) + packed


def writes_frame(batch: list[Queued]) -> bytes:
    return frame([WRITES, [[q.token, q.share, q.write.ops, q.write.preconditions] for q in batch]])


def hand_over_frame(unread: bytes) -> bytes:
    return frame([HAND_OVER, unread])


def outcomes_frame(outcomes: list[tuple[int, Outcome]]) -> bytes:
    return frame([[token, *outcome] for token, outcome in outcomes])


def writes_of(body: list[Any]) -> Iterator[tuple[int, str, list[Op], list[Precondition]]]:
    """A WRITES frame's batch, as the daemon submits it: token, share, ops, preconditions."""
    for token, share, ops, conditions in body:
        yield token, share, [Op(*op) for op in ops], [Precondition(*p) for p in conditions]


def outcomes_of(body: list[Any]) -> Iterator[tuple[int, Outcome]]:
    for token, done, code, message in body:
        yield token, (done, code, message)


class FrameError(Exception):
    """The other process sent what no version of it sends: a bug, ended with the connection."""


class Frames:
    """Frames out of a byte stream, whichever way it was cut."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        bodies = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"a frame of {length} bytes (at most {MAX_FRAME_BYTES})")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            try:
                bodies.append(msgpack.unpackb(self._buffer[_LENGTH.size : end]))
            except Exception as exc:
                raise FrameError(f"a frame that is not msgpack: {exc}") from None
            del self._buffer[:end]
        return bodies
