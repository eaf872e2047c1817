"""The replica's side of schema manifests (p2psync/schemas/rules.py with real replicas): the
manifest read from `_schema` records and followed as entries apply, the same on devices that set
it concurrently, local writes checked, received entries never refused, and the same migration
run on two partitioned devices converging with no conflict."""

import msgpack
import pytest

from p2psync import entry
from p2psync.schemas.manifest import SCHEMA, InvalidValue, ManifestError
from p2psync.shares import DEFAULT_SHARE
from tests.test_replica import household
from tests.test_share_rules import FAMILY, family_of, sync

TODO_V1 = {"type": "object", "required": ["title", "done"]}
TODO_V2 = {
    "type": "object",
    "properties": {"state": {"enum": ["open", "done"]}},
    "required": ["title", "state"],
}


def set_schema(replica, name, current, oldest=None, json_schema=None):
    ops, updated = replica.schema_set_ops(DEFAULT_SHARE, name, current, oldest, json_schema)
    replica.commit(DEFAULT_SHARE, ops)
    return updated


def todo_op(key, value, version):
    return entry.put("todos", key, msgpack.packb(value), type="todo", schema_version=version)


def both_ways(a, b):
    sync(a, b, DEFAULT_SHARE)
    sync(b, a, DEFAULT_SHARE)


def test_the_manifest_follows_its_records_and_refuses_bad_local_writes():
    a, b = household(2)
    assert a.schema_manifest(DEFAULT_SHARE).types == {}
    a.check_values(DEFAULT_SHARE, [todo_op("k", {"x": 1}, 1)])  # no manifest: anything goes
    set_schema(a, "todo", 1, json_schema=TODO_V1)
    with pytest.raises(InvalidValue, match="at \\$: 'done' is a required property"):
        a.check_values(DEFAULT_SHARE, [todo_op("k", {"title": "milk"}, 1)])
    a.check_values(DEFAULT_SHARE, [todo_op("k", {"title": "milk", "done": False}, 1)])
    both_ways(a, b)  # b learns the manifest by sync, like any record
    assert b.schema_manifest(DEFAULT_SHARE).json() == a.schema_manifest(DEFAULT_SHARE).json()
    with pytest.raises(InvalidValue):
        b.check_values(DEFAULT_SHARE, [todo_op("k", {"title": "milk"}, 1)])
    assert b.get(DEFAULT_SHARE, SCHEMA, "todo") is not None
    assert b.collections(DEFAULT_SHARE) == [], "a system collection, not the app's"
    set_schema(b, "todo", 2)
    with pytest.raises(ManifestError, match="versions only go up"):
        set_schema(b, "todo", 1)


def test_a_received_entry_is_never_refused_for_its_schema():
    a, b = household(2)
    set_schema(a, "todo", 2, oldest=2, json_schema=TODO_V2)
    both_ways(a, b)
    # b's app is older and b has not checked (the daemon's own writes are not checked):
    # whatever b wrote, a takes it as it is
    b.commit(DEFAULT_SHARE, [todo_op("old", {"title": "tea", "done": True}, 1)])
    both_ways(a, b)
    view = a.get(DEFAULT_SHARE, "todos", "old")
    assert view is not None and msgpack.unpackb(view.winner.value) == {"title": "tea", "done": True}


def test_concurrent_sets_leave_one_manifest_everywhere_and_the_next_set_replaces_both():
    a, b = household(2)
    set_schema(a, "todo", 1, json_schema=TODO_V1)
    both_ways(a, b)
    set_schema(a, "todo", 2, json_schema=TODO_V2)  # apart: a moves to v2,
    set_schema(b, "todo", 1, oldest=1, json_schema={"type": "object"})  # b edits v1's schema
    both_ways(a, b)
    assert len(a.get(DEFAULT_SHARE, SCHEMA, "todo").siblings) == 2
    merged = a.schema_manifest(DEFAULT_SHARE).json()
    assert merged == b.schema_manifest(DEFAULT_SHARE).json()
    (todo,) = merged["types"]
    assert todo["current"] == 2 and set(todo["json_schemas"]) == {"1", "2"}
    set_schema(b, "todo", 2, oldest=2)
    both_ways(a, b)
    assert len(a.get(DEFAULT_SHARE, SCHEMA, "todo").siblings) == 1
    assert a.schema_manifest(DEFAULT_SHARE).types["todo"].oldest_written == 2


def test_newest_versions_counts_live_records_and_the_manifest():
    (a,) = household(1)
    a.commit(DEFAULT_SHARE, [todo_op("1", {}, 1), todo_op("2", {}, 3)])
    a.commit(DEFAULT_SHARE, [entry.delete("todos", "2")])
    a.commit(DEFAULT_SHARE, [todo_op("3", {}, 2)])
    assert a.newest_versions(DEFAULT_SHARE, ["todo", "note"]) == {"todo": 2}
    assert a.newest_versions(DEFAULT_SHARE, ["todo"], ["elsewhere"]) == {}
    set_schema(a, "todo", 5)
    assert a.newest_versions(DEFAULT_SHARE, ["todo"], ["elsewhere"]) == {"todo": 5}


def test_a_manifest_record_taken_back_with_a_removed_writer_leaves_the_manifest():
    a, b, c = household(3)
    family_of(a, b, c)
    sync(a, b, FAMILY), sync(a, c, FAMILY)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    ops, _ = c.schema_set_ops(FAMILY, "todo", 1, None, TODO_V1)  # concurrent with its removal
    c.commit(FAMILY, ops)
    sync(c, b, FAMILY)
    assert "todo" in b.schema_manifest(FAMILY).types, "b has not heard of the removal yet"
    sync(a, b, FAMILY)
    assert b.schema_manifest(FAMILY).types == {}, "the cut takes c's manifest record back out"


def migrate(replica, keys):
    """The todo app's v1 -> v2 migration: a deterministic value for each v1 record."""
    ops = []
    for key in keys:
        old = msgpack.unpackb(replica.get(DEFAULT_SHARE, "todos", key).winner.value)
        state = "done" if old["done"] else "open"
        ops.append(todo_op(key, {"title": old["title"], "state": state}, 2))
    replica.commit(DEFAULT_SHARE, ops)


def test_the_same_migration_on_two_partitioned_devices_converges_with_no_conflict():
    a, b = household(2)
    a.commit(
        DEFAULT_SHARE,
        [
            todo_op("milk", {"title": "milk", "done": False}, 1),
            todo_op("tea", {"title": "tea", "done": True}, 1),
        ],
    )
    both_ways(a, b)
    migrate(a, ["milk", "tea"])  # apart, each device runs the migration
    migrate(b, ["milk", "tea"])
    both_ways(a, b)  # healed
    for key, state in (("milk", "open"), ("tea", "done")):
        ours, theirs = a.get(DEFAULT_SHARE, "todos", key), b.get(DEFAULT_SHARE, "todos", key)
        assert not ours.conflict and not theirs.conflict
        stored = a.store.record(DEFAULT_SHARE, "todos", key)
        assert len(stored) == 2 and len(ours.siblings) == 1, "both writes kept, as one value"
        assert ours.winner == theirs.winner
        assert msgpack.unpackb(ours.winner.value) == {"title": key, "state": state}
        assert {s.meta for s in stored} == {entry.pack_meta({"type": "todo", "schema_version": 2})}
    assert a.conflicts(DEFAULT_SHARE) == [] and b.conflicts(DEFAULT_SHARE) == []
