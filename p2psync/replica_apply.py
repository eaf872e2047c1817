"""How entries reach a replica's records and log: the one store path of local commits and
received entries, and the apply of received ones (verified, causally ordered, held to the
membership rules) (I/O via the replica's store).

A mixin of `Replica`, kept apart so each file can be read whole. `_store_entries` merges entries
into records, logs them and keeps heads, clock and what membership, schemas and keys follow
from them; `apply` takes a peer's entries through intake (`intake.py`), readiness (`merge.py`)
and the trust rules (`replica_trust.py`) into it, and proves forks it finds. It never builds or
signs entries of its own (that is `replica.py`'s commit), never decides how siblings merge (that
is `merge.py`) and never talks to the network.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter

from . import entry as entries
from . import hlc, membership, merge
from .entry import IntegrityError, LogEntry, Op
from .intake import Fork, Intake
from .membership import DEVICES, FORKS, EpochBook, Notice
from .merge import CausalBuffer, Sibling
from .replica_trust import SYSTEM_SHARE
from .replica_vectors import WireItem
from .schemas.manifest import SCHEMA
from .shares.members import MEMBERS
from .store import Store


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    waiting: int
    received: dict[str, int]  # per actor, the highest seq the sender showed it has
    position: int
    devices_changed: bool
    offenders: dict[str, str] = field(default_factory=dict)  # other peers caught lying
    notices: list[Notice] = field(default_factory=list)
    refused: int = 0  # entries no member may accept (beyond a revocation, too many epochs)


class ReplicaApply:
    # set by Replica
    store: Store
    now_ms: Callable[[], int]
    epoch_frozen: bool
    notices: dict[tuple[str, str], Notice]
    _clock: int
    _intakes: dict[str, Intake]
    _held: dict[str, CausalBuffer]
    _forked: dict[str, set[str]]
    _device_keys: dict[str, bytes]
    _stored: dict[str, dict[str, int]]
    # HistoryRules' (a base of Replica before this one; typed loosely, as in TrustRules)
    writer_saw: Callable[..., Callable[[Sibling], bool]]

    # Replica's and its other bases' (ReplicaApply comes last among them: these never hide those)
    def commit(self, share: str, ops: Sequence[Op]) -> object:
        raise NotImplementedError

    def start_new_epoch(self) -> str:
        raise NotImplementedError

    def _restate(self) -> None:
        raise NotImplementedError

    def _note(self, notices: list[Notice]) -> None:
        raise NotImplementedError

    def _forget_cached_state(self) -> None:
        raise NotImplementedError

    def _heads_of(self, share: str) -> dict[str, tuple[int, bytes]]:
        raise NotImplementedError

    def _held_head(self, share: str, actor: str) -> tuple[int, bytes]:
        raise NotImplementedError

    def _book(self, share: str) -> EpochBook:
        raise NotImplementedError

    def held_vector(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def _cap_of(self, share: str) -> merge.Cap | None:
        raise NotImplementedError

    def _accepted(
        self, share: str, run: list[merge.Held], cap: merge.Cap | None
    ) -> list[tuple[LogEntry, bytes | None]]:
        raise NotImplementedError

    def _enforce_cuts(self, share: str) -> None:
        raise NotImplementedError

    def _load_device_keys(self) -> None:
        raise NotImplementedError

    def _members_changed(self, share: str) -> None:
        raise NotImplementedError

    def _schemas_changed(self, share: str) -> None:
        raise NotImplementedError

    def apply(self, share: str, items: Iterable[WireItem], peer: str = "") -> ApplyResult:
        """Verify and apply entries received from `peer`. Raises IntegrityError when `peer` itself
        sent something false, and then nothing changed; other peers whose earlier entries this
        exposes as false are named in `offenders`."""
        intake = self._intakes.setdefault(share, Intake())
        held = self._held.setdefault(share, CausalBuffer())
        applied = refused = 0
        received: dict[str, int] = {}
        offenders: dict[str, str] = {}
        notices_before = len(self.notices)
        devices_changed = False
        forks: list[Fork] = []
        set_aside = self._forked.get(share, set())
        try:
            for raw, signature in items:
                logged = entries.decode(raw)
                if logged.share != share:
                    raise IntegrityError(
                        f"entry of share {logged.share!r} sent as part of share {share!r}"
                    )
                if logged.actor in set_aside:  # a forked epoch: no member takes any of it
                    refused += 1
                    continue
                intake.add(peer, logged, signature, self._held_head(share, logged.actor))
                received[logged.actor] = max(received.get(logged.actor, 0), logged.seq)
        except IntegrityError:
            # Only this peer's own queue goes: what honest peers sent keeps waiting (they have
            # been told we hold it, and would not send it again in this session).
            self.forget_peer(peer)
            raise
        try:
            # Received entries are not fsynced on their own: a peer sends again whatever a
            # power cut takes, and our next local commit's fsync covers them anyway.
            with self.store.transaction(fsync=False):
                while True:
                    released = intake.release(self._device_keys.get)
                    offenders.update(released.offenders)
                    self._note([membership.fork_notice(fork.actor) for fork in released.forks])
                    forks += released.forks
                    vector, cap = self.held_vector(share), self._cap_of(share)
                    # What is ready as it is released goes straight on (the common case: a
                    # sender sends in causal order); the rest waits in `held`. Either way each
                    # entry is ready against `vector`, which counts every entry taken before it.
                    ready: list[merge.Held] = []
                    for verified in released.verified:
                        logged = verified.entry
                        if merge.is_duplicate(logged, vector):
                            continue
                        if merge.is_ready(logged, vector, cap):
                            ready.append(verified)
                            vector[logged.actor] = logged.seq
                        elif not held.hold(logged, verified.signature, verified.peer):
                            offenders.setdefault(
                                verified.peer, "sent too many entries waiting for their causes"
                            )
                    if held:
                        ready += held.pop_ready(vector, cap)
                    if not ready:
                        break
                    for run in _membership_runs(share, ready):
                        cap = self._cap_of(share)  # again for each run: a revocation may precede
                        accepted = self._accepted(share, run, cap)
                        refused += len(run) - len(accepted)
                        applied += len(accepted)
                        if accepted and self._store_entries(share, accepted):
                            devices_changed = True
                            self._enforce_cuts(share)
        except BaseException:
            self._forget_cached_state()
            raise
        for fork in forks:
            self._report_fork(share, fork)
        self._restate()
        if self.epoch_frozen:
            self.start_new_epoch()
        if peer in offenders:
            intake.forget_peer(peer)
            raise IntegrityError(offenders[peer])
        for offender in offenders:
            self.forget_peer(offender)
        return ApplyResult(
            applied,
            len(intake) + len(held),
            received,
            self.store.last_lseq(),
            devices_changed,
            offenders,
            list(self.notices.values())[notices_before:],
            refused,
        )

    def _report_fork(self, share: str, fork: Fork) -> None:
        """Write the proof of a fork, so every member freezes that epoch and every holder of
        either branch writes its live values again (see replica_trust)."""
        if fork.actor in self._forked.get(share, set()) or not fork.evidence:
            return
        held = self._heads_of(share).get(fork.actor, (0, b""))[0]
        ours = self.store.signed_run(share, fork.actor, max(1, fork.seq - 1), min(fork.seq, held))
        if not ours:
            return
        value = membership.fork_value(share, ours, list(fork.evidence))
        if len(value) < entries.MAX_ENTRY_BYTES // 2:
            self.commit(SYSTEM_SHARE, [entries.put(FORKS, fork.actor, value)])

    def waits(self, share: str) -> bool:
        """Whether received entries of `share` wait here (for a signature or a cause): the next
        apply may release them all."""
        return bool(self._intakes.get(share)) or bool(self._held.get(share))

    def forget_peer(self, peer: str) -> None:
        """Free what `peer` sent that still waits (it left; it sends again when it is back)."""
        for intake in self._intakes.values():
            intake.forget_peer(peer)
        for held in self._held.values():
            held.forget_peer(peer)

    def _store_entries(
        self,
        share: str,
        signed: Sequence[tuple[LogEntry, bytes | None]],
        records: dict[tuple[str, str], list[Sibling]] | None = None,
    ) -> bool:
        """Apply and log entries inside the caller's transaction; True when membership changed.
        `records`: what `insert_new_records` already gave back for these entries' writes."""
        written = [e for e, _ in signed]
        # Most writes land on keys without a record (a catch-up, new records): they are stored as
        # they are, with no lookup first. Where a record was there, from before or from an earlier
        # write of this batch, the batch is replayed onto it (a write it holds changes nothing).
        if records is None:
            records = self.store.insert_new_records(share, merge.writes(written))
        replaced: list[tuple[int, str, str, bytes]] = []  # (index in written, what a delete hid)
        if records:
            book = self._book(share)
            # what epochs starting in this batch take over is known before the book learns it
            starting = {e.actor: _continues(e) for e in written if e.seq == 1 and e.retires}
            for index, e in enumerate(written):
                continues = starting.get(e.actor) or book.continues(e.actor)
                for op in e.ops:
                    record_key = (op.collection, op.key)
                    if record_key in records:
                        before = records[record_key]
                        if op.kind == entries.DELETE and before and not _holds(before, e):
                            hidden = merge.winner(before)
                            if not hidden.deleted and hidden.value is not None:
                                replaced.append((index, op.collection, op.key, hidden.value))
                        seen = None
                        if any(s.deleted for s in before):
                            seen = self.writer_saw(
                                share, e, records, self.store.load_records, continues
                            )
                        records[record_key] = merge.apply_op(before, e, op, continues, seen)
            self.store.save_records(share, records)
        last = self.store.append_entries(
            share, ((e.actor, e.seq, e.raw, signature) for e, signature in signed)
        )
        if replaced:
            first = last - len(written) + 1
            self.store.save_deleted_values(
                (first + index, collection, key, value)
                for index, collection, key, value in replaced
            )
        heads = self._heads_of(share)
        for e in written:
            heads[e.actor] = (e.seq, e.hash)
        self._clock = hlc.observe_all(self._clock, [e.hlc for e in written], self.now_ms())
        stored = self._stored.setdefault(share, {})
        for actor in {e.actor for e in written}:
            self.store.set_head(share, actor, *heads[actor])
            stored[actor] = heads[actor][0]
        self.store.set_meta("hlc", self._clock.to_bytes(8, "big"))
        for e, _ in signed:
            if e.seq == 1:
                self._note(self._book(share).learn(e, self._heads_of(share)))
        watched = _SYSTEM_COLLECTIONS if share == SYSTEM_SHARE else _SHARE_COLLECTIONS
        # in C, op by op: this runs over every op of a catch-up
        collections = chain.from_iterable(map(_collection_of, e.ops) for e in written)
        touched = watched.intersection(collections)
        devices_changed = not touched.isdisjoint((DEVICES, FORKS))
        if devices_changed:
            self._load_device_keys()
        members_changed = MEMBERS in touched
        if members_changed:
            self._members_changed(share)
        if SCHEMA in touched:
            self._schemas_changed(share)
        return devices_changed or members_changed

    def take_stored(self) -> dict[str, dict[str, int]]:
        """Per share, the highest seq of each actor whose entries were stored (by any commit or
        apply, rolled back or not) since the last call."""
        stored, self._stored = self._stored, {}
        return stored


