"""The control socket's `watch` stream (p2psync/control/watch.py) against a real Node/Replica."""

import pytest
import trio
import trio.testing

from p2psync.replica import DEFAULT_SHARE
from tests.control_harness import (
    Served,
    watch,
)

TIMEOUT = 10


async def test_watch_is_exactly_once_in_order_across_a_reconnect(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="c", key="before", value=0)
    watcher, position = await watch(served, since=None)
    written = [
        (await writer.result("put", collection="c", key=f"k{i}", value=i))["position"]
        for i in range(10)
    ]
    received = []
    for _ in range(4):
        event = await watcher.receive()
        received.append(event)
    await watcher.stream.aclose()
    written += [
        (await writer.result("put", collection="c", key=f"k{i}", value=i))["position"]
        for i in range(10, 15)
    ]
    watcher, resumed = await watch(served, since=received[-1]["position"])
    assert resumed == received[-1]["position"]
    while len(received) < len(written):
        received.append(await watcher.receive())
    assert [e["position"] for e in received] == written
    assert [e["changes"][0]["value"] for e in received] == list(range(15))
    assert position < written[0]
    first = received[0]
    assert first["event"] == "change" and first["share"] == DEFAULT_SHARE
    assert first["changes"] == [
        {
            "collection": "c",
            "key": "k0",
            "op": "put",
            "value": 0,
            "deleted": False,
            "origin": served.household.device_id,
            "type": None,
            "schema_version": None,
        }
    ]


async def test_watch_from_zero_replays_history_and_filters_collections(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="a", key="1", value=1)
    await writer.result("put", collection="b", key="2", value=2)
    await writer.result("delete", collection="a", key="1")
    watcher, _ = await watch(served, since=0, collection="a")
    first, second = await watcher.receive(), await watcher.receive()
    assert [c["op"] for c in first["changes"] + second["changes"]] == ["put", "delete"]
    assert second["changes"][0]["deleted"] is True and second["changes"][0]["value"] is None
    last = (await writer.result("put", collection="a", key="3", value=3))["position"]
    assert (await watcher.receive())["position"] == last


async def test_watch_of_a_transaction_delivers_its_ops_together(served: Served) -> None:
    watcher, _ = await watch(served)
    writer = await served.connect()
    ops = [{"op": "put", "collection": "c", "key": str(i), "value": i} for i in range(5)]
    done = await writer.result("transaction", ops=ops)
    event = await watcher.receive()
    assert event["position"] == done["position"]
    assert [c["key"] for c in event["changes"]] == ["0", "1", "2", "3", "4"]


async def test_watch_rejects_positions_it_never_had(served: Served) -> None:
    client = await served.connect()
    assert (await client.error("watch", since=10**6))["code"] == "bad_request"
    assert (await client.error("watch", since="1"))["code"] == "bad_request"
    assert (await client.result("status"))["device"]  # still a request connection


async def test_many_watchers_each_get_every_change(served: Served) -> None:
    watchers = [(await watch(served))[0] for _ in range(5)]
    writer = await served.connect()
    positions = [
        (await writer.result("put", collection="c", key="k", value=i))["position"]
        for i in range(20)
    ]
    for watcher in watchers:
        assert [(await watcher.receive())["position"] for _ in positions] == positions


async def test_a_watcher_that_does_not_read_holds_back_only_itself(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    replica = served.household.node.replica
    read_up_to = []
    real_changes = replica.changes

    def changes(since: int, limit: int = 1000) -> list:
        read_up_to.append(since)
        return real_changes(since, limit)

    replica.changes = changes  # type: ignore[method-assign]
    idle, start = await watch(served)
    writer = await served.connect()
    batch = [{"op": "put", "collection": "c", "key": str(i), "value": "v" * 1000} for i in range(4)]
    for _ in range(1000):
        last = (await writer.result("transaction", ops=batch))["position"]
    with trio.fail_after(TIMEOUT):
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    # about 4 MB of events wait for it; the daemon read only what the socket buffers hold
    assert start < max(read_up_to) < last - 500
    await idle.stream.aclose()
    reader, _ = await watch(served, since=start)
    assert (await reader.receive())["position"] == start + 1
    assert "control connection failed" not in caplog.text
