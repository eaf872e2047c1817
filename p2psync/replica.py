"""A device's replica: local transactions, reads, and the sync surface the network layer uses.

It turns local transactions into signed log entries, verifies and causally orders received ones,
and applies both through the same merge rule into the store. Synchronous and single-threaded: the
daemon calls it from one worker thread. It never opens sockets and never decides whom to talk to.
"""

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from . import entry as entries
from . import hlc, identity, merge
from .entry import IntegrityError, LogEntry, Op
from .intake import Intake
from .merge import CausalBuffer, Sibling
from .store import Store
from .vectors import make_actor

DEFAULT_SHARE = "default"
DEVICES = "_devices"
SYSTEM_SHARE = DEFAULT_SHARE
WireItem = tuple[bytes, bytes | None]


class ReplicaError(Exception):
    """A request the replica refuses (bad arguments, a database of another device)."""


@dataclass(frozen=True, slots=True)
class Commit:
    share: str
    actor: str
    seq: int
    hlc: int
    lseq: int


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


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    waiting: int
    received: dict[str, int]  # per actor, the highest seq the sender showed it has
    position: int
    devices_changed: bool


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    name: str
    cert_pem: bytes
    added_by: str
    revoked: bool


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Replica:
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
        epoch = store.get_meta("epoch")
        if owner is None or epoch is None:
            with store.transaction():
                store.set_meta("device_id", device.device_id.encode())
                epoch = _new_epoch()
                store.set_meta("epoch", epoch)
        self.actor = make_actor(device.device_id, epoch.decode())
        self._clock = max(int.from_bytes(store.get_meta("hlc") or b"", "big"), 0)
        self._heads: dict[str, dict[str, tuple[int, bytes]]] = {}
        self._intakes: dict[str, Intake] = {}
        self._held: dict[str, CausalBuffer] = {}
        self._device_keys: dict[str, bytes] = {}
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

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    def is_restored_copy(self, share: str, peer_vector: Mapping[str, int]) -> bool:
        """True when a peer holds more of our own log than we do: this database is an older
        copy (restored from a backup), and writing on under the same actor would fork it."""
        ours = self.summary_vector(share).get(self.actor, 0)
        return peer_vector.get(self.actor, 0) > ours

    def start_new_epoch(self) -> str:
        """Write under a fresh actor from now on; the old actor's history stays valid and its
        missing tail comes back from peers like anyone else's entries."""
        epoch = _new_epoch()
        with self.store.transaction():
            self.store.set_meta("epoch", epoch)
        self.actor = make_actor(self.device_id, epoch.decode())
        return self.actor

    # local writes -------------------------------------------------------------------------

    def commit(self, share: str, ops: Sequence[Op]) -> Commit:
        return self.commit_many(share, [ops])[0]

    def commit_many(self, share: str, transactions: Sequence[Sequence[Op]]) -> list[Commit]:
        """Group commit: each transaction becomes one entry; one SQLite commit and one signature."""
        if not transactions or not all(transactions):
            raise ReplicaError("a transaction needs at least one op")
        heads = self._heads_of(share)
        context = self.summary_vector(share)
        seq, prev_hash = heads.get(self.actor, (0, entries.GENESIS_HASH))
        written: list[LogEntry] = []
        for ops in transactions:
            seq += 1
            self._clock = hlc.tick(self._clock, self.now_ms())
            new = entries.encode(
                share, self.actor, seq, prev_hash, self._clock, context, merge.dedupe_ops(ops)
            )
            if len(new.raw) > entries.MAX_ENTRY_BYTES:
                raise ReplicaError(
                    f"transaction is {len(new.raw)} bytes; the limit is {entries.MAX_ENTRY_BYTES}"
                )
            written.append(new)
            prev_hash = new.hash
        last = written[-1]
        signature = self.identity.sign(entries.head_message(share, self.actor, last.seq, last.hash))
        signed = [(e, signature if e is last else None) for e in written]
        try:
            with self.store.transaction():
                self._store_entries(share, signed)
        except BaseException:
            self._forget_cached_state()
            raise
        first_lseq = self.store.last_lseq() - len(written) + 1
        return [
            Commit(share, self.actor, e.seq, e.hlc, first_lseq + i) for i, e in enumerate(written)
        ]

    def _store_entries(self, share: str, signed: Sequence[tuple[LogEntry, bytes | None]]) -> bool:
        """Apply and log entries inside the caller's transaction; True when membership changed."""
        written = [e for e, _ in signed]
        # Most writes land on keys without a record (a catch-up, new records): they are stored as
        # they are, with no lookup first. Where a record was there, from before or from an earlier
        # write of this batch, the batch is replayed onto it (a write it holds changes nothing).
        records = self.store.insert_new_records(share, merge.writes(written))
        if records:
            for e in written:
                for op in e.ops:
                    record_key = (op.collection, op.key)
                    if record_key in records:
                        records[record_key] = merge.apply_op(records[record_key], e, op)
            self.store.save_records(share, records)
        self.store.append_entries(
            share, ((e.actor, e.seq, e.raw, signature) for e, signature in signed)
        )
        heads = self._heads_of(share)
        for e, _ in signed:
            heads[e.actor] = (e.seq, e.hash)
            self._clock = hlc.observe(self._clock, e.hlc, self.now_ms())
        for actor, (seq, entry_hash) in {e.actor: heads[e.actor] for e, _ in signed}.items():
            self.store.set_head(share, actor, seq, entry_hash)
        self.store.set_meta("hlc", self._clock.to_bytes(8, "big"))
        devices_changed = share == SYSTEM_SHARE and any(
            op.collection == DEVICES for e in written for op in e.ops
        )
        if devices_changed:
            self._load_device_keys()
        return devices_changed

    def _heads_of(self, share: str) -> dict[str, tuple[int, bytes]]:
        heads = self._heads.get(share)
        if heads is None:
            heads = self._heads[share] = self.store.heads(share)
        return heads

    def _forget_cached_state(self) -> None:
        """After a rollback the database is the truth again; drop what memory said."""
        self._heads.clear()
        self._clock = max(int.from_bytes(self.store.get_meta("hlc") or b"", "big"), 0)
        for intake in self._intakes.values():
            intake.clear()
        for held in self._held.values():
            held.clear()
        self._load_device_keys()

    # reads --------------------------------------------------------------------------------

    def get(self, share: str, collection: str, key: str) -> RecordView | None:
        siblings = self.store.record(share, collection, key)
        return None if siblings is None else _view(collection, key, siblings)

    def scan(
        self,
        share: str,
        collection: str,
        prefix: str = "",
        after: str | None = None,
        limit: int = 100,
    ) -> list[RecordView]:
        rows = self.store.scan(share, collection, prefix, after, limit)
        return [_view(collection, key, siblings) for key, siblings in rows]

    def conflicts(
        self, share: str, collection: str | None = None, limit: int = 1000
    ) -> list[RecordView]:
        rows = self.store.conflicts(share, collection, limit)
        return [_view(coll, key, siblings) for coll, key, siblings in rows]

    def changes(self, since: int, limit: int = 1000) -> list[Change]:
        """Every op applied here after local position `since`, in apply order."""
        found: list[Change] = []
        for lseq, actor, _, raw, _ in self.store.entries_after(None, since, limit):
            logged = entries.decode(raw)
            found.extend(Change(lseq, logged.share, actor, logged.hlc, op) for op in logged.ops)
        return found

    def last_position(self) -> int:
        return self.store.last_lseq()

    # sync ---------------------------------------------------------------------------------

    def summary_vector(self, share: str) -> dict[str, int]:
        return {actor: seq for actor, (seq, _) in self._heads_of(share).items()}

    def shares(self) -> list[str]:
        names = set(self.store.share_names()) | {DEFAULT_SHARE}
        return sorted(names)

    def cursor_for(self, share: str, peer_vector: Mapping[str, int]) -> int:
        """The local position after which every entry the peer lacks can be found."""
        starts = [
            self.store.lseq_of(share, actor, peer_vector.get(actor, 0) + 1)
            for actor, seq in self.summary_vector(share).items()
            if seq > peer_vector.get(actor, 0)
        ]
        known = [lseq for lseq in starts if lseq is not None]
        return min(known) - 1 if known else self.store.last_lseq()

    def entries_after(
        self, share: str, cursor: int, peer_vector: Mapping[str, int], max_bytes: int = 64 * 1024
    ) -> tuple[list[WireItem], int]:
        """The next entries the peer lacks, in causal order, about `max_bytes` of them."""
        items: list[WireItem] = []
        size = 0
        while size < max_bytes:
            rows = self.store.entries_after(share, cursor, 256, max_bytes - size)
            if not rows:
                # nothing further in this share: skip past other shares' positions too
                cursor = max(cursor, self.store.last_lseq())
                break
            for lseq, actor, seq, raw, signature in rows:
                cursor = lseq
                if seq <= peer_vector.get(actor, 0):
                    continue
                items.append((raw, signature))
                size += len(raw)
                if size >= max_bytes:
                    break
        return items, cursor

    def apply(self, share: str, items: Iterable[WireItem]) -> ApplyResult:
        """Verify and apply received entries. All or nothing: on IntegrityError nothing changed."""
        intake = self._intakes.setdefault(share, Intake())
        held = self._held.setdefault(share, CausalBuffer())
        applied = 0
        received: dict[str, int] = {}
        devices_changed = False
        try:
            heads = self._heads_of(share)
            for raw, signature in items:
                logged = entries.decode(raw)
                if logged.share != share:
                    raise IntegrityError(
                        f"entry of share {logged.share!r} sent as part of share {share!r}"
                    )
                intake.add(logged, signature, heads.get(logged.actor, (0, b"")))
                received[logged.actor] = max(received.get(logged.actor, 0), logged.seq)
            # Received entries are not fsynced on their own: a peer sends again whatever a
            # power cut takes, and our next local commit's fsync covers them anyway.
            with self.store.transaction(fsync=False):
                while True:
                    for verified in intake.release(self._device_keys.get):
                        if not held.hold(verified.entry, verified.signature):
                            raise IntegrityError("too many entries waiting for their causes")
                    ready = held.pop_ready(self.summary_vector(share))
                    if not ready:
                        break
                    devices_changed |= self._store_entries(share, ready)
                    applied += len(ready)
        except BaseException:
            self._forget_cached_state()
            raise
        return ApplyResult(
            applied, len(intake) + len(held), received, self.store.last_lseq(), devices_changed
        )

    # membership ---------------------------------------------------------------------------

    def devices(self) -> list[DeviceRecord]:
        found: list[DeviceRecord] = []
        after = None
        while True:
            page = self.store.scan(SYSTEM_SHARE, DEVICES, "", after, 500)
            if not page:
                return found
            found.extend(_device_record(key, siblings) for key, siblings in page)
            after = page[-1][0]

    def device_op(self, cert_pem: bytes, name: str, *, revoked: bool = False) -> Op:
        device_id = identity.device_id_from_certificate(cert_pem)
        value = {"cert": cert_pem, "name": name, "added_by": self.device_id, "revoked": revoked}
        return entries.put(DEVICES, device_id, msgpack.packb(value))

    def _load_device_keys(self) -> None:
        keys = {self.device_id: self.identity.public_key}
        for device in self.devices():
            try:
                public_key = identity.public_key_from_certificate(device.cert_pem)
            except identity.InvalidCertificate:
                continue  # a record we cannot use vouches for nothing
            if identity.device_id_from_public_key(public_key) == device.device_id:
                keys.setdefault(device.device_id, public_key)
        self._device_keys = keys


def _new_epoch() -> bytes:
    return os.urandom(4).hex().encode()


def _view(collection: str, key: str, siblings: list[Sibling]) -> RecordView:
    return RecordView(collection, key, merge.winner(siblings), merge.distinct_values(siblings))


def _device_record(device_id: str, siblings: list[Sibling]) -> DeviceRecord:
    """A device is revoked when any surviving sibling says so: revocation wins over a concurrent
    edit, so a device cannot be re-admitted by racing its own revocation."""
    live = [s for s in siblings if not s.deleted and s.value is not None]
    newest = merge.winner(live) if live else merge.winner(siblings)
    fields: dict[str, Any] = msgpack.unpackb(newest.value, raw=False) if newest.value else {}
    revoked = newest.deleted or any(
        msgpack.unpackb(s.value, raw=False).get("revoked", False) for s in live
    )
    return DeviceRecord(
        device_id,
        str(fields.get("name", "")),
        bytes(fields.get("cert", b"")),
        str(fields.get("added_by", "")),
        bool(revoked),
    )
