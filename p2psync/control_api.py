"""Translation between control-socket JSON and the replica (pure).

Owns the error codes, request parameter checks, JSON <-> msgpack values (what JSON cannot carry
is tagged, never dropped) and the JSON shapes of records, siblings and changes. It never touches
sockets or the store: control_connection.py reads lines, control.py calls the replica, this module
only converts.
"""

import base64
import errno
import json
import math
import re
import sqlite3
from typing import Any

import msgpack

from . import entry as entries
from .entry import Op
from .merge import Sibling
from .replica import DEFAULT_SHARE, Change, RecordView
from .vectors import device_of

BAD_REQUEST = "bad_request"
UNKNOWN_METHOD = "unknown_method"
NOT_FOUND = "not_found"
TOO_LARGE = "too_large"
CONFLICT = "conflict"
PAIRING_FAILED = "pairing_failed"
FORBIDDEN = "forbidden"  # an app asked for something outside its grants (access/grants.py)
DISK_FULL = "disk_full"
DISK_FULL_MESSAGE = (
    "the disk holding this device's database is full, so nothing was written; free some space "
    "there and send it again (reads keep working)"
)
# JSON text can only carry a lone surrogate as an escape: a line without one needs no walk
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class RequestError(Exception):
    """A request answered with an error response: a stable `code` and a human `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# values ---------------------------------------------------------------------------------------


def json_from_value(raw: bytes | None) -> Any:
    """A stored msgpack value as JSON; what JSON cannot carry is tagged (see the protocol doc)."""
    if raw is None:
        return None
    try:
        return jsonable(msgpack.unpackb(raw, raw=False, strict_map_key=False))
    except Exception:  # a peer may store anything; an unreadable value is shown, not fatal
        return {"$raw": base64.b64encode(raw).decode()}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key_text(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value).replace("inf", "Infinity").replace("nan", "NaN")}
    if isinstance(value, msgpack.ExtType):
        return {"$ext": value.code, "$base64": base64.b64encode(value.data).decode()}
    if isinstance(value, msgpack.Timestamp):
        return {"$timestamp_ns": value.to_unix_nano()}
    return value


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(jsonable(key), sort_keys=True)


def value_from_json(value: Any) -> bytes:
    try:
        return msgpack.packb(value)
    except (ValueError, OverflowError, TypeError) as exc:
        raise RequestError(BAD_REQUEST, f"value cannot be stored: {exc}") from None


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
    return {
        "collection": op.collection,
        "key": op.key,
        "op": "delete" if deleted else "put",
        "value": None if deleted else json_from_value(op.value),
        "deleted": deleted,
        "origin": device_of(change.actor),
        **jsonable(meta_fields(op.meta)),
    }


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or what it was raised from, is SQLite's SQLITE_FULL or ENOSPC."""
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if isinstance(found, sqlite3.Error):
            code = getattr(found, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or (
                "database or disk is full" in str(found)
            ):
                return True
        if isinstance(found, OSError) and found.errno == errno.ENOSPC:
            return True
        found = found.__cause__ or found.__context__
    return False


def reject_lone_surrogates(request: Any) -> None:
    """Text must be valid Unicode: a lone surrogate (JSON `"\\ud800"`) cannot be stored, sent to
    peers or even logged as UTF-8, so it is refused here, naming where it was."""
    stack: list[tuple[str, Any]] = [("", request)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not _valid_unicode(value):
                raise _surrogate_error(f"{where!r}" if where else "the request")
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _valid_unicode(key):
                    raise _surrogate_error(f"a key in {where!r}" if where else "a parameter name")
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(value))


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_error(where: str) -> RequestError:
    return RequestError(
        BAD_REQUEST,
        f"{where} is not valid Unicode text: it holds a lone surrogate (such as \\ud800); "
        "send text as UTF-8, or characters beyond U+FFFF as a surrogate pair",
    )


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
            "use trust/revoke for devices",
        )
    return collection


def share_param(request: dict[str, Any]) -> str:
    share: str = param(request, "share", str, DEFAULT_SHARE)
    if not share:
        raise RequestError(BAD_REQUEST, "parameter 'share' must not be empty")
    return share


def write_op(request: dict[str, Any], kind: str) -> Op:
    collection = collection_param(request, writing=True)
    key: str = param(request, "key", str)
    meta = {
        "type": param(request, "type", str, None),
        "schema_version": param(request, "schema_version", int, None),
    }
    if kind == "delete":
        return entries.delete(collection, key, **meta)
    if kind != "put":
        raise RequestError(BAD_REQUEST, '\'op\' must be "put" or "delete"')
    if "value" not in request:
        raise RequestError(BAD_REQUEST, "missing parameter 'value' (null is a value: send null)")
    return entries.put(collection, key, value_from_json(request["value"]), **meta)


def transaction_ops(request: dict[str, Any]) -> list[Op]:
    listed: list[Any] = param(request, "ops", list)
    if not listed:
        raise RequestError(BAD_REQUEST, "a transaction needs at least one op")
    ops = []
    for index, item in enumerate(listed):
        if not isinstance(item, dict):
            raise RequestError(BAD_REQUEST, f"ops[{index}] must be an object")
        try:
            ops.append(write_op(item, param(item, "op", str)))
        except RequestError as exc:
            raise RequestError(exc.code, f"ops[{index}]: {exc.message}") from None
    return ops
