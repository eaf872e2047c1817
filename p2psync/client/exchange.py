"""How requests and answers are exchanged on one connection, without doing the I/O itself.

An `Exchange` belongs to one connection. Its plans (`submit`, `finish`) are generators that
yield the bytes to send, `RECEIVE` when they need the next answer (the driver sends it back in,
as a JSON object), or `ARRIVED` when they wait for answers to arrive without reading them yet
(the driver waits for at least one whole line and sends back how many there are). The blocking
client drives them with socket calls, the async one with anyio's, so both follow the same rules:

- answers come in the order of the requests (the protocol says so); each is checked against its
  request's id and settles that request's `Pending`;
- at most `window` requests are ahead of their answers (the daemon takes 128 in ahead and then
  stops reading a client that does not read: a client that wrote more without reading would wait
  for the daemon while the daemon waits for it). An answer that has arrived counts as answered
  even before it is read. Once the window is full the plan waits for answers to arrive, sends as
  many new requests as arrived, and only then reads those answers and makes the next requests
  (encoding JSON), while the daemon works on what it got. The daemon commits the writes it has
  queued together, so the fuller its queue the fewer (costly) commits: refilling only when half
  the window was answered made it alternate between two half-size groups, and reading before
  refilling left it idle while the client worked;
- a call that needs protocol 1.0 (`Call.needs`) first asks `hello` once per connection; an older
  daemon would silently ignore what it does not know (an `if_version` would overwrite), so such a
  call fails with `UnknownMethod` instead of being sent.

`LineBuffer` cuts what the socket delivers into answer lines, for both drivers.
"""

import enum
import itertools
from collections import deque
from collections.abc import Generator, Iterable
from typing import Any, Final

from .calls import Call, Pending, hello
from .errors import ControlError, ProtocolViolation, UnknownMethod, error_for
from .results import Hello
from .values import parse_line


class Step(enum.Enum):
    """What a plan asks of its driver besides sending bytes."""

    RECEIVE = enum.auto()  # the next answer, as a JSON object (waiting for it if need be)
    ARRIVED = enum.auto()  # how many whole answers are there, once there is at least one


RECEIVE: Final = Step.RECEIVE
ARRIVED: Final = Step.ARRIVED
DEFAULT_WINDOW: Final = 128  # requests the daemon takes in ahead of their answers (see above)

Plan = Generator[bytes | Step, Any, None]


