"""The sync session state machine, one per TLS connection, the same on both sides (pure).

Bytes from the peer go in with `receive_data`, events come out of `next_event` (like h11); every
`send_*` returns the bytes to write. This module enforces the protocol rules: hello first and once,
the peer's device id, version negotiation, field types, no data before the peer has said hello. It
never does I/O, never reads the clock and never decides what to sync: that is the daemon's job.

Hellos carry a digest of each share's summary vector rather than the vector: full vectors of a
household with a few restored devices run to kilobytes, and a reconnect with nothing new should
cost one small hello each way. Where the digests differ, each side sends its full vector
(`send_vector`) and waits for the peer's (`PeerVector`) before streaming entries.
"""

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgpack

from .wire import MAX_FRAME, FrameDecoder, WireError, encode_frame

PROTOCOL_VERSIONS = (1, 1)
_DIGEST_LABEL = b"p2psync-summary-vector-v1\x00"
_DIGEST_BYTES = 16

Vector = dict[str, int]
WireItem = tuple[bytes, bytes | None]


class ProtocolError(Exception):
    """The peer broke the protocol; `reason` says how, in words fit for a log or a bye."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(RuntimeError):
    """Our own code used the connection out of order (a bug here, not the peer's fault)."""


class Signal(Enum):
    NEED_DATA = "need data"
    CLOSED = "closed"


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


@dataclass(frozen=True)
class PeerHello:
    """The peer proved itself: `shares` it syncs, and of those, the ones whose summary vector
    equals the one we announced (`in_sync`, share -> that vector). For the others, exchange
    vectors with `send_vector` / `PeerVector`."""

    device_id: str
    version: int
    shares: frozenset[str]
    in_sync: dict[str, Vector]


@dataclass(frozen=True)
class PeerVector:
    share: str
    vector: Vector


@dataclass(frozen=True)
class Entries:
    share: str
    items: tuple[WireItem, ...]


@dataclass(frozen=True)
class CaughtUp:
    """The peer has sent everything it had that we lacked; `vector` is its vector at that time."""

    share: str
    vector: Vector


@dataclass(frozen=True)
class Ping:
    """A keep-alive; `wall_ms` is the sender's wall clock when it says so."""

    wall_ms: int | None = None


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Bye:
    reason: str


Event = PeerHello | PeerVector | Entries | CaughtUp | Ping | Pong | Bye


def _on_ping(message: dict[str, Any]) -> Ping:
    wall_ms = message.get("ms")
    return Ping(wall_ms if type(wall_ms) is int else None)


def summary_digest(vector: Mapping[str, int]) -> bytes:
    """A digest equal for equal vectors; absent actors and actors at 0 are the same thing."""
    canonical = sorted((actor, seq) for actor, seq in vector.items() if seq > 0)
    return hashlib.sha256(_DIGEST_LABEL + msgpack.packb(canonical)).digest()[:_DIGEST_BYTES]


class SyncConnection:
    """Protocol state of one connection. `expected_peer_id` is the id taken from the peer's TLS
    certificate; the peer's hello must name the same device."""

    def __init__(
        self,
        our_device_id: str,
        expected_peer_id: str | None,
        versions: tuple[int, int] = PROTOCOL_VERSIONS,
        max_frame: int = MAX_FRAME,
    ) -> None:
        if not 0 <= versions[0] <= versions[1]:
            raise ValueError(f"bad version range {versions}")
        self.our_device_id = our_device_id
        self.expected_peer_id = expected_peer_id
        self.versions = versions
        self.version: int | None = None
        self.peer_device_id: str | None = None
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._announced: dict[str, Vector] | None = None
        self._said_bye = False
        self._eof = False
        self._closed = False
        self._failure: str | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], Event]] = {
            "hello": self._on_hello,
            "vector": self._on_vector,
            "entries": self._on_entries,
            "caught_up": self._on_caught_up,
            "ping": _on_ping,
            "pong": lambda _: Pong(),
            "bye": self._on_bye,
        }

    # -- sending ----------------------------------------------------------------------------------

    def send_hello(self, shares: Mapping[str, Mapping[str, int]]) -> bytes:
        """Must come first on every connection, before reading anything from the peer."""
        if self._announced is not None:
            raise LocalProtocolError("hello already sent")
        self._check_can_send("hello")
        self._announced = {share: dict(vector) for share, vector in shares.items()}
        digests = {share: summary_digest(vector) for share, vector in shares.items()}
        low, high = self.versions
        return self._frame({"t": "hello", "v": [low, high], "id": self.our_device_id, "s": digests})

    def send_vector(self, share: str, vector: Mapping[str, int]) -> bytes:
        self._check_peer_proven("vector")
        return self._frame({"t": "vector", "s": share, "vv": dict(vector)})

    def send_entries(self, share: str, items: Iterable[WireItem]) -> bytes:
        self._check_peer_proven("entries")
        return self._frame({"t": "entries", "s": share, "i": [[raw, sig] for raw, sig in items]})

    def send_caught_up(self, share: str, vector: Mapping[str, int]) -> bytes:
        self._check_peer_proven("caught_up")
        return self._frame({"t": "caught_up", "s": share, "vv": dict(vector)})

    def send_ping(self, wall_ms: int | None = None) -> bytes:
        """A keep-alive; with `wall_ms` (our wall clock) it lets the peer estimate clock skew."""
        self._check_hello_sent("ping")
        return self._frame({"t": "ping"} if wall_ms is None else {"t": "ping", "ms": wall_ms})

    def send_pong(self) -> bytes:
        self._check_hello_sent("pong")
        return self._frame({"t": "pong"})

    def send_bye(self, reason: str) -> bytes:
        """Allowed at any time, even before hello, so a refusal can say why; nothing after it."""
        self._check_can_send("bye")
        self._said_bye = True
        return self._frame({"t": "bye", "r": reason})

    def _frame(self, message: dict[str, Any]) -> bytes:
        try:
            return encode_frame(message, max_frame=self._max_frame)
        except WireError as exc:
            raise LocalProtocolError(str(exc)) from exc

    def _check_can_send(self, kind: str) -> None:
        if self._said_bye:
            raise LocalProtocolError(f"cannot send {kind} after bye")

    def _check_hello_sent(self, kind: str) -> None:
        self._check_can_send(kind)
        if self._announced is None:
            raise LocalProtocolError(f"cannot send {kind} before our hello")

    def _check_peer_proven(self, kind: str) -> None:
        # With TLS 1.3 a client whose certificate was refused only learns it at its first read:
        # a valid hello from the peer is the proof that it accepted us and is who it claims.
        self._check_hello_sent(kind)
        if self.version is None:
            raise LocalProtocolError(f"cannot send {kind} before the peer's hello")

    # -- receiving --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the peer; b"" means it closed its side. Raises ProtocolError at once
        for a frame announced over the size cap, so its body is never buffered."""
        if self._eof:
            raise LocalProtocolError("data received after EOF")
        if not data:
            self._eof = True
            return
        if self._closed or self._failure is not None:
            return
        try:
            self._decoder.feed(data)
        except WireError as exc:
            raise self._failed(str(exc)) from exc

    def next_event(self) -> Event | Signal:
        """The next event, NEED_DATA, or CLOSED once the peer said bye or closed."""
        if self._failure is not None:
            raise ProtocolError(self._failure)
        if self._announced is None:
            raise LocalProtocolError("send our hello before reading the peer's messages")
        while not self._closed:
            try:
                message = self._decoder.next_message()
            except WireError as exc:
                raise self._failed(str(exc)) from exc
            if message is None:
                return self._at_end_of_buffer()
            event = self._dispatch(message)
            if event is not None:
                return event
        return CLOSED

    def _at_end_of_buffer(self) -> Signal:
        if not self._eof:
            return NEED_DATA
        if self._decoder.buffered:
            raise self._failed(
                f"peer closed the connection in the middle of a frame "
                f"({self._decoder.buffered} bytes of it received)"
            )
        self._closed = True
        return CLOSED

    def _dispatch(self, message: dict[str, Any]) -> Event | None:
        kind = message["t"]
        if self.version is None and kind not in ("hello", "bye"):
            raise self._failed(f"peer sent {kind!r} before hello")
        handler = self._handlers.get(kind)
        if handler is None:
            return None  # a message type from a newer version: ignored by design
        try:
            return handler(message)
        except _BadField as exc:
            raise self._failed(f"malformed {kind!r} message: {exc}") from None

    def _on_hello(self, message: dict[str, Any]) -> PeerHello:
        if self.version is not None:
            raise self._failed("peer sent a second hello")
        versions: Any = message.get("v")
        _require(
            isinstance(versions, list)
            and len(versions) == 2
            and all(_is_count(v) for v in versions)
            and versions[0] <= versions[1],
            "'v' must be [lowest, highest] protocol version",
        )
        device_id: Any = message.get("id")
        _require(isinstance(device_id, str) and device_id != "", "'id' must be a device id")
        digests: Any = message.get("s")
        _require(
            isinstance(digests, dict)
            and all(isinstance(s, str) and isinstance(d, bytes) for s, d in digests.items()),
            "'s' must map share names to digests",
        )
        if self.expected_peer_id is not None and device_id != self.expected_peer_id:
            raise self._failed(
                f"peer says it is {device_id} but its certificate is {self.expected_peer_id}"
            )
        low, high = max(self.versions[0], versions[0]), min(self.versions[1], versions[1])
        if low > high:
            raise self._failed(
                f"no common protocol version: we speak {self.versions[0]}..{self.versions[1]}, "
                f"peer {device_id} speaks {versions[0]}..{versions[1]}"
            )
        self.version, self.peer_device_id = high, device_id
        assert self._announced is not None
        in_sync = {
            share: dict(self._announced[share])
            for share, digest in digests.items()
            if share in self._announced and summary_digest(self._announced[share]) == digest
        }
        return PeerHello(device_id, high, frozenset(digests), in_sync)

    def _on_vector(self, message: dict[str, Any]) -> PeerVector:
        return PeerVector(_share_field(message), _vector_field(message))

    def _on_entries(self, message: dict[str, Any]) -> Entries:
        share = _share_field(message)
        items: Any = message.get("i")
        _require(isinstance(items, list), "'i' must be a list of [entry, signature]")
        checked = []
        for item in items:
            _require(
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], bytes)
                and (item[1] is None or isinstance(item[1], bytes)),
                "each item must be [entry bytes, signature bytes or nil]",
            )
            checked.append((item[0], item[1]))
        return Entries(share, tuple(checked))

    def _on_caught_up(self, message: dict[str, Any]) -> CaughtUp:
        return CaughtUp(_share_field(message), _vector_field(message))

    def _on_bye(self, message: dict[str, Any]) -> Bye:
        reason = message.get("r", "")
        _require(isinstance(reason, str), "'r' must be a string")
        self._closed = True
        return Bye(reason)

    def _failed(self, reason: str) -> ProtocolError:
        self._failure = reason
        return ProtocolError(reason)


class _BadField(Exception):
    pass


def _require(condition: bool, complaint: str) -> None:
    if not condition:
        raise _BadField(complaint)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _share_field(message: dict[str, Any]) -> str:
    share = message.get("s")
    _require(isinstance(share, str) and share != "", "'s' must be a share name")
    return str(share)


def _vector_field(message: dict[str, Any]) -> Vector:
    vector: Any = message.get("vv")
    _require(
        isinstance(vector, dict)
        and all(isinstance(actor, str) and _is_count(seq) for actor, seq in vector.items()),
        "'vv' must map actors to sequence numbers",
    )
    return dict(vector)
