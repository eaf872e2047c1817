"""The events of a sync session (pure data): what `session.SyncConnection.next_event` gives
for each message a peer sends, and the shapes their fields take. Kept apart so the state machine
in `session.py` reads whole; it never parses or encodes anything itself (that is `session.py`'s).
"""

from collections.abc import Mapping
from dataclasses import dataclass

Vector = dict[str, int]
Heads = Mapping[str, int | tuple[int, bytes]]  # actor -> seq, or (seq, hash of the entry at seq)
WireItem = tuple[bytes, bytes | None]


@dataclass(frozen=True)
class PeerHello:
    """The peer proved itself: `shares` it syncs, and of those, the ones whose summary vector
    equals the one we announced (`in_sync`, share -> that vector). For the others, exchange
    vectors with `send_vector` / `PeerVector`."""

    device_id: str
    version: int
    shares: frozenset[str]
    in_sync: dict[str, Vector]
    actor: str = ""  # the epoch the peer writes as now: tells two running copies apart
    software: str = ""  # the peer's p2psync version, for people ("" from peers before 0.4)
    snapshots: bool = False  # it takes snapshots of compacted shares (0.4 and later)


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
    """A keep-alive; `wall_ms` is the sender's wall clock when it says so, `idle_ms` how long
    the sender waits for a word from us before it gives up (peers before 0.3.0 do not say, and
    expect a `pong`)."""

    wall_ms: int | None = None
    idle_ms: int | None = None


@dataclass(frozen=True)
class Pong:
    pass


BYE_REVOKED = "revoked"  # the bye code that tells a device its household revoked it


@dataclass(frozen=True)
class Bye:
    reason: str
    code: str = ""  # machine-readable: BYE_REVOKED, or empty


@dataclass(frozen=True)
class Have:
    """The peer now holds every entry of each actor up to the seq in `vector` (a delta)."""

    share: str
    vector: Vector


@dataclass(frozen=True)
class Direct:
    """The peer writes as `actor`, and receives the entries of the actors in `shares[share]`
    from their writer over a live session. Replaces the peer's previous `Direct`."""

    actor: str
    shares: dict[str, frozenset[str]]


@dataclass(frozen=True)
class SnapshotStart:
    """The peer offers a snapshot of `share` (`offer`: history/snapshot.py's packed offer)."""

    share: str
    offer: bytes


@dataclass(frozen=True)
class SnapshotFrom:
    """The peer takes the snapshot of `share` it was offered, from after key `after`."""

    share: str
    after: tuple[str, str] | None


@dataclass(frozen=True)
class SnapshotRows:
    share: str
    rows: tuple[bytes, ...]


@dataclass(frozen=True)
class SnapshotEnd:
    share: str


@dataclass(frozen=True)
class NotMember:
    """The peer says we were removed from `share`, which our hello offered it (`reason` in words
    for a log: who removed us and when)."""

    share: str
    reason: str


Event = (
    PeerHello
    | PeerVector
    | Entries
    | CaughtUp
    | Ping
    | Pong
    | Bye
    | Have
    | Direct
    | NotMember
    | SnapshotStart
    | SnapshotFrom
    | SnapshotRows
    | SnapshotEnd
)
