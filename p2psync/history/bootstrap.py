"""A replica's snapshot side: offering its baseline to a peer that lacks folded entries, and
receiving, keeping (resumably) and installing one (I/O via the replica's store).

A mixin of `Replica`. The rules are pure, in `history/snapshot.py`; this module reads and writes
the tables. A sender offers the baseline at its frontier B (rows, the chain heads at B, each
epoch's first entry, and the signed reports that name B's digest); the receiver keeps what
arrives in the staging tables of schema 5, so a transfer cut by anything, kill -9 included,
resumes after the last key kept. Installing is one SQLite transaction: the baseline, B, the
heads, the first entries, and `records` rebuilt from the baseline plus this device's log beyond
B (its own writes made offline re-merge). It never talks to the network, never reads the clock.
"""

from collections.abc import Callable, Iterator, Mapping

import msgpack

from .. import entry as entries
from ..entry import IntegrityError, LogEntry
from ..identity import verify_signature
from ..intake import Intake
from ..membership import Notice
from ..merge import RecordKey, Sibling
from ..store import Store
from ..vectors import device_of
from .snapshot import (
    CHUNK_BYTES,
    Offer,
    Room,
    RowDigest,
    SnapshotError,
    Staged,
    Verdict,
    WireItem,
    check_digest,
    check_room,
    contradicted,
    encode_fields,
    pack_offer,
    take_chunk,
    unpack_offer,
    vouch,
)
from .stability import STABLE, Report, read_report

# where a snapshot resumes when its receiver holds that baseline already: after every key
ALL_HELD = ("\U0010ffff", "")


