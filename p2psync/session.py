"""The sync session state machine, one per TLS connection, the same on both sides (pure).

Bytes from the peer go in with `receive_data`, events come out of `next_event` (like h11); every
`send_*` returns the bytes to write. This module enforces the protocol rules: hello first and once,
the peer's device id, version negotiation, field types, no data before the peer has said hello. It
never does I/O, never reads the clock and never decides what to sync: that is the daemon's job.
The events it gives and their field shapes are `session_events.py`'s; the checks of each message
after hello, `session_inbound.py`'s.

Hellos carry a digest of each share's chain heads (actor, seq and the hash of the entry at seq)
rather than the vector: full vectors run to kilobytes, and a reconnect with nothing new should
cost one small hello each way. Because the digest covers hashes, two devices that hold different
histories under the same seqs are never "in sync". Where the digests differ, each side sends its
full vector (`send_vector`) and waits for the peer's (`PeerVector`) before streaming entries.
Vectors are split over as many frames as they need, so no number of actors pushes a message over
the frame cap; what a peer may make us buffer of a vector is bounded.

Two small messages keep relays from sending what a peer has or gets from elsewhere (see "Each
entry crosses each link once" in docs/architecture.md): `have` (actor -> seq now held, a delta that
only raises) and `direct` (our current actor, and per share the actors whose writers deliver to us
over a live session; each one replaces the last). What to do with them is the daemon's business.

Protocol 2 (release 0.2.0) changed the entry rules (per-key contexts, epochs per start,
revocation cuts); a 0.1 peer speaks protocol 1 and is told to upgrade. Protocol 3 (release 0.3.0)
has shares with members: a hello names only the shares the peer is a member of, nothing of any
other share crosses the session (both sides check every message against the shares both named),
a device offered a share it holds nothing of joins it by answering with its vector
(`join_share`), and a device that offers a share it was removed from is told so (`not_member`);
a 0.2 peer, which would sync every share both hold, is told to upgrade.

Snapshots (release 0.4.0, still protocol 3): a hello may say "sn" (this device takes snapshots);
only to a peer that said so go `snap_start` (a packed offer, history/snapshot.py), `snap_rows`
and `snap_end`, and it answers a start with `snap_from` (the key to resume after, or nil). An
older peer ignores the key, never hears the messages, and would ignore them anyway.
"""

import hashlib
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any

import msgpack

from .session_events import (
    Event,
    Heads,
    PeerHello,
    Pong,
    Vector,
    WireItem,
)
from .session_inbound import (
    MAX_DIRECT_ACTORS,
    BadField,
    InboundMessages,
    is_count,
    on_ping,
    require,
)
from .wire import MAX_FRAME, FrameDecoder, WireError, encode_frame

PROTOCOL_VERSIONS = (3, 3)
# The first release that speaks each protocol version, for "upgrade to ..." messages.
RELEASE_OF_PROTOCOL = {1: "0.1.0", 2: "0.2.0", 3: "0.3.0"}
# The first release whose hello says "sn" (and that writes stability reports): an older peer
# cannot catch up from a member that folded entries it lacks, and holds folding back.
SNAPSHOT_RELEASE = "0.4.0"
_DIGEST_LABEL = b"p2psync-chain-heads-v2\x00"
_DIGEST_BYTES = 16
ACTORS_PER_FRAME = 20_000  # ~1.1 MB of vector per frame, far under the cap
MAX_SOFTWARE_CHARS = 64  # a peer's p2psync version, as its hello says


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


def summary_digest(heads: Heads) -> bytes:
    """A digest equal for equal chain heads; absent actors and actors at 0 are the same thing."""
    canonical = sorted(
        (actor, *(head if isinstance(head, tuple) else (head,)))
        for actor, head in heads.items()
        if _seq(head) > 0
    )
    return hashlib.sha256(_DIGEST_LABEL + msgpack.packb(canonical)).digest()[:_DIGEST_BYTES]


def _seq(head: int | tuple[int, bytes]) -> int:
    return head[0] if isinstance(head, tuple) else head


def _vector_of(heads: Heads) -> Vector:
    return {actor: _seq(head) for actor, head in heads.items()}


