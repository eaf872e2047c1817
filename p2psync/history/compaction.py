"""A replica's history side: its stability reports, the frontiers of its shares, folding the log
into the baseline and purging stable tombstones (I/O via the replica's store).

A mixin of `Replica`. Compaction moves a share's baseline frontier B up to the settled frontier
(history/stability.py; within the stable frontier S): the entries in (B, B'] are applied, with
the ordinary merge rule and in local apply order (a causal order), to the baseline rows, and
leave the `entries` table, in one SQLite transaction with the purge, so a kill -9 leaves either
all of it or none. `records` is the live state before and after: reads never change. Each
epoch's first entry stays in the log (it says what the epoch retires, which the epoch book is
rebuilt from); everything that replays the log skips entries within B. Deciding when to report or
compact is the caller's (the daemon's timer); this module never talks to the network and never
reads the clock itself.
"""

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from .. import entry as entries
from .. import merge, vectors
from ..entry import LogEntry, Op
from ..membership import DeviceRecord, EpochBook
from ..merge import RecordKey, Sibling
from ..shares.members import ShareMembers
from ..store import Store
from .stability import (
    STABLE,
    Away,
    Frontiers,
    HistoryPolicy,
    Report,
    away_members,
    frontiers,
    read_report,
    report_value,
    should_report,
    within,
    worth_folding,
)

_PAGE = 512
# Entries folded in one transaction at most (a page more): a backlog folds in steps, so the WAL
# and the database thread's pause stay bounded.
MAX_FOLD = 50_000
# Folding frees pages inside the file; giving them back rewrites the file (VACUUM), so only when
# this much and half the file is free.
RECLAIM_AT_LEAST = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Compacted:
    folded: int  # entries folded into the baseline and gone from the log
    purged: int  # tombstones dropped for good
    # both less the retired epochs they imply (see vectors.compressed)
    frontier: dict[str, int]  # the baseline's frontier B now
    stable: dict[str, int]  # the frontier it folds to when it is worth it (settled, see compact)


