"""The history timer's round over a real Node and Replica on a SQLite file, beside a second
member (a plain replica that reports when the test says): reports when due, folding, the purge
once reports settle a delete, quiet once settled, and a device alone folding nothing."""

from pathlib import Path

import msgpack
import trio

from p2psync import entry, identity
from p2psync.history.stability import STABLE, HistoryPolicy
from p2psync.history.timer import history_tick
from p2psync.node import Node
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE as SHARE

POLICY = HistoryPolicy.of(60, 30)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def data_entries(replica: Replica) -> list[entry.LogEntry]:
    rows = replica.store.entries_after(SHARE, 0, 1 << 20)
    logged = [entry.decode(raw) for _, _, _, raw, _ in rows]
    return [e for e in logged if e.seq > 1 and any(op.collection != STABLE for op in e.ops)]


async def exchange(node: Node, other: Replica) -> None:
    ours: Replica = node.replica
    items, _ = other.entries_after(SHARE, 0, ours.summary_vector(SHARE), 1 << 30)
    await node.call(ours.apply, SHARE, items, other.device_id)
    vector = other.summary_vector(SHARE)
    items, _ = await node.call(ours.entries_after, SHARE, 0, vector, 1 << 30)
    other.apply(SHARE, items, ours.device_id)


async def test_the_timer_reports_when_due_folds_purges_once_settled_then_stays_quiet(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    clock = Clock()
    ours = Replica.open(tmp_path / "a.db", identity.DeviceIdentity.generate(), clock)
    other = Replica.open(tmp_path / "b.db", identity.DeviceIdentity.generate(), clock)
    ours.commit(SHARE, [ours.device_op(other.identity.cert_pem, "b")])
    other.commit(SHARE, [other.device_op(ours.identity.cert_pem, "a")])
    node = Node(ours)
    nursery.start_soon(node.run_group_commit)
    for n in range(5):
        await node.commit(SHARE, [entry.put("notes", f"k{n}", msgpack.packb(n))])
    await node.commit(SHARE, [entry.delete("notes", "k0")])
    with trio.fail_after(10):
        await exchange(node, other)
        first = await history_tick(node, POLICY)
        assert first[SHARE].folded == 0, "the other member has not reported yet"
        reported = ours.own_report(SHARE)
        assert reported is not None
        # too soon for another report
        await history_tick(node, POLICY)
        assert ours.own_report(SHARE) == reported
        for _ in range(3):  # a few rounds of reports settle the delete
            other.commit(SHARE, [other.stability_op(SHARE)])
            await exchange(node, other)
            clock.now += POLICY.interval_ms
            await history_tick(node, POLICY)
            await exchange(node, other)
        assert data_entries(ours) == [] and ours.get(SHARE, "notes", "k0") is None
        assert [view.key for view in ours.scan(SHARE, "notes")] == ["k1", "k2", "k3", "k4"]
        # settled: the device stays quiet until its daily refresh
        quiet = ours.own_report(SHARE)
        clock.now += POLICY.interval_ms
        await history_tick(node, POLICY)
        assert ours.own_report(SHARE) == quiet
        clock.now += POLICY.refresh_ms
        await history_tick(node, POLICY)
        assert ours.own_report(SHARE) != quiet


async def test_a_device_alone_folds_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    clock = Clock()
    alone = Replica.open(tmp_path / "a.db", identity.DeviceIdentity.generate(), clock)
    node = Node(alone)
    nursery.start_soon(node.run_group_commit)
    await node.commit(SHARE, [entry.put("notes", "k", msgpack.packb(1))])
    with trio.fail_after(10):
        for _ in range(3):
            done = await history_tick(node, POLICY)
            assert done[SHARE].folded == 0
            clock.now += POLICY.interval_ms
    assert alone.store.baseline_frontier(SHARE) == {}, "all kept for whoever joins next"
