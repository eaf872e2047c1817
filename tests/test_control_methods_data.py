"""The control socket's data methods (p2psync/control/methods_data.py), on a real replica."""

from pathlib import Path

import msgpack

from p2psync import entry
from p2psync.replica import DEFAULT_SHARE
from tests.control_harness import (
    Served,
    conflicting_write,
)


async def test_put_then_get_round_trips_json_values_and_metadata(served: Served) -> None:
    client = await served.connect()
    value = {"title": "milk", "qty": 2, "tags": ["a", None, True], "price": 1.5, "note": "ünï"}
    written = await client.result(
        "put", collection="notes", key="a", value=value, type="todo", schema_version=3
    )
    assert written["position"] >= 1 and written["seq"] >= 1 and written["hlc"] > 0
    got = await client.result("get", collection="notes", key="a")
    assert got["value"] == value
    assert (got["type"], got["schema_version"]) == ("todo", 3)
    assert got["origin"] == served.household.device_id
    assert got["hlc"] == written["hlc"]
    assert got["deleted"] is False and got["conflict"] is False
    assert "siblings" not in got
    await client.result("put", collection="notes", key="null", value=None)
    assert (await client.result("get", collection="notes", key="null"))["value"] is None


async def test_missing_and_deleted_records_are_not_found_with_a_reason(served: Served) -> None:
    client = await served.connect()
    missing = await client.error("get", collection="notes", key="nope")
    assert missing["code"] == "not_found" and "notes/nope" in missing["message"]
    await client.result("put", collection="notes", key="a", value=1)
    await client.result("delete", collection="notes", key="a")
    deleted = await client.error("get", collection="notes", key="a")
    assert deleted["code"] == "not_found" and "deleted" in deleted["message"]
    tombstone = await client.result("get", collection="notes", key="a", all=True)
    assert tombstone["deleted"] is True and tombstone["value"] is None


async def test_transaction_is_one_entry_and_all_or_nothing(served: Served) -> None:
    client = await served.connect()
    await client.result("put", collection="notes", key="gone", value=0)
    done = await client.result(
        "transaction",
        ops=[
            {"op": "put", "collection": "notes", "key": "x", "value": 1},
            {"op": "put", "collection": "other", "key": "y", "value": [2], "type": "t"},
            {"op": "delete", "collection": "notes", "key": "gone"},
        ],
    )
    changes = served.household.node.replica.changes(done["position"] - 1)
    assert [(c.lseq, c.op.key) for c in changes] == [(done["position"], k) for k in "xy"] + [
        (done["position"], "gone")
    ]
    assert (await client.result("get", collection="other", key="y"))["type"] == "t"
    refused = await client.error(
        "transaction",
        ops=[
            {"op": "put", "collection": "notes", "key": "z", "value": 1},
            {"op": "put", "collection": "notes", "value": 2},
        ],
    )
    assert refused["code"] == "bad_request" and refused["message"].startswith("ops[1]:")
    assert (await client.error("get", collection="notes", key="z"))["code"] == "not_found"
    for bad_ops in ([], [{"op": "frob", "collection": "c", "key": "k"}], ["x"], "x"):
        assert (await client.error("transaction", ops=bad_ops))["code"] == "bad_request"


async def test_scan_paginates_by_key_with_prefix(served: Served) -> None:
    client = await served.connect()
    for i in range(25):
        await client.result("put", collection="c", key=f"k{i:02}", value=i)
    await client.result("put", collection="c", key="other", value=0)
    await client.result("delete", collection="c", key="k05")
    seen, after = [], None
    pages = 0
    while True:
        page = await client.result("scan", collection="c", prefix="k", after=after, limit=10)
        pages += 1
        seen += [(item["key"], item["value"]) for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [(f"k{i:02}", i) for i in range(25) if i != 5]
    assert pages == 3
    everything = await client.result("scan", collection="c")
    assert len(everything["items"]) == 25 and everything["next"] is None
    for limit in (0, 1001, "5", True):
        assert (await client.error("scan", collection="c", limit=limit))["code"] == "bad_request"


async def test_values_json_cannot_carry_are_tagged(served: Served) -> None:
    node = served.household.node
    stored = {"blob": b"\x00\x01", 1: "int key", "inf": float("inf")}
    await node.commit(DEFAULT_SHARE, [entry.put("c", "bin", msgpack.packb(stored))])
    await node.commit(DEFAULT_SHARE, [entry.put("c", "junk", b"\xc1")])
    client = await served.connect()
    got = await client.result("get", collection="c", key="bin")
    assert got["value"] == {
        "blob": {"$base64": "AAE="},
        "1": "int key",
        "inf": {"$float": "Infinity"},
    }
    assert (await client.result("get", collection="c", key="junk"))["value"] == {"$raw": "wQ=="}


async def test_conflicts_are_listed_with_siblings_and_resolved_by_pick(
    served: Served, tmp_path: Path
) -> None:
    other = await conflicting_write(served, tmp_path)
    client = await served.connect()
    got = await client.result("get", collection="c", key="x")
    assert got["conflict"] is True
    assert sorted(s["value"] for s in got["siblings"]) == ["ours", "theirs"]
    listed = await client.result("conflicts")
    assert [(i["collection"], i["key"]) for i in listed["items"]] == [("c", "x")]
    assert listed["more"] is False
    assert (await client.result("conflicts", collection="elsewhere"))["items"] == []
    theirs = next(s for s in got["siblings"] if s["origin"] == other.device_id)
    wrong = await client.error("resolve", collection="c", key="x", pick={"origin": "X", "hlc": 1})
    assert wrong["code"] == "conflict"
    await client.result("resolve", collection="c", key="x", pick=theirs)
    resolved = await client.result("get", collection="c", key="x")
    assert (resolved["value"], resolved["conflict"]) == ("theirs", False)
    assert (await client.result("conflicts"))["items"] == []


async def test_resolve_by_value_replaces_all_siblings(served: Served, tmp_path: Path) -> None:
    await conflicting_write(served, tmp_path)
    client = await served.connect()
    both = await client.error("resolve", collection="c", key="x", value=1, pick={})
    assert both["code"] == "bad_request"
    await client.result("resolve", collection="c", key="x", value={"merged": True})
    resolved = await client.result("get", collection="c", key="x", all=True)
    assert resolved["value"] == {"merged": True} and len(resolved["siblings"]) == 1
