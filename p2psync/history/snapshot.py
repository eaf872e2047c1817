"""Snapshots of a share's baseline (pure): the canonical rows and their digest, the chunks a
sender streams, the receiver's bookkeeping of a transfer that may be cut and resumed, and whether
an offered snapshot is vouched for by the members' signed stability reports.

A device that lacks entries folded away (its vector is below the sender's baseline frontier B)
cannot catch up from the log; it takes the baseline rows at B instead, then the log after B.
Devices fold to the settled frontier, a function of the members' reports alone, so devices that
folded to the same B hold the same rows; each report names the B its device folded to and the
digest of its rows, and a snapshot is installed only when its rows hash to a digest that the
sender's report and another member's report name for the same B (see docs/threat-model.md for a
household of two, where only the sender can vouch).

It never stores anything, never talks to the network and never reads the clock.
"""

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from itertools import pairwise
from typing import Any

import msgpack

from ..merge import RecordKey, Sibling
from .stability import Report

CHUNK_BYTES = 1024 * 1024  # of rows per frame: far under the wire's 8 MiB cap
_LABEL = b"p2psync-baseline-v1\x00"
Row = tuple[RecordKey, list[Sibling]]
_packb = partial(msgpack.packb, use_bin_type=True)


class SnapshotError(ValueError):
    """A snapshot message or row that breaks the rules; the words fit a log or a bye."""


def encode_row(key: RecordKey, siblings: Iterable[Sibling]) -> bytes:
    """One baseline row in canonical form: siblings in dot order, each as (actor, seq, hlc,
    deleted, value, meta). The digest and the wire both carry these bytes."""
    return encode_fields(key[0], key[1], [list(s) for s in siblings])


def encode_fields(collection: str, key: str, fields: list[list[Any]]) -> bytes:
    """`encode_row` from each sibling's fields as a list (put in dot order here): what a
    stored row unpacks to, with no Sibling built per row."""
    if len(fields) > 1:
        fields.sort(key=_dot_of)
    return _packb([collection, key, fields])


def _dot_of(fields: list[Any]) -> tuple[str, int]:
    return (fields[0], fields[1])


