"""Peer wire framing: length-prefixed msgpack messages with a hard size cap (pure).

A frame is a 4-byte big-endian body length followed by that many bytes of msgpack holding a map
with a string key "t" (the message type) and short string keys for the other fields. This module
turns bytes into message dicts and back; what the messages mean belongs to `session.py`. It never
does I/O, never buffers a frame body larger than the cap (an oversized length prefix fails as soon
as it is seen) and raises nothing but `WireError` for any bytes a peer may send.
"""

import struct
from collections.abc import Iterator, Mapping
from typing import Any

import msgpack

MAX_FRAME = 8 * 1024 * 1024
_LENGTH_PREFIX = struct.Struct(">I")
_LARGEST_ENCODABLE_LENGTH = 2**32 - 1


class WireError(ValueError):
    """Bytes that are not a well-formed frame, or a frame over the size cap."""


def encode_frame(message: Mapping[str, Any], *, max_frame: int = MAX_FRAME) -> bytes:
    """One frame holding `message`; refuses what the peer's decoder would refuse."""
    if not isinstance(message.get("t"), str):
        raise WireError("a message needs a string 't' (its type)")
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > max_frame:
        kind = message["t"]
        raise WireError(f"message {kind!r} is {len(body)} bytes, over the {max_frame}-byte cap")
    return _LENGTH_PREFIX.pack(len(body)) + body


def _check_cap(max_frame: int) -> int:
    if not 0 < max_frame <= _LARGEST_ENCODABLE_LENGTH:
        raise ValueError(f"max_frame must be between 1 and {_LARGEST_ENCODABLE_LENGTH}")
    return max_frame


class FrameDecoder:
    """Incremental decoder: `feed` bytes as they arrive, then take messages until None.

    Once it has raised `WireError` the decoder stays failed: the stream has lost its framing.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max_frame = _check_cap(max_frame)
        self._buffer = bytearray()
        self._failure: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages; nonzero at EOF means a cut frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._raise_if_failed()
        self._buffer += data
        self._body_length()

    def next_message(self) -> dict[str, Any] | None:
        """The next complete message, or None when more bytes are needed."""
        self._raise_if_failed()
        length = self._body_length()
        if length is None:
            return None
        end = _LENGTH_PREFIX.size + length
        if len(self._buffer) < end:
            return None
        message = self._decode_body(end)
        del self._buffer[:end]
        return message

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (message := self.next_message()) is not None:
            yield message

    def _body_length(self) -> int | None:
        if len(self._buffer) < _LENGTH_PREFIX.size:
            return None
        (length,) = _LENGTH_PREFIX.unpack_from(self._buffer)
        if length > self._max_frame:
            cap = self._max_frame
            raise self._failed(f"frame of {length} bytes announced, over the {cap}-byte cap")
        return int(length)

    def _decode_body(self, end: int) -> dict[str, Any]:
        # Decoding from a view avoids copying the body; the views must be released before the
        # buffer is trimmed. Without explicit max_*_len, unpackb bounds every string, bin, array
        # and map by the body length, so a small frame cannot claim a huge allocation.
        try:
            with memoryview(self._buffer) as whole, whole[_LENGTH_PREFIX.size : end] as body:
                message = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:
            # msgpack documents that unpacking may raise exceptions beyond its own hierarchy
            # (UnicodeDecodeError, ValueError from bad timestamps, ...) and to catch Exception.
            reason = f"frame of {end - _LENGTH_PREFIX.size} bytes is not valid msgpack: {exc}"
            raise self._failed(reason) from exc
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise self._failed("frame does not hold a map with a string 't' (message type)")
        return message

    def _failed(self, reason: str) -> WireError:
        self._failure = reason
        self._buffer = bytearray()
        return WireError(reason)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise WireError(f"stream already failed: {self._failure}")
