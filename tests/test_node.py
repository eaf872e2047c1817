"""Node: the database thread, group commit and what writes tell the change notifier, over a
real Replica on a temporary SQLite file. The database thread is held inside a call (a gate)
where a test needs transactions to queue up, so batching is deterministic without sleeps."""

import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from p2psync import entry, identity, node
from p2psync.change_notifier import (
    KEPT_CHANGES_BYTES,
    KEPT_CHANGES_ENTRIES,
    Stored,
    StoredSince,
)
from p2psync.entry import Op
from p2psync.merge import Precondition
from p2psync.node import Node, Transaction, read_changes
from p2psync.replica import Commit, Replica, ReplicaError, VersionConflict
from p2psync.shares import DEFAULT_SHARE
from p2psync.shares.rules import ShareError

TIMEOUT = 10


def put(key: str, value: Any = 1) -> list[Op]:
    return [entry.put("c", key, msgpack.packb(value))]


class Gate:
    """Holds the database thread inside a call until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def _hold(self) -> None:
        self.entered.set()
        self.opened.wait(TIMEOUT)

    async def close(self, on: Node, nursery: trio.Nursery) -> None:
        nursery.start_soon(on.call, self._hold)
        assert await trio.to_thread.run_sync(self.entered.wait, TIMEOUT)

    def open(self) -> None:
        self.opened.set()


class Running:
    """A node over a fresh replica whose commit_many calls are recorded."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.node = Node(replica)
        self.batches: list[list[int]] = []  # ops per transaction, one list per commit_many
        self.threads: list[int] = []  # the thread of each commit_many
        real_commit_many = replica.commit_many

        def recorded(share: str, transactions: Sequence[Sequence[Op]]) -> list[Commit]:
            self.batches.append([len(ops) for ops in transactions])
            self.threads.append(threading.get_ident())
            return real_commit_many(share, transactions)

        replica.commit_many = recorded  # type: ignore[method-assign]

    async def gated(self, nursery: trio.Nursery) -> Gate:
        gate = Gate()
        await gate.close(self.node, nursery)
        return gate


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> Running:
    replica = Replica.open(tmp_path / "replica.db", identity.DeviceIdentity.generate())
    found = Running(replica)
    nursery.start_soon(found.node.run_group_commit)
    return found


async def thread_idle(node_: Node) -> None:
    """Until the database thread finished its lot: it holds its turn a moment after answering,
    and on a loaded machine the answer is read before that."""

    def take_turn() -> None:
        with node_._turn:
            pass

    await trio.to_thread.run_sync(take_turn)


async def results(transactions: list[Transaction]) -> list[Commit | Exception]:
    found: list[Commit | Exception] = []
    with trio.fail_after(TIMEOUT):
        for transaction in transactions:
            try:
                found.append(await transaction.result())
            except Exception as exc:
                found.append(exc)
    return found


# group commit -----------------------------------------------------------------------------


async def test_transactions_queued_together_commit_in_one_batch_in_order(
    running: Running, nursery: trio.Nursery
) -> None:
    gate = await running.gated(nursery)
    # one record each: no two of them may share an entry, so each keeps its own, in order
    queued = [running.node.submit(DEFAULT_SHARE, put("k", i)) for i in range(50)]
    gate.open()
    commits = await results(queued)
    assert running.batches == [[1] * 50]
    assert all(isinstance(c, Commit) for c in commits)
    assert [c.seq for c in commits] == list(range(1, 51))  # type: ignore[union-attr]
    positions = [c.lseq for c in commits]  # type: ignore[union-attr]
    assert positions == sorted(positions)
    assert running.node.changes.position == positions[-1]
    view = await running.node.call(running.replica.get, DEFAULT_SHARE, "c", "k")
    assert view is not None and msgpack.unpackb(view.winner.value) == 49
    assert view.winner.version == commits[-1].version  # type: ignore[union-attr]


