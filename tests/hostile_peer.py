"""A household member under an attacker's control, for daemon-level adversarial tests (not a
test module itself).

It holds a real device key, is trusted by real daemons through their `trust` control call, and
talks to them over a real TLS 1.3 connection with the package's own `SyncConnection` and entry
code, as a compromised device would: everything it sends is what the package would let a member
build, plus whatever raw bytes a test wants to add. Blocking sockets, one thread: the daemons'
traffic towards it is small (a hello, a vector, pings) unless a test asks for their log.
"""

import socket
import ssl
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from p2psync import entry, keystore, tls
from p2psync.session import CLOSED, NEED_DATA, ProtocolError, SyncConnection
from p2psync.session_events import Bye, CaughtUp, Entries, Event, PeerHello, PeerVector, Pong
from p2psync.shares import DEFAULT_SHARE
from p2psync.wire import encode_frame
from tests.daemons import DaemonProcess, wait_for

Item = tuple[bytes, bytes | None]


class HostileMember:
    """The attacker's device: its own state dir, key and certificate, and its own epochs."""

    def __init__(self, directory: Path, name: str = "mallory") -> None:
        self.name = name
        self.state_dir = directory / name
        self.identity = keystore.load_or_create_identity(self.state_dir)
        self.device_id = self.identity.device_id
        self._epochs = 0

    def admitted_by(self, *daemons: DaemonProcess) -> None:
        """What pairing would do: each daemon writes a membership record for this device, and
        then accepts its sessions (it rebuilds its TLS trust a moment after the record)."""
        for daemon in daemons:
            daemon.call("trust", cert=self.identity.cert_pem.decode(), name=self.name)
            wait_for(partial(self._greeted_by, daemon), f"{daemon.name} to accept {self.name}")

    def _greeted_by(self, daemon: DaemonProcess) -> bool:
        try:
            with self.connect(daemon) as probe:
                probe.send(probe.hello_bytes())
                hello = probe.read_until(lambda event: isinstance(event, PeerHello))
                probe.finish()
        except (OSError, ssl.SSLError):
            return False
        return isinstance(hello, PeerHello)

    def new_actor(self) -> str:
        """A fresh epoch of this device (the one form an actor takes: device id / 8 hex)."""
        self._epochs += 1
        return f"{self.device_id}/{self._epochs:08x}"

    def sign(self, made: entry.LogEntry) -> bytes:
        return self.identity.sign(entry.head_message(made.share, made.actor, made.seq, made.hash))

    def connect(self, daemon: DaemonProcess, timeout: float = 10.0) -> "HostileConnection":
        return HostileConnection(self, daemon, timeout)


def chain(
    actor: str,
    ops: Sequence[Sequence[entry.Op]],
    after: tuple[int, bytes] = (0, entry.GENESIS_HASH),
    *,
    context: Mapping[str, int] | None = None,
    retires: Sequence[entry.ChainHead] = (),
    hlc: int = 1,
    share: str = DEFAULT_SHARE,
) -> list[entry.LogEntry]:
    """Entries of `actor` extending its chain at `after` (seq, hash), one per transaction."""
    seq, prev = after
    made = []
    for transaction in ops:
        seq += 1
        new = entry.encode(
            share,
            actor,
            seq,
            prev,
            hlc + seq,
            context or {},
            transaction,
            retires if seq == 1 else (),
        )
        made.append(new)
        prev = new.hash
    return made


def raw_frame(body: bytes, announced: int | None = None) -> bytes:
    """A frame with any body and any length prefix (a lying one, if `announced` says so)."""
    return struct.pack(">I", len(body) if announced is None else announced) + body


