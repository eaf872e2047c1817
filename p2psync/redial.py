"""When a dialer tries its address again: back-off for addresses that keep failing, at once when
there is news that the device is reachable (pure: times in, times out; the trio shell is in
dialers.py).

News is whatever shows the device or the network changed: an mDNS announcement or answer from the
device, a connection it made to us, a link or address of ours coming up. It resets the back-off
and makes the next attempt due now, but never sooner than `floor` after the previous attempt
began, so a device or link that flaps cannot make a dialer spin. For `grace` seconds after news,
failures do not count and attempts go on `floor` apart: a link that just came up often loses
the first packets (the kernel finishes bringing it up, neighbours are resolved again).
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

WAKE_FLOOR_SECONDS = 0.5
NEWS_GRACE_SECONDS = 2.0
FIRST_DELAY_SECONDS = 0.5


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
    rng: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0  # consecutive attempts that failed since the last success or news
    due: float = -math.inf  # when the next attempt may begin (the first: at once)
    started_at: float = -math.inf  # when the last attempt began
    woken_at: float = -math.inf  # when the last news came

    def delay(self, now: float) -> float:
        return max(0.0, self.due - now)

    def started(self, now: float) -> None:
        self.started_at = now
        self.due = math.inf  # until the attempt ends

    def failed(self, now: float) -> None:
        if self.woken_at > self.started_at or now - self.woken_at <= self.grace:
            # the news came while this attempt was under way (or cut it short), or only just
            # before it: the failure may predate the news or be the link settling, so it does
            # not count, and the next attempt is due at once (the floor apart)
            self.due = self._soonest(now)
        else:
            self.failures += 1
            self.due = now + backoff_delay(self.failures, self.cap, self.rng)

    def connected(self, now: float) -> None:
        """A session ran (and has ended): the address works, so start over."""
        self.failures = 0
        self.due = now + backoff_delay(0, self.cap, self.rng)

    def woken(self, now: float) -> None:
        self.woken_at = now
        self.failures = 0
        self.due = min(self.due, self._soonest(now))

    def _soonest(self, now: float) -> float:
        return max(now, self.started_at + self.floor)
