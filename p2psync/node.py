"""The replica as seen from trio: one database thread, group commit, and change notification.

Every replica call runs on one thread owned here, one at a time, so trio never blocks on SQLite
and the replica is never used from two threads at once. The thread takes everything queued at
once: local transactions from any number of clients commit together (one fsync, one signature),
then the calls run back to back, and each lot is answered in one wake-up of trio (a thread hop
costs tens of microseconds here; trio.to_thread paid one per call, with a trip through the event
loop between calls). A short call whose work is bounded and never waits for the disk (a lone
received entry) runs on trio's own thread instead while both threads are idle
(`call_here`): there the two hops and the GIL changing hands cost more than the call. So does a
lone small local write when nothing else waits and durable commits are quick on this disk: the
loop waits for its fsync instead (`_commit_here`). Both defer SQLite's automatic checkpoint,
which the database thread runs for them.

Whoever waits for "something new was applied" — peer sessions, watchers — waits on its change
notifier (`change_notifier.py`) instead of polling; each write tells it what it stored, and
while watch streams follow changes, what it changed (read in the write's own job,
`read_changes`). Records that went into conflict or out of it are published on the daemon's
event bus (`events`) as they commit. This module holds no protocol logic.
"""

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any, TypeVar

import outcome
import trio

from .change_notifier import (
    KEPT_CHANGES_BYTES,
    KEPT_CHANGES_ENTRIES,
    ChangeNotifier,
    Stored,
    kept_commits,
)
from .entry import Op
from .events import EventBus
from .membership import DEVICES
from .merge import Precondition
from .replica import Change, Commit, Replica
from .schemas.manifest import SCHEMA
from .shared_entries import shared_entries
from .shares.members import MEMBERS
from .store import ConflictFlip
from .vectors import device_of

T = TypeVar("T")
MAX_GROUP_TRANSACTIONS = 512
MAX_GROUP_OPS = 20_000
# commits made by calls run here before the database thread checkpoints the WAL for them: these
# calls are small (a few pages each), so the WAL stays near SQLite's own 1,000-page trigger
CHECKPOINT_AFTER_COMMITS = 64
# A lone local write is committed on the event loop's thread (see `_commit_here`) only while
# durable commits take less than this, on average: the loop waits for the fsync.
HERE_COMMIT_MAX_SECONDS = 0.002
HERE_COMMIT_OPS = 16  # a lone write of at most this many ops (a put, a small transaction)
# ... and not while concurrent writers are about: for this long after the database thread got
# more than one transaction at once. Their requests keep coming; a commit on the loop would make
# them wait for its fsync, where the thread's commit runs while the loop reads them.
HERE_COMMIT_AFTER_CONCURRENT_SECONDS = 1.0


class Transaction:
    """A local transaction queued for group commit. `done` is set once it is durable (`commit`)
    or refused (`error`). Its `preconditions` are checked on the database thread just before it
    commits (compare-and-set); one that fails refuses this transaction alone. So is the share's
    schema manifest when `checked` (an app's write; not what the daemon writes itself)."""

    __slots__ = ("checked", "commit", "done", "error", "ops", "preconditions", "share")

    def __init__(
        self,
        share: str,
        ops: Sequence[Op],
        preconditions: Sequence[Precondition] = (),
        checked: bool = False,
    ) -> None:
        self.share = share
        self.ops = ops
        self.preconditions = preconditions
        self.checked = checked
        self.done = trio.Event()
        self.commit: Commit | None = None
        self.error: Exception | None = None

    async def result(self) -> Commit:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.commit is not None
        return self.commit


class _Call:
    __slots__ = ("args", "function", "task")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.task = trio.lowlevel.current_task()


_STOP = object()  # queued last when the node stops
_CHECKPOINT = object()  # wakes the database thread to checkpoint for calls run here