class HostileConnection:
    """One TLS session to a daemon. `events` keeps everything the daemon said, in order."""

    def __init__(self, member: HostileMember, daemon: DaemonProcess, timeout: float) -> None:
        state = member.state_dir
        context = tls.make_ssl_context(
            keystore.cert_path(state),
            keystore.key_path(state),
            [daemon.cert().encode()],
            server_side=False,
        )
        raw = socket.create_connection((daemon.host, daemon.port), timeout=timeout)
        self.sock = context.wrap_socket(raw)
        self.timeout = timeout
        self.session = SyncConnection(member.device_id, daemon.device_id)
        self.events: list[Event] = []
        self.closed = False  # the daemon closed its side (or the connection broke)

    # sending --------------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Raw bytes to the daemon; False once the daemon has hung up."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            return False
        return True

    def hello_bytes(self, heads: Mapping[str, Mapping[str, Any]] | None = None) -> bytes:
        """Our hello (it also lets the session read the daemon's messages)."""
        return self.session.send_hello({DEFAULT_SHARE: {}} if heads is None else heads)

    def hello(self, heads: Mapping[str, Mapping[str, Any]] | None = None) -> PeerHello:
        self.send(self.hello_bytes(heads))
        found = self.read_until(lambda e: isinstance(e, PeerHello))
        assert isinstance(found, PeerHello), f"no hello from the daemon: {self.events}"
        return found

    def send_entries(self, items: Iterable[Item], share: str = DEFAULT_SHARE) -> bool:
        # built as a frame directly: the session refuses to send before the daemon's hello
        return self.send(encode_frame({"t": "entries", "s": share, "i": [list(i) for i in items]}))

    def send_vector(self, vector: Mapping[str, int], share: str = DEFAULT_SHARE) -> bool:
        return self.send(encode_frame({"t": "vector", "s": share, "vv": dict(vector)}))

    # receiving ------------------------------------------------------------------------------

    def read_until(self, wanted: Any, timeout: float | None = None) -> Event | None:
        """Read events until one satisfies `wanted` (returned) or the daemon hangs up (None)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.closed:
            for event in self._pending_events():
                if wanted(event):
                    return event
            if self.closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the daemon said nothing wanted; it said {self.events}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(256 * 1024)
            except TimeoutError:
                continue
            except OSError:
                data = b""  # a reset or a TLS alert: the daemon is gone
            self.session.receive_data(data)
            if not data:
                self.closed = True
        for event in self._pending_events():
            if wanted(event):
                return event
        return None

    def _pending_events(self) -> list[Event]:
        found = []
        while True:
            try:
                event = self.session.next_event()
            except ProtocolError:
                self.closed = True  # the connection was cut mid-frame
                break
            if event is NEED_DATA:
                break
            if event is CLOSED:
                self.closed = True
                break
            found.append(event)
        self.events.extend(found)
        return found

    def roundtrip(self) -> bool:
        """A ping answered by a pong: the daemon has handled everything sent before it (it
        handles messages in order). False when it hung up instead."""
        if not self.send(encode_frame({"t": "ping"})):
            return False
        return self.read_until(lambda e: isinstance(e, Pong)) is not None

    def wait_closed(self, timeout: float | None = None) -> str | None:
        """Wait for the daemon to hang up; the reason of its bye, if it sent one."""
        self.read_until(lambda e: False, timeout)
        return self.bye_reason()

    def bye_reason(self) -> str | None:
        byes = [e.reason for e in self.events if isinstance(e, Bye)]
        return byes[0] if byes else None

    def vector(self) -> dict[str, int]:
        """The daemon's vector of the default share (it sends it after hellos that differ)."""
        found = self.read_until(lambda e: isinstance(e, PeerVector))
        assert isinstance(found, PeerVector), f"no vector from the daemon: {self.events}"
        return found.vector

    def fetch_log(self) -> list[entry.LogEntry]:
        """Everything the daemon holds of the default share: we say we hold nothing."""
        self.send_vector({})
        self.read_until(lambda e: isinstance(e, CaughtUp))
        return [
            entry.decode(raw) for e in self.events if isinstance(e, Entries) for raw, _ in e.items
        ]

    def finish(self, timeout: float | None = None) -> str | None:
        """End our side cleanly (a FIN, never a reset that could discard what the daemon has not
        read yet), wait for the daemon to hang up, and close; the reason of its bye, if any."""
        if not self.closed:
            try:
                # the plain socket's shutdown: SSLSocket.shutdown drops the TLS layer we still
                # need to read the daemon's bye
                socket.socket.shutdown(self.sock, socket.SHUT_WR)
            except OSError:
                self.closed = True
        reason = self.wait_closed(timeout)
        self.close()
        return reason

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "HostileConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def heads_of(log: Iterable[entry.LogEntry]) -> dict[str, tuple[int, bytes]]:
    """actor -> (seq, hash) of the newest entry of each actor in `log`."""
    heads: dict[str, tuple[int, bytes]] = {}
    for made in log:
        if made.seq > heads.get(made.actor, (0, b""))[0]:
            heads[made.actor] = (made.seq, made.hash)
    return heads
