"""The history timer's round over a real Node and Replica on a SQLite file: a device alone in
its household reports, folds its log, and purges its deletes once its own reports settle them."""

from pathlib import Path

import msgpack
import trio

from p2psync import entry, identity
from p2psync.history.stability import STABLE, HistoryPolicy
from p2psync.history.timer import history_tick
from p2psync.node import Node
from p2psync.replica import DEFAULT_SHARE as SHARE
from p2psync.replica import Replica

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


async def test_a_lone_device_reports_when_due_folds_its_log_and_purges_settled_deletes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    clock = Clock()
    replica = Replica.open(tmp_path / "r.db", identity.DeviceIdentity.generate(), clock)
    node = Node(replica)
    nursery.start_soon(node.run_group_commit)
    for n in range(5):
        await node.commit(SHARE, [entry.put("notes", f"k{n}", msgpack.packb(n))])
    await node.commit(SHARE, [entry.delete("notes", "k0")])
    with trio.fail_after(10):
        first = await history_tick(node, POLICY)
        assert first[SHARE].folded == 6 and first[SHARE].purged == 0
        assert data_entries(replica) == [] and replica.get(SHARE, "notes", "k0").deleted
        reported = replica.own_report(SHARE)
        assert reported is not None
        # too soon for another report, and nothing new to fold
        again = await history_tick(node, POLICY)
        assert again[SHARE].folded == 0 and replica.own_report(SHARE) == reported
        clock.now += POLICY.interval_ms
        # the next report holds the first: the delete is settled, and goes
        last = await history_tick(node, POLICY)
        assert last[SHARE].purged == 1 and replica.get(SHARE, "notes", "k0") is None
        assert [view.key for view in replica.scan(SHARE, "notes")] == ["k1", "k2", "k3", "k4"]
        # settled: the device stays quiet until its daily refresh
        clock.now += POLICY.interval_ms
        await history_tick(node, POLICY)
        clock.now += POLICY.interval_ms
        quiet = replica.own_report(SHARE)
        await history_tick(node, POLICY)
        assert replica.own_report(SHARE) == quiet
        clock.now += POLICY.refresh_ms
        await history_tick(node, POLICY)
        assert replica.own_report(SHARE) != quiet