class Node:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.changes = ChangeNotifier(replica.last_position())
        self.membership_changed = ChangeNotifier(0)
        self.events = EventBus()  # the daemon's: conflicts from here, peers and more from it
        # a device's name, for events (the daemon knows the members)
        self.device_name: Callable[[str], str | None] = lambda device_id: None
        # Jobs queue up from the start; the database thread runs them once run_group_commit runs.
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        # Transactions submitted since the last hand-over to the database thread: handed over
        # together, once the tasks that run alongside the submitter (say every connection whose
        # request came in the same wake-up) had their turn, in one job and one wake-up of the
        # thread; otherwise the first woke the thread, which took the GIL to commit that one
        # alone while the loop still held the others.
        self._pending: list[Transaction] = []
        # open watch streams: while there are any, applies and commits keep their changes for
        # them (read on the database thread with the write, instead of a hop per watcher)
        self.watchers = 0
        self._pending_arrived = trio.Event()
        # held by the database thread while it runs a lot of jobs, and by `call_here`
        self._turn = threading.Lock()
        # transactions handed to the database thread whose `_finish` has not run yet (read and
        # changed on trio's thread only): none, and a new one may commit here without passing
        # one submitted before it
        self._unfinished = 0
        # how long the commit of a lone small write takes, fsync included: a moving average
        # over both threads (so it comes down again once the thread's commits are quick)
        self._commit_seconds = 0.0
        self._concurrent_until = -math.inf  # trio's clock
        self._started = False
        self._stopping = False

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a replica method on the database thread. Once queued it runs even if the caller
        is cancelled meanwhile (as trio.to_thread does once started); the cancellation arrives
        after it."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refuse_if_stopping()
        self._jobs.put(_Call(function, args))
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    async def call_here(self, function: Callable[..., T], *args: Any) -> T:
        """Run a replica method on this (trio's) thread if both threads are idle, else as `call`.
        Only for methods whose work is small and bounded and that do not fsync: the event loop
        waits for them. Under load the database thread is worth its hops: SQLite and signature
        checks run there without the GIL, beside the loop's own work. Conflicts they flip are
        published as the thread's are."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if (
            not self._started
            or self._stopping
            or trio.lowlevel.current_statistics().tasks_runnable
            or not self._turn.acquire(blocking=False)
        ):
            return await self.call(function, *args)
        try:
            store = self.replica.store
            with store.checkpoints_deferred():
                result = function(*args)
            conflicts = self._flipped_conflicts()
            if store.deferred_commits >= CHECKPOINT_AFTER_COMMITS:
                self._jobs.put(_CHECKPOINT)
        finally:
            self._turn.release()
        if conflicts is not None:
            self._publish_conflicts(*conflicts)
        return result

    def submit(
        self,
        share: str,
        ops: Sequence[Op],
        preconditions: Sequence[Precondition] = (),
        checked: bool = False,
    ) -> Transaction:
        """Queue one local transaction. Transactions commit in the order they were submitted
        (a `call` made before one is done may run before it: wait for `done` to read it);
        `checked`: the share's schema manifest may refuse it (see Transaction)."""
        self._refuse_if_stopping()
        transaction = Transaction(share, ops, preconditions, checked)
        self._pending.append(transaction)
        self._pending_arrived.set()
        return transaction

    async def commit(self, share: str, ops: Sequence[Op], checked: bool = False) -> Commit:
        """One local transaction, durable when this returns. A caller cancelled with the node
        (a daemon stopping) gets the cancellation here, as from `call`, not the refusal."""
        await trio.lowlevel.checkpoint_if_cancelled()
        return await self.submit(share, ops, checked=checked).result()

    async def applied(
        self, last_position: int, touched_devices: bool, stored: Stored | None = None
    ) -> None:
        """Tell waiters that entries up to `last_position` are in the store; `stored`: what
        an apply stored (kept unless it changed membership, after which senders read the log)."""
        self._advance(last_position, touched_devices, stored)

    async def run_group_commit(self) -> None:
        """Run the database thread (every replica call, group commit) until cancelled; jobs
        queued before it starts wait for it, jobs queued when it stops still run."""
        if self._started:
            raise RuntimeError("this node's database thread is already running")
        self._started = True
        token = trio.lowlevel.current_trio_token()
        thread = threading.Thread(
            target=self._serve_jobs, args=(token,), name="p2psync-database", daemon=True
        )
        thread.start()
        try:
            while True:
                await self._pending_arrived.wait()
                if not self._commit_here():
                    self._hand_over()
        finally:
            self._stopping = True
            self._hand_over()
            self._jobs.put(_STOP)  # runs after every job already queued, so no caller is left
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)

    def _hand_over(self) -> None:
        """Queue the pending transactions for the database thread, in submission order."""
        self._pending_arrived = trio.Event()
        if self._pending:
            self._jobs.put(self._pending)
            self._unfinished += len(self._pending)
            if len(self._pending) > 1:
                self._concurrent_until = trio.current_time() + HERE_COMMIT_AFTER_CONCURRENT_SECONDS
            self._pending = []

    def _commit_here(self) -> bool:
        """Commit a lone pending transaction on this (trio's) thread when nothing else waits:
        no earlier transaction unfinished, no other task ready, no concurrent writers of late,
        the database thread idle, and durable commits quick on this disk. Two hops to the
        database thread and back cost a lone write more CPU than its commit; under load, or on
        a disk whose fsync takes long, the thread commits as before. False: nothing done."""
        pending = self._pending
        if (
            not _lone_and_small(pending)
            or self._unfinished
            or self._stopping
            or self._commit_seconds > HERE_COMMIT_MAX_SECONDS
            or trio.current_time() < self._concurrent_until
            or trio.lowlevel.current_statistics().tasks_runnable
            or not self._turn.acquire(blocking=False)
        ):
            return False
        self._pending_arrived = trio.Event()
        self._pending = []
        try:
            store = self.replica.store
            with store.checkpoints_deferred():
                self._timed_commit(pending)
                changes = self._changes_of(pending)
            conflicts = self._flipped_conflicts()
            if store.deferred_commits >= CHECKPOINT_AFTER_COMMITS:
                self._jobs.put(_CHECKPOINT)
        finally:
            self._turn.release()
        self._finish(pending, changes)
        if conflicts is not None:
            self._publish_conflicts(*conflicts)
        return True

    def _timed_commit(self, group: list[Transaction]) -> None:
        """Commit, and average how long lone small writes take, on either thread."""
        if not _lone_and_small(group):
            self._commit_group(group)
            return
        started = time.perf_counter()
        self._commit_group(group)
        self._commit_seconds += (time.perf_counter() - started - self._commit_seconds) / 8

    def _refuse_if_stopping(self) -> None:
        if self._stopping:
            raise RuntimeError("the database thread has stopped")

    def _advance(
        self, last_position: int, touched_devices: bool, stored: Stored | None = None
    ) -> None:
        self.changes.advance(last_position, None if touched_devices else stored)
        if touched_devices:
            self.membership_changed.advance(self.membership_changed.position + 1)

    # on the database thread -----------------------------------------------------------------

    def _serve_jobs(self, token: trio.lowlevel.TrioToken) -> None:
        while True:
            jobs = [self._jobs.get()]
            while True:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            with self._turn:
                self._serve(jobs, token)
            if _STOP in jobs:
                return

    def _serve(self, jobs: list[object], token: trio.lowlevel.TrioToken) -> None:
        """One lot: the transactions commit first, together (their clients wait for an fsync; a
        read does not), then the calls run back to back and are answered together; then the
        checkpoint that calls run here deferred, if due."""
        transactions = [t for job in jobs if isinstance(job, list) for t in job]
        for group in _groups(transactions):
            self._timed_commit(group)
            token.run_sync_soon(self._finish_handed, group, self._changes_of(group))
        calls = [job for job in jobs if isinstance(job, _Call)]
        results = [(c.task, outcome.capture(c.function, *c.args)) for c in calls]
        conflicts = self._flipped_conflicts()  # after the calls too: an apply is one
        if conflicts is not None:
            token.run_sync_soon(self._publish_conflicts, *conflicts)
        if results:
            token.run_sync_soon(_reschedule_all, results)
        if self.replica.store.deferred_commits >= CHECKPOINT_AFTER_COMMITS:
            self.replica.store.checkpoint()

    def _flipped_conflicts(self) -> tuple[list[ConflictFlip], list[list[str]], int] | None:
        """The conflict flips committed since the last call, with their writers and the store's
        position, for `_publish_conflicts`; None when there were none."""
        flips = self.replica.store.take_conflict_flips()
        if not flips:
            return None
        return flips, [self._writers(flip) for flip in flips], self.replica.last_position()

    def _writers(self, flip: ConflictFlip) -> list[str]:
        """The devices whose writes a record's versions are, after a flip (with the replica's
        turn; flips are rare, one read each)."""
        share, collection, key, _ = flip
        view = self.replica.get(share, collection, key)
        return sorted({device_of(s.actor) for s in view.siblings}) if view else []

    def _changes_of(self, group: list[Transaction]) -> tuple[Change, ...] | None:
        """What a committed group changed, for watchers (None: nobody watches; see
        read_changes)."""
        positions = [t.commit.lseq for t in group if t.commit is not None]
        if not self.watchers or not positions:
            return None
        return read_changes(self.replica, min(positions) - 1, max(positions))

    def _commit_group(self, group: list[Transaction]) -> None:
        """Commit a group, each transaction with a precondition only if it holds. A condition on
        a record an earlier transaction of the group writes is checked after that one is
        committed: what it compares with must be on disk. So is a manifest a checked write
        follows in the group."""
        share = group[0].share
        ready: list[Transaction] = []
        # the keys `ready` writes, gathered only once a precondition asks: a batch of a thousand
        # puts with none would spend a tenth of its commit on this set
        written: set[tuple[str, str]] = set()
        gathered = 0  # how many of `ready` are in `written`
        manifest_written = False  # only the daemon's own (unchecked) writes touch `_schema`
        for transaction in group:
            if transaction.preconditions or transaction.checked:
                preconditions = transaction.preconditions
                if preconditions:
                    for earlier in ready[gathered:]:
                        written.update((op.collection, op.key) for op in earlier.ops)
                    gathered = len(ready)
                waits = transaction.checked and manifest_written
                if waits or any((p.collection, p.key) in written for p in preconditions):
                    self._commit_run(share, ready)
                    ready, written, gathered, manifest_written = [], set(), 0, False
                try:
                    if transaction.checked:
                        self.replica.check_values(share, transaction.ops)
                    self.replica.check_preconditions(share, preconditions)
                except Exception as exc:  # VersionConflict, InvalidValue, a share not here
                    transaction.error = exc
                    continue
            ready.append(transaction)
            if not transaction.checked:
                manifest_written |= any(op.collection == SCHEMA for op in transaction.ops)
        self._commit_run(share, ready)

    def _commit_run(self, share: str, group: list[Transaction]) -> None:
        """One commit of `group`, transactions sharing entries where they may
        (shared_entries.py); if it fails, each transaction is tried in an entry of its own, so
        that one failing transaction fails alone."""
        if not group:
            return
        entries, owners = shared_entries([t.ops for t in group])
        try:
            commits = self.replica.commit_many(share, entries)
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            for transaction in group:
                try:
                    transaction.commit = self.replica.commit(share, transaction.ops)
                except Exception as alone:
                    transaction.error = alone
            return
        for transaction, owner in zip(group, owners, strict=True):
            transaction.commit = commits[owner]

    # back on the trio thread -----------------------------------------------------------------

    def _publish_conflicts(
        self, flips: list[ConflictFlip], writers: list[list[str]], position: int
    ) -> None:
        """`position`: the store's last position once they were committed (their changes are
        at or before it)."""
        for (share, collection, key, conflict), devices in zip(flips, writers, strict=True):
            self.events.publish(
                {
                    "event": "conflict",
                    "share": share,
                    "collection": collection,
                    "key": key,
                    "state": "appeared" if conflict else "resolved",
                    "position": position,
                    "devices": [{"device": d, "name": self.device_name(d)} for d in devices],
                }
            )

    def _finish_handed(
        self, group: list[Transaction], changes: tuple[Change, ...] | None = None
    ) -> None:
        self._unfinished -= len(group)
        self._finish(group, changes)

    def _finish(self, group: list[Transaction], changes: tuple[Change, ...] | None = None) -> None:
        for transaction in group:
            transaction.done.set()
        # transactions that shared an entry share its commit
        commits = list({t.commit.lseq: t.commit for t in group if t.commit is not None}.values())
        if commits:
            touched = any(
                op.collection in (DEVICES, MEMBERS)
                for t in group
                if t.commit is not None
                for op in t.ops
            )
            self._advance(max(c.lseq for c in commits), touched, kept_commits(commits, changes))


