"""Typed results of the data methods: records, their versions, write receipts, pages, `hello`.

Each class is a frozen dataclass built from the daemon's JSON by its `from_json`; values are
decoded (bytes come back as bytes, see values.py). Fields that protocol 1.0 added (`version`,
`Hello`'s) are `None` or empty when the daemon is older: a daemon that does not send them makes
no call fail. `Put` and `Delete` describe writes for `transaction` and `put_many`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import decode_value


def _optional_int(found: Any) -> int | None:
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def _optional_str(found: Any) -> str | None:
    return found if isinstance(found, str) else None


@dataclass(frozen=True, slots=True)
class Sibling:
    """One version of a record: the winner, or one of several concurrent ones in a conflict.

    `version` is the opaque string naming it (protocol 1.0; `None` from older daemons): give it
    to `resolve(pick=...)` or as `if_version`. `origin` is the device that wrote it, `hlc` its
    hybrid logical timestamp (`hlc >> 16` is milliseconds since 1970)."""

    value: Any
    version: str | None = None
    deleted: bool = False
    type: str | None = None
    schema_version: int | None = None
    origin: str | None = None
    hlc: int | None = None

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "Sibling":
        return cls(
            value=decode_value(found.get("value")),
            version=_optional_str(found.get("version")),
            deleted=found.get("deleted") is True,
            type=_optional_str(found.get("type")),
            schema_version=_optional_int(found.get("schema_version")),
            origin=_optional_str(found.get("origin")),
            hlc=_optional_int(found.get("hlc")),
        )


@dataclass(frozen=True, slots=True)
class Record:
    """A record as `get`, `scan` and `conflicts` show it: its winning version's fields, whether
    it is in `conflict`, and (from `get` in a conflict or with `all_versions`, and from
    `conflicts`) every version in `siblings`, winner first."""

    collection: str
    key: str
    value: Any
    version: str | None = None
    deleted: bool = False
    conflict: bool = False
    siblings: tuple[Sibling, ...] = ()
    type: str | None = None
    schema_version: int | None = None
    origin: str | None = None
    hlc: int | None = None

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "Record":
        winner = Sibling.from_json(found)
        return cls(
            collection=str(found.get("collection", "")),
            key=str(found.get("key", "")),
            value=winner.value,
            version=winner.version,
            deleted=winner.deleted,
            conflict=found.get("conflict") is True,
            siblings=tuple(Sibling.from_json(s) for s in found.get("siblings") or ()),
            type=winner.type,
            schema_version=winner.schema_version,
            origin=winner.origin,
            hlc=winner.hlc,
        )

    @property
    def winner(self) -> Sibling:
        """The version shown (the deterministic winner), as a Sibling."""
        return Sibling(
            self.value,
            self.version,
            self.deleted,
            self.type,
            self.schema_version,
            self.origin,
            self.hlc,
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write (`put`, `delete`, `transaction`, `resolve`) left: its local `position` (what
    `watch` reports), `seq` in this device's log, `hlc`, and the `version` it made (1.0)."""

    position: int
    seq: int
    hlc: int | None = None
    version: str | None = None

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "WriteResult":
        position, seq, hlc = found["position"], found["seq"], found.get("hlc")
        if type(position) is not int or type(seq) is not int:
            raise ValueError(f"position and seq must be integers: {found!r}")
        version = found.get("version")
        return cls(
            position,
            seq,
            hlc if type(hlc) is int else None,
            version if isinstance(version, str) else None,
        )


@dataclass(frozen=True, slots=True)
class ScanPage:
    """One page of `scan`: the `items`, and `next`, the key to scan `after` for the next page
    (`None` when this was the last one; a page may be short or empty before the end)."""

    items: tuple[Record, ...]
    next: str | None

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "ScanPage":
        items = tuple(Record.from_json(item) for item in found.get("items") or ())
        return cls(items=items, next=_optional_str(found.get("next")))


@dataclass(frozen=True, slots=True)
class ConflictsPage:
    """Records in conflict, each with its `siblings`; `more` when the daemon has others."""

    items: tuple[Record, ...]
    more: bool

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "ConflictsPage":
        items = tuple(Record.from_json(item) for item in found.get("items") or ())
        return cls(items=items, more=found.get("more") is True)


@dataclass(frozen=True, slots=True)
class HistoryVersion:
    """One write of a record that the daemon's log still holds (`history`): the version it
    wrote, whether it is one of the record's versions now (`current`) and the one every device
    shows (`winner`), and where its entry is in that daemon's log (`position`)."""

    version: Sibling
    position: int
    current: bool
    winner: bool

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "HistoryVersion":
        return cls(
            version=Sibling.from_json(found),
            position=_optional_int(found.get("position")) or 0,
            current=found.get("current") is True,
            winner=found.get("winner") is True,
        )


