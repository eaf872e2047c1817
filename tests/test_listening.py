"""The sync port's accept loop: caps enforced before reading, EMFILE without tracebacks."""

import errno
import logging
from typing import Any, cast

import trio

from p2psync import listening
from p2psync.admission import Admission


class _RunsOutOfDescriptors:
    """A real loopback listener whose accept() fails with EMFILE a number of times first, as
    trio's does when the process is at its file limit."""

    def __init__(self, listener: trio.SocketListener, failures: int) -> None:
        self.listener = listener
        self.socket = listener.socket
        self.failures = failures
        self.attempts = 0

    async def accept(self) -> trio.SocketStream:
        self.attempts += 1
        if self.attempts <= self.failures:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.listener.accept()

    async def aclose(self) -> None:
        await self.listener.aclose()

    async def __aenter__(self) -> "_RunsOutOfDescriptors":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _loopback_listener() -> tuple[trio.SocketListener, int]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return listener, int(listener.socket.getsockname()[1])


async def test_over_the_cap_connections_are_closed_unread_and_released_ones_make_room(
    caplog: Any,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.listening")
    listener, port = await _loopback_listener()
    gate = listening.Gate(Admission(total=10, per_source=2), logging.getLogger("test.listening"))
    held: list[listening.Arrival] = []
    arrived = trio.Semaphore(0)
    let_go = trio.Event()

    async def handler(tcp: trio.SocketStream, arrival: listening.Arrival) -> None:
        held.append(arrival)
        arrived.release()
        await let_go.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listening.serve, handler, [listener], gate)
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
        for _ in range(2):
            with trio.fail_after(5):
                await arrived.acquire()
        # the three over the cap are closed by the daemon without a byte being read: EOF
        for client in clients[2:]:
            with trio.fail_after(5):
                assert await client.receive_some(10) == b""
        assert len(held) == 2 and gate.admission.holding("127.0.0.1") == 2
        turned_away = [r for r in caplog.records if "turned away" in r.getMessage()]
        assert len(turned_away) == 3
        assert [r.levelno for r in turned_away] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
        assert "2 unauthenticated connections from there" in turned_away[0].getMessage()
        held[0].release()  # authenticated: its place goes to the next stranger
        held[0].release()  # and releasing twice is harmless
        late = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(5):
            await arrived.acquire()
        assert gate.admission.holding("127.0.0.1") == 2
        let_go.set()
        with trio.fail_after(5):
            while gate.admission.held:  # handlers ending release whatever they still hold
                await trio.sleep(0.01)
        for client in [*clients, late]:
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_running_out_of_descriptors_logs_one_line_and_no_traceback(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="test.listening")
    listener, port = await _loopback_listener()
    flaky = _RunsOutOfDescriptors(listener, failures=10)
    gate = listening.Gate(Admission(), logging.getLogger("test.listening"))
    served = trio.Event()

    async def handler(tcp: trio.SocketStream, arrival: listening.Arrival) -> None:
        served.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listening.serve, handler, [cast(trio.SocketListener, flaky)], gate)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):  # 10 failures, 0.1 s apart: served after about 1 s
            await served.wait()
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert flaky.attempts > 10
    logged = [r for r in caplog.records if r.name == "test.listening"]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].levelno == logging.WARNING
    assert logged[0].getMessage() == "accept failed: EMFILE (Too many open files); retrying"
    assert all(r.exc_info is None for r in caplog.records)