async def test_transactions_on_different_records_share_an_entry_and_keep_their_versions(
    running: Running, nursery: trio.Nursery
) -> None:
    gate = await running.gated(nursery)
    groups = [put("a", 1), put("b", 2) + put("c", 3), put("a", 4), put("d", 5), put("e", 6)]
    queued = [running.node.submit(DEFAULT_SHARE, ops) for ops in groups]
    gate.open()
    first, second, third, fourth, fifth = await results(queued)
    assert running.batches == [[3, 3]], "a's second write starts the second entry"
    assert first == second and third == fourth == fifth
    assert isinstance(first, Commit) and isinstance(third, Commit)
    assert (first.seq, third.seq) == (1, 2)
    assert running.node.changes.position == third.lseq == first.lseq + 1
    written = [(second, "b", 2), (second, "c", 3), (third, "a", 4), (fourth, "d", 5)]
    for commit, key, value in [*written, (fifth, "e", 6)]:
        view = await running.node.call(running.replica.get, DEFAULT_SHARE, "c", key)
        assert view is not None and msgpack.unpackb(view.winner.value) == value
        assert view.winner.version == commit.version  # type: ignore[union-attr]


async def test_transactions_submitted_in_one_scheduler_pass_commit_together_ungated(
    running: Running,
) -> None:
    """Connections whose requests came in the same wake-up submit in one pass of the scheduler,
    each reading its socket in between (which lets the database thread take the GIL): the
    thread gets them in one hand-over, not the first alone (with no gate held)."""
    queued: list[Transaction] = []
    near, far = socket.socketpair()

    async def submit(number: int) -> None:
        # one record: they cannot share entries, so the batch shows how they were handed over
        queued.append(running.node.submit(DEFAULT_SHARE, put("k", number)))
        near.send(b"x")  # what a connection's read does: a system call, without the GIL
        far.recv(1)

    with near, far:
        async with trio.open_nursery() as submitters:
            for number in range(20):
                submitters.start_soon(submit, number)
    commits = await results(queued)
    assert running.batches == [[1] * 20]
    assert [c.seq for c in commits] == list(range(1, 21))  # type: ignore[union-attr]


async def test_many_concurrent_committers_need_fewer_commits_than_transactions(
    running: Running,
) -> None:
    commits: dict[str, Commit] = {}

    async def commit(key: str) -> None:
        commits[key] = await running.node.commit(DEFAULT_SHARE, put(key))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as writers:
            for i in range(200):
                writers.start_soon(commit, f"k{i}")
    assert len(commits) == 200
    assert len(running.batches) < 200
    assert sum(map(len, running.batches)) == len({c.lseq for c in commits.values()})
    # many share an entry, and each one's version still names what it wrote
    for key, written in commits.items():
        view = await running.node.call(running.replica.get, DEFAULT_SHARE, "c", key)
        assert view is not None and view.winner.version == written.version


async def test_a_bad_transaction_fails_alone(running: Running, nursery: trio.Nursery) -> None:
    too_big = [entry.put("c", "big", b"x" * (entry.MAX_ENTRY_BYTES + 1))]
    gate = await running.gated(nursery)
    queued = [
        running.node.submit(DEFAULT_SHARE, put("before")),
        running.node.submit(DEFAULT_SHARE, []),
        running.node.submit(DEFAULT_SHARE, too_big),
        running.node.submit(DEFAULT_SHARE, put("after")),
    ]
    gate.open()
    before, empty, big, after = await results(queued)
    assert isinstance(before, Commit) and isinstance(after, Commit)
    assert isinstance(empty, ReplicaError) and "at least one op" in str(empty)
    assert isinstance(big, ReplicaError) and "limit" in str(big)
    assert after.seq == before.seq + 1  # the failed ones left no gap in the log
    assert running.batches == [[1, 0, 1, 1], [1], [0], [1], [1]]  # together, then one by one
    assert running.node.changes.position == after.lseq
    for key in ("before", "after"):
        assert await running.node.call(running.replica.get, DEFAULT_SHARE, "c", key) is not None


async def test_commit_raises_the_replica_error_of_its_transaction(running: Running) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ReplicaError):
        await running.node.commit(DEFAULT_SHARE, [])
    assert running.node.changes.position == 0


