"""Write requests of the control socket: their parameters and the transaction each asks for (pure).

It owns the parameter checks every method shares (types, missing ones, reserved collections,
shares) and turning `put`, `delete` and `transaction` requests into ops and preconditions. It is
imported by the daemon and by its front-end process (`front_end.py`), which must start quickly:
it never imports the replica, the store or trio.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .. import entry as entries
from ..entry import Op
from ..merge import Precondition, dot_version
from ..shares import DEFAULT_SHARE
from .errors import BAD_REQUEST, RequestError
from .lines import error_line, json_line
from .schema import check_op_parameters
from .values import value_from_json

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


# A committed write: its position in this daemon's log, its seq, hlc and actor.
Written = tuple[int, int, int, str]


def written_json(write: Written) -> dict[str, Any]:
    """The answer to a write: where it is in this daemon's log, and the version it wrote."""
    position, seq, hlc, actor = write
    return {"position": position, "seq": seq, "hlc": hlc, "version": dot_version(actor, seq)}


# How a write went: what it wrote, or its error's code and message.
Outcome = tuple[Written | None, str, str]


def answer_line(request_id: Any, outcome: Outcome) -> bytes:
    """The answer to a write request: its result, or its error."""
    done, code, message = outcome
    if done is None:
        return error_line(request_id, code, message)
    return json_line({"id": request_id, "ok": True, "result": written_json(done)})


# the write methods: each answered once its transaction commits (connection.py, front_end.py)
WRITE_REQUESTS: dict[str, Callable[[dict[str, Any]], Write]] = {
    "put": lambda request: single_write(request, "put"),
    "delete": lambda request: single_write(request, "delete"),
    "transaction": transaction_write,
}
