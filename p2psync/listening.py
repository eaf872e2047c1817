"""Accepting connections on the sync port without letting strangers exhaust the daemon (trio).

Owns the accept loops: each new connection is admitted under the unauthenticated caps of
`admission` or closed at once, unread; failures are logged through its throttle; and running out
of file descriptors (EMFILE) costs a throttled line and a short pause, not the traceback per
attempt that `trio.serve_listeners` logs. It never reads from a connection: the handler does,
and calls `Arrival.release()` once the peer has proved itself.
"""

import errno
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .admission import (
    FAILURE_INTERVAL_SECONDS,
    Admission,
    FailureLog,
    single_line,
    source_of,
    total_cap,
)
from .config_values import format_address

# accept(2) errors that mean "the system or this process is out of something", not "the
# listener is broken": wait a little and try again
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
CAPACITY_PAUSE_SECONDS = 0.1
FLUSH_SECONDS = 5.0  # how late a summary line may come after its interval ended


def fd_limit() -> int:
    """This process's soft RLIMIT_NOFILE (-1: unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft)


class Gate:
    """The admission counts and the failure throttle shared by a listener's connections."""

    def __init__(
        self,
        admission: Admission,
        logger: logging.Logger,
        failures: FailureLog | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.admission = admission
        self.log = logger
        self.failures = failures or FailureLog(FAILURE_INTERVAL_SECONDS)
        self.clock = clock
        self._levels: dict[str, int] = {}  # a summary is logged at the level of its kind

    @classmethod
    def for_this_process(cls, logger: logging.Logger) -> "Gate":
        return cls(Admission(total=total_cap(fd_limit())), logger)

    def failed(
        self,
        kind: str,
        address: str,
        reason: str,
        level: int = logging.INFO,
        source: str | None = None,
    ) -> None:
        """Log a failure, or count it into the next summary line of its kind."""
        self._levels[kind] = level
        single = single_line(kind, address, reason)
        line = self.failures.record(kind, address, reason, self.clock(), source)
        if line != single:
            # counted into a summary: at debug level every connection still gets its line
            self.log.debug("%s", single)
        if line is not None:
            self.log.log(level, "%s", line)

    def flush(self) -> None:
        for kind, line in self.failures.flush(self.clock()):
            self.log.log(self._levels.get(kind, logging.INFO), "%s", line)


class Arrival:
    """One admitted connection: where it came from, and its place under the caps."""

    def __init__(self, gate: Gate, host: str, port: int) -> None:
        self.gate = gate
        self.address = format_address(host, port)
        self.source = source_of(host)
        self._counted = True

    def release(self) -> None:
        """The peer proved itself (or left): it no longer counts against the caps."""
        if self._counted:
            self._counted = False
            self.gate.admission.release(self.source)

    def failed(self, kind: str, reason: str) -> None:
        self.gate.failed(kind, self.address, reason, source=self.source)


Handler = Callable[[trio.SocketStream, Arrival], Awaitable[Any]]


async def serve(handler: Handler, listeners: list[trio.SocketListener], gate: Gate) -> None:
    """Accept on every listener until cancelled, running `handler` for each admitted connection."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_flush_now_and_then, gate)
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, handler, gate, nursery)


async def _accept_loop(
    listener: trio.SocketListener, handler: Handler, gate: Gate, nursery: trio.Nursery
) -> None:
    async with listener:
        while True:
            try:
                tcp = await listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                # The connection stays in the backlog; the caps keep strangers far from the
                # limit, so this means something else holds the descriptors: say so once an
                # interval and let the handlers that are running finish and free some.
                reason = f"{errno.errorcode[exc.errno]} ({exc.strerror}); retrying"
                gate.failed("accept failed", "", reason, logging.WARNING)
                await trio.sleep(CAPACITY_PAUSE_SECONDS)
                continue
            arrival = _admit(tcp, gate)
            if arrival is None:
                await trio.aclose_forcefully(tcp)
            else:
                nursery.start_soon(_run_handler, handler, tcp, arrival)


def _admit(tcp: trio.SocketStream, gate: Gate) -> Arrival | None:
    try:
        host, port = tcp.socket.getpeername()[:2]
    except OSError:
        return None  # already reset by the peer: nothing to serve
    source = source_of(host)
    if not gate.admission.admit(source):
        gate.failed(
            "turned away connection",
            format_address(host, port),
            gate.admission.refusal(source),
            logging.WARNING,
            source,
        )
        return None
    return Arrival(gate, host, port)


async def _run_handler(handler: Handler, tcp: trio.SocketStream, arrival: Arrival) -> None:
    try:
        await handler(tcp, arrival)
    finally:
        arrival.release()  # once only: a handler may have released it already
        await trio.aclose_forcefully(tcp)


async def _flush_now_and_then(gate: Gate) -> None:
    while True:
        await trio.sleep(FLUSH_SECONDS)
        gate.flush()