async def test_groups_respect_the_size_limits_and_the_order_of_shares(
    running: Running, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node, "MAX_GROUP_TRANSACTIONS", 3)
    monkeypatch.setattr(node, "MAX_GROUP_OPS", 3)
    await running.node.commit("photos", running.replica.share_create_ops("photos"))
    running.batches.clear()
    gate = await running.gated(nursery)
    shares_and_ops = [
        ("default", put("a")),
        ("default", put("b")),
        ("default", put("c")),
        ("default", put("d")),  # a fourth transaction: a new group
        ("default", put("e") + put("f") + put("g")),  # would pass three ops: a new group
        ("photos", put("p")),  # another share: a new group, committed after the ones before
        ("default", put("h")),
    ]
    queued = [running.node.submit(share, ops) for share, ops in shares_and_ops]
    gate.open()
    commits = await results(queued)
    assert running.batches == [[3], [1], [3], [1], [1]]  # a, b and c share an entry
    positions = [c.lseq for c in commits if isinstance(c, Commit)]
    assert positions == sorted(positions) and len(positions) == len(queued)


async def test_a_precondition_is_checked_against_what_the_group_wrote_before_it(
    running: Running, nursery: trio.Nursery
) -> None:
    first = await running.node.commit(DEFAULT_SHARE, put("k", 0))
    gate = await running.gated(nursery)
    running.batches.clear()

    def if_at(version: str, key: str = "k") -> list[Precondition]:
        return [Precondition("c", key, version)]

    queued = [
        running.node.submit(DEFAULT_SHARE, put("other")),
        # two writers read version `first`: the one queued first wins, the other is refused
        running.node.submit(DEFAULT_SHARE, put("k", 1), if_at(first.version)),
        running.node.submit(DEFAULT_SHARE, put("k", 2), if_at(first.version)),
        running.node.submit(DEFAULT_SHARE, put("new", 3), if_at("", "new")),  # did not exist
        running.node.submit(DEFAULT_SHARE, put("new", 4), if_at("", "new")),  # it does now
        running.node.submit(DEFAULT_SHARE, put("after")),
        running.node.submit("no-such-share", put("x"), if_at("")),
    ]
    gate.open()
    other, won, lost, created, late, after, unknown = await results(queued)
    assert all(isinstance(c, Commit) for c in (other, won, created, after))
    assert isinstance(lost, VersionConflict) and repr(won.version) in str(lost)  # type: ignore[union-attr]
    assert isinstance(late, VersionConflict) and "exists" in str(late)
    assert isinstance(unknown, ShareError) and unknown.code == "not_found"
    # each condition on a key written earlier in the group was checked once that was on disk;
    # the refused transactions failed alone and took nothing else with them (`other` and `won`
    # share an entry)
    assert running.batches == [[2], [1], [1]]
    view = await running.node.call(running.replica.get, DEFAULT_SHARE, "c", "k")
    assert view is not None and msgpack.unpackb(view.winner.value) == 1
    assert view.winner.version == won.version  # type: ignore[union-attr]


async def test_conflicts_appearing_and_going_are_published_once_committed(
    running: Running, tmp_path: Path
) -> None:
    other = Replica.open(tmp_path / "other.db", identity.DeviceIdentity.generate())
    node = running.node
    with node.events.subscribe(10) as events:
        with trio.fail_after(TIMEOUT):
            await node.commit(
                DEFAULT_SHARE, [running.replica.device_op(other.identity.cert_pem, "o")]
            )
            await node.commit(DEFAULT_SHARE, put("x", "ours"))
            other.commit(DEFAULT_SHARE, put("x", "theirs"))
            items, _ = other.entries_after(DEFAULT_SHARE, 0, {}, max_bytes=1 << 20)
            applied = await node.call(running.replica.apply, DEFAULT_SHARE, items)
            await events.wait()
        [appeared] = events.take()
        writers = sorted([running.replica.device_id, other.device_id])
        assert appeared == {
            "event": "conflict",
            "share": DEFAULT_SHARE,
            "collection": "c",
            "key": "x",
            "state": "appeared",
            "position": applied.position,
            # names come from the daemon (node.device_name), which this node runs without
            "devices": [{"device": device, "name": None} for device in writers],
        }
        with trio.fail_after(TIMEOUT):
            resolved = await node.commit(DEFAULT_SHARE, put("x", "both"))
            await events.wait()
        assert [(e["state"], e["position"]) for e in events.take()] == [("resolved", resolved.lseq)]


