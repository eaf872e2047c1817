"""Control-socket lines: one JSON request or answer per line (pure).

It owns what every reader of the control socket shares (the daemon's connections and its
front-end process alike): the per-connection limits, strict JSON in (finite numbers only, one
object with a `method` string) and compact JSON out. It never touches sockets.
"""

import json
import math
from typing import Any

from .errors import BAD_REQUEST, RequestError

MAX_LINE_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 128  # pipelined requests per connection before we stop reading from it
MAX_UNSENT_BYTES = 1024 * 1024  # answers waiting for a client to read them, per connection
MAX_UNCOMMITTED_BYTES = 1024 * 1024  # write requests waiting for their commit, per connection


class _NotFinite(ValueError):
    """A number JSON cannot mean (the protocol forbids NaN and infinities, docs say why)."""


def _reject_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not a JSON number; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity, which JSON cannot carry back
        raise _NotFinite(
            f"number {text[:40]} is beyond a 64-bit float; numbers must be finite (send a "
            "string for such values)"
        )
    return value


# made once: json.loads/dumps with options build a new decoder/encoder on every call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def json_line(response: dict[str, Any]) -> bytes:
    """One answer or event as a line of JSON."""
    try:
        return _ENCODER.encode(response).encode() + b"\n"
    except UnicodeEncodeError:  # lone surrogates sent to us in an id come back escaped
        return _ASCII_ENCODER.encode(response).encode() + b"\n"


def error_line(request_id: Any, code: str, message: str) -> bytes:
    return json_line({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def parse_request(line: bytes) -> dict[str, Any]:
    try:
        request = _DECODER.decode(line.decode())
    except _NotFinite as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
    except (ValueError, RecursionError):
        raise RequestError(BAD_REQUEST, "request is not valid JSON (one object per line)") from None
    if not isinstance(request, dict):
        raise RequestError(BAD_REQUEST, "request must be a JSON object")
    method = request.get("method")
    if not isinstance(method, str):
        raise RequestError(BAD_REQUEST, "request needs a 'method' string")
    return request
