"""Log entries: canonical encoding, hash chain and signed chain heads (pure).

One local transaction becomes one entry: `share, actor, seq, prev_hash, hlc, context, ops` (and, on
the first entry of an epoch, the earlier epochs it retires), encoded as msgpack with a fixed key
order. The context holds only the dots the entry's own ops replace (the siblings of the keys it
writes), so an entry's size follows its own ops, never how many writers the household has had.
An entry is identified by the SHA-256 of its bytes, and each
entry names the hash of its actor's previous one, so the origin's signature over one chain head
vouches for every entry before it. Relays keep and forward the exact bytes they received: fields
this version does not know (in the entry or in an op) survive untouched. This module never
touches storage or the network and never reads the clock.
"""

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache, partial
from typing import Any, NamedTuple, cast

import msgpack

from . import vectors

MAX_ENTRY_BYTES = 4 * 1024 * 1024
# A context names the writers of the siblings an entry replaces; more than this many concurrent
# writers on the keys of one transaction is not something an honest household produces.
MAX_CONTEXT_ACTORS = 4096
# The first entry of an epoch retires at most this many earlier epochs of its device.
MAX_RETIRED = 64
HASH_BYTES = 32
GENESIS_HASH = b""
HEAD_SIGNATURE_LABEL = "p2psync-head-v1"

PUT = "p"
DELETE = "d"
_OP_KEYS = ("o", "c", "k", "v")


class IntegrityError(ValueError):
    """An entry is malformed, breaks its chain, or is not signed by its origin."""


class Op(NamedTuple):
    """One put or delete. `value` is msgpack bytes of the application value; `meta` holds every
    other field of the op (type, schema version, fields from newer versions) as msgpack bytes."""

    kind: str
    collection: str
    key: str
    value: bytes | None = None
    meta: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        encoded: dict[str, Any] = {"o": self.kind, "c": self.collection, "k": self.key}
        if self.kind == PUT:
            encoded["v"] = self.value
        if self.meta is not None:
            encoded.update(msgpack.unpackb(self.meta, raw=False))
        return encoded


# Builds an Op from a 5-tuple in C; calling Op(...) runs a Python-level __new__, which shows when
# a catch-up decodes a million ops.
_new_op = partial(tuple.__new__, Op)


def packed_op(kind: str, collection: str, key: str, value: bytes | None, meta: bytes | None) -> Op:
    """An op whose meta is packed already (`pack_meta`)."""
    return _new_op((kind, collection, key, value, meta))


def put(collection: str, key: str, value: bytes, **meta: Any) -> Op:
    return _new_op((PUT, collection, key, value, pack_meta(meta)))


def delete(collection: str, key: str, **meta: Any) -> Op:
    return _new_op((DELETE, collection, key, None, pack_meta(meta)))


def pack_meta(meta: Mapping[str, Any]) -> bytes | None:
    if not meta:
        return None
    present = {name: meta[name] for name in sorted(meta) if meta[name] is not None}
    return msgpack.packb(present) if present else None


# An epoch's chain at a point: (actor, seq, hash of the entry at seq).
ChainHead = tuple[str, int, bytes]
# The one form an actor takes: a canonical device id, "/", an epoch of 8 lowercase hex digits.
_ACTOR = re.compile(r"[A-Z2-7]{5}(?:-[A-Z2-7]{5}){6}/[0-9a-f]{8}")


def is_actor(value: object) -> bool:
    return isinstance(value, str) and _is_actor_text(value)


@lru_cache(maxsize=4096)  # a catch-up meets the same few actors again and again
def _is_actor_text(value: str) -> bool:
    return _ACTOR.fullmatch(value) is not None