class SnapshotRules:
    # set by Replica
    store: Store
    device_id: str
    _heads: dict[str, dict[str, tuple[int, bytes]]]
    _intakes: dict[str, Intake]
    _device_keys: dict[str, bytes]

    # from HistoryRules, TrustRules and Replica, which come before this mixin
    folded_beyond: Callable[[str, Mapping[str, int]], bool]
    folded_frontier: Callable[[str], dict[str, int]]
    _held_head: Callable[[str, str], tuple[int, bytes]]
    stability_reports: Callable[[str], dict[str, Report | None]]
    replay_after_baseline: Callable[[str, dict[RecordKey, list[Sibling]], set[RecordKey]], None]
    keys_after_baseline: Callable[[str], set[RecordKey]]
    _forget_cached_state: Callable[[], None]
    _note: Callable[[list[Notice]], None]
    notices: dict[tuple[str, str], Notice]

    # what this device folded ------------------------------------------------------------

    def baseline_heads(self, share: str) -> dict[str, tuple[int, bytes, bytes]] | None:
        """The chain heads at B, with each epoch's first entry hash; None when the log no
        longer shows them (an actor cut back below B by a revocation)."""
        # retired epochs B implies are in the offer whole, as 0.4.0 receivers expect
        frontier = self.folded_frontier(share)
        found = {}
        for actor, seq in frontier.items():
            first = self.store.entry(share, actor, 1)
            head = self._held_head(share, actor)
            if seq == head[0]:
                at = head[1]
            elif (after := self.store.entry(share, actor, seq + 1)) is not None:
                at = entries.decode(after).prev_hash
            else:
                return None
            if first is None:
                return None
            found[actor] = (seq, at, entries.decode(first).hash)
        return found

    def baseline_claim(self, share: str) -> tuple[dict[str, int], bytes] | None:
        """(W, digest) for this device's reports (history/snapshot.py's RowDigest); None
        before a write is folded. A pass over the baseline, so cached per W (the rows the
        digest covers change only with W)."""
        written = self.store.folded_writes(share)
        if not written:
            return None
        cache: dict[str, tuple[dict[str, int], bytes]] = self.__dict__.setdefault(
            "_baseline_claims", {}
        )
        cached = cache.get(share)
        if cached is not None and cached[0] == written:
            return cached
        firsts = {}
        for actor in written:
            first = self.store.entry(share, actor, 1)
            if first is None:
                return None
            firsts[actor] = entries.decode(first).hash
        cache[share] = (written, self._baseline_pass(share, RowDigest(firsts)).digest())
        return cache[share]

    def _baseline_pass(self, share: str, found: RowDigest) -> RowDigest:
        """Every baseline row, encoded, fed to `found` (whose count and bytes are then the
        offer's: kept for `snapshot_offer`, as long as the baseline does not change)."""
        changes = self.store.baseline_changes
        for coll, key, fields in self.store.baseline_fields(share):
            live = not all(sibling[3] for sibling in fields)
            found.add_encoded((coll, key), live, encode_fields(coll, key, fields))
        totals: dict[str, tuple[int, int, int]] = self.__dict__.setdefault("_baseline_totals", {})
        totals[share] = (changes, found.rows, found.size)
        return found

    def contradicted_baseline(self, share: str) -> list[str]:
        """Members whose report names this device's folded writes with another digest: their
        baseline and this one differ, which only a forged snapshot explains (one taken on its
        sender's word alone is checked so as each report arrives). Each is a notice, once;
        returns the members not named before."""
        claim = self.baseline_claim(share)
        if claim is None:
            return []
        reports = self.stability_reports(share)
        against = [
            m
            for m in contradicted(claim, reports)
            if m != self.device_id and (m, "baseline") not in self.notices
        ]
        self._note(
            [
                Notice(
                    member,
                    "baseline",
                    f"holds another state of share {share} than this device for the same folded"
                    " writes: this device's copy may come from a forged snapshot; compare both,"
                    " and revoke the device that sent it if it was forged",
                )
                for member in against
            ]
        )
        return against

    # sending ----------------------------------------------------------------------------

    def snapshot_offer(self, share: str, peer_vector: Mapping[str, int]) -> Offer | None:
        """The snapshot a peer with `peer_vector` needs (None: it needs none, or this device
        cannot vouch for its baseline)."""
        if not self.folded_beyond(share, peer_vector):
            return None
        claim, heads = self.baseline_claim(share), self.baseline_heads(share)
        if claim is None or heads is None:
            return None
        written, digest = claim
        frontier = self.folded_frontier(share)
        totals = self.__dict__.get("_baseline_totals", {}).get(share)
        if totals is None or totals[0] != self.store.baseline_changes:
            passed = self._baseline_pass(share, RowDigest({}))
            totals = (0, passed.rows, passed.size)
        firsts = []
        for actor in sorted(frontier):
            signed = self.store.signed_entry(share, actor, 1)
            raw = self.store.entry(share, actor, 1)
            assert raw is not None  # baseline_heads found it
            firsts.append(signed or (raw, None))
        evidence = []
        for _, report in sorted(self.stability_reports(share).items()):
            if report is not None and report.baseline == claim:
                run = self.store.signed_run(share, report.dot[0], report.dot[1], report.dot[1])
                if run:
                    evidence.append(tuple(run))
        return Offer(
            share,
            frontier,
            heads,
            written,
            digest,
            totals[1],
            totals[2],
            tuple(firsts),
            tuple(evidence),
        )

    def snapshot_rows(
        self, share: str, after: RecordKey | None, max_bytes: int = CHUNK_BYTES
    ) -> list[bytes]:
        """The next chunk of baseline rows after key `after` (empty: none left)."""
        chunk: list[bytes] = []
        size = 0
        rows = self.store.baseline_fields(share, after)
        try:
            for coll, key, fields in rows:
                raw = encode_fields(coll, key, fields)
                if chunk and size + len(raw) > max_bytes:
                    break
                chunk.append(raw)
                size += len(raw)
        finally:
            rows.close()
        return chunk

    # receiving --------------------------------------------------------------------------

    def snapshot_started(
        self, share: str, offer: Offer, room: Room | None = None
    ) -> RecordKey | None:
        """A sender offers `offer`: keep it (the same frontier, digest and size as the one
        staged continue it, whoever sends it). Returns the key to resume after (None: from the
        start; ALL_HELD: nothing, this device holds that baseline already). SnapshotRefused:
        larger than `room` allows (what was staged stays, for a sender of a smaller one)."""
        staged = self.staged_snapshot(share)
        if self._holds(share, offer):
            if staged is not None and self._holds(share, staged.offer):
                self.discard_staged(share)  # of a baseline this device has passed
            return ALL_HELD  # another member's snapshot of the same baseline came first
        resumed = staged is not None and staged.offer.ident == offer.ident
        if room is not None:
            check_room(offer, room, staged.size if staged is not None and resumed else 0)
        if staged is not None and resumed:
            with self.store.transaction():  # the newer start carries newer evidence
                self._stage(share, Staged(offer, staged.rows, staged.size, staged.last))
            return staged.last
        with self.store.transaction():
            self.store.clear_staged(share)
            self._stage(share, Staged(offer))
        return None

    def discard_staged(self, share: str) -> None:
        """Forget the snapshot being received: its sender broke a rule or ended it short, or
        this device passed its baseline. What was sent is then no base to resume from (an
        honest sender's transfer would end in a failed digest)."""
        with self.store.transaction():
            self.store.clear_staged(share)

    def staged_snapshot(self, share: str) -> Staged | None:
        stored = self.store.staged_snapshot(share)
        if stored is None:
            return None
        rows, size, last = msgpack.unpackb(stored[1], raw=False)
        return Staged(unpack_offer(stored[0]), rows, size, tuple(last) if last else None)

    def _stage(self, share: str, staged: Staged) -> None:
        progress = msgpack.packb([staged.rows, staged.size, staged.last])
        self.store.stage_snapshot(share, pack_offer(staged.offer), progress)

    def snapshot_chunk(self, share: str, raws: list[bytes]) -> Staged:
        """Keep a chunk of the staged snapshot (checked against its start)."""
        staged = self.staged_snapshot(share)
        if staged is None:
            raise SnapshotError("snapshot rows without a snapshot start")
        staged, rows = take_chunk(staged, raws)
        with self.store.transaction():  # as they came: take_chunk found them canonical
            self.store.stage_rows(share, zip((key for key, _ in rows), raws, strict=True))
            self._stage(share, staged)
        return staged

    def _holds(self, share: str, offer: Offer) -> bool:
        base = self.folded_frontier(share)
        return all(base.get(actor, 0) >= seq for actor, seq in offer.frontier.items())

    def install_snapshot(
        self, share: str, sender: str, public_key_of: Callable[[str], bytes | None]
    ) -> Verdict | None:
        """Verify the staged snapshot and, if vouched for, install it in one transaction.
        `public_key_of`: device id -> its key where the device records do not say (the
        sender's, from its certificate). A refused snapshot is dropped. None: nothing was
        staged, since this device held the offered baseline already (ALL_HELD)."""
        staged = self.staged_snapshot(share)
        if staged is None and self.store.baseline_frontier(share):
            return None  # snapshot_started answered ALL_HELD: nothing was sent, nothing to do
        if staged is None or not staged.complete:
            if staged is not None:
                self.discard_staged(share)  # the rows it did send cannot be resumed from
            raise SnapshotError("the snapshot ended before all its rows arrived")
        offer = staged.offer
        try:
            firsts = _check_firsts(offer, share)
            reports = dict(self.stability_reports(share))
            known = self._device_keys.get
            reports.update(_evidence_reports(offer, share, lambda d: public_key_of(d) or known(d)))
            verdict = vouch(offer, sender, reports)
            # the rows are checked in the pass that installs them: a transaction rolled back
            # when they do not add up (a refused snapshot's rows are checked all the same, so
            # forged rows are named as such whatever the reports say)
            with self.store.transaction():
                if verdict.accept:
                    self._install(share, offer, firsts)
                else:
                    self._check_staged(share, offer)
                self.store.clear_staged(share)
        except SnapshotError:
            self._forget_cached_state()  # what the rolled-back install read into memory
            with self.store.transaction():
                self.store.clear_staged(share)
            raise
        self._forget_cached_state()
        return verdict

    def _check_staged(self, share: str, offer: Offer) -> None:
        found = RowDigest(offer.firsts_in_digest)
        for coll, key, raw in self.store.staged_fields(share):
            # staged only once take_chunk found it canonical: msgpack alone reads it back
            fields = msgpack.unpackb(raw)[2]
            found.add_encoded((coll, key), not all(f[3] for f in fields), raw)
        check_digest(offer, found)

    def _install(
        self, share: str, offer: Offer, firsts: list[tuple[LogEntry, bytes | None]]
    ) -> None:
        # entries within B are in the baseline now; the ones beyond it (this device's own
        # offline writes among them) stay and are replayed onto it below
        self.store.remove_entries_within(share, offer.frontier)
        held = self.store.heads(share)
        missing = [(e, sig) for e, sig in firsts if self.store.entry(share, e.actor, 1) is None]
        self.store.append_entries(share, ((e.actor, 1, e.raw, sig) for e, sig in missing))
        for actor, (seq, at, _) in offer.heads.items():
            if held.get(actor, (0, b""))[0] < seq:
                self.store.set_head(share, actor, seq, at)
        self.store.set_baseline_frontier(share, offer.frontier, offer.written)
        # Records are the baseline's rows, copied in SQL, but for those the log after B
        # touches (replayed here, as merge rules say), the rows of several siblings (whose
        # flags need those rules) and the reports (what the replay asks of its writers)
        replayed = self.keys_after_baseline(share)
        touched = replayed & self.store.load_records(share, replayed).keys()
        rebuilt: dict[RecordKey, list[Sibling]] = {}
        self.store.clear_baseline(share)
        self.store.insert_baseline(share, self._staged_baseline(share, offer, replayed, rebuilt))
        touched |= replayed & rebuilt.keys()
        self.replay_after_baseline(share, rebuilt, touched)
        self.store.records_from_baseline(share, rebuilt)

    def _staged_baseline(
        self,
        share: str,
        offer: Offer,
        replayed: set[RecordKey],
        rebuilt: dict[RecordKey, list[Sibling]],
    ) -> Iterator[tuple[str, str, bytes, bool]]:
        """The staged rows in the baseline's form, checked against the offer as they go by
        (SnapshotError at the end when they do not add up); the rows `_install` rebuilds
        records of are put in `rebuilt`."""
        found = RowDigest(offer.firsts_in_digest)
        for coll, key, raw in self.store.staged_fields(share):
            # staged only once take_chunk found it canonical: msgpack alone reads it back
            fields = msgpack.unpackb(raw)[2]
            several = len(fields) > 1
            tombstone = all(f[3] for f in fields) if several else fields[0][3]
            found.add_encoded((coll, key), not tombstone, raw)
            if several or coll == STABLE or (coll, key) in replayed:
                rebuilt[(coll, key)] = [Sibling(*f) for f in fields]
            yield coll, key, self.store.pack_fields(fields), tombstone
        check_digest(offer, found)


