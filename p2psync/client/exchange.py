"""How requests and answers are exchanged on one connection, without doing the I/O itself.

`exchange(session, calls, window)` is a plan: a generator that yields the bytes to send, or
`RECEIVE` when it needs the next answer (which the driver sends back into it). The blocking
client drives it with socket calls, the async one with anyio's, so the two share every rule:

- answers come in the order of the requests (the protocol says so); each is checked against its
  request's id and settles that request's `Pending`;
- at most `window` requests are ahead of their answers (the daemon takes 128 in ahead and then
  stops reading a client that does not read: a client that wrote more without reading would wait
  for the daemon while the daemon waits for it). Requests go out `window` at a time, and more as
  soon as half of them are answered, so the daemon always has work queued;
- a call that needs protocol 1.0 (`Call.needs`) first asks `hello` once per connection; an older
  daemon would silently ignore what it does not know (an `if_version` would overwrite), so such a
  call fails with `UnknownMethod` instead of being sent.
"""

import itertools
from collections import deque
from collections.abc import Generator, Iterable
from typing import Any, Final

from .calls import Call, Pending, hello
from .errors import ControlError, ProtocolViolation, UnknownMethod, error_for
from .results import Hello

RECEIVE: Final = None  # what the plan yields when it needs the next answer
DEFAULT_WINDOW: Final = 128  # requests the daemon takes in ahead of their answers (see above)

Plan = Generator[bytes | None, Any, None]


class Session:
    """What one connection knows: the next request id, and the daemon's `hello` once asked."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.hello: Hello | None = None
        self.asked_hello = False

    def speaks_1_0(self) -> bool:
        return self.hello is not None and _major(self.hello.protocol) >= 1


def _major(protocol: str) -> int:
    head = protocol.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def exchange(
    session: Session, calls: Iterable[tuple[Call[Any], Pending[Any]]], window: int
) -> Plan:
    """Send every call and settle its Pending from its answer (see the module docstring)."""
    if window < 1:
        raise ValueError("the pipelining window is at least 1 request")
    waiting: deque[tuple[int, Call[Any], Pending[Any]]] = deque()
    unsent: list[bytes] = []
    refill_below = window // 2  # how far the answers drain before the next requests go out
    for call, pending in calls:
        if call.needs is not None and not session.asked_hello:
            if unsent:
                yield b"".join(unsent)
                unsent.clear()
            while waiting:
                settle(*waiting.popleft(), (yield RECEIVE))
            yield from _ask_hello(session)
        if call.needs is not None and not session.speaks_1_0():
            pending.set_error(_too_old(session, call))
            continue
        request_id = next(session.ids)
        unsent.append(call.line(request_id))
        waiting.append((request_id, call, pending))
        if len(waiting) >= window:
            yield b"".join(unsent)
            unsent.clear()
            while len(waiting) > refill_below:
                settle(*waiting.popleft(), (yield RECEIVE))
    if unsent:
        yield b"".join(unsent)
    while waiting:
        settle(*waiting.popleft(), (yield RECEIVE))


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


def _ask_hello(session: Session) -> Plan:
    session.asked_hello = True
    answer: Pending[Hello] = Pending()
    request_id = next(session.ids)
    call = hello()
    yield call.line(request_id)
    settle(request_id, call, answer, (yield RECEIVE))
    if isinstance(answer.error, UnknownMethod):  # a daemon from before protocol 1.0
        return
    session.hello = answer.result()


def _too_old(session: Session, call: Call[Any]) -> UnknownMethod:
    spoken = "before 1.0" if session.hello is None else session.hello.protocol
    return UnknownMethod(
        f"the daemon speaks control protocol {spoken}, which would ignore {call.needs} "
        f"(needed by this {call.method}); upgrade the daemon and restart it"
    )