class LogEntry(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: `decode` builds one per received entry, and a
    frozen dataclass's __init__ sets each of its ten fields through object.__setattr__."""

    share: str
    actor: str
    seq: int
    prev_hash: bytes
    hlc: int
    context: Mapping[str, int]
    ops: tuple[Op, ...]
    raw: bytes
    hash: bytes
    retires: tuple[ChainHead, ...] = ()

    def __repr__(self) -> str:  # the bytes fields are noise in a log line
        return f"LogEntry(share={self.share!r}, actor={self.actor!r}, seq={self.seq})"

    @property
    def origin(self) -> str:
        return vectors.device_of(self.actor)

    def covers(self, actor: str, seq: int) -> bool:
        """True when the writer of this entry had seen write `(actor, seq)`."""
        if actor == self.actor:
            return seq < self.seq
        return self.context.get(actor, 0) >= seq


# In C, as `_new_op` (a NamedTuple's __new__ is Python code); `decode` makes one per entry.
_new_entry = partial(tuple.__new__, LogEntry)


def encode(
    share: str,
    actor: str,
    seq: int,
    prev_hash: bytes,
    hlc: int,
    context: Mapping[str, int],
    ops: Sequence[Op],
    retires: Sequence[ChainHead] = (),
) -> LogEntry:
    """Build a local entry. The writer's own actor is left out of the context: it is implied.
    `retires` goes only on an epoch's first entry: the heads of the device's earlier epochs that
    this one continues from."""
    own_context = {a: n for a, n in sorted(context.items()) if a != actor and n > 0}
    fields: dict[str, Any] = {
        "s": share,
        "a": actor,
        "n": seq,
        "p": prev_hash,
        "h": hlc,
        "c": own_context,
        "o": [
            # a put without meta is most ops; its map is built here without a method call
            {"o": PUT, "c": op.collection, "k": op.key, "v": op.value}
            if op.kind == PUT and op.meta is None
            else op.to_wire()
            for op in ops
        ],
    }
    retired = tuple(sorted((a, n, h) for a, n, h in retires))
    if retired:
        fields["r"] = [list(head) for head in retired]
    raw = msgpack.packb(fields)
    return LogEntry(
        share, actor, seq, prev_hash, hlc, own_context, tuple(ops), raw, _digest(raw), retired
    )


def decode(raw: bytes) -> LogEntry:
    """Parse and validate entry bytes received from anywhere; raises IntegrityError."""
    if type(raw) is not bytes or len(raw) > MAX_ENTRY_BYTES:
        if not isinstance(raw, bytes) or len(raw) > MAX_ENTRY_BYTES:
            raise IntegrityError("entry is not bytes or is larger than the entry size limit")
        raw = bytes(raw)
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise IntegrityError(f"entry is not valid msgpack: {exc}") from None
    if not isinstance(fields, dict):
        raise IntegrityError("entry is not a map")
    fields = cast(Any, fields)  # every field is checked before it is trusted
    share, actor, seq = fields.get("s"), fields.get("a"), fields.get("n")
    prev_hash, hlc, context, wire_ops = (
        fields.get("p"),
        fields.get("h"),
        fields.get("c"),
        fields.get("o"),
    )
    # The entry of a catch-up, checked in one expression (this runs once per received entry);
    # anything else, valid or not, goes through the checks one by one, which name what is wrong.
    if (
        type(share) is str
        and share
        and type(actor) is str
        and _is_actor_text(actor)
        and type(seq) is int
        and type(prev_hash) is bytes
        and (len(prev_hash) == HASH_BYTES if seq > 1 else seq == 1 and prev_hash == GENESIS_HASH)
        and type(hlc) is int
        and hlc >= 0
        and type(context) is dict
        and (not context or _plain_context(context, actor))
        and "r" not in fields
        and type(wire_ops) is list
        and wire_ops
    ):
        ops = _decode_ops(wire_ops)
        return _new_entry((share, actor, seq, prev_hash, hlc, context, ops, raw, _digest(raw), ()))
    _require(isinstance(share, str) and share, "share must be a non-empty string")
    _require(is_actor(actor), "actor must be '<device id>/<8 hex digits>'")
    _require(type(seq) is int and seq >= 1, "seq must be a positive integer")
    _require(
        isinstance(prev_hash, bytes) and len(prev_hash) in (0, HASH_BYTES),
        "prev_hash must be 32 bytes",
    )
    _require(
        (prev_hash == GENESIS_HASH) == (seq == 1),
        "only the first entry of a chain has no prev_hash",
    )
    _require(type(hlc) is int and hlc >= 0, "hlc must be a non-negative integer")
    _require(
        isinstance(context, dict) and _plain_context(context, actor),
        "context must map at most 4096 other actors to positive integers",
    )
    retires = _decode_retires(fields["r"], actor, seq) if "r" in fields else ()
    if not isinstance(wire_ops, list) or not wire_ops:
        raise IntegrityError("malformed entry: ops must be a non-empty list")
    ops = _decode_ops(wire_ops)
    return _new_entry((share, actor, seq, prev_hash, hlc, context, ops, raw, _digest(raw), retires))


def _plain_context(context: dict[Any, Any], actor: str) -> bool:
    return (
        len(context) <= MAX_CONTEXT_ACTORS
        and all(is_actor(a) and type(n) is int and n > 0 for a, n in context.items())
        and actor not in context
    )


def _decode_retires(wire: Any, actor: str, seq: int) -> tuple[ChainHead, ...]:
    _require(isinstance(wire, list) and len(wire) <= MAX_RETIRED, "'r' must be a short list")
    _require(seq == 1 or not wire, "only the first entry of an epoch retires earlier ones")
    device = vectors.device_of(actor)
    heads = []
    for head in wire:
        _require(
            isinstance(head, list)
            and len(head) == 3
            and is_actor(head[0])
            and head[0] != actor
            and vectors.device_of(head[0]) == device
            and type(head[1]) is int
            and head[1] >= 1
            and isinstance(head[2], bytes)
            and len(head[2]) == HASH_BYTES,
            "'r' must list [actor of the same device, seq, hash]",
        )
        heads.append((head[0], head[1], head[2]))
    return tuple(heads)


def _decode_ops(wire_ops: list[Any]) -> tuple[Op, ...]:
    ops = []
    for wire_op in wire_ops:
        # The common op, a put of exactly its four fields, is checked and built inline: this loop
        # runs once per record of a catch-up. Every other op takes the general path below.
        if type(wire_op) is dict and len(wire_op) == 4 and wire_op.get("o") == PUT:
            collection, key, value = wire_op.get("c"), wire_op.get("k"), wire_op.get("v")
            if type(collection) is str and collection and type(key) is str and type(value) is bytes:
                ops.append(_new_op((PUT, collection, key, value, None)))
                continue
        ops.append(_decode_op(wire_op))
    return tuple(ops)


def _decode_op(wire_op: Any) -> Op:
    _require(isinstance(wire_op, dict), "an op must be a map")
    kind, collection, key = wire_op.get("o"), wire_op.get("c"), wire_op.get("k")
    _require(kind in (PUT, DELETE), f"unknown op kind {kind!r}")
    _require(isinstance(collection, str) and collection, "op collection must be a non-empty string")
    _require(isinstance(key, str), "op key must be a string")
    value = wire_op.get("v")
    _require(kind == DELETE or isinstance(value, bytes), "a put carries its value as bytes")
    if len(wire_op) == (4 if kind == PUT else 3):
        return Op(kind, collection, key, value if kind == PUT else None, None)
    meta = {name: v for name, v in wire_op.items() if name not in _OP_KEYS}
    _require(all(isinstance(name, str) for name in meta), "op field names must be strings")
    return Op(kind, collection, key, value if kind == PUT else None, pack_meta(meta))


def _require(condition: object, message: str) -> None:
    if not condition:
        raise IntegrityError(f"malformed entry: {message}")


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def head_message(share: str, actor: str, seq: int, entry_hash: bytes) -> bytes:
    """What an origin signs to vouch for its chain up to and including `seq`."""
    return msgpack.packb([HEAD_SIGNATURE_LABEL, share, actor, seq, entry_hash])


def check_chain(previous_hash: bytes, entries: Sequence[LogEntry]) -> None:
    """Raise IntegrityError unless `entries` extend the chain that ends in `previous_hash`."""
    for entry in entries:
        if entry.prev_hash != previous_hash:
            raise IntegrityError(
                f"entry {entry.actor} #{entry.seq} does not follow the chain it claims to extend"
            )
        previous_hash = entry.hash