class BaselineHolds:
    """Shares whose baseline a snapshot is being served from: compaction leaves them as they
    are (a fold changes the rows and B, a purge drops rows), so the rows sent in chunks are the
    ones the offer counted and hashed. Taken and released by the sessions' senders on trio's
    thread, read by compaction on the database thread, hence the lock; bounded in time by the
    sender (history/snapshot.py's hold_seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def take(self, share: str) -> None:
        with self._lock:
            self._held[share] += 1

    def release(self, share: str) -> None:
        with self._lock:
            self._held[share] -= 1
            if self._held[share] <= 0:
                del self._held[share]

    def __contains__(self, share: object) -> bool:
        with self._lock:
            return share in self._held


class HistoryRules:
    # set by Replica
    store: Store
    now_ms: Callable[[], int]
    device_id: str

    @property
    def baseline_holds(self) -> BaselineHolds:
        """The shares being served as snapshots now (kept in memory: a restart ends them all)."""
        holds: BaselineHolds = self.__dict__.setdefault("_baseline_holds", BaselineHolds())
        return holds

    def _book(self, share: str) -> EpochBook:
        raise NotImplementedError

    def summary_vector(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def held_vector(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def folded_frontier(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def drop_retired_heads(self, share: str, frontier: Mapping[str, int]) -> int:
        raise NotImplementedError

    def share_members(self, share: str) -> ShareMembers | None:
        raise NotImplementedError

    def devices(self) -> list[DeviceRecord]:
        raise NotImplementedError

    def is_share_member(self, share: str, device_id: str) -> bool:
        raise NotImplementedError

    def shares(self) -> list[str]:
        raise NotImplementedError

    # from SnapshotRules (history/bootstrap.py), which comes after this mixin
    baseline_claim: Callable[[str], tuple[dict[str, int], bytes] | None]

    # reports and frontiers --------------------------------------------------------------

    def history_members(self, share: str) -> list[str]:
        """The devices whose reports the frontiers of `share` wait for."""
        members = self.share_members(share)
        if members is not None and not members.open:
            return members.current()
        listed = self.devices()
        revoked = {d.device_id for d in listed if d.revoked}
        # this device, before a peer's record of it has arrived, is a member all the same
        known = {d.device_id for d in listed} | {self.device_id}
        return sorted(known - revoked)

    def stability_reports(self, share: str) -> dict[str, Report | None]:
        found: dict[str, Report | None] = {}
        after = None
        while page := self.store.scan(share, STABLE, "", after, 500):
            for device_id, siblings in page:
                found[device_id] = read_report(device_id, siblings)
            after = page[-1][0]
        return found

    def history_frontiers(self, share: str, keep_for_absent_ms: int) -> Frontiers:
        """S, P and the settled frontier, with the retired epochs they imply put back (reports
        leave out the epochs their writers dropped, see vectors.compressed)."""
        retirements = self._book(share).continued()
        reports = {
            device: None
            if report is None
            else _with_vectors(report, lambda v: vectors.implied(v, retirements))
            for device, report in self.stability_reports(share).items()
        }
        return frontiers(
            self.history_members(share), reports, self.now_ms(), keep_for_absent_ms
        )

    def own_report(self, share: str) -> Report | None:
        return read_report(self.device_id, self.store.record(share, STABLE, self.device_id) or [])

    def stability_op(self, share: str) -> Op:
        """This device's report of `share` (naming the reports it replaces, less the retired
        epochs this device dropped since: see vectors.compressed). While a member reads vectors
        as written (0.4.0), the report names every epoch in full instead: that member's frontiers
        would lack the epochs left out, and with them its folds and the end of its reports."""
        last = self.own_report(share)
        vector = self.summary_vector(share)
        retirements = self._book(share).continued()
        if self._literal_readers(share):
            vector = vectors.implied(vector, retirements)
        elif last is not None:
            last = _with_vectors(last, lambda v: vectors.compressed(v, retirements))
        value = report_value(vector, self.now_ms(), last, self.baseline_claim(share))
        return entries.put(STABLE, self.device_id, value)

    def _literal_readers(self, share: str) -> bool:
        """Whether another member's newest report of `share` comes from a release that reads
        vectors as written (0.4.0; one not heard from yet may be such a release too)."""
        reports = self.stability_reports(share)
        return any(
            (report := reports.get(member)) is None or not report.reads_implied
            for member in self.history_members(share)
            if member != self.device_id
        )

    def due_stability_op(self, share: str, policy: HistoryPolicy) -> Op | None:
        """This device's report of `share` if one is due (see stability.should_report)."""
        if not self.is_share_member(share, self.device_id):
            return None
        found = self.history_frontiers(share, policy.keep_for_absent_ms)
        due = should_report(
            self.own_report(share),
            self.summary_vector(share),
            self.unsettled_writes(share, found.settled),
            self.now_ms(),
            policy.interval_ms,
            policy.refresh_ms,
        )
        # a report names the baseline its device folded to, for snapshots to be vouched for
        # (history/snapshot.py): a fold makes one due, at most every interval
        last = self.own_report(share)
        claim = self.baseline_claim(share) if last is not None else None
        if last is not None and claim is not None and last.baseline != claim:
            due = due or self.now_ms() - last.at_ms >= policy.interval_ms
        return self.stability_op(share) if due else None

    def unsettled_writes(self, share: str, settled: Mapping[str, int]) -> bool:
        """Whether this device holds an entry beyond `settled` that is more than a report (the
        walk back from each head stops at the first one; reports come a few at a time)."""
        base, folded = self.store.baseline_frontier(share), self.store.folded_writes(share)
        for actor, seq in self.summary_vector(share).items():
            low = settled.get(actor, 0)
            if seq <= low:
                continue
            if folded.get(actor, 0) > low:
                return True
            for raw in self.store.entries_down(share, actor, seq, max(low, base.get(actor, 0))):
                if any(op.collection != STABLE for op in entries.decode(raw).ops):
                    return True
        return False

    def away_devices(self, policy: HistoryPolicy) -> tuple[list[Away], list[str]]:
        """Members of the shares this device is in that no report of any share has heard from
        for a while; and those never heard from at all (compaction waits for them)."""
        members: set[str] = set()
        heard: dict[str, int] = {}
        for share in self.shares():
            if not self.is_share_member(share, self.device_id):
                continue
            members.update(self.history_members(share))
            for device_id, report in self.stability_reports(share).items():
                if report is not None:
                    heard[device_id] = max(heard.get(device_id, 0), report.at_ms)
        others = members - {self.device_id}
        away = away_members(heard, others, policy, self.now_ms())
        return away, sorted(others - heard.keys())

    def folded_beyond(self, share: str, peer_vector: Mapping[str, int]) -> bool:
        """Whether a peer lacks entries this device folded away (each epoch's first entry
        stays in the log, so lacking only that one is no loss)."""
        folded = self.folded_frontier(share)
        peer = vectors.implied(peer_vector, self._book(share).continued())
        return any(seq > max(peer.get(actor, 0), 1) for actor, seq in folded.items())

    # compaction -------------------------------------------------------------------------

    def compact(
        self, share: str, keep_for_absent_ms: int, last_stable: Mapping[str, int] | None = None
    ) -> Compacted:
        """Fold the log up to the stable frontier and purge the tombstones no write can meet
        again; one SQLite transaction. `last_stable`: the frontier the caller saw last time;
        then a small fold waits until the frontier stops moving (see stability.worth_folding).
        Nothing while a snapshot of the share is being sent (`baseline_holds`)."""
        members = self.history_members(share)
        found = self.history_frontiers(share, keep_for_absent_ms)
        # Fold to the settled frontier, not S: it is a function of the members' newest reports
        # alone, so devices that hold the same reports hold the same baseline (what a snapshot's
        # digest rests on). A device alone folds nothing: no other member could vouch for a
        # snapshot of it, and the member added next needs all of it.
        frontier = found.settled if len(members) > 1 else {}
        if share in self.baseline_holds:  # the next round folds
            return Compacted(0, 0, self.store.baseline_frontier(share), frontier)
        base = self.folded_frontier(share)
        held = self.held_vector(share)
        # never past what this device holds (it may be away from the frontier itself)
        target = {a: min(s, held.get(a, 0)) for a, s in vectors.merge(base, frontier).items()}
        target = {a: s for a, s in target.items() if s > 0}
        retirements = self._book(share).continued()
        if last_stable is not None and not worth_folding(
            base, target, vectors.implied(last_stable, retirements)
        ):
            target = base
        written = self.store.folded_writes(share)
        with self.store.transaction():
            reached = dict(base)
            folded = self._fold(share, reached, target, written) if target != base else 0
            purged = self._purge(share, found.purge)
            # retired epochs folded to their retirement leave B, W and the heads: the epoch
            # that retired them implies them (see vectors.compressed)
            kept = vectors.compressed(reached, retirements)
            written = {actor: seq for actor, seq in written.items() if actor in kept}
            self.store.set_baseline_frontier(share, kept, written)
            self.drop_retired_heads(share, reached)
        if folded:
            self.store.reclaim_free_pages(RECLAIM_AT_LEAST)
        return Compacted(folded, purged, kept, vectors.compressed(frontier, retirements))

    def _fold(
        self,
        share: str,
        reached: dict[str, int],
        target: Mapping[str, int],
        written: dict[str, int],
    ) -> int:
        """Apply the entries in (reached, target] to the baseline and drop them from the log,
        at most about MAX_FOLD of them (the next call goes on), raising `reached` to what was
        folded: a prefix in apply order of a causally closed set is causally closed too.
        `written` is raised to the newest of them that is more than a report."""
        base = dict(reached)
        folded = 0
        cursor = 0
        while folded < MAX_FOLD and (rows := self.store.entries_after(share, cursor, _PAGE)):
            cursor = rows[-1][0]
            page = [
                (lseq, entries.decode(raw))
                for lseq, actor, seq, raw, _ in rows
                if base.get(actor, 0) < seq <= target.get(actor, 0)
            ]
            if not page:
                continue
            keys = {(op.collection, op.key) for _, e in page for op in e.ops}
            state = self.store.load_baseline(share, keys)
            book = self._book(share)
            for _, e in page:
                reached[e.actor] = max(reached.get(e.actor, 0), e.seq)
                if any(op.collection != STABLE for op in e.ops):
                    written[e.actor] = max(written.get(e.actor, 0), e.seq)
                continues = book.continues(e.actor)
                for op in e.ops:
                    record_key = (op.collection, op.key)
                    before = state.get(record_key, [])
                    seen = None
                    if any(s.deleted for s in before):
                        seen = self.writer_saw(share, e, state, self.store.load_baseline, continues)
                    state[record_key] = merge.apply_op(before, e, op, continues, seen)
            self.store.save_baseline(share, state)
            self.store.remove_entries([lseq for lseq, e in page if e.seq > 1])
            folded += len(page)
        return folded

    def _purge(self, share: str, purge: Mapping[str, int]) -> int:
        """Drop records that are deletes within `purge` and nothing else, both in the baseline
        and live. A record the log after B changed keeps its baseline row until that is folded
        too: a write concurrent with the deletes may be in the log already (it cannot arrive
        any more), and the baseline must stay the state at B. Siblings are compared as sets:
        a row lists them in the order its writes came, which for the baseline is the order the
        folds took them, not the order they were applied live."""
        if not purge:
            return 0
        stable = {
            record_key: siblings
            for record_key, siblings in self.store.baseline_tombstones(share)
            if all(within(purge, t.dot) for t in siblings)
        }
        if not stable:
            return 0
        live = self.store.load_records(share, stable)
        gone = [k for k, siblings in stable.items() if set(live.get(k, ())) == set(siblings)]
        self.store.remove_baseline(share, gone)
        self.store.remove_records(share, gone)
        return len(gone)

    # the writer's own reports -----------------------------------------------------------

    def writer_saw(
        self,
        share: str,
        written: LogEntry,
        pending: Mapping[RecordKey, list[Sibling]],
        load: Callable[[str, Iterable[RecordKey]], Mapping[RecordKey, list[Sibling]]],
        continues: Mapping[str, int] | None,
    ) -> Callable[[Sibling], bool]:
        """Whether the writer of `written` held a sibling when writing it, by the writer's own
        reports in its causal past (its newest report or one it names): a write
        by a device that purged a tombstone names nothing of it, yet comes after it.
        `pending`: records as changed so far by the caller, else read by `load`; `continues`:
        what the writer's epoch took over, as the caller passes it to `merge.apply_op` (the
        book may not know an epoch whose first entry is in the batch being applied)."""
        device = vectors.device_of(written.actor)
        record_key = (STABLE, device)

        def saw(sibling: Sibling) -> bool:
            siblings = pending.get(record_key)
            if siblings is None:
                siblings = load(share, [record_key]).get(record_key, [])
            report = read_report(device, siblings)
            candidates = [] if report is None else [report, *report.earlier]
            retirements = self._book(share).continued()
            return any(
                within(vectors.implied(c.vector, retirements), sibling.dot)
                and self._in_past(share, written, c.dot, continues)
                for c in candidates
            )

        return saw

    def _in_past(
        self,
        share: str,
        written: LogEntry,
        dot: tuple[str, int],
        continues: Mapping[str, int] | None,
    ) -> bool:
        actor, seq = dot
        if actor == written.actor:
            return seq < written.seq
        book, todo, visited = self._book(share), [written.actor], {written.actor}
        while todo:
            epoch = todo.pop()
            taken = continues if epoch == written.actor else book.continues(epoch)
            for prior, upto in (taken or {}).items():
                if prior == actor and seq <= upto:
                    return True
                if prior not in visited:
                    visited.add(prior)
                    todo.append(prior)
        return False


def _with_vectors(report: Report, change: Callable[[dict[str, int]], dict[str, int]]) -> Report:
    """`report`, and the earlier ones it names, with `change` made to each vector."""
    return replace(
        report,
        vector=change(report.vector),
        previous=None if report.previous is None else _with_vectors(report.previous, change),
        older=tuple(_with_vectors(older, change) for older in report.older),
    )
