"""The daemon's side of its control front-end process (trio).

It starts the process (`front_end_process.py`) with the control socket's listener and one end
of a socket pair, submits the writes the process sends to the node's group commit in the order
they came, sends back how each went as the node finishes them (in that same order, since the
node commits in order), and serves each connection the process hands over as the daemon serves
any (`access.serve`). If the process cannot start or ends while the daemon runs, the daemon
accepts on the socket itself, as before there was a front-end, and says so in its log. It never
reads a client's requests itself before that: `connection.py` does, for handed-over ones.
"""

import logging
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio

from ..node import Node, Transaction
from .connection import write_outcome
from .front_end import HAND_OVER, WRITES, FrameError, Frames, outcomes_frame, writes_of
from .writes import Outcome

log = logging.getLogger("p2psync.control")

Serve = Callable[[trio.SocketStream, bytes], Awaitable[None]]
READ_BYTES = 256 * 1024
_FDS_SPACE = socket.CMSG_SPACE(16 * 4)  # one socket per hand-over; room for a few


async def serve_with_front_end(
    listener: trio.SocketListener,
    serve: Serve,
    node: Node,
    processors: Collection[int] = (),
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket through a front-end process until cancelled; `processors`: the
    ones it may run on (empty: the daemon's own). Falls back to serving it here."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = (listener.socket.fileno(), theirs.fileno())
    command = [sys.executable, "-m", "p2psync.control.front_end_process", *map(str, fds)]
    if processors:
        command.append(",".join(str(p) for p in sorted(processors)))
    async with trio.open_nursery() as connections:  # handed-over ones outlive the process
        try:
            process = await trio.lowlevel.open_process(
                command, pass_fds=fds, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            log.error("cannot start the control front-end (%s); serving the socket here", exc)
        else:
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            try:
                theirs.close()
                await _Link(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), node).run(
                    connections, serve
                )
            finally:
                with trio.CancelScope(shield=True):
                    process.terminate()
                    await process.wait()
            log.error(
                "the control front-end process ended (exit status %s); serving the control "
                "socket here",
                process.returncode,
            )
        ours.close()
        theirs.close()

        async def served_here(stream: trio.SocketStream) -> None:
            await serve(stream, b"")

        await trio.serve_listeners(served_here, [listener], task_status=task_status)


class _Link:
    """The socket pair to the front-end: writes in, outcomes out, connections handed over."""

    def __init__(self, stream: trio.SocketStream, node: Node) -> None:
        self.stream = stream
        self.node = node
        self.submitted: deque[tuple[int, Transaction]] = deque()  # in commit order
        self.more_submitted = trio.Event()
        self.handed: deque[socket.socket] = deque()  # sockets received, in the order sent

    async def run(self, connections: trio.Nursery, serve: Serve) -> None:
        """Until the front-end's end closes; handed-over connections are served in
        `connections`."""
        frames = Frames()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_outcomes)
            while True:
                data, ancillary, _, _ = await self.stream.socket.recvmsg(READ_BYTES, _FDS_SPACE)
                self._keep_handed(ancillary)
                if not data:
                    break
                try:
                    bodies = frames.feed(data)
                except FrameError as exc:
                    log.error("the control front-end sent %s", exc)
                    break
                for body in bodies:
                    if body[0] == WRITES:
                        self._submit(body[1])
                    elif body[0] == HAND_OVER:
                        handed = trio.socket.from_stdlib_socket(self.handed.popleft())
                        connections.start_soon(serve, trio.SocketStream(handed), body[1])
            nursery.cancel_scope.cancel()

    def _keep_handed(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                whole = len(data) - len(data) % 4
                for fd in memoryview(data)[:whole].cast("i"):
                    self.handed.append(socket.socket(fileno=fd))

    def _submit(self, batch: list[Any]) -> None:
        submit, submitted = self.node.submit, self.submitted.append
        for token, share, ops, preconditions in writes_of(batch):
            submitted((token, submit(share, ops, preconditions, checked=True)))
        self.more_submitted.set()

    async def _send_outcomes(self) -> None:
        while True:
            while not self.submitted:
                self.more_submitted = trio.Event()
                await self.more_submitted.wait()
            await self.submitted[0][1].done.wait()
            outcomes: list[tuple[int, Outcome]] = []
            while self.submitted and self.submitted[0][1].done.is_set():
                token, transaction = self.submitted.popleft()
                outcomes.append((token, write_outcome(transaction)))
            await self.stream.send_all(outcomes_frame(outcomes))