def decode_row(raw: bytes) -> Row:
    """A row as `encode_row` wrote it; anything else (including a non-canonical encoding of the
    same row, which would hash differently on each side) is a SnapshotError."""
    try:
        wire = msgpack.unpackb(raw, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises beyond its own hierarchy (see wire.py)
        raise SnapshotError(f"a snapshot row is not msgpack: {exc}") from None
    if not (
        isinstance(wire, list)
        and len(wire) == 3
        and isinstance(wire[0], str)
        and isinstance(wire[1], str)
        and isinstance(wire[2], list)
        and wire[2]
    ):
        raise SnapshotError("a snapshot row must be [collection, key, [sibling, ...]]")
    siblings = []
    for item in wire[2]:
        if not (
            isinstance(item, list)
            and len(item) == 6
            and isinstance(item[0], str)
            and type(item[1]) is int
            and type(item[2]) is int
            and isinstance(item[3], bool)
            and (item[4] is None or isinstance(item[4], bytes))
            and (item[5] is None or isinstance(item[5], bytes))
        ):
            raise SnapshotError(
                "a snapshot sibling must be [actor, seq, hlc, deleted, value, meta]"
            )
        siblings.append(Sibling(*item))
    key = (wire[0], wire[1])
    # canonical: siblings in dot order, and packed as encode_row packs them
    in_order = len(wire[2]) == 1 or all(_dot_of(a) <= _dot_of(b) for a, b in pairwise(wire[2]))
    if not in_order or _packb(wire) != bytes(raw):
        raise SnapshotError(f"snapshot row {key!r} is not in canonical form")
    return key, siblings


# actor -> (seq at B, hash of its entry at that seq, hash of its first entry): the log after B
# chains on from the former, and the epoch book is rebuilt from the first entries
Heads = Mapping[str, tuple[int, bytes, bytes]]
STABLE = "_stable"  # stability.STABLE: reports, which each device folds at its own pace
WireItem = tuple[bytes, bytes | None]  # an entry and its signature, if stored with one


def _live(siblings: Iterable[Sibling]) -> bool:
    return not all(s.deleted for s in siblings)


class RowDigest:
    """SHA-256 over the first entries of the epochs that wrote what was folded, and the
    canonical rows fed in strictly increasing (collection, key) order, less two kinds of rows
    devices hold at their own pace: stability reports (each fold of reports makes a new report
    due, so B moves with reports that nothing waits for) and records that are deletes and
    nothing else (purged when each device's reports say so). What is left is a function of the
    folded writes W alone (history/baseline.py's `folded_writes`), which reports name with this
    digest. See docs/threat-model.md for what it leaves to the sender's word."""

    def __init__(self, firsts: Mapping[str, bytes]) -> None:
        self._hash = hashlib.sha256(_LABEL)
        self._hash.update(msgpack.packb(sorted(firsts.items()), use_bin_type=True))
        self.last: RecordKey | None = None
        self.rows = 0
        self.size = 0

    def add(self, key: RecordKey, siblings: list[Sibling], raw: bytes) -> None:
        self.add_encoded(key, _live(siblings), raw)

    def add_encoded(self, key: RecordKey, live: bool, raw: bytes) -> None:
        """`add` of a row whose siblings are not all deletes when `live`."""
        if self.last is not None and key <= self.last:
            raise SnapshotError(f"snapshot row {key!r} out of key order (after {self.last!r})")
        if live and key[0] != STABLE:
            self._hash.update(len(raw).to_bytes(4, "big"))
            self._hash.update(raw)
        self.last, self.rows, self.size = key, self.rows + 1, self.size + len(raw)

    def digest(self) -> bytes:
        return self._hash.digest()


def baseline_digest(firsts: Mapping[str, bytes], rows: Iterable[Row]) -> bytes:
    """The digest of a baseline (rows in any order); `firsts`: the first entry's hash of each
    epoch in W."""
    found = RowDigest(firsts)
    for key, siblings in sorted(rows, key=lambda row: row[0]):
        found.add(key, siblings, encode_row(key, siblings))
    return found.digest()


def chunks(rows: Iterable[Row], max_bytes: int = CHUNK_BYTES) -> Iterator[list[bytes]]:
    """Encoded rows (in the order given: key order) in lists of at most `max_bytes`; a row
    larger than that goes alone."""
    batch: list[bytes] = []
    size = 0
    for key, siblings in rows:
        raw = encode_row(key, siblings)
        if batch and size + len(raw) > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(raw)
        size += len(raw)
    if batch:
        yield batch


# the transfer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """What a sender's snapshot start says: the share's baseline at `frontier`."""

    share: str
    frontier: dict[str, int]  # B
    heads: dict[str, tuple[int, bytes, bytes]]  # see Heads
    written: dict[str, int]  # W: the newest folded entry of each actor that was more than a report
    digest: bytes
    rows: int
    size: int  # bytes of encoded rows
    firsts: tuple[WireItem, ...] = ()  # each epoch's first entry (hashes in `heads`)
    # the signed reports naming (frontier, digest): each a run of the writer's entries from the
    # report to the first one stored with a signature (signatures are thinned, see intake.py)
    evidence: tuple[tuple[WireItem, ...], ...] = ()

    @property
    def claim(self) -> tuple[dict[str, int], bytes]:
        """What a member's report names when it holds this baseline."""
        return (dict(self.written), self.digest)

    @property
    def firsts_in_digest(self) -> dict[str, bytes]:
        return {actor: self.heads[actor][2] for actor in self.written if actor in self.heads}

    @property
    def ident(self) -> tuple[str, bytes, int, int]:
        """What a staged transfer is kept under (with the share): the same frontier, digest,
        row count and bytes from any sender continue the same transfer. The count and bytes
        too, since devices purge tombstones at their own pace: two members at the same B and
        digest may hold different deletes, and rows of one would not add up to the other's."""
        return (_frontier_key(self.frontier), self.digest, self.rows, self.size)


def _frontier_key(frontier: Mapping[str, int]) -> str:
    return ",".join(f"{actor}:{seq}" for actor, seq in sorted(frontier.items()))


def pack_offer(offer: Offer) -> bytes:
    """An offer as the wire and the receiver's staging table carry it."""
    return msgpack.packb(
        [
            offer.share,
            offer.frontier,
            {a: list(h) for a, h in offer.heads.items()},
            offer.written,
            offer.digest,
            offer.rows,
            offer.size,
            [list(item) for item in offer.firsts],
            [[list(item) for item in run] for run in offer.evidence],
        ],
        use_bin_type=True,
    )


def unpack_offer(blob: bytes) -> Offer:
    """`pack_offer`'s bytes back; anything else is a SnapshotError."""
    try:
        wire = msgpack.unpackb(blob, raw=False, use_list=True, strict_map_key=True)
        share, frontier, heads, written, digest, rows, size, firsts, evidence = wire
        offer = Offer(
            share,
            {a: s for a, s in frontier.items()},
            {a: (h[0], h[1], h[2]) for a, h in heads.items()},
            {a: s for a, s in written.items()},
            digest,
            rows,
            size,
            tuple(_item(i) for i in firsts),
            tuple(tuple(_item(i) for i in run) for run in evidence),
        )
    except SnapshotError:
        raise
    except Exception:  # msgpack's own, and every shape it could decode to
        raise SnapshotError("a snapshot start that is not [share, frontier, heads, ...]") from None
    ok = (
        isinstance(offer.share, str)
        and all(isinstance(a, str) and type(s) is int and s > 0 for a, s in frontier.items())
        and offer.heads.keys() == offer.frontier.keys()
        and all(type(s) is int and s <= offer.frontier.get(a, 0) for a, s in written.items())
        and all(
            type(h[0]) is int and isinstance(h[1], bytes) and isinstance(h[2], bytes)
            for h in offer.heads.values()
        )
        and isinstance(offer.digest, bytes)
        and type(offer.rows) is int
        and type(offer.size) is int
        and offer.rows >= 0
        and offer.size >= 0
    )
    if not ok:
        raise SnapshotError("a snapshot start with fields of the wrong types")
    return offer


def _item(wire: object) -> WireItem:
    if not (
        isinstance(wire, list)
        and len(wire) == 2
        and isinstance(wire[0], bytes)
        and (wire[1] is None or isinstance(wire[1], bytes))
    ):
        raise SnapshotError("a snapshot start's entries must be [entry, signature or nil]")
    return (wire[0], wire[1])


# room for it ------------------------------------------------------------------------------

# Disk a snapshot takes per byte of rows: the staged copy, then the baseline and `records` built
# from it in one transaction, whose WAL holds those pages again until the checkpoint.
DISK_PER_ROW_BYTE = 4
FREE_DISK_MARGIN = 256 * 1024 * 1024  # left free whatever a snapshot needs
DEFAULT_MAX_SNAPSHOT_BYTES = 16 * 1024**3  # history.max_snapshot_mb's default (16 GiB of rows)


class SnapshotRefused(Exception):
    """An offer this device will not take (too large for its limit or its free disk): not a
    broken rule, since an honest member's share may be that large; the words fit a log."""


@dataclass(frozen=True, slots=True)
class Room:
    """What a receiver can spare for a snapshot, measured as the offer arrives."""

    free_bytes: int  # free disk where the state dir is
    max_bytes: int  # of rows, from any one member (history.max_snapshot_mb)
    reserved_bytes: int = 0  # disk the other transfers under way may still take (disk_needed)


def disk_needed(offer: Offer, staged_bytes: int = 0) -> int:
    """Disk the rest of `offer` will take, `staged_bytes` of its rows being kept already."""
    return max(0, DISK_PER_ROW_BYTE * offer.size - staged_bytes)


def check_room(offer: Offer, room: Room, staged_bytes: int = 0) -> None:
    """Refuse up front an offer larger than the limit, or one that would leave less than the
    margin free (besides what the transfers under way still need): the rows that follow are
    then bounded by what this start announced (`take_chunk`)."""
    if offer.size > room.max_bytes:
        raise SnapshotRefused(
            f"the snapshot of share {offer.share} holds {offer.size:,} bytes of rows, more than"
            f" the {room.max_bytes:,} this device takes from a member (history.max_snapshot_mb)"
        )
    needed = disk_needed(offer, staged_bytes)
    spare = room.free_bytes - room.reserved_bytes - FREE_DISK_MARGIN
    if needed > spare:
        raise SnapshotRefused(
            f"the snapshot of share {offer.share} ({offer.size:,} bytes of rows) needs about"
            f" {needed:,} bytes of disk and {max(spare, 0):,} can be spared (free"
            f" {room.free_bytes:,}, kept free {FREE_DISK_MARGIN:,}, for other transfers"
            f" {room.reserved_bytes:,})"
        )


# How long a sender keeps its baseline unfolded for one transfer: long enough for a slow link,
# bounded so a peer that stops reading cannot hold compaction back.
HOLD_SECONDS = 600.0
HOLD_BYTES_PER_SECOND = 256 * 1024


def hold_seconds(offer: Offer) -> float:
    """The longest a transfer of `offer` may take (its sender folds nothing of it meanwhile)."""
    return HOLD_SECONDS + offer.size / HOLD_BYTES_PER_SECOND


@dataclass(frozen=True, slots=True)
class Staged:
    """A receiver's progress through an offer (kept with the rows, so a restart resumes)."""

    offer: Offer
    rows: int = 0
    size: int = 0
    last: RecordKey | None = None  # the last key received: resume after it

    @property
    def complete(self) -> bool:
        return self.rows == self.offer.rows and self.size == self.offer.size


def take_chunk(staged: Staged, raws: Iterable[bytes]) -> tuple[Staged, list[Row]]:
    """Check a chunk against the progress so far: rows well formed, keys after the last one,
    no more rows or bytes than offered. Returns the progress and the rows to keep."""
    rows: list[Row] = []
    last, count, size = staged.last, staged.rows, staged.size
    for raw in raws:
        key, siblings = decode_row(raw)
        if last is not None and key <= last:
            raise SnapshotError(f"snapshot row {key!r} out of key order (after {last!r})")
        last, count, size = key, count + 1, size + len(raw)
        if count > staged.offer.rows or size > staged.offer.size:
            raise SnapshotError("a snapshot sent more rows than its start announced")
        rows.append((key, siblings))
    return replace(staged, rows=count, size=size, last=last), rows


def check_complete(offer: Offer, rows: Sequence[Row], raws: Sequence[bytes] = ()) -> None:
    """All staged rows (in key order) against the offer: count, bytes and digest. `raws`:
    the rows as they were encoded, when at hand (saves encoding each again)."""
    found = RowDigest(offer.firsts_in_digest)
    for at, (key, siblings) in enumerate(rows):
        found.add(key, siblings, raws[at] if raws else encode_row(key, siblings))
    check_digest(offer, found)


def check_digest(offer: Offer, found: RowDigest) -> None:
    """A RowDigest fed every staged row, against the offer: count, bytes and digest."""
    if (found.rows, found.size) != (offer.rows, offer.size):
        raise SnapshotError(
            f"the snapshot holds {found.rows} rows of {found.size} bytes,"
            f" its start announced {offer.rows} of {offer.size}"
        )
    if found.digest() != offer.digest:
        raise SnapshotError("the snapshot's rows do not hash to the digest it announced")


# whether to believe it ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    reason: str
    vouchers: frozenset[str] = frozenset()  # members whose signed report names the digest

    @property
    def sender_only(self) -> bool:
        """Accepted on the sender's word alone (a household of two): rechecked later."""
        return self.accept and len(self.vouchers) == 1


def _baselines(report: Report | None) -> Iterator[tuple[dict[str, int], bytes]]:
    # only a member's newest report: the one it replaced is named without its baseline
    if report is not None and report.baseline is not None:
        yield report.baseline


def vouch(offer: Offer, sender: str, reports: Mapping[str, Report | None]) -> Verdict:
    """Whether to install `offer` from `sender`, by the members' reports (their signed
    entries, which the receiver holds or got with the snapshot's start). The sender's report
    must name the offered folded writes W and digest; another member's report naming the same
    pair makes it sure; a member whose report names the same W with another digest refuses
    it; with no other member's word, the sender's is taken (`sender_only`)."""
    wanted = offer.claim
    listed = set(reports) | {sender}
    named = {m: list(_baselines(reports.get(m))) for m in listed}
    if wanted not in named[sender]:
        return Verdict(False, f"no report of {sender} names this snapshot's writes and digest")
    against = sorted(
        m
        for m, pairs in named.items()
        if any(f == wanted[0] and d != offer.digest for f, d in pairs)
    )
    if against:
        return Verdict(False, f"the report of {', '.join(against)} names another digest")
    vouchers = frozenset(m for m, pairs in named.items() if wanted in pairs)
    if len(vouchers) > 1:
        return Verdict(True, f"vouched for by {', '.join(sorted(vouchers))}", vouchers)
    return Verdict(True, f"vouched for by {sender} alone", vouchers)


def contradicted(
    installed: tuple[Mapping[str, int], bytes], reports: Mapping[str, Report | None]
) -> list[str]:
    """Members whose report names the installed frontier with another digest: after a snapshot
    taken on the sender's word alone, each new report is checked, and any name here is a
    notice (the sender sent rows its household does not hold)."""
    frontier, digest = dict(installed[0]), installed[1]
    return sorted(
        m
        for m, report in reports.items()
        if any(f == frontier and d != digest for f, d in _baselines(report))
    )