def read_changes(replica: Replica, after: int, last: int) -> tuple[Change, ...] | None:
    """On the database thread, right after a write: the changes at the positions after `after`
    up to `last`, kept for watchers; None beyond a page of entries or `KEPT_CHANGES_BYTES` of
    values (the notifier keeps 64 writes: this bounds their memory)."""
    if last - after > KEPT_CHANGES_ENTRIES:
        return None
    changes = [c for c in replica.changes(after, last - after) if c.lseq <= last]
    if sum(map(_size, changes)) > KEPT_CHANGES_BYTES:
        return None
    return tuple(changes) if {c.lseq for c in changes} == set(range(after + 1, last + 1)) else None


def _size(change: Change) -> int:
    op = change.op
    return len(op.key) + len(op.value or b"") + len(op.meta or b"") + len(change.previous or b"")


def _lone_and_small(transactions: list[Transaction]) -> bool:
    return len(transactions) == 1 and len(transactions[0].ops) <= HERE_COMMIT_OPS


def _groups(transactions: list[Transaction]) -> list[list[Transaction]]:
    """Runs of one share in submission order, each small enough for one commit."""
    groups: list[list[Transaction]] = []
    for _, run in groupby(transactions, key=lambda t: t.share):
        group: list[Transaction] = []
        ops_count = 0
        for transaction in run:
            if group and (
                len(group) >= MAX_GROUP_TRANSACTIONS
                or ops_count + len(transaction.ops) > MAX_GROUP_OPS
            ):
                groups.append(group)
                group, ops_count = [], 0
            group.append(transaction)
            ops_count += len(transaction.ops)
        groups.append(group)
    return groups


def _reschedule_all(results: list[tuple[trio.lowlevel.Task, outcome.Outcome[Any]]]) -> None:
    for task, result in results:
        trio.lowlevel.reschedule(task, result)
