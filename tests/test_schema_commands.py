"""Schema manifests through the control socket (p2psync/schemas/commands.py, and what the data
methods and `watch` do with them) against a real Node/Replica: schema_get/schema_set, writes
refused with the validation error, scan and watch filtered by type and version, and the
`outdated` events of a reader that declared what it reads."""

from typing import Any

import msgpack

from p2psync import entry
from p2psync.shares import DEFAULT_SHARE
from tests.control_harness import Connection, Served, open_replica, watch

TODO_V1 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "done": {"type": "boolean"}},
    "required": ["title", "done"],
}
TODO_V2 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "state": {"enum": ["open", "done"]}},
    "required": ["title", "state"],
}


async def todo(client: Connection, key: str, value: Any, version: int) -> dict[str, Any]:
    return await client.call(
        "put", collection="todos", key=key, value=value, type="todo", schema_version=version
    )


async def test_schema_set_and_get_show_each_version_and_refuse_what_is_not_valid(
    served: Served,
) -> None:
    client = await served.connect()
    assert await client.result("schema_get") == {"share": "default", "types": []}
    set_v1 = await client.result("schema_set", type="todo", current=1, json_schema=TODO_V1)
    assert set_v1["current"] == 1 and set_v1["oldest_written"] == 1 and set_v1["version"]
    await client.result("schema_set", type="todo", current=2, json_schema=TODO_V2)
    assert await client.result("schema_get", share="default") == {
        "share": "default",
        "types": [
            {
                "type": "todo",
                "current": 2,
                "oldest_written": 1,
                "json_schemas": {"1": TODO_V1, "2": TODO_V2},
            }
        ],
    }
    bad = await client.error("schema_set", type="todo", current=2, json_schema={"type": 3})
    assert bad["code"] == "bad_request"
    assert bad["message"].startswith("not a valid JSON Schema: at $.type: 3 is not valid")
    lower = await client.error("schema_set", type="todo", current=1)
    assert lower["code"] == "bad_request" and "versions only go up" in lower["message"]
    nowhere = await client.error("schema_get", share="nowhere")
    assert nowhere["code"] == "not_found"
    # the manifest is p2psync's: apps cannot write it around schema_set
    forged = await client.error("put", collection="_schema", key="todo", value={"current": 9})
    assert forged["code"] == "bad_request" and "schema_set" in forged["message"]


async def test_a_write_failing_its_schema_is_refused_with_where_and_why(served: Served) -> None:
    client = await served.connect()
    await client.result("schema_set", type="todo", current=1, json_schema=TODO_V1)
    assert (await todo(client, "milk", {"title": "milk", "done": False}, 1))["ok"]
    refused = await todo(client, "tea", {"title": "tea", "done": "no"}, 1)
    assert refused["error"] == {
        "code": "invalid_value",
        "message": "todos/tea: value does not match the JSON Schema of 'todo' version 1: at "
        "$.done: 'no' is not of type 'boolean'",
    }
    transaction = await client.error(
        "transaction",
        ops=[
            {"op": "put", "collection": "todos", "key": "a", "value": 1},
            {"op": "put", "collection": "todos", "key": "b", "value": {}, "type": "todo"},
        ],
    )
    assert transaction["code"] == "invalid_value" and "todos/b:" in transaction["message"]
    resolved = await client.error(
        "resolve", collection="todos", key="milk", value={"title": 1, "done": True}, type="todo"
    )
    assert resolved["code"] == "invalid_value"
    await client.result("schema_set", type="todo", current=2, oldest_written=2, json_schema=TODO_V2)
    old = await todo(client, "tea", {"title": "tea", "done": True}, 1)
    assert old["error"]["code"] == "invalid_value"
    assert "no longer written below version 2" in old["error"]["message"]
    assert (await todo(client, "tea", {"title": "tea", "state": "done"}, 2))["ok"]
    # nothing refused was written
    assert (await client.error("get", collection="todos", key="a"))["code"] == "not_found"
    page = await client.result("scan", collection="todos")
    assert [item["key"] for item in page["items"]] == ["milk", "tea"]


