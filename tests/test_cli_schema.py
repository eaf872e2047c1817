"""`p2psync schema`: parsing, help, what it prints, and against real daemons: a manifest set on
one device reaches the other and refuses bad writes there, and the same v1 -> v2 migration run on
two partitioned devices converges with no conflict."""

import json
from pathlib import Path
from typing import Any

import pytest

from p2psync import cli_schema
from p2psync.cli import build_parser
from p2psync.cli_commands import UsageError
from p2psync.cli_schema import read_json_schema, schema_lines, set_lines
from tests.daemons import DaemonProcess, introduce, running, wait_for, wait_for_value
from tests.test_cli import run_cli

TODO_V2 = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "state": {"enum": ["open", "done"]}},
    "required": ["title", "state"],
}


def test_the_schema_subcommands_parse() -> None:
    parser = build_parser()
    shown = parser.parse_args(["schema", "show", "--share", "family", "--json"])
    assert shown.run is cli_schema.cmd_schema_show and shown.share == "family" and shown.json
    set_args = ["schema", "set", "todo", "--current", "2", "--oldest", "1", "--json-schema", "f"]
    parsed = parser.parse_args(set_args)
    assert parsed.run is cli_schema.cmd_schema_set and parsed.share == "default"
    assert (parsed.type, parsed.current, parsed.oldest, parsed.json_schema) == ("todo", 2, 1, "f")
    with pytest.raises(SystemExit):
        parser.parse_args(["schema", "set", "todo"])  # --current is required


def test_show_and_set_print_a_table_and_a_sentence() -> None:
    assert schema_lines("default", []) == [
        "share default has no schema manifest (`p2psync schema set` makes one)"
    ]
    types = [
        {"type": "todo", "current": 2, "oldest_written": 1, "json_schemas": {"10": {}, "2": {}}},
        {"type": "note\x1b[2J", "current": 1, "oldest_written": 1, "json_schemas": {}},
    ]
    assert schema_lines("default", types) == [
        "TYPE      CURRENT  OLDEST WRITTEN  JSON SCHEMAS",
        "todo            2               1  v2, v10",
        "note?[2J        1               1  -",
    ]
    done = {"share": "default", "type": "todo", "current": 2, "oldest_written": 2}
    assert set_lines(done) == ["type todo in share default: current 2, apps may write version 2"]
    assert set_lines({**done, "oldest_written": 1})[0].endswith("apps may write versions 1 to 2")


def test_a_json_schema_file_that_cannot_be_used_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        read_json_schema(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": ')
    with pytest.raises(UsageError, match="is not JSON"):
        read_json_schema(str(broken))
    broken.write_text("[1]")
    with pytest.raises(UsageError, match="must hold a JSON Schema, which is a JSON object"):
        read_json_schema(str(broken))


def todo(daemon: DaemonProcess, key: str, value: Any, version: int) -> Any:
    return daemon.call(
        "put", collection="todos", key=key, value=value, type="todo", schema_version=version
    )


def migrate(daemon: DaemonProcess) -> None:
    """The todo app's v1 -> v2 migration: a deterministic v2 value for each v1 record."""
    page = daemon.call("scan", collection="todos", type="todo", max_schema_version=1)
    for item in page["items"]:
        state = "done" if item["value"]["done"] else "open"
        todo(daemon, item["key"], {"title": item["value"]["title"], "state": state}, 2)


async def test_a_manifest_travels_and_the_same_migration_apart_converges(tmp_path: Path) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    schema_file = tmp_path / "todo-v2.json"
    schema_file.write_text(json.dumps(TODO_V2))
    with running(a, b):
        introduce(a, b)
        todo(a, "milk", {"title": "milk", "done": False}, 1)
        todo(a, "tea", {"title": "tea", "done": True}, 1)
        wait_for_value(b, "todos", "tea", {"title": "tea", "done": True})
        set_v2 = await run_cli(
            a, "schema", "set", "todo", "--current", "2", "--json-schema", str(schema_file)
        )
        assert set_v2.returncode == 0, set_v2.stderr
        assert b"apps may write versions 1 to 2" in set_v2.stdout

        def b_knows_v2() -> bool:
            types = b.call("schema_get")["types"]
            return bool(types) and types[0]["current"] == 2

        wait_for(b_knows_v2, "the manifest on b", a, b)
        shown = await run_cli(b, "schema", "show", "--json")
        assert json.loads(shown.stdout)["types"][0]["json_schemas"] == {"2": TODO_V2}
        refused = await run_cli(
            b, "put", "todos", "x", '{"title": "x"}', "--type", "todo", "--schema-version", "2"
        )
        assert refused.returncode == 1
        assert "at $: 'state' is a required property" in refused.stderr.decode()

        a.stop()  # apart, each device runs the same migration
        migrate(b)
        b.stop()
        a.start()
        migrate(a)
        b.start()

        def converged() -> bool:
            versions = [
                [d.call("get", collection="todos", key=key)["version"] for d in (a, b)]
                for key in ("milk", "tea")
            ]
            return all(ours == theirs for ours, theirs in versions)

        wait_for(converged, "the migrated records to converge", a, b)
        for key, state in (("milk", "open"), ("tea", "done")):
            views = [d.call("get", collection="todos", key=key, all=True) for d in (a, b)]
            assert views[0] == views[1]
            assert not views[0]["conflict"] and len(views[0]["siblings"]) == 1
            assert views[0]["value"] == {"title": key, "state": state}
            assert (views[0]["type"], views[0]["schema_version"]) == ("todo", 2)
        assert a.call("conflicts")["items"] == [] and b.call("conflicts")["items"] == []
