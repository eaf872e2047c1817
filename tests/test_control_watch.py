"""The control socket's `watch` stream (p2psync/control/watch.py) against a real Node/Replica."""

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2psync.control.watch import EVENT_BUFFER
from p2psync.shares import DEFAULT_SHARE
from tests.control_harness import (
    Connection,
    Served,
    conflicting_write,
    watch,
)

TIMEOUT = 10


async def caught_up(watcher: Connection) -> int:
    """The next line must be the marker that replay reached the head; its position."""
    event = await watcher.receive()
    assert event["event"] == "caught_up" and set(event) == {"event", "position"}, event
    position: int = event["position"]
    return position


async def test_watch_is_exactly_once_in_order_across_a_reconnect(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="c", key="before", value=0)
    watcher, position = await watch(served, since=None)
    assert await caught_up(watcher) == position  # from now: nothing to replay
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
    assert await caught_up(watcher) == written[-1]
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
            "version": first["changes"][0]["version"],
            "origin": served.household.device_id,
            "type": None,
            "schema_version": None,
        }
    ]
    got = await writer.result("get", collection="c", key="k0")
    assert got["version"] == first["changes"][0]["version"]  # the sibling the change wrote


async def test_watch_from_zero_replays_history_and_filters_collections(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="a", key="1", value=1)
    await writer.result("put", collection="b", key="2", value=2)
    await writer.result("delete", collection="a", key="1")
    watcher, _ = await watch(served, since=0, collection="a")
    first, second = await watcher.receive(), await watcher.receive()
    assert [c["op"] for c in first["changes"] + second["changes"]] == ["put", "delete"]
    assert second["changes"][0]["deleted"] is True and second["changes"][0]["value"] is None
    assert await caught_up(watcher) == second["position"]
    last = (await writer.result("put", collection="a", key="3", value=3))["position"]
    assert (await watcher.receive())["position"] == last


async def test_watch_of_a_transaction_delivers_its_ops_together(served: Served) -> None:
    watcher, start = await watch(served)
    assert await caught_up(watcher) == start
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
    for watcher in watchers:
        await caught_up(watcher)
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
    node = served.household.node
    read_up_to = []  # where the watch stream took its pages from: the log, or writes' memory
    real_call, real_kept = node.call, node.changes.changes_after

    async def call(function: Any, *args: Any) -> Any:
        if function == node.replica.changes:
            read_up_to.append(args[0])
        return await real_call(function, *args)

    def kept(position: int, limit: int) -> Any:
        found = real_kept(position, limit)
        if found is not None:
            read_up_to.append(position)
        return found

    node.call = call  # type: ignore[method-assign]
    node.changes.changes_after = kept  # type: ignore[method-assign]
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


async def test_caught_up_marks_the_head_once_replay_reaches_it(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="c", key="a", value=1)
    await writer.result("put", collection="elsewhere", key="b", value=2)
    watcher, _ = await watch(served, since=0, collection="c")
    assert (await watcher.receive())["changes"][0]["key"] == "a"
    head = served.household.node.changes.position
    assert await caught_up(watcher) == head  # the head, though its change was not for us
    later = (await writer.result("put", collection="c", key="d", value=3))["position"]
    event = await watcher.receive()
    assert (event["event"], event["position"]) == ("change", later)  # no second marker


async def test_a_quiet_watch_gets_heartbeats_with_the_position(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="c", key="a", value=1)
    watcher, start = await watch(served, heartbeat=1)
    assert await caught_up(watcher) == start
    with trio.fail_after(TIMEOUT):
        beat = await watcher.receive()
    assert beat == {"event": "heartbeat", "position": start}
    # a write elsewhere moves the head; the beat after it tells the position reached
    other = (await writer.result("put", collection="other", key="b", value=2))["position"]
    assert (await watcher.receive())["changes"][0]["key"] == "b"
    assert await watcher.receive() == {"event": "heartbeat", "position": other}
    client = await served.connect()
    for wrong in (0, 0.5, 3601, "1", True):
        refused = await client.error("watch", heartbeat=wrong)
        assert refused["code"] == "bad_request" and "'heartbeat'" in refused["message"]