@dataclass(frozen=True, slots=True)
class History:
    """`history`: the writes of a record, newest first; `more` when older ones were left out."""

    versions: tuple[HistoryVersion, ...]
    more: bool

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "History":
        versions = tuple(HistoryVersion.from_json(v) for v in found.get("versions") or ())
        return cls(versions=versions, more=found.get("more") is True)


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection of a share (`collections`, protocol 1.0) and how many live records it has."""

    name: str
    records: int | None = None

    @classmethod
    def from_json(cls, found: Any) -> "CollectionInfo":
        if isinstance(found, str):
            return cls(found)
        name = found.get("collection", found.get("name", ""))
        count = found.get("records", found.get("count"))
        return cls(str(name), _optional_int(count))


def collections_from_json(found: Any) -> list[CollectionInfo]:
    """`collections`' result: a list, or an object holding it under `collections`/`items`."""
    if isinstance(found, Mapping):
        found = found.get("collections", found.get("items", []))
    return [CollectionInfo.from_json(item) for item in found or ()]


@dataclass(frozen=True, slots=True)
class TypeSchema:
    """One record type of a share's schema manifest (`schema_get`, `schema_set`): the version
    apps write now (`current`), the oldest one still written, and the JSON Schema of each version
    that has one (by version number)."""

    type: str
    current: int
    oldest_written: int
    json_schemas: Mapping[int, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "TypeSchema":
        schemas = found.get("json_schemas")
        return cls(
            type=str(found.get("type", "")),
            current=_optional_int(found.get("current")) or 0,
            oldest_written=_optional_int(found.get("oldest_written")) or 0,
            json_schemas={
                int(version): schema
                for version, schema in (schemas.items() if isinstance(schemas, Mapping) else ())
                if str(version).isdigit()
            },
        )


def manifest_from_json(found: Mapping[str, Any]) -> dict[str, TypeSchema]:
    """`schema_get`'s result: each type of the share's manifest by its name."""
    types = (TypeSchema.from_json(t) for t in found.get("types") or () if isinstance(t, Mapping))
    return {t.type: t for t in types}


@dataclass(frozen=True, slots=True)
class Hello:
    """What `hello` (protocol 1.0) says about the daemon: the `protocol` version it speaks, its
    own version (`daemon`), this `device`, what it can do (`capabilities`, `methods`) and its
    `limits` (e.g. the request line size, how many requests may be in flight)."""

    protocol: str
    daemon: str | None = None
    device: str | None = None
    capabilities: frozenset[str] = frozenset()
    limits: Mapping[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "Hello":
        limits = found.get("limits")
        return cls(
            protocol=str(found.get("protocol", "")),
            daemon=_optional_str(found.get("daemon")),
            device=_optional_str(found.get("device")),
            capabilities=frozenset(str(c) for c in found.get("capabilities") or ()),
            limits=dict(limits) if isinstance(limits, Mapping) else {},
            methods=tuple(str(m) for m in found.get("methods") or ()),
        )


@dataclass(frozen=True, slots=True)
class Put:
    """A write for `transaction` and `put_many`: `value` under `key` of `collection`. With
    `if_version` (1.0) it only applies if the record's current version is that one (`""`: only
    if there is no live record), else the whole request fails with `Conflict`."""

    collection: str
    key: str
    value: Any
    type: str | None = None
    schema_version: int | None = None
    if_version: str | None = None

    def params(self) -> dict[str, Any]:
        found: dict[str, Any] = {"collection": self.collection, "key": self.key}
        found["value"] = self.value  # always sent: None is a value (JSON null)
        _add_given(found, type=self.type, schema_version=self.schema_version)
        _add_given(found, if_version=self.if_version)
        return found


@dataclass(frozen=True, slots=True)
class Delete:
    """A deletion for `transaction` (`if_version` as for `Put`)."""

    collection: str
    key: str
    if_version: str | None = None

    def params(self) -> dict[str, Any]:
        found: dict[str, Any] = {"collection": self.collection, "key": self.key}
        _add_given(found, if_version=self.if_version)
        return found


Write = Put | Delete


def _add_given(params: dict[str, Any], **optional: Any) -> None:
    """Only parameters that were given go out: a 1.0 daemon refuses names it does not know, and
    an older one would ignore a name it does not know (e.g. `if_version`) rather than refuse."""
    params.update((name, value) for name, value in optional.items() if value is not None)
