"""Answers of the control socket's data methods: JSON shapes of records, changes and commits (pure).

It owns the JSON shapes of records, siblings, changes and commits, and the read parameters
(type filters, `hello`'s reads); write requests are `writes.py`'s, values inside them
`values.py`'s, error codes `errors.py`'s. It never touches sockets or the store: `connection.py`
reads lines, the method modules call the replica, this module only converts.
"""

from dataclasses import dataclass
from typing import Any

import msgpack

from .. import entry as entries
from .. import merge
from ..merge import Sibling
from ..replica import Change, Commit, RecordView
from ..schemas.manifest import MAX_VERSION, ManifestError, meta_type, parse_reads
from ..vectors import device_of
from .errors import BAD_REQUEST, RequestError
from .values import json_from_value, jsonable
from .writes import Written, param, written_json

# records and changes ----------------------------------------------------------------------------


def meta_fields(meta: bytes | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if meta is not None:
        try:
            fields = msgpack.unpackb(meta, raw=False, strict_map_key=False)
        except Exception:
            fields = {}
    if not isinstance(fields, dict):
        fields = {}
    return {"type": fields.get("type"), "schema_version": fields.get("schema_version")}


def sibling_json(sibling: Sibling) -> dict[str, Any]:
    return {
        "version": sibling.version,
        "origin": device_of(sibling.actor),
        "hlc": sibling.hlc,
        "deleted": sibling.deleted,
        "value": None if sibling.deleted else json_from_value(sibling.value),
        **jsonable(meta_fields(sibling.meta)),
    }


def record_json(view: RecordView, *, siblings: bool) -> dict[str, Any]:
    found = {
        "collection": view.collection,
        "key": view.key,
        **sibling_json(view.winner),
        "conflict": view.conflict,
    }
    if siblings:
        found["siblings"] = [sibling_json(s) for s in view.siblings]
    return found


def change_json(change: Change) -> dict[str, Any]:
    op = change.op
    deleted = op.kind == entries.DELETE
    shown = {
        "collection": op.collection,
        "key": op.key,
        "op": "delete" if deleted else "put",
        "value": None if deleted else json_from_value(op.value),
        "deleted": deleted,
        "version": merge.dot_version(change.actor, change.seq),
        "origin": device_of(change.actor),
        **jsonable(meta_fields(op.meta)),
    }
    if deleted:  # what the delete replaced here: the winner's value (None: nothing live)
        shown["previous"] = json_from_value(change.previous)
    return shown


def commit_json(commit: Commit) -> dict[str, Any]:
    """The answer to a write: where it is in this daemon's log, and the version it wrote."""
    return written_json(written(commit))


def written(commit: Commit) -> Written:
    return commit.lseq, commit.seq, commit.hlc, commit.actor


# request parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeFilter:
    """`scan` and `watch` by record type and schema version: `type` must be the write's, and a
    version range (bounds inclusive) needs a `schema_version` within it."""

    type: str | None = None
    min_version: int | None = None
    max_version: int | None = None

    def matches(self, meta: bytes | None) -> bool:
        name, version = meta_type(meta)
        if self.type is not None and name != self.type:
            return False
        if self.min_version is None and self.max_version is None:
            return True
        if version is None:
            return False
        low = 0 if self.min_version is None else self.min_version
        high = MAX_VERSION if self.max_version is None else self.max_version
        return low <= version <= high


def type_filter_param(request: dict[str, Any]) -> TypeFilter | None:
    """The type filter a `scan` or `watch` asks for; None: every record."""
    name: str | None = param(request, "type", str, None)
    low: int | None = param(request, "min_schema_version", int, None)
    high: int | None = param(request, "max_schema_version", int, None)
    if name is None and low is None and high is None:
        return None
    if name == "":
        raise RequestError(BAD_REQUEST, "parameter 'type' must not be empty")
    for bound, given in (("min_schema_version", low), ("max_schema_version", high)):
        if given is not None and not 0 <= given <= MAX_VERSION:
            raise RequestError(BAD_REQUEST, f"'{bound}' must be from 0 to {MAX_VERSION}")
    if low is not None and high is not None and low > high:
        raise RequestError(
            BAD_REQUEST, f"'min_schema_version' ({low}) is above 'max_schema_version' ({high})"
        )
    return TypeFilter(name, low, high)


def reads_param(request: dict[str, Any]) -> dict[str, int]:
    """`hello`'s `reads`: which schema versions of which types the client understands."""
    try:
        return parse_reads(request.get("reads"))
    except ManifestError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
