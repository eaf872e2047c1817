"""When a dialer tries its address again: back-off for addresses that keep failing, at once when
there is news that the device is reachable (pure: times in, times out; the trio shell is in
dialers.py).

News is whatever shows the device or the network changed: an mDNS announcement or answer from the
device, a connection it made to us, a link or address of ours coming up. It resets the back-off
and makes the next attempt due now, but never sooner than `floor` after the previous attempt
began, so a device or link that flaps cannot make a dialer spin. For `grace` seconds after news,
failures do not count and attempts go on `floor` apart: a link that just came up often loses
the first packets (the kernel finishes bringing it up, neighbours are resolved again).

A path can also be cut and mended where no news shows it (a switch or access point between the
two restarting, a cable pulled further along): for `recent` seconds after the address last
worked, attempts that find nobody there go on about a second apart, each connect to an IP
address given `PROBE_CONNECT_SECONDS` (a host name's lookup keeps its usual time), so a mended
path is found within two seconds. Each costs a SYN (or a neighbour query), which a home network
does not notice; a device away longer is tried on the ordinary back-off. An address whose host
answers but whose session fails backs off as usual.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

WAKE_FLOOR_SECONDS = 0.5
NEWS_GRACE_SECONDS = 2.0
FIRST_DELAY_SECONDS = 0.5
RECENT_SECONDS = 600.0  # how long after a session ended its address is probed
PROBE_SECONDS = 1.0  # between probing attempts (jittered: half to all of it)
# the kernel sends a connect's first SYN again after 1 s: two SYNs, then a fresh attempt
PROBE_CONNECT_SECONDS = 1.5


def backoff_delay(attempt: int, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with full jitter (0.5 s, 1 s, 2 s ... up to `cap`)."""
    return min(cap, FIRST_DELAY_SECONDS * 2 ** min(attempt, 20)) * (0.5 + rng() / 2)


@dataclass
class Redial:
    """The schedule of one address: `started` before each attempt, then `failed` or `connected`
    after it; `woken` whenever there is news; `delay` says how long to wait before the next."""

    cap: float
    floor: float = WAKE_FLOOR_SECONDS
    grace: float = NEWS_GRACE_SECONDS
    recent: float = RECENT_SECONDS
    rng: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0  # consecutive attempts that failed since the last success or news
    due: float = -math.inf  # when the next attempt may begin (the first: at once)
    started_at: float = -math.inf  # when the last attempt began
    woken_at: float = -math.inf  # when the last news came
    worked_at: float = -math.inf  # when a session with the device last ended

    def delay(self, now: float) -> float:
        return max(0.0, self.due - now)

    def started(self, now: float) -> None:
        self.started_at = now
        self.due = math.inf  # until the attempt ends

    def connect_patience(self, now: float, usual: float) -> float:
        """How long the next TCP connect may wait for an answer."""
        return min(usual, PROBE_CONNECT_SECONDS) if self._probing(now) else usual

    def failed(self, now: float, reached: bool = False) -> None:
        """The attempt ended without a session; `reached`: the host answered the connect."""
        if reached:
            self.worked_at = -math.inf  # it answers but will not have us: no quick attempts
        if self.woken_at > self.started_at or now - self.woken_at <= self.grace:
            # the news came while this attempt was under way (or cut it short), or only just
            # before it: the failure may predate the news or be the link settling, so it does
            # not count, and the next attempt is due at once (the floor apart)
            self.due = self._soonest(now)
        else:
            self.failures += 1
            if self._probing(now):
                self.due = now + PROBE_SECONDS * (0.5 + self.rng() / 2)
            else:
                self.due = now + backoff_delay(self.failures, self.cap, self.rng)

    def connected(self, now: float) -> None:
        """A session we dialled ran (and has ended): the address works, so start over."""
        self.worked(now)
        self.failures = 0
        self.due = now + backoff_delay(0, self.cap, self.rng)

    def worked(self, now: float) -> None:
        """A session with the device ended now (one it dialled counts too)."""
        self.worked_at = now

    def woken(self, now: float) -> None:
        self.woken_at = now
        self.failures = 0
        self.due = min(self.due, self._soonest(now))

    def _probing(self, now: float) -> bool:
        return now - self.worked_at <= self.recent

    def _soonest(self, now: float) -> float:
        return max(now, self.started_at + self.floor)