async def test_deletes_carry_the_value_they_replaced(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="c", key="a", value={"n": 1})
    await writer.result("put", collection="c", key="a", value={"n": 2})
    await writer.result("delete", collection="c", key="a")
    await writer.result("delete", collection="c", key="a")  # nothing live any more
    await writer.result("delete", collection="c", key="never")  # nothing was there
    await writer.result(
        "transaction",
        ops=[
            {"op": "put", "collection": "c", "key": "t", "value": "x"},
            {"op": "delete", "collection": "c", "key": "t"},  # the same key twice: last wins
        ],
    )
    await writer.result("put", collection="c", key="t2", value="y")
    await writer.result(
        "transaction",
        ops=[
            {"op": "delete", "collection": "c", "key": "t2"},
            {"op": "put", "collection": "c", "key": "t3", "value": "z"},
        ],
    )
    watcher, _ = await watch(served, since=0)
    deletes: list[tuple[str, Any]] = []
    puts: list[dict[str, Any]] = []
    for _ in range(8):
        for change in (await watcher.receive())["changes"]:
            if change["op"] == "delete":
                deletes.append((change["key"], change["previous"]))
            else:
                puts.append(change)
    assert deletes == [("a", {"n": 2}), ("a", None), ("never", None), ("t", None), ("t2", "y")]
    assert all("previous" not in change for change in puts)


async def test_other_events_come_as_asked_and_data_only_by_default(
    served: Served, tmp_path: Path
) -> None:
    plain, start = await watch(served)
    conflicts, _ = await watch(served, events=["conflict"])
    assert await caught_up(plain) == start
    assert await caught_up(conflicts) == start  # without changes: the head, at once
    other = await conflicting_write(served, tmp_path)
    appeared = await conflicts.receive()
    head = served.household.node.changes.position
    assert appeared == {
        "event": "conflict",
        "share": DEFAULT_SHARE,
        "collection": "c",
        "key": "x",
        "state": "appeared",
        "position": head,
        "devices": appeared["devices"],
    }
    names = {item["device"]: item["name"] for item in appeared["devices"]}
    assert names.keys() == {other.device_id, served.household.device_id}
    writer = await served.connect()
    got = await writer.result("get", collection="c", key="x")
    theirs = next(s for s in got["siblings"] if s["origin"] == other.device_id)
    await writer.result("resolve", collection="c", key="x", pick={"version": theirs["version"]})
    resolved = await conflicts.receive()
    assert (resolved["key"], resolved["state"]) == ("x", "resolved")
    assert [item["device"] for item in resolved["devices"]] == [served.household.device_id]
    # the plain watch saw the trust, both writes and the resolution as changes, nothing else
    kinds = {(await plain.receive())["event"] for _ in range(4)}
    assert kinds == {"change"}
    client = await served.connect()
    for wrong in ([], ["frob"], "change", [1]):
        refused = await client.error("watch", events=wrong)
        assert refused["code"] == "bad_request" and "'events'" in refused["message"]


async def test_a_watcher_whose_events_pile_up_is_dropped(served: Served) -> None:
    watcher, start = await watch(served, events=["change", "conflict"])
    assert await caught_up(watcher) == start
    bus = served.household.node.events
    assert bus.subscribers == 1
    # more than its buffer, all before the watch can take any (no checkpoint in between)
    for i in range(EVENT_BUFFER + 1):
        bus.publish(
            {
                "event": "conflict",
                "share": DEFAULT_SHARE,
                "collection": "c",
                "key": str(i),
                "state": "appeared",
                "position": start,
            }
        )
    with trio.fail_after(TIMEOUT):
        assert await watcher.stream.receive_some(1 << 16) == b""  # closed, nothing sent
    with trio.fail_after(TIMEOUT):
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    assert bus.subscribers == 0  # its subscription went with it
