"""Values and request lines: Python values to the protocol's JSON and back.

Values are JSON, and what JSON cannot carry is tagged (docs/control-protocol.md, "Values"). The
client sends a Python `bytes` (or `bytearray`, `memoryview`) as `{"$base64": "..."}` and turns
that tag back into `bytes` in the values it returns, so bytes go both ways. Every other tag the
daemon shows (`$float`, `$ext`, `$timestamp_ns`, `$raw`) comes back as the dict it is, and a map
whose only key is `$base64` with a string in it reads back as bytes whoever wrote it.

Anything `json` cannot encode besides bytes (a set, a datetime...) is a `TypeError`, and NaN or
infinity a `ValueError`, raised before anything is sent: the daemon would refuse them anyway.
"""

import base64
import binascii
import json
import json.encoder
from typing import Any, Final

BASE64_TAG: Final = "$base64"


def _tag_bytes(value: object) -> dict[str, str]:
    """json's fallback for what it cannot encode: bytes-like values become the `$base64` tag."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {BASE64_TAG: base64.b64encode(value).decode("ascii")}
    raise TypeError(
        f"a value of type {type(value).__name__} cannot be sent: values are JSON "
        "(None, bool, int, float, str, list, dict with str keys) or bytes"
    )


# compact separators: lines are smaller, and the daemon reads JSON text either way; NaN is
# refused here because JSON has no spelling for it (the daemon would answer bad_request)
_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_tag_bytes
)
# JSONEncoder.encode makes a new C encoder for every call; pipelined puts spend a good part of
# their client time there, so the C encoder (when this Python has it) is made once. Its markers
# are None: no check for circular structures, which end in RecursionError instead of ValueError.
_MAKE_C_ENCODER: Final = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER: Final = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(
        None, _tag_bytes, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)
_DECODER: Final = json.JSONDecoder()


def _encode(request: dict[str, Any]) -> str:
    if _C_ENCODER is None:
        return _ENCODER.encode(request)
    return "".join(_C_ENCODER(request, 0))


def request_line(request: dict[str, Any]) -> bytes:
    """One request as a protocol line (UTF-8 JSON and a newline), bytes values tagged."""
    try:
        return (_encode(request) + "\n").encode("utf-8")
    except ValueError as exc:  # NaN/infinity; json's own text is "Out of range float values..."
        raise ValueError(f"{exc}: numbers must be finite (send a string for such values)") from None


def decode_value(value: Any) -> Any:
    """A value as the daemon showed it, with `{"$base64": "..."}` turned back into bytes."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(BASE64_TAG), str):
            try:
                return base64.b64decode(value[BASE64_TAG], validate=True)
            except binascii.Error:  # not base64 after all: a map that only looks like the tag
                return value
        return {key: decode_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    return value


def parse_line(line: bytes) -> Any:
    """A received line as JSON (ValueError when it is not, or not UTF-8)."""
    text = line.decode("utf-8")
    if text[:1].isspace():
        text = text.lstrip()
    found, end = _DECODER.raw_decode(text)  # decode() would also match a regex for the rest
    if text[end:].strip():
        raise ValueError(f"more than one JSON value on a line: {text[end:][:40]!r}")
    return found
