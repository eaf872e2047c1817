"""The schema manifest model (p2psync/schemas/manifest.py): what schema_set may set, the stored
form, concurrent sets merged the same way everywhere, the check of a local write, `reads`."""

import msgpack
import pytest

from p2psync import entry
from p2psync.merge import Sibling
from p2psync.schemas.manifest import (
    SCHEMA,
    InvalidValue,
    Manifest,
    ManifestError,
    decode_type,
    encode_type,
    merged_type,
    parse_reads,
    set_type,
)

TODO_V1 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "done": {"type": "boolean"}},
    "required": ["title", "done"],
}
TODO_V2 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "state": {"enum": ["open", "doing", "done"]}},
    "required": ["title", "state"],
}


def todo(value, version=None, kind="todo"):
    return entry.put("todos", "k", msgpack.packb(value), type=kind, schema_version=version)


def sibling(actor, seq, hlc, schema, deleted=False):
    return Sibling(actor, seq, hlc, deleted, None if deleted else encode_type(schema), None)


def test_set_type_starts_at_oldest_1_keeps_old_schemas_and_only_goes_up():
    v1 = set_type(None, "todo", 1, json_schema=TODO_V1)
    assert (v1.current, v1.oldest_written, dict(v1.json_schemas)) == (1, 1, {1: TODO_V1})
    v2 = set_type(v1, "todo", 2, json_schema=TODO_V2)
    assert (v2.current, v2.oldest_written) == (2, 1), "raising current retires nobody"
    assert dict(v2.json_schemas) == {1: TODO_V1, 2: TODO_V2}
    retired = set_type(v2, "todo", 2, oldest_written=2)
    assert retired.oldest_written == 2 and dict(retired.json_schemas) == dict(v2.json_schemas)
    with pytest.raises(ManifestError, match="at version 2 already; versions only go up"):
        set_type(v2, "todo", 1)
    with pytest.raises(ManifestError, match=r"'oldest_written' \(3\) cannot be newer"):
        set_type(v2, "todo", 2, oldest_written=3)
    with pytest.raises(ManifestError, match="'current' must be an integer from 1"):
        set_type(None, "todo", 0)
    with pytest.raises(ManifestError, match="type name must be a string of 1 to 200"):
        set_type(None, "", 1)


def test_an_invalid_json_schema_is_refused_with_where_and_why():
    with pytest.raises(ManifestError) as refused:
        set_type(None, "todo", 1, json_schema={"type": "object", "properties": {"a": {"type": 5}}})
    assert str(refused.value).startswith("not a valid JSON Schema: at $.properties.a.type: 5 is")
    with pytest.raises(ManifestError, match="must be an object"):
        set_type(None, "todo", 1, json_schema=["not", "a", "schema"])  # type: ignore[arg-type]


def test_the_stored_form_reads_back_and_a_broken_record_adds_nothing():
    v2 = set_type(set_type(None, "todo", 1, json_schema=TODO_V1), "todo", 2, json_schema=TODO_V2)
    assert decode_type("todo", encode_type(v2)) == v2
    newer = msgpack.packb({"current": 2, "oldest_written": 1, "deprecated_after": "2027"})
    from_newer = decode_type("todo", newer)
    assert from_newer is not None and from_newer.unknown == {"deprecated_after": "2027"}
    rewritten = decode_type("todo", encode_type(set_type(from_newer, "todo", 3)))
    assert rewritten is not None and rewritten.unknown == {"deprecated_after": "2027"}, "kept"
    assert decode_type("todo", b"\xc1") is None
    assert decode_type("todo", msgpack.packb({"current": "2", "oldest_written": 1})) is None
    assert decode_type("todo", None) is None


def test_concurrent_sets_merge_to_the_highest_versions_and_every_schema_in_any_order():
    base = set_type(None, "todo", 1, json_schema=TODO_V1)
    ours = set_type(base, "todo", 2, json_schema=TODO_V2)  # one device moves to v2
    theirs = set_type(base, "todo", 1, oldest_written=1, json_schema={"type": "object"})
    siblings = [sibling("A/1", 4, 100, ours), sibling("B/1", 7, 200, theirs)]
    merged = merged_type("todo", siblings)
    assert merged == merged_type("todo", list(reversed(siblings))), "the same on every device"
    assert merged is not None and (merged.current, merged.oldest_written) == (2, 1)
    # v1's schema: the newer write's (hlc 200); v2's: the only one there is
    assert dict(merged.json_schemas) == {1: {"type": "object"}, 2: TODO_V2}
    deleted = sibling("C/1", 1, 300, base, deleted=True)
    assert merged_type("todo", [deleted]) is None
    assert merged_type("todo", [*siblings, deleted]) == merged


def test_a_write_is_checked_against_its_version_or_current_and_oldest_written():
    manifest = Manifest(
        {
            "todo": set_type(
                set_type(None, "todo", 1, json_schema=TODO_V1),
                "todo",
                2,
                oldest_written=2,
                json_schema=TODO_V2,
            )
        }
    )
    manifest.check_write(todo({"title": "milk", "state": "open"}, 2))
    manifest.check_write(todo({"title": "milk", "state": "open"}))  # no version: current's
    manifest.check_write(todo({"anything": True}, 3))  # newer than this device knows: not refused
    manifest.check_write(todo({"x": 1}, kind="note"))  # a type the manifest does not list
    manifest.check_write(entry.delete("todos", "k", type="todo", schema_version=1))
    with pytest.raises(InvalidValue) as failing:
        manifest.check_write(todo({"title": "milk", "state": "later"}, 2))
    assert str(failing.value) == (
        "todos/k: value does not match the JSON Schema of 'todo' version 2: at $.state: "
        "'later' is not one of ['open', 'doing', 'done']"
    )
    with pytest.raises(InvalidValue, match=r"no longer written below version 2 \(its oldest"):
        manifest.check_write(todo({"title": "milk", "done": False}, 1))


def test_a_schema_referring_elsewhere_refuses_writes_and_fetches_nothing():
    remote = set_type(None, "todo", 1, json_schema={"$ref": "http://127.0.0.1:9/todo.json"})
    with pytest.raises(InvalidValue, match=r"cannot be applied: .*schemas must be self-contained"):
        Manifest({"todo": remote}).check_write(todo({}, 1))


def test_without_a_manifest_nothing_is_refused():
    Manifest().check_write(todo(None, 1))
    assert Manifest().json() == {"types": []}
    assert SCHEMA == "_schema"


def test_reads_declare_the_newest_version_understood():
    assert parse_reads({"todo": {"max_schema_version": 1}}) == {"todo": 1}
    for bad, message in [
        ([], "'reads' must be an object"),
        ({"todo": 1}, "'reads' of 'todo' must be"),
        ({"todo": {"max_schema_version": 0}}, "'max_schema_version' of 'todo' must be"),
        ({"todo": {"max_schema_version": 1, "x": 2}}, "'reads' of 'todo' must be"),
    ]:
        with pytest.raises(ManifestError, match=message):
            parse_reads(bad)
