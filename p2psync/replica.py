"""A device's replica: local transactions, reads, and the sync surface the network layer uses.

It turns local transactions into signed log entries and stores them through the same path as
received ones (`replica_apply.py`, which verifies and causally orders those), and answers reads.
Synchronous and single-threaded: the daemon calls it from one worker thread. It never opens
sockets and never decides whom to talk to.
"""

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import entry as entries
from . import hlc, identity, merge
from .entry import LogEntry, Op
from .history.bootstrap import SnapshotRules
from .history.compaction import HistoryRules
from .intake import Intake
from .membership import DeviceRecord, EpochBook, Notice
from .merge import CausalBuffer, Precondition, Sibling
from .replica_apply import ReplicaApply
from .replica_trust import TrustRules
from .replica_vectors import VectorRules, WireItem
from .schemas.rules import SchemaRules
from .shares.members import MEMBERS
from .shares.rules import ShareError, ShareRules, unknown_share
from .store import Store
from .vectors import make_actor

# A group commit signs its chain head at least this often, so what a receiver must hold before it
# can verify anything stays small (see intake.MAX_PENDING_BYTES_PER_PEER).
SIGN_EVERY_BYTES = 4 * 1024 * 1024
SEND_BATCH_BYTES = 64 * 1024  # about this much of the log goes to a peer in one message


class ReplicaError(Exception):
    """A request the replica refuses (bad arguments, a database of another device)."""


class VersionConflict(Exception):
    """A local write whose precondition does not hold: the record is not (any more) at the
    version the writer expected. The message says which version it is at."""


@dataclass(frozen=True, slots=True)
class Commit:
    share: str
    actor: str
    seq: int
    hlc: int
    lseq: int
    raw: bytes = field(default=b"", repr=False)  # the entry as peers get it
    signature: bytes | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        """The version of every sibling this transaction wrote (one dot for all its ops)."""
        return merge.dot_version(self.actor, self.seq)


@dataclass(frozen=True, slots=True)
class RecordView:
    collection: str
    key: str
    winner: Sibling
    siblings: list[Sibling]

    @property
    def deleted(self) -> bool:
        return self.winner.deleted

    @property
    def conflict(self) -> bool:
        return len(self.siblings) > 1


