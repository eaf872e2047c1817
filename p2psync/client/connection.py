"""The blocking client's connections to the control socket (blocking sockets).

Owns `LineConnection` (one Unix socket connection: request lines out, answers in, the Exchange
of the requests on it, whether the daemon closed it while idle), and the streaming requests that
each get a connection of their own: `Stream` (`pair`, raw `watch`) and `Watch` (typed events,
reconnecting from the last position). `Client` (blocking.py) makes them; apps get them from its
`stream` and `watch`. It never decides what a request says or how an answer is typed (calls.py,
events.py), and never shares a connection between threads: `Client` takes turns on its own.
"""

import select
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from .calls import Call, Pending, WatchOptions
from .errors import ConnectionFailed, connect_failure, connection_lost, timed_out
from .events import WatchEvent, event_from_json, resume_position
from .exchange import ARRIVED, DEFAULT_WINDOW, RECEIVE, Exchange, LineBuffer, Plan, answer_of
from .paths import permission_advice

RECONNECT_FIRST_WAIT: Final = 0.05  # seconds before a watch's first reconnection attempt...
RECONNECT_LONGEST_WAIT: Final = 2.0  # ...doubling up to this between attempts
RECEIVE_BYTES: Final = 256 * 1024  # read at once: a pipeline's answers come in bursts




class LineConnection:
    """One connection to the socket: request lines out, answer lines in (as JSON objects), and
    the Exchange of the requests on it."""

    def __init__(self, path: Path, timeout: float | None, window: int) -> None:
        self.path = path
        self.timeout = timeout
        self.exchange = Exchange(window)
        self.lines = LineBuffer()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            advice = permission_advice(path) if isinstance(exc, PermissionError) else ""
            raise connect_failure(path, exc, advice) from None

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except OSError as exc:
            raise connection_lost(exc) from None

    def receive(self) -> dict[str, Any]:
        line = self.lines.next_line()
        while line is None:
            self._read()
            line = self.lines.next_line()
        return answer_of(line)

    def arrived(self) -> int:
        """How many whole answers have arrived, once at least one has."""
        while not self.lines.has_line():
            self._read()
        return self.lines.count_lines()

    def _read(self) -> None:
        try:
            chunk = self.sock.recv(RECEIVE_BYTES)
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except OSError as exc:
            raise connection_lost(exc) from None
        if not chunk:
            raise connection_lost("it closed the connection: did it stop?")
        self.lines.feed(chunk)

    def idle_and_closed(self) -> bool:
        """Whether the daemon closed this connection while nothing was asked on it (it
        restarted, say): a request sent now would be lost, so a new connection is better."""
        idle = not self.exchange.waiting and not self.lines.has_line()
        return idle and peer_closed(self.sock)

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.sock.settimeout(timeout)

    def run(self, plan: Plan) -> None:
        """Carry out an exchange plan: send what it yields, feed it the answers it asks for."""
        try:
            step = next(plan)
            while True:
                if step is RECEIVE:
                    step = plan.send(self.receive())
                elif step is ARRIVED:
                    step = plan.send(self.arrived())
                else:
                    self.send(step)
                    step = next(plan)
        except StopIteration:
            return

    def close(self) -> None:
        self.sock.close()


def peer_closed(sock: socket.socket) -> bool:
    """Whether the other end closed `sock` (end of file or reset is waiting), without waiting or
    taking anything from it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Stream:
    """A request answered by one result and then event lines, on a connection of its own
    (`watch`, `pair`). Closing it ends the stream on the daemon's side too."""

    def __init__(
        self,
        path: Path,
        timeout: float | None,
        call: Call[Any],
        idle_timeout: float | None,
        before: Sequence[Call[Any]] = (),
    ) -> None:
        self._path, self._timeout, self._call = path, timeout, call
        self._idle_timeout = idle_timeout
        self._before = before  # sent first on every connection (a watch's `hello` with reads)
        self.result: Any = None
        self._connection = self._open(call)

    def _open(self, call: Call[Any]) -> LineConnection:
        connection = LineConnection(self._path, self._timeout, DEFAULT_WINDOW)
        try:
            sent = (*self._before, call)
            answers: list[Pending[Any]] = [Pending() for _ in sent]
            connection.run(connection.exchange.run(zip(sent, answers, strict=True)))
            for answer in answers:
                self.result = answer.result()  # raises the first error
        except BaseException:
            connection.close()
            raise
        connection.set_timeout(self._idle_timeout)
        return connection

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return self._connection.receive()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Watch(Stream):
    """Typed watch events (events.py); `position` is where to resume from: the last change's
    (or caught-up or heartbeat position), or the position the watch started at."""

    def __init__(
        self,
        path: Path,
        timeout: float | None,
        since: int | None,
        options: WatchOptions,
        idle_timeout: float | None,
        reconnect_timeout: float | None,
    ) -> None:
        super().__init__(path, timeout, options.call(since), idle_timeout, options.before())
        self.position: int = int(self.result["position"])
        self._options = options
        self._reconnect_timeout = reconnect_timeout

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        while True:
            try:
                line = self._connection.receive()
            except ConnectionFailed:
                if self._reconnect_timeout is None:
                    raise
                self._reconnect(self._reconnect_timeout)
                continue
            event = event_from_json(line)
            moved = resume_position(event)
            self.position = self.position if moved is None else moved
            return event

    def _reconnect(self, patience: float) -> None:
        """Open the watch again from `position`, retrying while the daemon is away (restarting)
        for up to `patience` seconds; raises the last ConnectionFailed after that."""
        self._connection.close()
        deadline = time.monotonic() + patience
        wait = RECONNECT_FIRST_WAIT
        while True:
            try:
                self._connection = self._open(self._options.call(self.position))
                return
            except ConnectionFailed:
                if time.monotonic() + wait > deadline:
                    raise
            time.sleep(wait)  # the daemon is starting again: nothing to wait on but time
            wait = min(wait * 2, RECONNECT_LONGEST_WAIT)

    def __enter__(self) -> "Watch":
        return self