class SyncConnection(InboundMessages):
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
        self._announced: dict[str, Heads] | None = None
        self._partial_vectors: dict[tuple[str, str], Vector] = {}
        self._peer_shares: frozenset[str] | None = None
        self.peer_takes_snapshots = False  # its hello said "sn"
        self._said_bye = False
        self._eof = False
        self._closed = False
        self._failure: str | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], Event | None]] = {
            "hello": self._on_hello,
            "vector": self._on_vector,
            "entries": self._on_entries,
            "caught_up": self._on_caught_up,
            "ping": on_ping,
            "pong": lambda _: Pong(),
            "bye": self._on_bye,
            "have": self._on_have,
            "direct": self._on_direct,
            "not_member": self._on_not_member,
            "snap_start": self._on_snap_start,
            "snap_from": self._on_snap_from,
            "snap_rows": self._on_snap_rows,
            "snap_end": self._on_snap_end,
        }

    # -- sending ----------------------------------------------------------------------------------

    def send_hello(
        self,
        shares: Mapping[str, Heads],
        actor: str = "",
        software: str = "",
        snapshots: bool = False,
    ) -> bytes:
        """Must come first on every connection, before reading anything from the peer.
        `software`: our p2psync version, shown to people; `snapshots`: we take snapshots (older
        peers ignore both keys)."""
        if self._announced is not None:
            raise LocalProtocolError("hello already sent")
        self._check_can_send("hello")
        self._announced = {share: dict(heads) for share, heads in shares.items()}
        digests = {share: summary_digest(vector) for share, vector in shares.items()}
        low, high = self.versions
        hello = {"t": "hello", "v": [low, high], "id": self.our_device_id, "s": digests}
        optional = {"a": actor, "sw": software, "sn": 1 if snapshots else 0}
        return self._frame({**hello, **{key: value for key, value in optional.items() if value}})

    def send_vector(self, share: str, vector: Mapping[str, int]) -> bytes:
        self._check_peer_proven("vector")
        if self._announced is not None and share not in self._announced:
            raise LocalProtocolError(f"vector of share {share!r}, which our hello did not name")
        return self._vector_frames("vector", share, vector)

    def join_share(self, share: str) -> bytes:
        """Join a share the peer offered and we hold nothing of: our (empty) vector for it."""
        self._check_peer_proven("vector")
        assert self._announced is not None and self._peer_shares is not None
        if share not in self._peer_shares or share in self._announced:
            raise LocalProtocolError(f"share {share!r} was not offered to join")
        self._announced[share] = {}
        return self._vector_frames("vector", share, {})

    def send_entries(self, share: str, items: Iterable[WireItem]) -> bytes:
        self._check_shared("entries", share)
        return self._frame({"t": "entries", "s": share, "i": [[raw, sig] for raw, sig in items]})

    def send_caught_up(self, share: str, vector: Mapping[str, int]) -> bytes:
        self._check_shared("caught_up", share)
        return self._vector_frames("caught_up", share, vector)

    def send_have(self, share: str, vector: Mapping[str, int]) -> bytes:
        """What we now hold of some actors; frames stand alone, so a big one is split freely."""
        self._check_shared("have", share)
        items = sorted(vector.items())
        return b"".join(
            self._frame({"t": "have", "s": share, "vv": dict(items[i : i + ACTORS_PER_FRAME])})
            for i in range(0, len(items), ACTORS_PER_FRAME)
        )

    def send_direct(self, actor: str, shares: Mapping[str, Iterable[str]]) -> bytes:
        self._check_peer_proven("direct")
        outside = set(shares) - self.common_shares
        if outside:
            raise LocalProtocolError(f"direct names shares this session does not sync: {outside}")
        listed = {share: sorted(actors) for share, actors in shares.items() if actors}
        if sum(len(actors) for actors in listed.values()) > MAX_DIRECT_ACTORS:
            raise LocalProtocolError(f"more than {MAX_DIRECT_ACTORS} direct actors")
        return self._frame({"t": "direct", "a": actor, "d": listed})

    def send_snap_start(self, share: str, offer: bytes) -> bytes:
        self._check_snapshots("snap_start", share)
        return self._frame({"t": "snap_start", "s": share, "o": offer})

    def send_snap_from(self, share: str, after: tuple[str, str] | None) -> bytes:
        self._check_shared("snap_from", share)
        return self._frame({"t": "snap_from", "s": share, "k": list(after) if after else None})

    def send_snap_rows(self, share: str, rows: Iterable[bytes]) -> bytes:
        self._check_snapshots("snap_rows", share)
        return self._frame({"t": "snap_rows", "s": share, "r": list(rows)})

    def send_snap_end(self, share: str) -> bytes:
        self._check_snapshots("snap_end", share)
        return self._frame({"t": "snap_end", "s": share})

    def _check_snapshots(self, kind: str, share: str) -> None:
        self._check_shared(kind, share)
        if not self.peer_takes_snapshots:
            raise LocalProtocolError(f"{kind} to a peer that did not say it takes snapshots")

    def send_not_member(self, share: str, reason: str) -> bytes:
        """Tell the peer it was removed from a share its hello offered us (and ours did not)."""
        self._check_peer_proven("not_member")
        assert self._announced is not None and self._peer_shares is not None
        if share not in self._peer_shares or share in self._announced:
            raise LocalProtocolError(f"not_member of share {share!r}, which the peer did not offer")
        return self._frame({"t": "not_member", "s": share, "r": reason})

    @property
    def common_shares(self) -> frozenset[str]:
        """Shares both hellos named: the ones each side streams to the other."""
        if self._announced is None or self._peer_shares is None:
            return frozenset()
        return self._peer_shares & frozenset(self._announced)

    def _vector_frames(self, kind: str, share: str, vector: Mapping[str, int]) -> bytes:
        """One frame, or several of which all but the last say "more"."""
        items = sorted(vector.items())
        chunks = [items[i : i + ACTORS_PER_FRAME] for i in range(0, len(items), ACTORS_PER_FRAME)]
        frames = [
            self._frame({"t": kind, "s": share, "vv": dict(chunk), "more": True})
            for chunk in chunks[:-1]
        ]
        last = chunks[-1] if chunks else []
        frames.append(self._frame({"t": kind, "s": share, "vv": dict(last)}))
        return b"".join(frames)

    def send_ping(self, wall_ms: int | None = None, idle_ms: int | None = None) -> bytes:
        """A keep-alive; with `wall_ms` (our wall clock) it lets the peer estimate clock skew,
        with `idle_ms` it tells the peer how often it must send us something."""
        self._check_hello_sent("ping")
        message: dict[str, Any] = {"t": "ping"}
        if wall_ms is not None:
            message["ms"] = wall_ms
        if idle_ms is not None:
            message["idle"] = idle_ms
        return self._frame(message)

    def send_pong(self) -> bytes:
        self._check_hello_sent("pong")
        return self._frame({"t": "pong"})

    def send_bye(self, reason: str, code: str = "") -> bytes:
        """Allowed at any time, even before hello, so a refusal can say why; nothing after it."""
        self._check_can_send("bye")
        self._said_bye = True
        return self._frame({"t": "bye", "r": reason, **({"c": code} if code else {})})

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

    def _check_shared(self, kind: str, share: str) -> None:
        self._check_peer_proven(kind)
        if share not in self.common_shares:
            raise LocalProtocolError(f"{kind} of share {share!r}, which this session does not sync")

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
        except BadField as exc:
            raise self._failed(f"malformed {kind!r} message: {exc}") from None

    def _on_hello(self, message: dict[str, Any]) -> PeerHello:
        if self.version is not None:
            raise self._failed("peer sent a second hello")
        versions: Any = message.get("v")
        require(
            isinstance(versions, list)
            and len(versions) == 2
            and all(is_count(v) for v in versions)
            and versions[0] <= versions[1],
            "'v' must be [lowest, highest] protocol version",
        )
        device_id: Any = message.get("id")
        require(isinstance(device_id, str) and device_id != "", "'id' must be a device id")
        digests: Any = message.get("s")
        require(
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
                _version_mismatch(self.our_device_id, self.versions, device_id, versions)
            )
        self.version, self.peer_device_id = high, device_id
        assert self._announced is not None
        in_sync = {
            share: _vector_of(self._announced[share])
            for share, digest in digests.items()
            if share in self._announced and summary_digest(self._announced[share]) == digest
        }
        actor = message.get("a", "")
        require(isinstance(actor, str) and len(actor) <= 100, "'a' must be an actor")
        software = message.get("sw", "")
        require(
            isinstance(software, str) and len(software) <= MAX_SOFTWARE_CHARS,
            f"'sw' must be a version of at most {MAX_SOFTWARE_CHARS} characters",
        )
        self._peer_shares = frozenset(digests)
        self.peer_takes_snapshots = message.get("sn") == 1
        return PeerHello(
            device_id,
            high,
            frozenset(digests),
            in_sync,
            actor,
            software,
            self.peer_takes_snapshots,
        )

    def _failed(self, reason: str) -> ProtocolError:
        self._failure = reason
        return ProtocolError(reason)


def _version_mismatch(us: str, ours: tuple[int, int], peer: str, theirs: list[int]) -> str:
    """Worded for both ends: the same text is logged here and sent to the peer in a bye."""
    newest = max(ours[1], theirs[1])
    release = RELEASE_OF_PROTOCOL.get(newest, f"a release with sync protocol {newest}")
    older = us if ours[1] < theirs[1] else peer
    return (
        f"no common sync protocol version: {us} speaks {ours[0]}..{ours[1]}, {peer} speaks "
        f"{theirs[0]}..{theirs[1]}; upgrade p2psync on {older} to {release} or newer"
    )


def lacks_snapshots(us: str, peer: str, share: str) -> str:
    """Worded for both ends, like a version mismatch: logged here, sent to the peer in a bye
    (a peer before 0.4.0 logs "peer said goodbye: " and the text)."""
    return (
        f"{peer} lacks entries of share {share} that {us} has folded away (history compaction)"
        f" and its p2psync cannot take a snapshot of them; upgrade p2psync on {peer} to"
        f" {SNAPSHOT_RELEASE} or newer"
    )