async def test_scan_filters_by_type_and_version_range_and_pages_past_what_it_skips(
    served: Served,
) -> None:
    client = await served.connect()
    for i in range(12):
        await todo(client, f"k{i:02}", {"title": str(i)}, 1 + i % 3)
    await client.result("put", collection="todos", key="plain", value=0)
    versions = []
    after = None
    while True:
        page = await client.result(
            "scan", collection="todos", type="todo", min_schema_version=2, after=after, limit=4
        )
        versions += [(item["key"], item["schema_version"]) for item in page["items"]]
        if (after := page["next"]) is None:
            break
    assert versions == [(f"k{i:02}", 1 + i % 3) for i in range(12) if i % 3]
    only_v1 = await client.result("scan", collection="todos", max_schema_version=1)
    assert [item["key"] for item in only_v1["items"]] == ["k00", "k03", "k06", "k09"]
    assert (await client.result("scan", collection="todos", max_schema_version=0))["items"] == []
    untyped = await client.result("scan", collection="todos", type="note")
    assert untyped == {"items": [], "next": None}
    inverted = await client.error(
        "scan", collection="todos", min_schema_version=3, max_schema_version=2
    )
    assert inverted["code"] == "bad_request" and "is above" in inverted["message"]


async def test_watch_filters_changes_by_type_and_version(served: Served) -> None:
    client = await served.connect()
    watcher, _ = await watch(served, type="todo", min_schema_version=2)
    assert (await watcher.receive())["event"] == "caught_up"
    await todo(client, "old", {"title": "old"}, 1)
    await client.result("put", collection="todos", key="plain", value=0)
    await todo(client, "new", {"title": "new"}, 2)
    event = await watcher.receive()
    assert [(c["key"], c["schema_version"]) for c in event["changes"]] == [("new", 2)]


async def test_a_reader_hears_once_per_newer_version_at_start_and_live(served: Served) -> None:
    client = await served.connect()
    await todo(client, "milk", {"title": "milk"}, 1)
    await todo(client, "tea", {"title": "tea"}, 2)  # a newer app wrote v2 already
    reader = await served.connect()
    declared = await reader.call(
        "hello", client="todo 1.0", reads={"todo": {"max_schema_version": 1}}
    )
    assert declared["ok"]
    await reader.result("watch", share="default", collection="todos")
    at_start = await reader.receive()
    assert at_start == {
        "event": "outdated",
        "share": "default",
        "type": "todo",
        "schema_version": 2,
        "reads": 1,
    }
    assert (await reader.receive())["event"] == "caught_up"
    await todo(client, "eggs", {"title": "eggs"}, 2)  # nothing newer than it was told
    change = await reader.receive()
    assert change["event"] == "change" and change["changes"][0]["key"] == "eggs"
    await client.result("schema_set", type="todo", current=3)  # the manifest moves on
    assert (await reader.receive())["schema_version"] == 3
    await todo(client, "bread", {"title": "bread"}, 3)
    assert (await reader.receive())["changes"][0]["key"] == "bread", "3 was told already"


async def test_reads_are_checked_and_outdated_needs_them(served: Served) -> None:
    client = await served.connect()
    bad = await client.error("hello", reads={"todo": 1})
    assert bad["code"] == "bad_request" and "max_schema_version" in bad["message"]
    undeclared = await client.error("watch", events=["outdated"])
    assert undeclared["code"] == "bad_request" and "hello" in undeclared["message"]
    only_outdated = await served.connect()
    await only_outdated.result("hello", reads={"todo": {"max_schema_version": 1}})
    await only_outdated.result("watch", events=["outdated"])
    assert (await only_outdated.receive())["event"] == "caught_up"
    await todo(client, "x", {"title": "x"}, 1)
    await todo(client, "y", {"title": "y"}, 4)
    assert (await only_outdated.receive())["schema_version"] == 4


async def test_a_received_value_of_a_refused_shape_is_applied_and_shown(served: Served) -> None:
    """Devices apart may hold different manifests: an entry from a peer is never refused."""
    client = await served.connect()
    await client.result("schema_set", type="todo", current=2, oldest_written=2, json_schema=TODO_V2)
    node = served.household.node
    other = open_replica(served.path.parent.parent / "other.db")
    await client.result("trust", cert=other.identity.cert_pem.decode(), name="attic")
    old_app = entry.put(
        "todos", "x", msgpack.packb({"title": "x", "done": 1}), type="todo", schema_version=1
    )
    other.commit(DEFAULT_SHARE, [old_app])
    items, _ = other.entries_after(DEFAULT_SHARE, 0, {}, max_bytes=1 << 20)
    applied = await node.call(node.replica.apply, DEFAULT_SHARE, items)
    await node.applied(applied.position, applied.devices_changed)
    shown = await client.result("get", collection="todos", key="x")
    assert shown["value"] == {"title": "x", "done": 1} and shown["schema_version"] == 1
