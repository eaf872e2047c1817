"""The merge rule: a multi-value register per key, and causal delivery (pure).

Each key holds a set of siblings, one per surviving write (its dot). A new op removes exactly the
siblings its writer had seen (its context covers their dots) and adds itself; writes the writer
had not seen stay beside it as siblings. Plain reads take a deterministic winner, the maximum
`(hlc, actor)`; siblings with byte-identical values are one value, not a conflict. This module
decides; it never stores anything.
"""

import base64
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from .entry import DELETE, MAX_CONTEXT_ACTORS, LogEntry, Op
from .vectors import device_of

RecordKey = tuple[str, str]  # (collection, key)
# A Sibling's fields as a plain tuple: the garbage collector stops tracking plain tuples of plain
# values, never NamedTuples, and a catch-up makes one of these per record.
SiblingFields = tuple[str, int, int, bool, bytes | None, bytes | None]


class Sibling(NamedTuple):
    actor: str
    seq: int
    hlc: int
    deleted: bool
    value: bytes | None
    meta: bytes | None

    @property
    def dot(self) -> tuple[str, int]:
        return (self.actor, self.seq)

    @property
    def content(self) -> tuple[bool, bytes | None]:
        return (self.deleted, self.value)

    @property
    def version(self) -> str:
        return dot_version(self.actor, self.seq)


