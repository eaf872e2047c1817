"""Change notification: a position that only grows, and what the latest writes stored (trio).

`ChangeNotifier` is where tasks wait for "something new was stored": watch streams, reports,
and peer sessions' senders, which follow it with a test of what they want so that an apply
wakes only those whose peer may lack something of it. Each advance may say what it stored
(`Stored`): per share the newest seq of each actor, a local commit's own entries (senders send
them without a read) and the changes watchers read (no hop to the database thread). It never
touches the database and holds no protocol logic: the node advances it, the readers decide.
"""

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

import trio

from .relay import raise_to
from .replica import SEND_BATCH_BYTES, Change, Commit

# how many of the latest applies and commits say what they stored: a sender further behind reads
# the log; a local commit's entries are kept for senders only up to one batch a sender would read
STORED_KEPT = 64
# a write's changes are kept for watchers up to this many entries and bytes of values
KEPT_CHANGES_ENTRIES = 64
KEPT_CHANGES_BYTES = 64 * 1024


class KeptEntry(NamedTuple):
    """One entry of a local commit, signed as peers get it, kept for senders."""

    share: str
    actor: str
    seq: int
    raw: bytes
    signature: bytes | None


@dataclass(frozen=True, slots=True)
class Stored:
    """What one apply or local commit stored: the entries at positions after `after` up to
    `last`. `entries`: a local commit's own, kept whole (senders send them without a read);
    `seqs`: per share, the highest seq of each actor among the others (`Replica.take_stored`:
    whatever an apply wrote, restated values and fork reports too)."""

    after: int
    last: int
    seqs: Mapping[str, Mapping[str, int]]
    entries: tuple[KeptEntry, ...] = ()
    # what the entries changed, as `Replica.changes` reads it, for watchers (None: not kept)
    changes: tuple[Change, ...] | None = None


class StoredSince(NamedTuple):
    """What was stored after a position (see ChangeNotifier.stored_after): the kept entries in
    position order, and per share the highest seq of each actor of the entries not kept."""

    seqs: dict[str, dict[str, int]]
    entries: list[KeptEntry]


class _Follower:
    """A task waiting past `cursor` for what `wants` (see ChangeNotifier.follow)."""

    __slots__ = ("cursor", "wants", "woken")

    def __init__(self, cursor: int, wants: Callable[[Stored], bool]) -> None:
        self.cursor = cursor
        self.wants = wants
        self.woken = trio.Event()


class ChangeNotifier:
    """A position that only grows, and a way to wait until it passes a point. The latest advances
    that said what they stored are kept, so a sender can tell that nothing stored beyond its
    cursor is for its peer without reading the log (see `stored_after`), and need not even be
    woken for what is not (see `follow`)."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._changed = trio.Event()
        self._stored: deque[Stored] = deque(maxlen=STORED_KEPT)
        self._followers: set[_Follower] = set()

    def advance(self, position: int, stored: Stored | None = None) -> None:
        if stored is not None:
            self._stored.append(stored)
        if position > self.position:
            self.position = position
            self._changed.set()
            self._changed = trio.Event()
        for follower in list(self._followers):
            # A span after a gap wakes it too: what was stored in the gap may never have an
            # advance of its own (a fork's values restated after a group commit's last entry).
            if (
                stored is not None
                and stored.after <= follower.cursor
                and not follower.wants(stored)
            ):
                follower.cursor = max(follower.cursor, stored.last)
                continue
            follower.woken.set()
            self._followers.discard(follower)

    def wake_all(self) -> None:
        """Wake every follower with no change: one with its own reason to look again (a sender
        whose peer's claims went) does, the others wait again."""
        for follower in self._followers:
            follower.woken.set()
        self._followers.clear()

    async def follow(self, cursor: int, wants: Callable[[Stored], bool]) -> int:
        """Wait for an advance that may hold something `wants` (an advance that does not say
        what it stored, or says it after positions nobody accounted for, may hold anything), or
        `wake_all`; return the cursor moved on past the stored spans since that held nothing it
        wants. An advance costs a follower a call of
        `wants`, not a wake-up: in a full mesh, where every entry comes from its writer, a
        receiver's senders sleep through it all."""
        follower = _Follower(cursor, wants)
        self._followers.add(follower)
        try:
            await follower.woken.wait()
        finally:
            self._followers.discard(follower)
        return follower.cursor

    async def wait_beyond(self, position: int) -> int:
        while self.position <= position:
            await self._changed.wait()
        return self.position

    def changes_after(self, position: int, limit: int) -> tuple[list[Change], int, bool] | None:
        """The changes of the entries stored after `position`, of the first `limit` of them, as
        `Replica.changes` would read them: (changes, the position they reach, whether entries
        are left beyond); None unless every position up to `self.position` is in a kept
        `Stored` that kept its changes."""
        spans = self._spans_after(position)
        if spans is None or any(span.changes is None for span in spans):
            return None
        found = [c for span in spans for c in span.changes or () if c.lseq > position]
        positions = sorted({c.lseq for c in found})
        if len(positions) <= limit:
            return found, max(position, self.position), False
        last = positions[limit - 1]
        return [c for c in found if c.lseq <= last], last, True

    def stored_after(self, position: int) -> StoredSince | None:
        """What was stored after `position` up to `self.position`; None unless every position in
        between is in a kept `Stored` (a snapshot, a membership change, a large local commit or
        an advance long ago says nothing of what it stored)."""
        spans = self._spans_after(position)
        if spans is None:
            return None
        since = StoredSince({}, [])
        for span in spans:
            if span.entries and span.after < position:
                return None  # it straddles `position`: which of its entries are beyond is unsaid
            since.entries.extend(span.entries)
            for share, stored in span.seqs.items():
                raise_to(since.seqs.setdefault(share, {}), stored)
        return since

    def _spans_after(self, position: int) -> list[Stored] | None:
        """The kept spans that hold what was stored after `position`, in position order; None
        when they leave a position up to `self.position` unaccounted for."""
        spans = sorted((s for s in self._stored if s.last > position), key=attrgetter("after"))
        reach = position
        for span in spans:
            if span.after > reach:
                return None  # a gap: something was stored there that no span accounts for
            reach = max(reach, span.last)
        return spans if reach >= self.position else None


def kept_commits(commits: list[Commit], changes: tuple[Change, ...] | None = None) -> Stored | None:
    """A group's commits as senders may send them without reading the log: only when they hold
    every position from the first to the last (a fork's values restated in between do not) and
    fit one batch; with `changes` (of those positions) for the watchers."""
    commits = sorted(commits, key=attrgetter("lseq"))
    first, last = commits[0].lseq, commits[-1].lseq
    if last - first + 1 != len(commits) or sum(len(c.raw) for c in commits) > SEND_BATCH_BYTES:
        return None
    kept = tuple(KeptEntry(c.share, c.actor, c.seq, c.raw, c.signature) for c in commits)
    return Stored(first - 1, last, {}, kept, changes)
