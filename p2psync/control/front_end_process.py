"""The control front-end process: accepts control connections and answers writes for the daemon.

Started by the daemon (`front_ends.py`) as `python -m p2psync.control.front_end_process
LISTENER_FD DAEMON_FD [PROCESSORS]`, with the control socket's listener and its end of a socket
pair. One thread, one `selectors` loop: it accepts, reads, and follows `front_end.py`'s rules;
the writes it takes from every connection in one pass of the loop go to the daemon as one frame,
and the daemon's answers come back the same way. It holds no data and decides nothing the
daemon decides: it must never commit, answer anything but a write, or outlive the daemon (it
exits as soon as the daemon's end of the pair closes, so a daemon killed outright leaves no
process behind accepting on its socket).
"""

import itertools
import logging
import os
import selectors
import signal
import socket
import sys

from ..access import credentials
from .front_end import (
    ClientConnection,
    FrameError,
    Frames,
    Queued,
    hand_over_frame,
    outcomes_of,
    writes_frame,
)

log = logging.getLogger("p2psync.control.front_end")

READ_BYTES = 65536


class _Client:
    __slots__ = ("connection", "events", "on_events", "sock")

    def __init__(
        self, sock: socket.socket, connection: ClientConnection, on_events: object
    ) -> None:
        self.sock = sock
        self.connection = connection
        self.on_events = on_events  # what the selector calls
        self.events = 0  # registered with the selector


class FrontEnd:
    def __init__(self, listener: socket.socket, daemon: socket.socket) -> None:
        self.listener = listener
        self.daemon = daemon
        self.selector = selectors.DefaultSelector()
        self.tokens = itertools.count()
        self.waiting: dict[int, tuple[_Client, object]] = {}  # token -> whose answer
        self.batch: list[Queued] = []
        self.to_daemon = bytearray()
        self.hand_overs: list[tuple[bytes, _Client]] = []  # frames whose socket goes with them
        self.held: set[_Client] = set()  # admins' connections served here, not handed over
        self.frames = Frames()
        self.daemon_events = selectors.EVENT_READ
        listener.setblocking(False)
        daemon.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self.selector.register(daemon, selectors.EVENT_READ, self._daemon_ready)

    def run(self) -> None:
        while True:
            ready = self.selector.select()
            # new connections first: whether a client is alone is judged with them counted
            ready.sort(key=lambda found: found[0].fileobj is not self.listener)
            for key, events in ready:
                key.data(key.fileobj, events)
            if self.batch:
                self.to_daemon += writes_frame(self.batch)
                self.batch = []
            self._send_to_daemon()

    # clients ----------------------------------------------------------------------------------

    def _accept(self, _: object, events: int) -> None:
        for _ in range(64):  # a few per pass, so a burst of connections cannot starve the rest
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the daemon would log the same
                log.warning("cannot accept a control connection: %s", exc)
                return
            sock.setblocking(False)
            try:
                admin = credentials.admin_by_rule(credentials.peer_credentials(sock)) is not None
            except OSError:
                admin = False
            client = _Client(sock, ClientConnection(admin), None)
            client.on_events = lambda _, ready, client=client: self._on_client(client, ready)
            if admin:
                self.held.add(client)
            self._update(client)

    def _on_client(self, client: _Client, events: int) -> None:
        connection = client.connection
        if events & selectors.EVENT_WRITE:
            self._flush(client)
            if connection.full:  # the client read answers: maybe room for more
                self._take(client)
        if events & selectors.EVENT_READ and connection.reading:
            try:
                data = client.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(client)
                return
            if data == b"":
                connection.ended = True
                # a last request without its newline: the daemon answers it, as it always did
                connection.handing_over = connection.handing_over or bool(connection.buffer)
            elif data:
                connection.buffer += data
                self._take(client)
        self._update(client)

    def _take(self, client: _Client) -> None:
        for queued, answer in client.connection.take(self.tokens, alone=len(self.held) <= 1):
            self.waiting[queued.token] = (client, answer)
            self.batch.append(queued)

    def _flush(self, client: _Client) -> None:
        unsent = client.connection.unsent
        if not unsent:
            return
        try:
            client.connection.sent(client.sock.send(unsent))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(client)

    def _update(self, client: _Client) -> None:
        """Register for what the client's connection waits on; hand it over or close it once
        it is settled and there is nothing more to do here."""
        if client.sock.fileno() < 0:
            return
        connection = client.connection
        if connection.settled and connection.handing_over:
            self._unregister(client)
            self.held.discard(client)
            self.hand_overs.append((hand_over_frame(bytes(connection.buffer)), client))
            return
        if connection.settled and connection.ended:
            self._drop(client)
            return
        wanted = (selectors.EVENT_READ if connection.reading else 0) | (
            selectors.EVENT_WRITE if connection.unsent else 0
        )
        if wanted == client.events:
            return
        if client.events and wanted:
            self.selector.modify(client.sock, wanted, client.on_events)
        elif wanted:
            self.selector.register(client.sock, wanted, client.on_events)
        else:
            self.selector.unregister(client.sock)
        client.events = wanted

    def _unregister(self, client: _Client) -> None:
        if client.events:
            self.selector.unregister(client.sock)
            client.events = 0

    def _drop(self, client: _Client) -> None:
        """The client is gone: answers still to come for it are dropped when they come."""
        self._unregister(client)
        self.held.discard(client)
        client.connection.answers.clear()
        client.sock.close()

    # the daemon -------------------------------------------------------------------------------

    def _daemon_ready(self, _: object, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._send_to_daemon()
        if not events & selectors.EVENT_READ:
            return
        try:
            data = self.daemon.recv(READ_BYTES * 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            raise SystemExit(0)  # the daemon stopped or died: so do we
        touched: dict[int, _Client] = {}
        for body in self.frames.feed(data):
            for token, outcome in outcomes_of(body):
                client, answer = self.waiting.pop(token)
                if client.sock.fileno() < 0:
                    continue
                client.connection.answered(answer, outcome)  # type: ignore[arg-type]
                touched[id(client)] = client
        for client in touched.values():
            self._flush(client)
            if client.connection.full:
                self._take(client)
            self._update(client)

    def _send_to_daemon(self) -> None:
        try:
            while self.hand_overs and not self.to_daemon:
                body, client = self.hand_overs[0]
                sent = socket.send_fds(self.daemon, [body], [client.sock.fileno()])
                self.hand_overs.pop(0)
                client.sock.close()  # the daemon holds the connection now
                self.to_daemon += body[sent:]
            if self.to_daemon:
                del self.to_daemon[: self.daemon.send(self.to_daemon)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            raise SystemExit(0) from None  # the daemon is gone: so are we
        wanted = selectors.EVENT_READ | (
            selectors.EVENT_WRITE if self.to_daemon or self.hand_overs else 0
        )
        if wanted != self.daemon_events:
            self.selector.modify(self.daemon, wanted, self._daemon_ready)
            self.daemon_events = wanted


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the daemon's to act on
    logging.basicConfig(format="p2psync control front-end: %(message)s", level=logging.WARNING)
    listener = socket.socket(fileno=int(argv[0]))
    daemon = socket.socket(fileno=int(argv[1]))
    if len(argv) > 2:
        try:  # the processors the daemon left to others (process.one_cpu)
            os.sched_setaffinity(0, {int(p) for p in argv[2].split(",")})
        except (OSError, ValueError) as exc:
            log.info("staying on the daemon's processor: %s", exc)
    try:
        FrontEnd(listener, daemon).run()
    except FrameError as exc:
        log.error("stopped: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
