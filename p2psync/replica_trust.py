"""The membership rules a replica enforces on apply: who may write, and up to where (I/O via the
replica's store).

Reads `_devices` into the keys that verify entries and the revocation cuts (see `membership.py`),
refuses entries beyond a cut, and takes back out what was applied beyond one before the
revocation arrived. A mixin of `Replica`, kept apart so each file can be read whole; it never
talks to the network and decides nothing about merging (that is `merge.py`).
"""

import dataclasses
from collections.abc import Callable, Collection, Mapping

import msgpack

from . import entry as entries
from . import identity, membership, merge
from .entry import LogEntry, Op
from .intake import Intake
from .membership import DEVICES, DeviceRecord, EpochBook
from .merge import RecordKey, Sibling
from .schemas.manifest import SCHEMA
from .shares.members import MEMBERS, ShareMembers
from .store import Store
from .vectors import device_of

SYSTEM_SHARE = "default"  # the share that holds membership


def _restated(collection: str, key: str, sibling: Sibling) -> Op:
    meta = msgpack.unpackb(sibling.meta, raw=False) if sibling.meta else {}
    if sibling.deleted:
        return entries.delete(collection, key, **meta)
    return entries.put(collection, key, sibling.value or b"", **meta)


class TrustRules:
    # set by Replica
    store: Store
    identity: identity.DeviceIdentity
    now_ms: Callable[[], int]
    _intakes: dict[str, Intake]
    _device_keys: dict[str, bytes]
    _records: list[DeviceRecord]
    _revoked: set[str]
    _legacy_revoked: set[str]
    _frozen: dict[str, dict[str, int]]
    _forked: dict[str, set[str]]
    restate_pending: dict[str, list[Op]]
    epoch_frozen: bool
    _own_state: tuple[bool, str] | None
    # HistoryRules' (a later base of Replica: a stub here would hide it)
    writer_saw: Callable[..., Callable[[Sibling], bool]]

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    def _heads_of(self, share: str) -> dict[str, tuple[int, bytes]]:
        raise NotImplementedError

    def _book(self, share: str) -> EpochBook:
        raise NotImplementedError

    def _schemas_changed(self, share: str) -> None:
        raise NotImplementedError

    def _members_changed(self, share: str) -> None:
        raise NotImplementedError

    def summary_vector(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def held_vector(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def folded_frontier(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def _note(self, notices: list[membership.Notice]) -> None:
        raise NotImplementedError

    def shares(self) -> list[str]:
        raise NotImplementedError

    def share_members(self, share: str) -> ShareMembers | None:
        raise NotImplementedError

    def _cap_of(self, share: str) -> merge.Cap | None:
        """The last seq any member may accept of an actor, for actors a revocation or a removal
        from the share froze."""
        household = self._household_cap(share)
        members = self.share_members(share)
        if members is None or not any(r.cut or r.removed for r in members.records.values()):
            return household
        if household is None:
            return members.cap

        def cap(actor: str) -> int | None:
            limits = (household(actor), members.cap(actor))
            return min((limit for limit in limits if limit is not None), default=None)

        return cap

    def _household_cap(self, share: str) -> merge.Cap | None:
        forked = self._forked.get(share, set())
        if not self._revoked and not self._frozen.get(share) and not forked:
            return None
        frozen = self._frozen.get(share, {})
        heads = self._heads_of(share)

        def cap(actor: str) -> int | None:
            if actor in forked:
                return 0
            limit = frozen.get(actor)
            if limit is not None:
                return limit
            device = device_of(actor)
            if device in self._legacy_revoked:
                return heads.get(actor, (0, b""))[0]
            return 0 if device in self._revoked else None

        return cap

    def _accepted(
        self, share: str, run: list[merge.Held], cap: merge.Cap | None
    ) -> list[tuple[LogEntry, bytes | None]]:
        """The entries of `run` members may take, with their signatures. `run` holds no entry
        that changes membership but (perhaps) its last, so the rules hold for all of it."""
        members = self.share_members(share)
        admits = self._book(share).admits
        accepted = []
        for entry, signature, _ in run:
            if cap is not None and (limit := cap(entry.actor)) is not None and entry.seq > limit:
                continue
            if members is not None and not members.accepts(entry):
                continue
            if admits(entry):
                accepted.append((entry, signature))
        return accepted

    def _enforce_cuts(self, share: str) -> None:
        """Take back out what we applied of a revoked device beyond its revocation's cut."""
        cap = self._cap_of(share)
        if cap is None:
            return
        heads = self._heads_of(share)
        forked = self._forked.get(share, set())
        beyond = {}
        for actor, (seq, _) in heads.items():
            limit = cap(actor)
            # a revoked device keeps its own writes; a forked epoch goes on every device
            mine = device_of(actor) == self.device_id and actor not in forked
            if limit is not None and seq > limit and not mine:
                beyond[actor] = limit
        if beyond:
            self._cut_back(share, beyond, restate=forked)

    def replay_after_baseline(
        self, share: str, rebuilt: dict[RecordKey, list[Sibling]], touched: Collection[RecordKey]
    ) -> None:
        """Apply the log beyond the baseline's frontier to `rebuilt` (records as of the
        baseline), for the records in `touched` (one pass over the share's log)."""
        folded = self.folded_frontier(share)
        cursor = 0
        while rows := self.store.entries_after(share, cursor, 512):
            for lseq, actor, seq, raw, _ in rows:
                cursor = lseq
                if seq <= folded.get(actor, 0):
                    continue
                logged = entries.decode(raw)
                continues = self._book(share).continues(logged.actor)
                for op in logged.ops:
                    record_key = (op.collection, op.key)
                    if record_key in touched:
                        seen = self.writer_saw(
                            share, logged, rebuilt, self.store.load_records, continues
                        )
                        rebuilt[record_key] = merge.apply_op(
                            rebuilt.get(record_key, []), logged, op, continues, seen
                        )

    def keys_after_baseline(self, share: str) -> set[RecordKey]:
        """The records the log beyond the baseline's frontier writes (one pass over it)."""
        folded = self.folded_frontier(share)
        found: set[RecordKey] = set()
        cursor = 0
        while rows := self.store.entries_after(share, cursor, 512):
            for lseq, actor, seq, raw, _ in rows:
                cursor = lseq
                if seq > folded.get(actor, 0):
                    found.update((op.collection, op.key) for op in entries.decode(raw).ops)
        return found

    def _cut_back(
        self, share: str, limits: Mapping[str, int], restate: Collection[str] = ()
    ) -> None:
        """Remove entries past `limits` and rebuild the records they touched from the log that
        stays (rare: one pass over the share's log). Live values of the `restate` actors (forked
        epochs: their writes must survive) are queued to be written again (`restate_pending`)."""
        touched: set[tuple[str, str]] = set()
        heads = self._heads_of(share)
        intake = self._intakes.setdefault(share, Intake())
        for actor, limit in limits.items():
            for raw in self.store.remove_entries_after(share, actor, limit):
                touched.update((op.collection, op.key) for op in entries.decode(raw).ops)
            kept = self.store.entry(share, actor, limit) if limit else None
            if kept is None:
                heads.pop(actor, None)
                self.store.remove_head(share, actor)
                intake.rewind(actor, (0, entries.GENESIS_HASH))
            else:
                heads[actor] = (limit, entries.decode(kept).hash)
                self.store.set_head(share, actor, *heads[actor])
                intake.rewind(actor, heads[actor])
        if restate:  # the records still hold what is being taken back: keep its live values
            for (collection, key), siblings in self.store.load_records(share, touched).items():
                for sib in siblings:
                    if sib.actor in restate and sib.seq > limits.get(sib.actor, 0):
                        self.restate_pending.setdefault(share, []).append(
                            _restated(collection, key, sib)
                        )
        # the baseline holds what compaction folded (history/compaction.py): start from it and
        # replay only the entries beyond its frontier
        rebuilt = self.store.load_baseline(share, touched)
        self.replay_after_baseline(share, rebuilt, touched)
        self.store.remove_records(share, touched - rebuilt.keys())
        self.store.save_records(share, rebuilt)
        self._load_device_keys()
        taken_back = {collection for collection, _ in touched}
        if SCHEMA in taken_back:
            self._schemas_changed(share)  # a manifest record taken back
        if MEMBERS in taken_back:
            self._members_changed(share)  # a member added (or removed) by what was taken back

    def _proven_forks(self, keys: Mapping[str, bytes]) -> dict[str, set[str]]:
        """share -> the epochs that `_forks` records prove forked (checked once each)."""
        forked: dict[str, set[str]] = {}
        after = None
        while page := self.store.scan(SYSTEM_SHARE, membership.FORKS, "", after, 500):
            for actor, siblings in page:
                public_key = keys.get(device_of(actor))
                for sib in siblings:
                    share = None if public_key is None else membership.proven_fork(
                        actor, public_key, sib.value
                    )
                    if share is not None:
                        forked.setdefault(share, set()).add(actor)
            after = page[-1][0]
        return forked

    def devices(self) -> list[DeviceRecord]:
        """Membership records. A device id is the hash of its key, so the first certificate
        seen for it stays valid for good: a member that writes junk into another device's
        record cannot take that device's key away (its certificate is kept in the meta table)."""
        found: list[DeviceRecord] = []
        after = None
        while page := self.store.scan(SYSTEM_SHARE, DEVICES, "", after, 500):
            for key, siblings in page:
                record = membership.device_record(key, siblings)
                kept = self.store.get_meta(f"cert/{record.device_id}")
                if identity.certificate_matches(record.cert_pem, record.device_id):
                    if kept != record.cert_pem and self.store.in_transaction:
                        self.store.set_meta(f"cert/{record.device_id}", record.cert_pem)
                elif kept is not None:
                    record = dataclasses.replace(record, cert_pem=kept)
                found.append(record)
            after = page[-1][0]
        return found

    def device_op(self, cert_pem: bytes, name: str) -> Op:
        """Admit a device, or change its name or certificate. A cut from an earlier revocation
        stays: a re-admitted device starts on new epochs."""
        device_id = identity.device_id_from_certificate(cert_pem)
        known = next((r for r in self._records if r.device_id == device_id), None)
        value = membership.device_value(
            cert_pem, name, self.device_id, cut=known.cut if known is not None else None
        )
        return entries.put(DEVICES, device_id, value)

    def revocation_op(self, device: DeviceRecord) -> Op:
        """Revoke a device: its entries up to what we hold now stay, none after."""
        cut = membership.revocation_cut(
            # with the retired epochs it holds but keeps no head of: the cut must name them
            device.device_id, {share: self.held_vector(share) for share in self.shares()}
        )
        value = membership.device_value(
            device.cert_pem,
            device.name,
            device.added_by,
            revoked=True,
            cut=cut,
            revoked_by=self.device_id,
            revoked_at_ms=self.now_ms(),
        )
        return entries.put(DEVICES, device.device_id, value)

    def _load_device_keys(self) -> None:
        self._records = self.devices()
        keys = {self.device_id: self.identity.public_key}
        for device in self._records:
            try:
                public_key = identity.public_key_from_certificate(device.cert_pem)
            except identity.InvalidCertificate:
                continue  # a record we cannot use vouches for nothing
            if identity.device_id_from_public_key(public_key) == device.device_id:
                keys.setdefault(device.device_id, public_key)
        self._device_keys = keys
        own = next((r for r in self._records if r.device_id == self.device_id), None)
        own_state = None if own is None else (own.revoked, repr(sorted(own.cut.items())))
        if own_state != getattr(self, "_own_state", own_state) and own is not None:
            actor = getattr(self, "actor", "")
            if own.revoked or any(actor in cut for cut in own.cut.values()):
                # A revocation of this device froze the epoch it writes as: what it writes on
                # it would be refused everywhere, so a new one is due (see Replica.apply).
                self.epoch_frozen = True
        self._own_state = own_state
        forked = self._proven_forks(keys)
        for share, actors in forked.items():
            for actor in actors - self._forked.get(share, set()):
                self._note([membership.fork_notice(actor)])
        self._forked = forked
        others = [r for r in self._records if r.device_id != self.device_id]
        self._revoked = {r.device_id for r in others if r.revoked}
        self._legacy_revoked = membership.revoked_without_cut(others)
        self._frozen = {
            share: membership.frozen_epochs(self._records, share, self.device_id)
            for share in self.shares()
        }


