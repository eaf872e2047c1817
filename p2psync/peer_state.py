"""What the daemon shows about one peer (pure): its address, when it connected and was last heard,
what it holds, what went each way and how fast entries come from it.

Its session keeps it up to date (`pump.py`, `sender.py`), and `peers.py` keeps it once the
session ended; `status` and `peers` read it. It never does I/O and never decides anything about
the session.
"""

from collections import deque
from dataclasses import dataclass, field

from .liveness import Liveness

RATE_WINDOW_SECONDS = 5.0


@dataclass
class PeerState:
    """What the daemon shows about one peer; updated by its session."""

    device_id: str
    address: str = ""
    direction: str = ""
    connected_at: float | None = None
    last_seen: float | None = None
    peer_vectors: dict[str, dict[str, int]] = field(default_factory=dict)
    in_sync: set[str] = field(default_factory=set)
    entries_received: int = 0
    direct_actors: int = 0  # writers the peer says deliver to it (default share): not relayed
    # per share, the actors whose own writers deliver to the peer (its claims, less us): we
    # skip them, are not told their seqs while claimed, and `status` does not count them
    fed_directly: dict[str, frozenset[str]] = field(default_factory=dict)
    entries_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    clock_offset_ms: int | None = None  # the peer's wall clock minus ours, from its pings
    software: str | None = None  # its p2psync version, as its hello said (None: not said)
    liveness: Liveness | None = None  # the session's clocks: is the peer answering?
    recent_receipts: deque[tuple[float, int]] = field(default_factory=deque)

    def count_received(self, now: float, entries: int) -> None:
        self.entries_received += entries
        self.recent_receipts.append((now, entries))
        while self.recent_receipts and self.recent_receipts[0][0] < now - RATE_WINDOW_SECONDS:
            self.recent_receipts.popleft()

    def receive_rate(self, now: float) -> float:
        """Entries per second received over the last few seconds."""
        recent = sum(n for when, n in self.recent_receipts if when >= now - RATE_WINDOW_SECONDS)
        return recent / RATE_WINDOW_SECONDS
