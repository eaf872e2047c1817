"""Record values between control-socket JSON and the stored msgpack (pure).

It owns what a value looks like on each side: JSON in, msgpack stored; msgpack out, JSON shown,
with what JSON cannot carry tagged, never dropped (bytes, non-string map keys, non-finite floats,
extension types, bytes that are not msgpack at all), and the check that request text is valid
Unicode. Of the tags only `{"$base64": ...}` is read back (as bytes), so bytes survive a value
read and written again; the others are shown, never interpreted. It never touches sockets or the
store, and it knows nothing of records or methods (`api.py` builds those shapes from values).
"""

import base64
import json
import math
import re
from typing import Any

import msgpack

from .errors import BAD_REQUEST, RequestError

# JSON text can only carry a lone surrogate as an escape: a line without one needs no walk
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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


_PACKED_TAG_KEY = msgpack.packb("$base64")


def value_from_json(value: Any) -> bytes:
    """A JSON value as stored: msgpack, with each `{"$base64": ...}` that `jsonable` would show
    for bytes stored as those bytes (so a value read and written back keeps its bytes)."""
    try:
        packed = msgpack.packb(value)
        # A tag is a map with the key "$base64", which packs as these bytes: a value whose
        # packing lacks them holds none, and is stored without walking it (a batch's thousand
        # values spent a fifth of its event loop's time on the walk).
        if _PACKED_TAG_KEY not in packed or not _holds_bytes_tag(value):
            return packed
        return msgpack.packb(_untagged(value))
    except (ValueError, OverflowError, TypeError) as exc:
        raise RequestError(BAD_REQUEST, f"value cannot be stored: {exc}") from None


def _bytes_of_tag(value: dict[str, Any]) -> bytes | None:
    """The bytes a `{"$base64": "..."}` object stands for: only an object with that one key,
    holding base64 exactly as `jsonable` writes it (padded, no line breaks); any other object is
    stored as the object it is."""
    if len(value) != 1:
        return None
    text = value.get("$base64")
    if not isinstance(text, str):
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return data if base64.b64encode(data).decode() == text else None


def _holds_bytes_tag(value: Any) -> bool:
    """Whether there is anything to untag: most values have no tag, and are stored untouched."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if len(item) == 1 and _bytes_of_tag(item) is not None:
                return True
            stack += [inner for inner in item.values() if isinstance(inner, dict | list)]
        elif isinstance(item, list):
            stack += [inner for inner in item if isinstance(inner, dict | list)]
    return False


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        data = _bytes_of_tag(value)
        return data if data is not None else {k: _untagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    return value


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