async def test_devices_written_locally_announce_a_membership_change(running: Running) -> None:
    other = identity.DeviceIdentity.generate()
    seen = running.node.membership_changed.position
    with trio.fail_after(TIMEOUT):
        await running.node.commit(DEFAULT_SHARE, put("not-a-device"))
        assert running.node.membership_changed.position == seen
        await running.node.commit(
            DEFAULT_SHARE, [running.replica.device_op(other.cert_pem, "other")]
        )
    assert running.node.membership_changed.position > seen


# calls ------------------------------------------------------------------------------------


async def test_calls_return_values_and_raise_errors_of_the_database_thread(
    running: Running,
) -> None:
    def refuse() -> None:
        raise LookupError("no such thing")

    with trio.fail_after(TIMEOUT):
        caller_thread = threading.get_ident()
        assert await running.node.call(threading.get_ident) != caller_thread
        assert await running.node.call(pow, 2, 10) == 1024
        with pytest.raises(LookupError, match="no such thing"):
            await running.node.call(refuse)


async def test_a_queued_call_runs_to_its_end_even_when_its_caller_is_cancelled(
    running: Running, nursery: trio.Nursery
) -> None:
    ran: list[str] = []
    returned: list[Any] = []
    went_on: list[bool] = []
    scope = trio.CancelScope()

    async def caller() -> None:
        with scope:
            returned.append(await running.node.call(ran.append, "ran"))
            await trio.lowlevel.checkpoint()  # where the cancellation arrives
            went_on.append(True)

    gate = await running.gated(nursery)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as callers:
            callers.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert ran == []  # still waiting for its turn, not abandoned
            gate.open()
    assert ran == ["ran"] and returned == [None]
    assert scope.cancelled_caught and went_on == []


async def test_a_short_call_runs_on_trios_thread_while_the_database_thread_is_idle(
    running: Running, nursery: trio.Nursery
) -> None:
    trio_thread = threading.get_ident()
    found: list[int] = []

    async def call_while_busy() -> None:
        found.append(await running.node.call_here(threading.get_ident))

    with trio.fail_after(TIMEOUT):
        database_thread = await running.node.call(threading.get_ident)
        await thread_idle(running.node)
        assert await running.node.call_here(threading.get_ident) == trio_thread
        async with trio.open_nursery() as others:
            others.start_soon(trio.lowlevel.checkpoint)  # the loop has other work: the thread
            assert await running.node.call_here(threading.get_ident) == database_thread
        gate = await running.gated(nursery)
        async with trio.open_nursery() as callers:
            callers.start_soon(call_while_busy)
            await trio.testing.wait_all_tasks_blocked()
            assert found == []  # the thread is busy: the call waits for its turn there
            gate.open()
    assert found == [database_thread]


async def test_a_lone_small_write_commits_on_trios_thread_while_nothing_else_waits(
    running: Running, nursery: trio.Nursery
) -> None:
    trio_thread, node_ = threading.get_ident(), running.node
    with trio.fail_after(TIMEOUT):
        database_thread = await node_.call(threading.get_ident)
        await thread_idle(node_)
        first = await node_.commit(DEFAULT_SHARE, put("alone"))
        assert running.threads == [trio_thread]
        large = [entry.put("c", f"k{n}", b"\x01") for n in range(node.HERE_COMMIT_OPS + 1)]
        await node_.commit(DEFAULT_SHARE, large)
        await results([node_.submit(DEFAULT_SHARE, put(key)) for key in "ab"])  # one entry
        gate = await running.gated(nursery)
        waiting = node_.submit(DEFAULT_SHARE, put("while the thread is busy"))
        await trio.testing.wait_all_tasks_blocked()
        assert not waiting.done.is_set()
        gate.open()
        [last] = await results([waiting])
    assert running.threads[1:] == [database_thread] * 3
    assert isinstance(last, Commit) and last.lseq == first.lseq + 3
    assert await running.node.call(running.replica.get, DEFAULT_SHARE, "c", "alone")