@dataclass(frozen=True, slots=True)
class Change:
    lseq: int
    share: str
    actor: str
    hlc: int
    op: Op
    seq: int = 0  # the entry's seq in its actor's chain
    previous: bytes | None = None  # a delete's: the winner's value it replaced (None: none)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Replica(
    VectorRules, ShareRules, SchemaRules, TrustRules, HistoryRules, SnapshotRules, ReplicaApply
):
    def __init__(
        self, store: Store, device: identity.DeviceIdentity, now_ms: Callable[[], int]
    ) -> None:
        self.store = store
        self.identity = device
        self.now_ms = now_ms
        owner = store.get_meta("device_id")
        if owner is not None and owner.decode() != device.device_id:
            raise ReplicaError(
                f"{store.path} belongs to device {owner.decode()}, not {device.device_id}"
            )
        if owner is None:
            with store.transaction():
                store.set_meta("device_id", device.device_id.encode())
        # Every start writes as a new epoch: a copy of this state dir (a cloned VM, an SD card,
        # a restored backup) running beside the original can then never write an (actor, seq)
        # that the original wrote too. The first entry of the epoch retires the earlier ones.
        self.actor = ""
        self.start_new_epoch()
        self._clock = max(int.from_bytes(store.get_meta("hlc") or b"", "big"), 0)
        self._heads: dict[str, dict[str, tuple[int, bytes]]] = {}
        self._intakes: dict[str, Intake] = {}
        self._held: dict[str, CausalBuffer] = {}
        self._books: dict[str, EpochBook] = {}
        self._device_keys: dict[str, bytes] = {}
        self._records: list[DeviceRecord] = []
        self._forked: dict[str, set[str]] = {}
        self._share_members = {}
        self._manifests = {}
        self.restate_pending: dict[str, list[Op]] = {}
        self.notices: dict[tuple[str, str], Notice] = {}
        self._stored: dict[str, dict[str, int]] = {}  # see take_stored
        with store.transaction():  # keeps the certificates the records hold (see devices())
            self._load_device_keys()

    @classmethod
    def open(
        cls,
        path: str | Path,
        device: identity.DeviceIdentity,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> "Replica":
        return cls(Store(path), device, now_ms)

    def close(self) -> None:
        self.store.close()

    def start_new_epoch(self) -> str:
        """Write as a new actor from now on (never one this device used before)."""
        used = self.store.actor_names()
        last = (self.store.get_meta("epoch") or b"").decode()
        used |= {self.actor, make_actor(self.device_id, last)}
        epoch = _new_epoch()
        while make_actor(self.device_id, epoch.decode()) in used:
            epoch = _new_epoch()
        with self.store.transaction():
            self.store.set_meta("epoch", epoch)
        self.actor = make_actor(self.device_id, epoch.decode())
        self.epoch_frozen = False
        return self.actor

    # local writes -------------------------------------------------------------------------

    def commit(self, share: str, ops: Sequence[Op]) -> Commit:
        return self.commit_many(share, [ops])[0]

    def commit_many(
        self, share: str, transactions: Sequence[Sequence[Op]], concurrent: bool = False
    ) -> list[Commit]:
        """Group commit: each transaction becomes one entry; one SQLite commit and one signature.
        `concurrent`: the entries replace nothing (values written again after a fork)."""
        if not transactions or not all(transactions):
            raise ReplicaError("a transaction needs at least one op")
        if self.holds(share):
            if not self.is_share_member(share, self.device_id):
                raise ShareError("forbidden", f"this device is not a member of share {share!r}")
        elif not all(op.collection == MEMBERS for ops in transactions for op in ops):
            raise unknown_share(share)  # only `share_create_ops` brings a share into being
        heads = self._heads_of(share)
        seq, prev_hash = heads.get(self.actor, (0, entries.GENESIS_HASH))
        planned: list[tuple[int, int, list[Op]]] = []
        for ops in transactions:
            seq += 1
            self._clock = hlc.tick(self._clock, self.now_ms())
            planned.append((seq, self._clock, merge.dedupe_ops(ops)))
        try:
            with self.store.transaction():
                # Insert first, as for received entries: the records that were there come back,
                # and their siblings are exactly what each entry's context has to name.
                existing = self.store.insert_new_records(
                    share,
                    (
                        ((op.collection, op.key), merge.sibling_fields(self.actor, s, clock, op))
                        for s, clock, ops in planned
                        for op in ops
                    ),
                )
                written = self._encode(share, planned, prev_hash, existing, heads, concurrent)
                signed = self._sign(share, written)
                if self._store_entries(share, signed, existing):
                    self._enforce_cuts(share)
        except BaseException:
            self._forget_cached_state()
            raise
        first_lseq = self.store.last_lseq() - len(written) + 1
        self._restate()
        return [
            Commit(share, e.actor, e.seq, e.hlc, first_lseq + i, e.raw, signature)
            for i, (e, signature) in enumerate(signed)
        ]

    def _encode(
        self,
        share: str,
        planned: list[tuple[int, int, list[Op]]],
        prev_hash: bytes,
        existing: Mapping[tuple[str, str], list[Sibling]],
        heads: Mapping[str, tuple[int, bytes]],
        concurrent: bool = False,
    ) -> list[LogEntry]:
        written: list[LogEntry] = []
        for seq, clock, ops in planned:
            context = {} if concurrent else merge.replaced_dots(existing, ops, self.actor)
            if seq == 1:
                context.update(self._membership_context(share))
            if len(context) > entries.MAX_CONTEXT_ACTORS:
                context = merge.context_within_limit(context)
            new = entries.encode(
                share,
                self.actor,
                seq,
                prev_hash,
                clock,
                context,
                ops,
                self._book(share).own_leaves(self.device_id, heads) if seq == 1 else (),
            )
            if len(new.raw) > entries.MAX_ENTRY_BYTES:
                raise ReplicaError(
                    f"transaction is {len(new.raw)} bytes; the limit is {entries.MAX_ENTRY_BYTES}"
                )
            written.append(new)
            prev_hash = new.hash
        return written

    def _sign(self, share: str, written: list[LogEntry]) -> list[tuple[LogEntry, bytes | None]]:
        """One signature for the group's last entry, and one every SIGN_EVERY_BYTES before it."""
        signed: list[tuple[LogEntry, bytes | None]] = []
        unsigned_bytes = 0
        for e in written:
            unsigned_bytes += len(e.raw)
            signature = None
            if e is written[-1] or unsigned_bytes >= SIGN_EVERY_BYTES:
                message = entries.head_message(share, self.actor, e.seq, e.hash)
                signature, unsigned_bytes = self.identity.sign(message), 0
            signed.append((e, signature))
        return signed

    def _note(self, notices: list[Notice]) -> None:
        for notice in notices:
            self.notices.setdefault((notice.device_id, notice.kind), notice)

    def _forget_cached_state(self) -> None:
        """After a rollback the database is the truth again; drop what memory said."""
        self._heads.clear()
        self._books.clear()
        self._share_members.clear()
        self._manifests.clear()
        self._clock = max(int.from_bytes(self.store.get_meta("hlc") or b"", "big"), 0)
        for intake in self._intakes.values():
            intake.clear()
        for held in self._held.values():
            held.clear()
        self._load_device_keys()

    def check_preconditions(self, share: str, preconditions: Iterable[Precondition]) -> None:
        """Raise VersionConflict unless every record is at the version its write expects. The
        node calls this on the database thread right before committing the write, so no other
        local write comes in between."""
        for condition in preconditions:
            view = self.get(share, condition.collection, condition.key)
            where = f"{condition.label}{condition.collection}/{condition.key}"
            if condition.version == "":
                if view is not None and not view.deleted:
                    raise VersionConflict(
                        f'{where} exists, at version {view.winner.version!r} (if_version "" '
                        "writes only a record that does not exist or is deleted)"
                    )
            elif view is None:
                raise VersionConflict(
                    f'{where} does not exist (its version is ""), not at version '
                    f"{condition.version!r}"
                )
            elif view.winner.version != condition.version:
                state = " (deleted)" if view.deleted else ""
                raise VersionConflict(
                    f"{where} has changed: it is at version {view.winner.version!r}{state}, not "
                    f"{condition.version!r}; read it again"
                )

    # reads --------------------------------------------------------------------------------

    def get(self, share: str, collection: str, key: str) -> RecordView | None:
        self.require_share(share)
        siblings = self.store.record(share, collection, key)
        return None if siblings is None else _view(collection, key, siblings)

    def scan(
        self,
        share: str,
        collection: str,
        prefix: str = "",
        after: str | None = None,
        limit: int = 100,
        deleted: bool = False,
    ) -> list[RecordView]:
        """Live records by key; with `deleted`, also deleted ones in conflict with a live one."""
        self.require_share(share)
        rows = self.store.scan(share, collection, prefix, after, limit, deleted)
        return [_view(collection, key, siblings) for key, siblings in rows]

    def collections(self, share: str) -> list[tuple[str, int]]:
        """(collection, live records) of the share's user collections that have any."""
        self.require_share(share)
        return self.store.collections(share)

    def conflicts(
        self, share: str, collection: str | None = None, limit: int = 1000
    ) -> list[RecordView]:
        self.require_share(share)
        rows = self.store.conflicts(share, collection, limit)
        return [_view(coll, key, siblings) for coll, key, siblings in rows]

    def changes(self, since: int, limit: int = 1000) -> list[Change]:
        """Every op applied here after local position `since`, in apply order."""
        found: list[Change] = []
        for lseq, actor, _, raw, _ in self.store.entries_after(None, since, limit):
            logged = entries.decode(raw)
            found.extend(
                Change(lseq, logged.share, actor, logged.hlc, op, logged.seq) for op in logged.ops
            )
        if any(change.op.kind == entries.DELETE for change in found):
            hidden = self.store.deleted_values(found[0].lseq, found[-1].lseq)
            found = [
                replace(c, previous=hidden.get((c.lseq, c.op.collection, c.op.key)))
                if c.op.kind == entries.DELETE
                else c
                for c in found
            ]
        return found

    def last_position(self) -> int:
        return self.store.last_lseq()

    # sync ---------------------------------------------------------------------------------

    def entries_after(
        self,
        share: str,
        cursor: int,
        peer_vector: Mapping[str, int],
        max_bytes: int = SEND_BATCH_BYTES,
        skip: frozenset[str] = frozenset(),
    ) -> tuple[list[WireItem], int]:
        """The next entries the peer lacks, in causal order, about `max_bytes` of them; none of
        the actors in `skip` (not even read)."""
        items: list[WireItem] = []
        size = 0
        heads = self._heads_of(share)
        while size < max_bytes:
            rows = self.store.entries_after(share, cursor, 256, max_bytes - size, skip)
            if not rows:
                # nothing further in this share: skip past other shares' positions too
                cursor = max(cursor, self.store.last_lseq())
                break
            for lseq, actor, seq, raw, signature in rows:
                cursor = lseq
                # an actor without a head: a retired epoch compaction dropped, of which only the
                # first entry is left; a peer lacking it lacks folded entries (a snapshot's)
                if seq <= peer_vector.get(actor, 0) or actor not in heads:
                    continue
                items.append((raw, signature))
                size += len(raw)
                if size >= max_bytes:
                    break
        return items, cursor

    def _restate(self) -> None:
        """Write again, as a new epoch and replacing nothing, the live values of forked epochs
        that a take-back removed: both branches' writes survive as ordinary writes."""
        while self.restate_pending:
            share, ops = self.restate_pending.popitem()
            self.start_new_epoch()
            self.commit_many(share, [merge.dedupe_ops(ops)], concurrent=True)


def _new_epoch() -> bytes:
    return os.urandom(4).hex().encode()


def _view(collection: str, key: str, siblings: list[Sibling]) -> RecordView:
    return RecordView(collection, key, merge.winner(siblings), merge.distinct_values(siblings))