def _holds(siblings: list[Sibling], written: LogEntry) -> bool:
    """Whether `written` is applied already (a write of this batch that was stored at once)."""
    return any(s.actor == written.actor and s.seq == written.seq for s in siblings)


_collection_of = itemgetter(1)  # an Op's collection, read in C
# the collections whose writes change what the replica knows beyond records (see _store_entries)
_SHARE_COLLECTIONS = frozenset((MEMBERS, SCHEMA))
_SYSTEM_COLLECTIONS = frozenset((MEMBERS, SCHEMA, DEVICES, FORKS))


def _membership_runs(share: str, ready: list[merge.Held]) -> Iterator[list[merge.Held]]:
    """`ready` cut after each entry that changes membership: the rules for what follows it may
    have changed (a revocation refuses the revoked device's later entries)."""
    cutting = {MEMBERS, DEVICES} if share == SYSTEM_SHARE else {MEMBERS}
    start = 0
    for index, held in enumerate(ready):
        if not cutting.isdisjoint(map(_collection_of, held[0].ops)):
            yield ready[start : index + 1]
            start = index + 1
    if start < len(ready):
        yield ready[start:]


def _continues(first: LogEntry) -> dict[str, int]:
    """What an epoch's first entry takes over: the epochs it retires, up to where."""
    return {actor: seq for actor, seq, _ in first.retires}
