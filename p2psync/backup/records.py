"""Export and import lines: one record per line of JSON (pure).

A line is `{"collection", "key", "value", "type", "schema_version"}` with the value as the control
protocol writes it (bytes as `{"$base64": ...}`), so what `get` shows is what is exported and
`put` takes it back unchanged. A record whose winner is a delete is exported only while it is in
conflict with a live version (then with `"deleted": true`). A record in conflict carries
`"conflict": true` and every version in `"siblings"` (as `get --all` shows them), for people and
programs to look at; import writes the winner (the version every device shows) as a new write.
Import ignores fields it does not know, so an export of a newer p2psync still imports. This
module never reads a file or talks to the daemon.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# a transaction of an import: far below the control socket's 1 MiB line limit, few fsyncs
BATCH_OPS = 1000
BATCH_BYTES = 512 * 1024
SIBLING_FIELDS = ("version", "origin", "hlc", "deleted", "value", "type", "schema_version")


class ImportLineError(ValueError):
    """A line that is not an exported record; the message names the line."""


def export_line(item: Mapping[str, Any], siblings: Iterable[Mapping[str, Any]] = ()) -> str:
    """The line of a record as `scan` gives it, with its versions when it is in conflict."""
    line: dict[str, Any] = {
        "collection": item["collection"],
        "key": item["key"],
        "value": item["value"],
        "type": item.get("type"),
        "schema_version": item.get("schema_version"),
    }
    if item.get("deleted"):
        line["deleted"] = True
    if item.get("conflict"):
        line["conflict"] = True
        line["siblings"] = [{name: s.get(name) for name in SIBLING_FIELDS} for s in siblings]
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def import_op(text: str, number: int) -> dict[str, Any] | None:
    """The transaction op that writes line `number` back (None for a blank line)."""
    if not text.strip():
        return None
    where = f"line {number}"
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise ImportLineError(f"{where} is not JSON ({exc})") from None
    if not isinstance(found, dict):
        raise ImportLineError(f"{where} is not an object with collection, key and value")
    for name in ("collection", "key"):
        if not isinstance(found.get(name), str) or (not found[name] and name == "collection"):
            raise ImportLineError(f"{where}: {name!r} must be a string")
    if found["collection"].startswith("_"):
        raise ImportLineError(
            f"{where}: collection {found['collection']!r} is p2psync's own (names starting with "
            "'_'); export never writes it"
        )
    if found.get("type") is not None and not isinstance(found["type"], str):
        raise ImportLineError(f"{where}: 'type' must be a string or null")
    version = found.get("schema_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ImportLineError(f"{where}: 'schema_version' must be a whole number or null")
    deleted = found.get("deleted", False) is True
    if not deleted and "value" not in found:
        raise ImportLineError(f"{where} has no 'value' (null is a value: write null)")
    op: dict[str, Any] = {
        "op": "delete" if deleted else "put",
        "collection": found["collection"],
        "key": found["key"],
        "type": found.get("type"),
        "schema_version": version,
    }
    if not deleted:
        op["value"] = found["value"]
    return op


def batches(
    ops: Iterable[dict[str, Any]], max_ops: int = BATCH_OPS, max_bytes: int = BATCH_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """Ops grouped into transactions of at most `max_ops` ops and about `max_bytes` of JSON (an
    op larger than that goes alone: the daemon says if it is too large)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for op in ops:
        op_size = len(json.dumps(op, ensure_ascii=False))
        if batch and (len(batch) >= max_ops or size + op_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(op)
        size += op_size
    if batch:
        yield batch
