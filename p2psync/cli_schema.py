"""The `p2psync schema` command: a share's schema manifest shown and set (blocking).

`cli.py` hands this module its subparsers to fill in (`add_schema_command`) and runs the
`cmd_schema_*` functions like those of `cli_commands.py`, with the same `Command`. Like every
command it goes through the control socket only (`schema_get`, `schema_set`); the rules of the
manifest are the daemon's (`schemas/manifest.py`).
"""

import argparse
import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from .cli_commands import Command, UsageError, write_lines
from .cli_format import DEFAULT_SHARE, command_parser, safe_text, table

SCHEMA_HELP = (
    "Each share holds a schema manifest, synced like its records: for each record type, the "
    "version apps write now (current), the oldest version still written (oldest_written; writes "
    "of older versions are refused) and, optionally, a JSON Schema per version that values "
    "written on this device must match. Values received from other devices are never refused, "
    "and records are never rewritten: apps migrate them (docs/writing-an-app.md)."
)
SCHEMA_EXAMPLES = """\
  p2psync schema show
  p2psync schema set todo --current 1 --json-schema todo-v1.json
  p2psync schema set todo --current 2 --json-schema todo-v2.json
  p2psync schema set todo --current 2 --oldest 2
"""


def cmd_schema_show(c: Command) -> int:
    found = c.client.call("schema_get", share=c.args.share)
    types = [t for t in found.get("types") or [] if isinstance(t, Mapping)]
    return c.say(found, lambda: write_lines(c.out, schema_lines(found.get("share"), types)))


def cmd_schema_set(c: Command) -> int:
    params: dict[str, Any] = {"share": c.args.share, "type": c.args.type, "current": c.args.current}
    if c.args.oldest is not None:
        params["oldest_written"] = c.args.oldest
    if c.args.json_schema is not None:
        params["json_schema"] = read_json_schema(c.args.json_schema)
    done = c.client.call("schema_set", **params)
    return c.done(done, lambda: write_lines(c.out, set_lines(done)))


def read_json_schema(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            schema = json.load(file)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError(f"{path} must hold a JSON Schema, which is a JSON object")
    return schema


def schema_lines(share: object, types: list[Mapping[str, Any]]) -> list[str]:
    if not types:
        return [f"share {safe_text(share)} has no schema manifest (`p2psync schema set` makes one)"]
    rows = [
        [
            safe_text(t.get("type")),
            str(t.get("current")),
            str(t.get("oldest_written")),
            ", ".join(f"v{v}" for v in sorted(t.get("json_schemas") or {}, key=_number)) or "-",
        ]
        for t in types
    ]
    return table(["TYPE", "CURRENT", "OLDEST WRITTEN", "JSON SCHEMAS"], rows, right=(1, 2))


def set_lines(done: Mapping[str, Any]) -> list[str]:
    name, current, oldest = done.get("type"), done.get("current"), done.get("oldest_written")
    line = f"type {safe_text(name)} in share {safe_text(done.get('share'))}: current {current}"
    written = f"versions {oldest} to {current}" if oldest != current else f"version {current}"
    return [f"{line}, apps may write {written}"]


def _number(version: str) -> int:
    return int(version) if version.isdigit() else 0


def add_schema_command(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    common: argparse.ArgumentParser,
    epilog: str,
) -> None:
    """The `schema` command and its subcommands, among `commands`; `common` holds the options of
    every command (--socket, --json), `epilog` what every command's help ends with."""

    parser = partial(command_parser, common, epilog)

    schema = parser(
        commands, "schema", "show and set the record types of a share", SCHEMA_HELP, SCHEMA_EXAMPLES
    )
    subcommands = schema.add_subparsers(dest="schema_command", metavar="SUBCOMMAND", required=True)

    def subcommand(
        name: str, run: Callable[[Command], int], summary: str, details: str, examples: str
    ) -> argparse.ArgumentParser:
        sub = parser(subcommands, name, summary, details, examples)
        sub.set_defaults(run=run)
        sub.add_argument(
            "--share",
            metavar="NAME",
            default=DEFAULT_SHARE,
            help=f"the share whose manifest to use (default: {DEFAULT_SHARE})",
        )
        return sub

    subcommand(
        "show",
        cmd_schema_show,
        "show the share's record types: current and oldest written version, JSON Schemas",
        "--json prints the whole manifest, JSON Schemas included.",
        "  p2psync schema show\n  p2psync schema show --share family --json\n",
    )
    set_type = subcommand(
        "set",
        cmd_schema_set,
        "set a record type's current version, oldest version written and JSON Schema",
        "Versions only go up. --json-schema gives the JSON Schema of the current version (draft "
        "2020-12 unless the file's $schema names another); the schemas of earlier versions stay. "
        "--oldest stays as it was (1 for a new type) unless given: raise it once no device runs "
        "an app that writes the older versions. Admins only.",
        "  p2psync schema set todo --current 2 --json-schema todo-v2.json\n"
        "  p2psync schema set todo --current 2 --oldest 2\n",
    )
    set_type.add_argument("type", metavar="TYPE", help="the record type, as apps write it")
    set_type.add_argument(
        "--current", metavar="N", type=int, required=True, help="the version apps write now"
    )
    set_type.add_argument(
        "--oldest", metavar="N", type=int, help="the oldest version apps may still write"
    )
    set_type.add_argument(
        "--json-schema",
        metavar="FILE",
        help="a file holding the JSON Schema that values of version --current must match",
    )
