"""Hybrid logical clock arithmetic (pure).

An HLC timestamp is one integer: wall-clock milliseconds shifted left by LOGICAL_BITS, plus a
logical counter. It never goes backwards on one device and orders causally related writes, which
makes `max(hlc, origin)` a fair "last writer wins" choice. This module never reads the clock:
callers pass `now_ms`.
"""

from collections.abc import Iterable

LOGICAL_BITS = 16
# A peer whose clock runs far ahead must not drag ours with it: timestamps further in the future
# than this are still stored (they are data) but not adopted as our own time, and the skew is
# reported on both sides (peers compare wall clocks in their pings).
MAX_ADOPTED_DRIFT_MS = 5 * 60 * 1000


def from_millis(ms: int) -> int:
    return ms << LOGICAL_BITS


def to_millis(hlc: int) -> int:
    return hlc >> LOGICAL_BITS


def tick(last: int, now_ms: int) -> int:
    """The timestamp for a new local event after `last`."""
    return max(last + 1, from_millis(now_ms))


def observe(last: int, remote: int, now_ms: int) -> int:
    """Our clock after seeing a remote timestamp; the next `tick` will be after both."""
    if to_millis(remote) > now_ms + MAX_ADOPTED_DRIFT_MS:
        return last
    return max(last, remote)


def observe_all(last: int, remotes: Iterable[int], now_ms: int) -> int:
    """`observe` of each of `remotes` in turn (a batch of received entries), in one pass."""
    too_far = from_millis(now_ms + MAX_ADOPTED_DRIFT_MS + 1)
    return max(last, max((remote for remote in remotes if remote < too_far), default=last))


def corrected_now(wall_ms: int, peer_offsets_ms: Iterable[int]) -> int:
    """Our wall clock, held back when it runs ahead of every connected peer's by more than
    MAX_ADOPTED_DRIFT_MS (offsets are theirs minus ours): a device with a fast clock then gives
    its own concurrent writes a lead of that drift at most, instead of its whole error."""
    lead = min((-offset for offset in peer_offsets_ms), default=0)
    return wall_ms - max(0, lead - MAX_ADOPTED_DRIFT_MS)
