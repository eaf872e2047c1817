"""Typed events of a `watch` stream.

A watch first replays what it was asked for, then follows live changes:

- `ChangeEvent`: one transaction applied on this device (`changes`, in one `position`);
- `CaughtUp` (protocol 1.0): the replay reached the head (`position`); what follows is live;
- `Heartbeat` (1.0, when asked for): nothing happened for a while; the stream is alive;
- `PeerEvent`, `SyncedEvent`, `ConflictEvent`, `MembershipEvent` (1.0, when asked for with
  `events=[...]`): a peer (dis)connected, we caught up with a peer, a conflict appeared or was
  resolved, the members of a share changed;
- `OutdatedEvent` (for a watch that declared `reads`): the share holds a newer version of a type
  than this app reads (records, or the manifest's `current`);
- `UnknownEvent`: a kind this client does not know yet, kept whole rather than dropped.

Every event but `ChangeEvent` keeps the line it came from in `fields`, so what a newer daemon adds
to it is not lost. `event_from_json` turns a line into one of these.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import decode_value


def _int(found: Any, default: int = 0) -> int:
    return found if isinstance(found, int) and not isinstance(found, bool) else default


def _optional_int(found: Any) -> int | None:
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def _text(found: Any) -> str | None:
    return found if isinstance(found, str) else None


@dataclass(frozen=True, slots=True)
class Change:
    """One op of a transaction: a put of `value`, or a delete (`deleted`, `op == "delete"`).
    `version` (1.0) is the version it made; `previous` (1.0, deletes only) the value of the
    record's winner just before the delete was applied on this device (None when nothing was
    live)."""

    collection: str
    key: str
    op: str
    value: Any
    deleted: bool
    origin: str | None = None
    type: str | None = None
    schema_version: int | None = None
    version: str | None = None
    previous: Any = None

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> "Change":
        return cls(
            collection=str(found.get("collection", "")),
            key=str(found.get("key", "")),
            op=str(found.get("op", "")),
            value=decode_value(found.get("value")),
            deleted=found.get("deleted") is True,
            origin=_text(found.get("origin")),
            type=_text(found.get("type")),
            schema_version=_optional_int(found.get("schema_version")),
            version=_text(found.get("version")),
            previous=decode_value(found.get("previous")),
        )


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A transaction applied on this device at `position` (resume a watch from it)."""

    position: int
    share: str | None
    hlc: int | None
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The replay reached `position`, the head when it was sent: from here on events are live."""

    position: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent every `heartbeat` seconds without other events; `position`: how far the stream is."""

    position: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A peer `device` (named `name`) `connected` or disconnected."""

    device: str | None
    name: str | None
    connected: bool
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SyncedEvent:
    """This device caught up with peer `device` (of `share`, when the daemon says which)."""

    device: str | None
    name: str | None
    share: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ConflictEvent:
    """`collection`/`key` of `share` went into conflict, or (`resolved`) out of it, stored at
    this daemon's `position`; `devices`: who wrote its versions now (id -> name, `None` for a
    device without a name yet; empty from a daemon before `watch.names`)."""

    share: str | None
    collection: str | None
    key: str | None
    resolved: bool
    position: int | None
    fields: Mapping[str, Any]
    devices: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """The household or a share's members changed (`change`: `device_added`, `device_revoked`,
    `share_members`...); the lists of members, added and removed are in `fields`, the names of
    a share's devices in `names` (id -> name)."""

    share: str | None
    device: str | None
    name: str | None
    change: str | None
    fields: Mapping[str, Any]
    names: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutdatedEvent:
    """`share` holds records (or a manifest `current`) of `type` at `schema_version`, newer than
    the `reads` this app declared: time to upgrade it. Told once per newer version."""

    share: str | None
    type: str | None
    schema_version: int | None
    reads: int | None
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event of a `kind` this client does not know; `fields` is the whole line."""

    kind: str
    fields: Mapping[str, Any]


WatchEvent = (
    ChangeEvent
    | CaughtUp
    | Heartbeat
    | PeerEvent
    | SyncedEvent
    | ConflictEvent
    | MembershipEvent
    | OutdatedEvent
    | UnknownEvent
)


def event_from_json(found: Mapping[str, Any]) -> WatchEvent:
    """One event line of a watch as its typed event."""
    kind = found.get("event")
    if kind == "change":
        return ChangeEvent(
            position=_int(found.get("position")),
            share=_text(found.get("share")),
            hlc=_optional_int(found.get("hlc")),
            changes=tuple(Change.from_json(c) for c in found.get("changes") or ()),
        )
    if kind == "caught_up":
        return CaughtUp(_int(found.get("position")), found)
    if kind == "heartbeat":
        return Heartbeat(_int(found.get("position")), found)
    if kind == "peer":
        connected = found.get("connected", found.get("state") == "connected") is True
        return PeerEvent(_text(found.get("device")), _text(found.get("name")), connected, found)
    if kind == "synced":
        return SyncedEvent(
            _text(found.get("device")), _text(found.get("name")), _text(found.get("share")), found
        )
    if kind == "conflict":
        resolved = found.get("resolved", found.get("state") == "resolved") is True
        return ConflictEvent(
            _text(found.get("share")),
            _text(found.get("collection")),
            _text(found.get("key")),
            resolved,
            _optional_int(found.get("position")),
            found,
            {
                device: _text(item.get("name"))
                for item in found.get("devices") or ()
                if isinstance(item, Mapping) and (device := _text(item.get("device")))
            },
        )
    if kind == "membership":
        return MembershipEvent(
            _text(found.get("share")),
            _text(found.get("device")),
            _text(found.get("name")),
            _text(found.get("change", found.get("action"))),
            found,
            {
                str(device): _text(name)
                for device, name in (found.get("names") or {}).items()
            }
            if isinstance(found.get("names"), Mapping)
            else {},
        )
    if kind == "outdated":
        return OutdatedEvent(
            _text(found.get("share")),
            _text(found.get("type")),
            _optional_int(found.get("schema_version")),
            _optional_int(found.get("reads")),
            found,
        )
    return UnknownEvent(str(kind), found)


def resume_position(event: WatchEvent) -> int | None:
    """The position a watch may resume from after this event, if it moves it."""
    if isinstance(event, ChangeEvent | CaughtUp | Heartbeat):
        return event.position
    return None
