"""The control socket's data methods (p2psync/control/methods_data.py), on a real replica."""

import json
from pathlib import Path

import msgpack

from p2psync import entry, identity
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE
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
    assert got["version"] == written["version"] and isinstance(got["version"], str)
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


async def test_pick_takes_a_version_and_the_deprecated_origin_and_hlc_still_work(
    served: Served, tmp_path: Path
) -> None:
    other = await conflicting_write(served, tmp_path)
    client = await served.connect()
    got = await client.result("get", collection="c", key="x")
    assert got["siblings"][0]["version"] == got["version"]  # the winner first
    theirs = next(s for s in got["siblings"] if s["origin"] == other.device_id)
    ours = next(s for s in got["siblings"] if s["origin"] != other.device_id)
    stale = await client.error("resolve", collection="c", key="x", pick={"version": "nope"})
    assert stale["code"] == "conflict"
    assert theirs["version"] in stale["message"] and ours["version"] in stale["message"]
    old_way = {"origin": ours["origin"], "hlc": ours["hlc"]}
    done = await client.result("resolve", collection="c", key="x", pick=old_way)
    resolved = await client.result("get", collection="c", key="x")
    assert (resolved["value"], resolved["type"], resolved["conflict"]) == ("ours", "t", False)
    assert resolved["version"] == done["version"]  # the pick, written again as a new version
    gone = await client.error("resolve", collection="c", key="x", pick=theirs)
    assert gone["code"] == "conflict"  # resolved already: theirs is no version of it any more


async def test_if_version_writes_only_over_the_version_the_writer_read(served: Served) -> None:
    client = await served.connect()
    created = await client.result("put", collection="c", key="k", value=1, if_version="")
    refused = await client.error("put", collection="c", key="k", value=2, if_version="")
    assert refused["code"] == "conflict" and created["version"] in refused["message"]
    updated = await client.result(
        "put", collection="c", key="k", value=3, if_version=created["version"]
    )
    stale = await client.error(
        "put", collection="c", key="k", value=4, if_version=created["version"]
    )
    assert stale["code"] == "conflict"
    assert updated["version"] in stale["message"]  # the message says where it is now
    assert (await client.error("delete", collection="c", key="k", if_version="x"))[
        "code"
    ] == "conflict"
    deleted = await client.result("delete", collection="c", key="k", if_version=updated["version"])
    # deleted: "" finds it absent, and its tombstone's version is its version
    tombstone = await client.result("get", collection="c", key="k", all=True)
    assert tombstone["version"] == deleted["version"]
    await client.result("put", collection="c", key="k", value=5, if_version="")
    failed = await client.error(
        "transaction",
        ops=[
            {"op": "put", "collection": "c", "key": "t", "value": 1},
            {"op": "put", "collection": "c", "key": "k", "value": 6, "if_version": "stale"},
        ],
    )
    assert failed["code"] == "conflict" and failed["message"].startswith("ops[1]: c/k has changed")
    assert (await client.error("get", collection="c", key="t"))["code"] == "not_found"
    assert (await client.result("get", collection="c", key="k"))["value"] == 5


async def test_pipelined_compare_and_set_lets_exactly_one_writer_win(served: Served) -> None:
    client = await served.connect()
    base = await client.result("put", collection="c", key="counter", value=0)
    lines = [
        {
            "id": i,
            "method": "put",
            "collection": "c",
            "key": "counter",
            "value": i,
            "if_version": base["version"],
        }
        for i in range(1, 21)
    ]
    await client.stream.send_all(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    answers = [await client.receive() for _ in lines]
    won = [a["id"] for a in answers if a["ok"]]
    assert won == [1]
    assert {a["error"]["code"] for a in answers if not a["ok"]} == {"conflict"}
    assert (await client.result("get", collection="c", key="counter"))["value"] == 1


async def test_scan_shows_deleted_records_in_conflict_only_when_asked(
    served: Served, tmp_path: Path
) -> None:
    client = await served.connect()
    await client.result("put", collection="c", key="y", value="kept")
    await client.result("put", collection="c", key="z", value="gone")
    await client.result("delete", collection="c", key="z")
    # another device, whose clock is far behind, writes c/x while we delete it: our delete is
    # the newer version, their write a live sibling beside it
    other = Replica.open(
        tmp_path / "other.db", identity.DeviceIdentity.generate(), now_ms=lambda: 1_000
    )
    await client.result("trust", cert=other.identity.cert_pem.decode(), name="attic")
    await client.result("delete", collection="c", key="x")
    other.commit(DEFAULT_SHARE, [entry.put("c", "x", msgpack.packb("theirs"))])
    node = served.household.node
    items, _ = other.entries_after(DEFAULT_SHARE, 0, {}, max_bytes=1 << 20)
    applied = await node.call(node.replica.apply, DEFAULT_SHARE, items)
    await node.applied(applied.position, applied.devices_changed)
    assert [i["key"] for i in (await client.result("scan", collection="c"))["items"]] == ["y"]
    shown = (await client.result("scan", collection="c", deleted=True))["items"]
    assert [(i["key"], i["deleted"], i["conflict"]) for i in shown] == [
        ("x", True, True),
        ("y", False, False),
    ]
    assert shown[0]["value"] is None and "siblings" not in shown[0]


async def test_collections_lists_user_collections_with_live_records(served: Served) -> None:
    client = await served.connect()
    assert (await client.result("collections"))["collections"] == []
    for collection, key in [("notes", "a"), ("notes", "b"), ("lists", "a"), ("gone", "a")]:
        await client.result("put", collection=collection, key=key, value=1)
    await client.result("delete", collection="gone", key="a")
    assert (await client.result("collections"))["collections"] == [
        {"collection": "lists", "records": 1},
        {"collection": "notes", "records": 2},
    ]
    assert (await client.error("collections", share="nowhere"))["code"] == "not_found"


async def test_a_base64_tag_alone_is_stored_as_bytes_and_read_back_the_same(
    served: Served,
) -> None:
    client = await served.connect()
    value = {
        "blob": {"$base64": "AAE="},
        "not canonical": {"$base64": "AAE"},
        "list": [{"$base64": ""}],
    }
    await client.result("put", collection="c", key="b", value=value)
    assert (await client.result("get", collection="c", key="b"))["value"] == value
    node = served.household.node
    view = await node.call(node.replica.get, DEFAULT_SHARE, "c", "b")
    assert view is not None
    assert msgpack.unpackb(view.winner.value) == {
        "blob": b"\x00\x01",
        "not canonical": {"$base64": "AAE"},
        "list": [b""],
    }
