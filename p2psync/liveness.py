"""Whether a sync session's peer is still there, and when we owe it a keep-alive (pure: times in,
times out; the trio shell is pump.py).

A peer shows it is alive by sending bytes: entries, haves, anything, and a ping when it has sent
nothing else for a while. Each side sends a ping once it has sent nothing for `ping_interval`
(3 s, or less when either side's silence limit is under 2.5 pings), and counts the peer as gone once
it has heard nothing for its `limit` (`sync.idle_timeout`, 8 s by default). So a peer that
vanishes (unplugged, link down, stopped with SIGSTOP) shows offline within 8 s and a bit, and an
idle session costs one small frame each way every 3 s. Pings are not answered: each side's own
pings keep the other side's clock going, and a ping says how soon its sender gives up, so a
peer configured with a shorter limit is pinged often enough for it.

Silence only counts while we could have heard the peer: while our receiver waits for the
database (applying what the peer sent), the peer's bytes wait unread in the socket, so that time
is ours, not the peer's, and after it the peer gets its whole `limit` again. A peer sending a
large frame is heard as each TLS record of it arrives (16 KiB), so only a link slower than
16 KiB per `limit` could make a live peer look silent.
"""

import math
from dataclasses import dataclass

PING_INTERVAL_SECONDS = 3.0
DEFAULT_LIMIT_SECONDS = 8.0
# A limit holds at least this many ping intervals: a ping delayed by up to one and a half
# intervals (a busy event loop, retransmits) does not end a live session.
PINGS_PER_LIMIT = 2.5
# A peer's limit below this is taken as this: a member cannot make us ping many times a second.
MIN_PEER_LIMIT_SECONDS = 1.0
# Pings are due 0.4 of a limit apart at most, so half a limit without a word means a ping is
# overdue: from then on `peers` says the peer is silent, not online.
ANSWERING_FRACTION = 0.5


def ping_interval(limit: float, peer_limit: float | None = None) -> float:
    """How long we may stay quiet: 2.5 pings fit in our limit and in the peer's."""
    interval = min(PING_INTERVAL_SECONDS, limit / PINGS_PER_LIMIT)
    if peer_limit is not None and peer_limit > 0:
        interval = min(interval, peer_limit / PINGS_PER_LIMIT)
    return interval


@dataclass
class Liveness:
    """One session's clocks. The receiver calls `heard` when bytes arrive and `waiting`/`waited`
    around its own work on the database; every send calls `sent`; a ping from the peer passes
    its limit to `peer_limit_is`. Before the peer's first bytes `opening_limit` applies (the
    handshake timeout), then `limit`."""

    limit: float
    quiet_since: float  # silence counts from here: the last bytes heard, or the end of our work
    last_sent: float
    opening_limit: float | None = None
    peer_limit: float | None = None
    heard_anything: bool = False
    busy: int = 0  # receiver calls on the database under way

    @classmethod
    def starting(cls, now: float, limit: float, opening_limit: float | None = None) -> "Liveness":
        return cls(limit, quiet_since=now, last_sent=now, opening_limit=opening_limit)

    def heard(self, now: float) -> None:
        self.heard_anything = True
        self.quiet_since = max(self.quiet_since, now)

    def sent(self, now: float) -> None:
        self.last_sent = max(self.last_sent, now)

    def waiting(self) -> None:
        """Our receiver waits for the database: the peer's silence stops counting."""
        self.busy += 1

    def waited(self, now: float) -> None:
        """Our receiver reads again: the peer gets its whole limit from now."""
        self.busy = max(0, self.busy - 1)
        self.quiet_since = max(self.quiet_since, now)

    def peer_limit_is(self, seconds: float | None) -> None:
        if seconds is not None and seconds > 0:
            self.peer_limit = max(seconds, MIN_PEER_LIMIT_SECONDS)

    def current_limit(self) -> float:
        if not self.heard_anything and self.opening_limit is not None:
            return self.opening_limit
        return self.limit

    def silence(self, now: float) -> float:
        """Seconds the peer has been silent while we were listening."""
        return 0.0 if self.busy else max(0.0, now - self.quiet_since)

    def gone_at(self) -> float:
        """When the peer counts as gone if nothing arrives before (never while we are busy)."""
        return math.inf if self.busy else self.quiet_since + self.current_limit()

    def is_gone(self, now: float) -> bool:
        return now >= self.gone_at()

    def answering(self, now: float) -> bool:
        """Heard from recently enough that no ping of the peer's is overdue."""
        return self.silence(now) < self.current_limit() * ANSWERING_FRACTION

    def ping_at(self) -> float:
        """When to send a ping if nothing else goes out before."""
        return self.last_sent + ping_interval(self.limit, self.peer_limit)