def _check_firsts(offer: Offer, share: str) -> list[tuple[LogEntry, bytes | None]]:
    """Each epoch's first entry, as the heads (covered by the digest) name it."""
    found = {}
    for raw, signature in offer.firsts:
        try:
            first = entries.decode(raw)
        except IntegrityError as exc:
            raise SnapshotError(f"a snapshot's first entry does not decode: {exc}") from None
        head = offer.heads.get(first.actor)
        if first.share != share or first.seq != 1 or head is None or head[2] != first.hash:
            raise SnapshotError(f"the snapshot's first entry of {first.actor} is not its heads'")
        # B is causally closed: what an epoch within it retired is within it too. Checked since
        # a retirement makes the receiver hold the retired epoch that far (vectors.implied),
        # and the first entries of epochs outside W are the sender's word like the heads
        if any(offer.frontier.get(actor, 0) < seq for actor, seq, _ in first.retires):
            raise SnapshotError(f"the snapshot's first entry of {first.actor} retires beyond B")
        found[first.actor] = (first, signature)
    if found.keys() != offer.heads.keys():
        raise SnapshotError("the snapshot lacks the first entry of an epoch within it")
    return list(found.values())


def _evidence_reports(
    offer: Offer, share: str, public_key_of: Callable[[str], bytes | None]
) -> dict[str, Report]:
    """The reports in the snapshot's evidence that their writers signed (runs that do not
    check out are ignored: they vouch for nothing)."""
    found: dict[str, Report] = {}
    for run in offer.evidence:
        report = _signed_report(run, share, public_key_of)
        if report is not None:
            found[report.device_id] = report
    return found


def _signed_report(
    run: tuple[WireItem, ...], share: str, public_key_of: Callable[[str], bytes | None]
) -> Report | None:
    try:
        logged = [entries.decode(raw) for raw, _ in run]
        entries.check_chain(logged[0].prev_hash, logged)
    except (IntegrityError, IndexError):
        return None
    last, signature = logged[-1], run[-1][1]
    device = device_of(last.actor)
    key = public_key_of(device)
    if key is None or signature is None or any(e.share != share for e in logged):
        return None
    message = entries.head_message(share, last.actor, last.seq, last.hash)
    if not verify_signature(key, signature, message):
        return None
    first = logged[0]
    siblings = [
        Sibling(first.actor, first.seq, first.hlc, False, op.value, op.meta)
        for op in first.ops
        if (op.collection, op.key) == (STABLE, device) and op.kind == entries.PUT
    ]
    return read_report(device, siblings)
