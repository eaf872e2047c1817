"""Requests and answers of the control socket's data methods, between JSON and the replica (pure).

It owns the request parameter checks (types, missing ones, reserved collections, shares), the
ops a write request makes, and the JSON shapes of records, siblings and changes. Values inside
them are `values.py`'s, error codes `errors.py`'s. It never touches sockets or the store:
`connection.py` reads lines, the method modules call the replica, this module only converts.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgpack

from .. import entry as entries
from .. import merge
from ..entry import Op
from ..merge import Sibling
from ..replica import DEFAULT_SHARE, Change, Commit, Precondition, RecordView
from ..schemas.manifest import MAX_VERSION, ManifestError, meta_type, parse_reads
from ..vectors import device_of
from .errors import BAD_REQUEST, RequestError
from .schema import check_op_parameters
from .values import json_from_value, jsonable, value_from_json

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
    return {
        "position": commit.lseq,
        "seq": commit.seq,
        "hlc": commit.hlc,
        "version": commit.version,
    }


# request parameters ---------------------------------------------------------------------------

_MISSING = object()
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}


def param(request: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    value = request.get(name)
    if value is None:
        if default is _MISSING:
            raise RequestError(BAD_REQUEST, f"missing parameter {name!r}")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(BAD_REQUEST, f"parameter {name!r} must be {_TYPE_NAMES[kind]}")
    return value


def collection_param(request: dict[str, Any], *, writing: bool = False) -> str:
    collection: str = param(request, "collection", str)
    if not collection:
        raise RequestError(BAD_REQUEST, "parameter 'collection' must not be empty")
    if writing and collection.startswith("_"):
        raise RequestError(
            BAD_REQUEST,
            f"collection {collection!r} is reserved for p2psync itself (names starting with '_'); "
            "use trust/revoke for devices, share_add/share_remove for members, schema_set for "
            "schema manifests",
        )
    return collection


def share_param(request: dict[str, Any]) -> str:
    share: str = param(request, "share", str, DEFAULT_SHARE)
    if not share:
        raise RequestError(BAD_REQUEST, "parameter 'share' must not be empty")
    return share


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


@dataclass
class Write:
    """What a write request asks to commit: its ops, and the versions they expect."""

    ops: list[Op]
    preconditions: list[Precondition] = field(default_factory=list)


def write_op(request: dict[str, Any], kind: str) -> Op:
    collection, key = request.get("collection"), request.get("key")
    # the usual op takes no param() call: the checks below pass exactly what they would pass
    if type(collection) is not str or not collection or collection[0] == "_":
        collection = collection_param(request, writing=True)
    if type(key) is not str:
        key = param(request, "key", str)
    type_name, version = request.get("type"), request.get("schema_version")
    if type_name is None and version is None:
        meta = None
    else:
        meta = _packed_meta(
            param(request, "type", str, None), param(request, "schema_version", int, None)
        )
    if kind == "delete":
        return entries.packed_op(entries.DELETE, collection, key, None, meta)
    if kind != "put":
        raise RequestError(BAD_REQUEST, '\'op\' must be "put" or "delete"')
    if "value" not in request:
        raise RequestError(BAD_REQUEST, "missing parameter 'value' (null is a value: send null)")
    return entries.packed_op(entries.PUT, collection, key, value_from_json(request["value"]), meta)


@lru_cache(maxsize=256)  # writes name a few types: packing the same meta per op showed
def _packed_meta(type_name: str | None, schema_version: int | None) -> bytes | None:
    return entries.pack_meta({"type": type_name, "schema_version": schema_version})


def if_version_param(request: dict[str, Any], op: Op, label: str = "") -> list[Precondition]:
    """`if_version`: the write happens only if the record's winner is at that version ("": the
    record does not exist or is deleted); otherwise the answer is `conflict`."""
    version: str | None = param(request, "if_version", str, None)
    return [] if version is None else [Precondition(op.collection, op.key, version, label)]


def single_write(request: dict[str, Any], kind: str) -> Write:
    """`put` and `delete`."""
    op = write_op(request, kind)
    return Write([op], if_version_param(request, op))


def transaction_write(request: dict[str, Any]) -> Write:
    listed: list[Any] = param(request, "ops", list)
    if not listed:
        raise RequestError(BAD_REQUEST, "a transaction needs at least one op")
    write = Write([])
    for index, item in enumerate(listed):
        if not isinstance(item, dict):
            raise RequestError(BAD_REQUEST, f"ops[{index}] must be an object")
        try:
            check_op_parameters(item)
            op = write_op(item, param(item, "op", str))
            if item.get("if_version") is not None:
                write.preconditions += if_version_param(item, op, f"ops[{index}]: ")
        except RequestError as exc:
            raise RequestError(exc.code, f"ops[{index}]: {exc.message}") from None
        write.ops.append(op)
    return write
