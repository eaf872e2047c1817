"""Share membership records and the rules every device checks on apply (pure).

A share other than `default` lists its members in its own `_members` collection, one record per
device, so a device that is not in a share learns nothing of it: not its name, not its members.
Any member may add a household device and remove a member (itself included: leaving); a removal
records a *cut*, how far the remover held each of the removed device's epochs in the share, and
members refuse that device's entries beyond it, so a removed device cannot write itself back in.
A removal wins over a concurrent re-add; a later re-add keeps the cut (the device goes on with a
new epoch). A share that has no `_members` record at all was made before shares had members
(release 0.2.0 and older): it stays open to every device of the household, like `default`.
It never stores anything, never reads the clock and never talks to the network.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .. import merge
from ..entry import LogEntry
from ..membership import int_field, record_fields
from ..merge import Sibling
from ..vectors import device_of

MEMBERS = "_members"  # key: device id; value: member_value(...)
SHARE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SHARE_NAME_RULE = "1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"


class ShareNameError(ValueError):
    pass


def check_share_name(name: str) -> str:
    if not SHARE_NAME.fullmatch(name):
        raise ShareNameError(f"share name {name!r} is not valid: use {SHARE_NAME_RULE}")
    return name


@dataclass(frozen=True, slots=True)
class MemberRecord:
    device_id: str
    added_by: str
    removed: bool = False
    cut: dict[str, int] = field(default_factory=dict)  # actor -> last seq accepted
    removed_by: str = ""
    removed_at_ms: int = 0


def member_value(
    added_by: str,
    *,
    removed: bool = False,
    cut: Mapping[str, int] | None = None,
    removed_by: str = "",
    removed_at_ms: int = 0,
) -> bytes:
    value: dict[str, Any] = {"added_by": added_by, "removed": removed}
    if cut:
        value["cut"] = dict(cut)
    if removed_by:
        value["removed_by"], value["removed_at"] = removed_by, removed_at_ms
    return msgpack.packb(value)


def member_record(device_id: str, siblings: list[Sibling]) -> MemberRecord:
    """Removed when any surviving sibling says so (a removal wins over a concurrent re-add);
    the cuts of all siblings combine, lowest per epoch, so no edit ever lifts a cut."""
    live = [s for s in siblings if not s.deleted and s.value is not None]
    newest = record_fields(merge.winner(live)) if live else {}
    removals = [f for f in map(record_fields, live) if f.get("removed") is True]
    cut: dict[str, int] = {}
    for sibling in live:
        wire = record_fields(sibling).get("cut")
        for actor, seq in wire.items() if isinstance(wire, dict) else ():
            if isinstance(actor, str) and device_of(actor) == device_id and type(seq) is int:
                cut[actor] = min(seq, cut.get(actor, seq))
    first_removal = min(removals, key=lambda f: int_field(f.get("removed_at")), default={})
    return MemberRecord(
        device_id,
        str(newest.get("added_by", "")),
        not live or bool(removals),
        cut,
        str(first_removal.get("removed_by", "")),
        int_field(first_removal.get("removed_at")),
    )


def removal_cut(device_id: str, vector: Mapping[str, int]) -> dict[str, int]:
    """What the remover holds of the device's epochs in the share: those entries stay."""
    return {actor: seq for actor, seq in vector.items() if device_of(actor) == device_id}


class ShareMembers:
    """The members of one share as this device knows them. `open` (no `_members` records):
    a share from before members existed, which every household device may hold and write."""

    def __init__(self, records: Mapping[str, MemberRecord]) -> None:
        self.records = dict(records)

    @property
    def open(self) -> bool:
        return not self.records

    def is_member(self, device_id: str) -> bool:
        if self.open:
            return True
        record = self.records.get(device_id)
        return record is not None and not record.removed

    def current(self) -> list[str]:
        return sorted(d for d, r in self.records.items() if not r.removed)

    def cap(self, actor: str) -> int | None:
        """The last seq of `actor` any member may accept; None: no limit known (its entries
        wait for their causes, such as the record that adds the device)."""
        record = self.records.get(device_of(actor))
        if record is None:
            return None
        limit = record.cut.get(actor)
        if limit is None and record.removed:
            return 0  # an epoch started after the removal
        return limit

    def accepts(self, entry: LogEntry) -> bool:
        """Whether members may take `entry`: its writer is a member (or was, up to its cut)."""
        if self.open:
            return True
        if device_of(entry.actor) not in self.records:
            return False
        limit = self.cap(entry.actor)
        return limit is None or entry.seq <= limit