def dot_version(actor: str, seq: int) -> str:
    """The version of the sibling that the write (actor, seq) made: an opaque string, the same
    on every device, that applications send back (compare-and-set, picking a sibling) instead of
    an hlc, which does not fit in a JSON number. A dot holds at most one op per key, so within a
    record it names one sibling; 96 bits keep two siblings of one record from sharing one."""
    digest = hashlib.blake2b(f"{actor}\n{seq}".encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode()


class Precondition(NamedTuple):
    """A local write's condition on one record: its winner is at `version` (see `dot_version`);
    "" means the record does not exist or its winner is a delete. `label` starts the message
    when it does not hold (e.g. "ops[2]: ")."""

    collection: str
    key: str
    version: str
    label: str = ""


def sibling_for(entry: LogEntry, op: Op) -> Sibling:
    return Sibling(entry.actor, entry.seq, entry.hlc, op.kind == DELETE, op.value, op.meta)


def sibling_fields(actor: str, seq: int, hlc: int, op: Op) -> SiblingFields:
    """The sibling an op adds, before its entry exists (a local write knows all of it)."""
    return (actor, seq, hlc, op.kind == DELETE, op.value, op.meta)


def writes(entries: Iterable[LogEntry]) -> Iterator[tuple[RecordKey, SiblingFields]]:
    """Every op of `entries`, in apply order, as its record key and the sibling it adds."""
    for entry in entries:
        actor, seq, hlc = entry.actor, entry.seq, entry.hlc
        for kind, collection, key, value, meta in entry.ops:
            yield (collection, key), (actor, seq, hlc, kind == DELETE, value, meta)


def apply_op(
    siblings: Iterable[Sibling],
    entry: LogEntry,
    op: Op,
    continues: Mapping[str, int] | None = None,
    seen: Callable[[Sibling], bool] | None = None,
) -> list[Sibling]:
    """The siblings of a key after `op` of `entry`; applying an entry twice changes nothing.
    `continues`: the epochs the entry's epoch took over, and up to where (what its first entry
    retired): their writes up to there are in its past, so it replaces them like its own.
    `seen`: whether the writer had a delete its context does not name (its own stability report
    before the entry says it held it: the writer may have purged that tombstone since, see
    history/stability.py), which it then replaces too."""
    kept = []
    for sibling in siblings:
        if sibling.dot == (entry.actor, entry.seq):
            return list(siblings)
        if entry.covers(sibling.actor, sibling.seq):
            continue
        if continues and sibling.seq <= continues.get(sibling.actor, 0):
            continue
        if seen is not None and sibling.deleted and seen(sibling):
            continue
        kept.append(sibling)
    kept.append(sibling_for(entry, op))
    return kept


def winner(siblings: Iterable[Sibling]) -> Sibling:
    return max(siblings, key=lambda s: (s.hlc, s.actor))


def distinct_values(siblings: Iterable[Sibling]) -> list[Sibling]:
    """One sibling per distinct content, each the newest of its kind, winner first."""
    by_content: dict[tuple[bool, bytes | None], Sibling] = {}
    for sibling in sorted(siblings, key=lambda s: (s.hlc, s.actor), reverse=True):
        by_content.setdefault(sibling.content, sibling)
    return list(by_content.values())


def is_conflict(siblings: Iterable[Sibling]) -> bool:
    return len({s.content for s in siblings}) > 1


def dedupe_ops(ops: Iterable[Op]) -> list[Op]:
    """A transaction touching a key twice keeps only its last op (one dot per key per entry)."""
    listed = list(ops)
    if len({(op.collection, op.key) for op in listed}) == len(listed):
        return listed  # the common case, checked cheaply
    last: dict[tuple[str, str], Op] = {}
    for op in listed:
        last.pop((op.collection, op.key), None)
        last[(op.collection, op.key)] = op
    return list(last.values())


Cap = Callable[[str], int | None]


def is_ready(entry: LogEntry, vector: Mapping[str, int], cap: Cap | None = None) -> bool:
    """True when everything the entry's writer had seen is here, and its predecessor too.
    `cap` gives, for an actor that can never pass a point (a revoked device's epochs), that
    point: a context naming a dot beyond it waits only for what can still come."""
    if vector.get(entry.actor, 0) != entry.seq - 1:
        return False
    # The epochs a new epoch continues are part of its past, up to where it continued them.
    needed = entry.context.items() if not entry.retires else _needs(entry)
    if cap is None:
        return all(vector.get(actor, 0) >= seq for actor, seq in needed)
    for actor, seq in needed:
        limit = cap(actor)
        if vector.get(actor, 0) < (seq if limit is None else min(seq, limit)):
            return False
    return True


def _needs(entry: LogEntry) -> list[tuple[str, int]]:
    return [*entry.context.items(), *((actor, seq) for actor, seq, _ in entry.retires)]


def is_duplicate(entry: LogEntry, vector: Mapping[str, int]) -> bool:
    return vector.get(entry.actor, 0) >= entry.seq


Held = tuple[LogEntry, bytes | None, str]  # entry, its signature, the peer that delivered it
# A member can sign entries whose context names dots that never come; they wait here, so what one
# peer delivered is bounded and goes when that peer leaves.
MAX_HELD_BYTES_PER_PEER = 64 * 1024 * 1024


class CausalBuffer:
    """Verified entries that arrived before their causal predecessors, held until they can
    apply. Bounded in bytes per delivering peer; overflow is the caller's error."""

    def __init__(self, max_bytes_per_peer: int = MAX_HELD_BYTES_PER_PEER) -> None:
        self.max_bytes_per_peer = max_bytes_per_peer
        self._held: dict[str, dict[int, Held]] = {}
        self._bytes: dict[str, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, entry: LogEntry, signature: bytes | None, peer: str = "") -> bool:
        """Keep a verified entry (with the signature to store beside it); False when `peer` has
        used up its allowance."""
        by_seq = self._held.setdefault(entry.actor, {})
        if entry.seq in by_seq:
            return True
        size = self._bytes.get(peer, 0) + len(entry.raw)
        if size > self.max_bytes_per_peer:
            if not by_seq:
                del self._held[entry.actor]
            return False
        by_seq[entry.seq] = (entry, signature, peer)
        self._bytes[peer] = size
        self._count += 1
        return True

    def _take(self, actor: str, seq: int) -> Held:
        held = self._held[actor].pop(seq)
        self._bytes[held[2]] -= len(held[0].raw)
        self._count -= 1
        return held

    def pop_ready(self, vector: dict[str, int], cap: Cap | None = None) -> list[Held]:
        """Remove and return, in a causal order, every held entry that can now apply.

        `vector` is advanced as entries are taken (the caller applies them in that order)."""
        ready: list[Held] = []
        progress = True
        while progress:
            progress = False
            for actor in list(self._held):
                by_seq = self._held[actor]
                for seq in sorted(by_seq):
                    entry = by_seq[seq][0]
                    if is_duplicate(entry, vector):
                        self._take(actor, seq)
                        continue
                    if not is_ready(entry, vector, cap):
                        break
                    ready.append(self._take(actor, seq))
                    vector[actor] = seq
                    progress = True
                if not by_seq:
                    del self._held[actor]
        return ready

    def forget_peer(self, peer: str) -> None:
        """Drop what `peer` delivered and is still waiting (it will send it again)."""
        for actor in list(self._held):
            by_seq = self._held[actor]
            for seq in [s for s, held in by_seq.items() if held[2] == peer]:
                self._take(actor, seq)
            if not by_seq:
                del self._held[actor]
        self._bytes.pop(peer, None)

    def clear(self) -> None:
        self._held.clear()
        self._bytes.clear()
        self._count = 0


# an entry's context: what its ops replace --------------------------------------------------


def context_within_limit(context: dict[str, int]) -> dict[str, int]:
    """A context that names no more writers than an entry may: the writers of the devices with
    the most epochs in it are left out first (one device inventing epochs to pile siblings on a
    key keeps its own siblings; the write still replaces everyone else's and goes through)."""
    per_device: dict[str, list[str]] = {}
    for actor in context:
        per_device.setdefault(device_of(actor), []).append(actor)
    kept = dict(context)
    for _, actors in sorted(per_device.items(), key=lambda item: (-len(item[1]), item[0])):
        for actor in sorted(actors):
            if len(kept) <= MAX_CONTEXT_ACTORS:
                return kept
            del kept[actor]
    return kept


def replaced_dots(
    current: Mapping[tuple[str, str], list[Sibling]], ops: Sequence[Op], own_actor: str
) -> dict[str, int]:
    """The newest seq per actor among the siblings `ops` replace (our own actor is implied)."""
    context: dict[str, int] = {}
    if not current:  # new records replace nothing: a batch of them skips a lookup per op
        return context
    for op in ops:
        for sibling in current.get((op.collection, op.key), ()):
            if sibling.actor != own_actor and sibling.seq > context.get(sibling.actor, 0):
                context[sibling.actor] = sibling.seq
    return context