async def test_after_concurrent_writes_lone_ones_go_to_the_thread_for_a_while(
    running: Running, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node, "HERE_COMMIT_MAX_SECONDS", 3600.0)  # whatever this disk takes
    trio_thread, node_ = threading.get_ident(), running.node
    with trio.fail_after(TIMEOUT):
        database_thread = await node_.call(threading.get_ident)
        await results([node_.submit(DEFAULT_SHARE, put(key)) for key in "ab"])  # concurrent
        await node_.commit(DEFAULT_SHARE, put("soon after"))
        mock_clock.jump(node.HERE_COMMIT_AFTER_CONCURRENT_SECONDS)
        await thread_idle(node_)
        await node_.commit(DEFAULT_SHARE, put("once they are gone"))
    assert running.threads == [database_thread, database_thread, trio_thread]


async def test_a_write_never_commits_here_before_one_handed_to_the_thread(
    running: Running,
) -> None:
    node_ = running.node
    with trio.fail_after(TIMEOUT):
        database_thread = await node_.call(threading.get_ident)
        node_._unfinished += 1  # as while the thread's commit of an earlier one is not finished
        try:
            await node_.commit(DEFAULT_SHARE, put("later"))
        finally:
            node_._unfinished -= 1
    assert running.threads == [database_thread]