class Exchange:
    """The requests of one connection that were sent (or are about to be) and not answered yet,
    the next request id, and the daemon's `hello` once asked."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("the pipelining window is at least 1 request")
        self.window = window
        self.ids = itertools.count(1)
        self.hello: Hello | None = None
        self.asked_hello = False
        self.waiting: deque[tuple[int, Call[Any], Pending[Any]]] = deque()
        self.unsent: list[bytes] = []
        self.arrived = 0  # answers of `waiting` already received, not read yet

    def run(self, calls: Iterable[tuple[Call[Any], Pending[Any]]]) -> Plan:
        """Send every call and settle every Pending, those submitted before included."""
        yield from self.submit(calls)
        yield from self.finish()

    def submit(self, calls: Iterable[tuple[Call[Any], Pending[Any]]]) -> Plan:
        """Send the calls as the window allows; the last ones may stay unsent or unanswered
        until `finish` (a pipeline sends as it is filled)."""
        source = iter(calls)
        ahead: deque[tuple[Call[Any], Pending[Any]]] = deque()
        while (item := ahead.popleft() if ahead else next(source, None)) is not None:
            call, pending = item
            if call.needs is not None and not self.asked_hello:
                yield from self.finish()
                yield from self._ask_hello()
            if call.needs is not None and not self.speaks_1_0():
                pending.set_error(self._too_old(call))
                continue
            request_id = next(self.ids)
            self.unsent.append(call.line(request_id))
            self.waiting.append((request_id, call, pending))
            if len(self.waiting) - self.arrived < self.window:
                continue
            yield b"".join(self.unsent)  # (not `yield from self._send()`: this is the hot path)
            self.unsent.clear()
            # while the daemon works on these: read the answers that came before them...
            for _ in range(self.arrived):
                settle(*self.waiting.popleft(), (yield RECEIVE))
            # ...and make the calls that go out as soon as more answers come
            while len(ahead) < self.window and (made := next(source, None)) is not None:
                ahead.append(made)
            self.arrived = yield ARRIVED

    def finish(self) -> Plan:
        """Send what is unsent and settle every request still waiting for its answer."""
        yield from self._send()
        while self.waiting:
            settle(*self.waiting.popleft(), (yield RECEIVE))
        self.arrived = 0

    def _send(self) -> Plan:
        if self.unsent:
            lines = b"".join(self.unsent)
            self.unsent.clear()
            yield lines

    def speaks_1_0(self) -> bool:
        return self.hello is not None and _major(self.hello.protocol) >= 1

    def _ask_hello(self) -> Plan:
        self.asked_hello = True
        answer: Pending[Hello] = Pending()
        request_id = next(self.ids)
        call = hello()
        yield call.line(request_id)
        settle(request_id, call, answer, (yield RECEIVE))
        if isinstance(answer.error, UnknownMethod):  # a daemon from before protocol 1.0
            return
        self.hello = answer.result()

    def _too_old(self, call: Call[Any]) -> UnknownMethod:
        spoken = "before 1.0" if self.hello is None else self.hello.protocol
        return UnknownMethod(
            f"the daemon speaks control protocol {spoken}, which would ignore {call.needs} "
            f"(needed by this {call.method}); upgrade the daemon and restart it"
        )


def _major(protocol: str) -> int:
    head = protocol.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def settle(request_id: int, call: Call[Any], pending: Pending[Any], answer: Any) -> None:
    """Settle `pending` from the `answer` to request `request_id`, or raise ProtocolViolation."""
    if not isinstance(answer, dict):
        raise ProtocolViolation("the daemon sent something that is not a JSON object")
    answered = answer.get("id")
    # a line too long to read is answered with id null (it was not read): still in order
    if answered != request_id and not (answered is None and answer.get("ok") is False):
        raise ProtocolViolation(
            f"the daemon answered request {answered!r} where request {request_id} was next"
        )
    if answer.get("ok") is True:
        try:
            pending.set_result(call.parse(answer.get("result")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolViolation(
                f"the answer to {call.method} is not what the protocol says ({exc!r})"
            ) from None
        return
    pending.set_error(error_of(answer))


def error_of(answer: dict[str, Any]) -> ControlError:
    """The exception an error answer stands for."""
    error = answer.get("error")
    if not isinstance(error, dict):
        return ProtocolViolation("the daemon sent an error without details")
    return error_for(str(error.get("code", "unknown")), str(error.get("message", "")))


def answer_of(line: bytes) -> dict[str, Any]:
    """A received line as the JSON object every line of the protocol is."""
    try:
        answer = parse_line(line)
    except ValueError:
        raise ProtocolViolation("the daemon sent something that is not JSON") from None
    if not isinstance(answer, dict):
        raise ProtocolViolation("the daemon sent something that is not a JSON object")
    return answer


class LineBuffer:
    """What the socket delivered, cut into lines as they complete."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0  # where the next line begins
        self._searched = 0  # no newline before this: a long line is not searched again

    def feed(self, chunk: bytes) -> None:
        if self._start:
            del self._data[: self._start]
            self._searched -= self._start
            self._start = 0
        self._data += chunk

    def next_line(self) -> bytes | None:
        """The next whole line (with its newline), or None until it has arrived."""
        end = self._data.find(b"\n", max(self._start, self._searched))
        if end < 0:
            self._searched = len(self._data)
            return None
        line = bytes(self._data[self._start : end + 1])
        self._start = self._searched = end + 1
        return line

    def has_line(self) -> bool:
        return self._data.find(b"\n", max(self._start, self._searched)) >= 0

    def count_lines(self) -> int:
        """How many whole lines are there."""
        return self._data.count(b"\n", self._start)