async def test_writes_go_to_the_thread_while_durable_commits_are_slow_and_come_back(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in seconds a thousand times this disk's: a slow machine's fsync must not decide the test
    monkeypatch.setattr(node, "HERE_COMMIT_MAX_SECONDS", 10.0)
    trio_thread, node_ = threading.get_ident(), running.node
    node_._commit_seconds = 1000.0  # as after a few commits on a disk that takes that long
    with trio.fail_after(TIMEOUT):
        for number in range(60):
            await thread_idle(node_)
            await node_.commit(DEFAULT_SHARE, put(f"k{number}"))
            if running.threads[-1] == trio_thread:
                break
    # the thread's quick commits brought the average down: 1000 s * (7/8)^n < 10 s from n = 35
    assert running.threads[:35] == [running.threads[0]] * 35 != [trio_thread] * 35
    assert running.threads[-1] == trio_thread and len(running.threads) < 45


async def test_a_short_call_here_raises_its_error_and_publishes_the_conflicts_it_flips(
    running: Running, tmp_path: Path
) -> None:
    other = Replica.open(tmp_path / "other.db", identity.DeviceIdentity.generate())
    node = running.node
    with node.events.subscribe(10) as events, trio.fail_after(TIMEOUT):
        await node.commit(DEFAULT_SHARE, [running.replica.device_op(other.identity.cert_pem, "o")])
        await node.commit(DEFAULT_SHARE, put("x", "ours"))
        other.commit(DEFAULT_SHARE, put("x", "theirs"))
        items, _ = other.entries_after(DEFAULT_SHARE, 0, {}, max_bytes=1 << 20)
        with pytest.raises(IndexError):
            await node.call_here(items.__getitem__, len(items))
        applied = await node.call_here(running.replica.apply, DEFAULT_SHARE, items)
        assert applied.applied == len(items)
        await events.wait()
        [appeared] = events.take()
    assert (appeared["key"], appeared["state"], appeared["position"]) == (
        "x",
        "appeared",
        applied.position,
    )


async def test_the_database_thread_checkpoints_for_the_commits_of_calls_run_here(
    running: Running,
) -> None:
    store = running.replica.store

    def commit_unsynced(key: str) -> None:
        with store.transaction(fsync=False):
            store.set_meta(key, b"x")

    with trio.fail_after(TIMEOUT):
        await running.node.call(int)  # the thread runs
        for number in range(node.CHECKPOINT_AFTER_COMMITS - 1):
            await thread_idle(running.node)
            await running.node.call_here(commit_unsynced, f"k{number}")
        assert store.deferred_commits == node.CHECKPOINT_AFTER_COMMITS - 1
        await running.node.call(int)
        assert store.deferred_commits == node.CHECKPOINT_AFTER_COMMITS - 1  # not due yet
        await thread_idle(running.node)
        await running.node.call_here(commit_unsynced, "due")  # queues the checkpoint
        # a lot's checkpoint comes after its calls: the one after this call finds it done
        await running.node.call(int)
        assert await running.node.call(lambda: store.deferred_commits) == 0


async def test_a_stopping_node_finishes_what_was_queued_and_refuses_more(
    tmp_path: Path,
) -> None:
    replica = Replica.open(tmp_path / "replica.db", identity.DeviceIdentity.generate())
    stopping = Node(replica)
    gate = Gate()
    committed: list[Commit] = []

    async def commit_later() -> None:
        committed.append(await stopping.commit(DEFAULT_SHARE, put("queued")))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outside:
            node_scope = trio.CancelScope()

            async def run_node() -> None:
                with node_scope:
                    await stopping.run_group_commit()

            outside.start_soon(run_node)
            await gate.close(stopping, outside)
            outside.start_soon(commit_later)
            await trio.testing.wait_all_tasks_blocked()
            node_scope.cancel()  # the node waits for its thread, which waits at the gate
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
    assert [c.seq for c in committed] == [1]
    with pytest.raises(RuntimeError):
        stopping.submit(DEFAULT_SHARE, put("late"))
    with pytest.raises(RuntimeError):
        await stopping.call(replica.last_position)
    replica.close()


async def test_a_task_stopped_with_the_node_meets_the_cancellation_at_its_commit(
    tmp_path: Path,
) -> None:
    """The daemon's tasks share a nursery with the database thread: at a stop, a task whose call
    returns once the node has begun stopping is cancelled at its next commit, not refused (a
    RuntimeError there ended the daemon with status 1: the history timer's report did)."""
    replica = Replica.open(tmp_path / "replica.db", identity.DeviceIdentity.generate())
    stopping = Node(replica)
    gate = Gate()
    went_on: list[bool] = []

    async def report_after_a_call() -> None:
        await stopping.call(replica.last_position)
        await stopping.commit(DEFAULT_SHARE, put("report"))
        went_on.append(True)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as daemon:
            daemon.start_soon(stopping.run_group_commit)
            await gate.close(stopping, daemon)
            daemon.start_soon(report_after_a_call)
            await trio.testing.wait_all_tasks_blocked()
            daemon.cancel_scope.cancel()  # the node waits for its thread, held at the gate
            while not stopping._stopping:  # it refuses new jobs from now on
                await trio.lowlevel.cancel_shielded_checkpoint()
            gate.open()
    assert went_on == [] and replica.last_position() == 0
    replica.close()


async def test_jobs_queued_before_the_thread_starts_run_once_it_does(tmp_path: Path) -> None:
    replica = Replica.open(tmp_path / "replica.db", identity.DeviceIdentity.generate())
    early = Node(replica)
    found: list[Any] = []
    both_done = trio.Event()

    async def use(job: Callable[[], Awaitable[Any]]) -> None:
        found.append(await job())
        if len(found) == 2:
            both_done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(use, lambda: early.commit(DEFAULT_SHARE, put("k")))
            nursery.start_soon(use, lambda: early.call(replica.last_position))
            await trio.testing.wait_all_tasks_blocked()
            assert found == []
            nursery.start_soon(early.run_group_commit)
            await both_done.wait()
            nursery.cancel_scope.cancel()
    commit = next(f for f in found if isinstance(f, Commit))
    assert commit.seq == 1
    replica.close()


# what writes tell the change notifier -------------------------------------------------------


async def test_a_group_commit_keeps_its_entries_as_the_log_holds_them(
    running: Running, nursery: trio.Nursery
) -> None:
    start = running.node.changes.position
    gate = await running.gated(nursery)
    queued = [running.node.submit(DEFAULT_SHARE, put("k", i)) for i in range(3)]  # 3 entries
    gate.open()
    await results(queued)
    since = running.node.changes.stored_after(start)
    assert since is not None and since.seqs == {}
    logged = await running.node.call(running.replica.store.entries_after, None, start, 10)
    assert [(e.raw, e.signature) for e in since.entries] == [(r[3], r[4]) for r in logged]
    assert [(e.share, e.actor, e.seq) for e in since.entries] == [
        (DEFAULT_SHARE, running.replica.actor, seq) for seq in (1, 2, 3)
    ]
    assert since.entries[-1].signature is not None, "the group's last entry is signed"


async def test_watchers_get_from_memory_what_the_log_would_give_them(
    running: Running, nursery: trio.Nursery
) -> None:
    start = running.node.changes.position
    running.node.watchers = 1
    for group in ([put("a", 1), put("b", 2)], [[entry.delete("c", "a")], put("b", 3)]):
        gate = await running.gated(nursery)
        queued = [running.node.submit(DEFAULT_SHARE, ops) for ops in group]
        gate.open()
        await results(queued)
    end = running.node.changes.position
    assert end == start + 2, "each group's two transactions shared an entry"
    for position in range(start, end + 1):
        kept = running.node.changes.changes_after(position, 64)
        logged = await running.node.call(running.replica.changes, position, 64)
        assert kept == (logged, end, False)
    first = await running.node.call(running.replica.changes, start, 1)
    assert len(first) == 2
    assert running.node.changes.changes_after(start, 1) == (first, start + 1, True)


def test_changes_are_kept_for_watchers_up_to_a_page_and_a_size(tmp_path: Path) -> None:
    replica = Replica.open(tmp_path / "replica.db", identity.DeviceIdentity.generate())
    start = replica.last_position()
    replica.commit(DEFAULT_SHARE, put("small"))
    assert read_changes(replica, start, start + 1) == tuple(replica.changes(start))
    replica.commit(DEFAULT_SHARE, put("big", "v" * KEPT_CHANGES_BYTES))  # as an apply stores it
    assert read_changes(replica, start + 1, start + 2) is None, "its watchers read the log"
    for number in range(KEPT_CHANGES_ENTRIES + 1):
        replica.commit(DEFAULT_SHARE, put(f"k{number}"))
    last = replica.last_position()
    assert read_changes(replica, last - KEPT_CHANGES_ENTRIES, last) is not None
    assert read_changes(replica, last - KEPT_CHANGES_ENTRIES - 1, last) is None


async def test_without_watchers_nothing_is_kept_for_them(running: Running) -> None:
    start = running.node.changes.position
    await running.node.commit(DEFAULT_SHARE, put("a"))
    assert running.node.changes.stored_after(start) is not None, "senders still get it"
    assert running.node.changes.changes_after(start, 64) is None


async def test_applied_keeps_what_an_apply_stored_unless_membership_changed(
    running: Running,
) -> None:
    changes = running.node.changes
    start = changes.position
    await running.node.applied(start + 1, False, Stored(start, start + 1, {"s": {"A": 1}}))
    assert changes.stored_after(start) == StoredSince({"s": {"A": 1}}, [])
    await running.node.applied(start + 2, True, Stored(start + 1, start + 2, {"s": {"B": 1}}))
    assert changes.stored_after(start) is None, "after a membership change, senders read"


async def test_applied_announces_positions_and_membership(running: Running) -> None:
    membership = running.node.membership_changed.position
    await running.node.applied(7, touched_devices=False)
    assert running.node.changes.position == 7
    assert running.node.membership_changed.position == membership
    await running.node.applied(9, touched_devices=True)
    assert running.node.changes.position == 9
    assert running.node.membership_changed.position > membership
