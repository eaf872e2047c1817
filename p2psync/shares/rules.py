"""The share rules a replica enforces: who is in which share, what each peer is offered, and the
writes that create a share and change its members (I/O via the replica's store).

A mixin of `Replica` beside `TrustRules`: it reads `_members` records into `ShareMembers` (the
pure rules, `members.py`) and keeps them current as entries apply. It never talks to the network
and never decides what a merge keeps.
"""

from collections.abc import Callable, Mapping

import msgpack

from .. import entry as entries
from ..entry import Op
from ..merge import Sibling
from ..store import Store
from . import DEFAULT_SHARE
from .members import (
    MEMBERS,
    MemberRecord,
    ShareMembers,
    member_record,
    member_value,
    removal_cut,
)

SCAN_PAGE = 500
REMOVAL_NOTICE = "removed_from/"  # meta key prefix: what a member told us about a share


class ShareError(Exception):
    """A share request that cannot be done; `code` is a control-socket error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def unknown_share(share: str) -> ShareError:
    return ShareError(
        "not_found", f"no share {share!r} on this device (`p2psync share list` shows them)"
    )


class ShareRules:
    # set by Replica
    store: Store
    actor: str
    now_ms: Callable[[], int]
    epoch_frozen: bool
    _share_members: dict[str, ShareMembers]
    device_id: str  # TrustRules' property

    def _heads_of(self, share: str) -> dict[str, tuple[int, bytes]]:
        raise NotImplementedError

    def held_vector(self, share: str) -> dict[str, int]:
        raise NotImplementedError

    def holds(self, share: str) -> bool:
        """Whether this device holds anything of `share` (`default` always)."""
        return share == DEFAULT_SHARE or (
            self.store.has_share(share) and bool(self._heads_of(share))
        )

    def shares(self) -> list[str]:
        """Every share this device holds, member or not (a removed device keeps its copy)."""
        return sorted({DEFAULT_SHARE, *filter(self.holds, self.store.share_names())})

    def require_share(self, share: str) -> None:
        if not self.holds(share):
            raise unknown_share(share)

    def share_members(self, share: str) -> ShareMembers | None:
        """None for `default`, which every device of the household is in."""
        if share == DEFAULT_SHARE:
            return None
        members = self._share_members.get(share)
        if members is None:
            members = self._share_members[share] = ShareMembers(self._member_records(share))
        return members

    def is_share_member(self, share: str, device_id: str) -> bool:
        if not self.holds(share):
            return False
        if device_id == self.device_id and self.removal_notice(share):
            return False
        members = self.share_members(share)
        return members is None or members.is_member(device_id)

    # A removed device never receives the record that removed it (nothing of the share reaches it
    # after the removal); members tell it instead when it offers them the share. Any member may
    # remove any other, so believing a member's word gives that member no power it lacked.

    def removal_notice(self, share: str) -> str:
        """Why this device is no longer in `share`, as a member told it ("" if none did)."""
        stored = self.store.get_meta(f"{REMOVAL_NOTICE}{share}")
        return "" if stored is None else str(msgpack.unpackb(stored)["reason"])

    def note_removal(self, share: str, told_by: str, reason: str) -> bool:
        """A member told us we were removed from `share`; False (ignored) when `told_by` is not
        a member of it as far as we know. It holds until our own member record changes (a
        member added us back): a member that had not heard of the removal may still offer us
        the share meanwhile, and what it sends changes nothing of that record."""
        if not self.holds(share) or not self.is_share_member(share, told_by):
            return False
        notice = {"reason": reason[:1000], "record": self._own_record_dots(share)}
        with self.store.transaction():
            self.store.set_meta(f"{REMOVAL_NOTICE}{share}", msgpack.packb(notice))
        return True

    def _own_record_dots(self, share: str) -> list[list[object]]:
        siblings = self.store.record(share, MEMBERS, self.device_id) or []
        return sorted([s.actor, s.seq] for s in siblings)

    def _check_removal_notice(self, share: str) -> None:
        stored = self.store.get_meta(f"{REMOVAL_NOTICE}{share}")
        if stored is not None and msgpack.unpackb(stored)["record"] != self._own_record_dots(
            share
        ):
            self.store.delete_meta(f"{REMOVAL_NOTICE}{share}")  # a member added us back

    def was_removed_from(self, share: str, device_id: str) -> bool:
        """Whether a member removed the device from the share (and nobody added it back)."""
        members = self.share_members(share)
        record = members.records.get(device_id) if members is not None else None
        return record is not None and record.removed

    def shares_for(self, device_id: str) -> list[str]:
        """The shares to offer a peer: those we hold that it is a member of. A share we left is
        still offered to its members until they hear of it (so that they do); one we were told
        we were removed from, to nobody."""
        return [
            share
            for share in self.shares()
            if self.is_share_member(share, device_id) and not self.removal_notice(share)
        ]

    def removal_reason(self, share: str, device_id: str) -> str:
        """What to tell a device that offers us a share it was removed from ("" if it was not)."""
        members = self.share_members(share) if self.holds(share) else None
        record = members.records.get(device_id) if members is not None else None
        if record is None or not record.removed:
            return ""
        return f"removed from share {share!r} by {record.removed_by or 'a member'}"

    def _member_records(self, share: str) -> dict[str, MemberRecord]:
        records: dict[str, MemberRecord] = {}
        after = None
        while page := self.store.scan(share, MEMBERS, "", after, SCAN_PAGE):
            for key, siblings in page:
                records[key] = member_record(key, siblings)
            after = page[-1][0]
        return records

    def _members_changed(self, share: str) -> None:
        """Reload a share's members after its `_members` records changed. A re-add that cut the
        epoch we write as (we had been removed) means writing on as a new one."""
        self._share_members.pop(share, None)
        self._check_removal_notice(share)
        members = self.share_members(share)
        own = members.records.get(self.device_id) if members is not None else None
        if own is not None and not own.removed and self.actor in own.cut:
            self.epoch_frozen = True

    def _membership_context(self, share: str) -> dict[str, int]:
        """Dots an epoch's first entry in a share depends on: the writes that made this device
        a member. A peer that has not yet heard of them holds the entry until it has, instead
        of refusing a writer it does not know as a member yet."""
        if share == DEFAULT_SHARE:
            return {}
        siblings: list[Sibling] = self.store.record(share, MEMBERS, self.device_id) or []
        return {s.actor: s.seq for s in siblings if s.actor != self.actor}

    # writes (the ops; the caller commits them) -------------------------------------------------

    def share_create_ops(self, share: str) -> list[Op]:
        if self.holds(share):
            raise ShareError("bad_request", f"share {share!r} exists already")
        return [entries.put(MEMBERS, self.device_id, member_value(self.device_id))]

    def share_add_ops(self, share: str, device_id: str) -> list[Op]:
        """Add a household device. Adding to a share from before members existed makes it a
        members-only share of this device and the one added."""
        members = self._existing(share)
        known = members.records.get(device_id)
        cut = known.cut if known is not None else None  # a re-add keeps the cut
        ops = [entries.put(MEMBERS, device_id, member_value(self.device_id, cut=cut))]
        if members.open and device_id != self.device_id:
            ops.append(entries.put(MEMBERS, self.device_id, member_value(self.device_id)))
        return ops

    def share_remove_ops(self, share: str, device_id: str) -> list[Op]:
        """Remove a member (ourselves: leave). Its entries up to what we hold now stay."""
        members = self._existing(share)
        if members.open or not members.is_member(device_id):
            raise ShareError("not_found", f"{device_id} is not a member of share {share!r}")
        held = self.held_vector(share)  # the cut names retired epochs without a head too
        if device_id == self.device_id:
            # the removal entry is ours and must itself be accepted
            held[self.actor] = self._heads_of(share).get(self.actor, (0, b""))[0] + 1
        cut = removal_cut(device_id, held)
        known = members.records[device_id]
        for actor, seq in known.cut.items():
            cut[actor] = min(seq, cut.get(actor, seq))
        value = member_value(
            known.added_by,
            removed=True,
            cut=cut,
            removed_by=self.device_id,
            removed_at_ms=self.now_ms(),
        )
        return [entries.put(MEMBERS, device_id, value)]

    def _existing(self, share: str) -> ShareMembers:
        if share == DEFAULT_SHARE:
            raise ShareError(
                "bad_request",
                "every device of the household is in share 'default'; use pair/trust and revoke",
            )
        self.require_share(share)
        members = self.share_members(share)
        assert members is not None
        if not members.is_member(self.device_id):
            raise ShareError("forbidden", f"this device is not a member of share {share!r}")
        return members

    def share_summary(self, share: str) -> dict[str, object]:
        members = self.share_members(share)
        return {
            "share": share,
            "records": self.store.count_records(share),
            "member": self.is_share_member(share, self.device_id),
            "members": None if members is None else len(members.current()),
            "open": members is None or members.open,
            "removal": self.removal_notice(share) or None,  # what a member told us, if it did
        }

    def share_records(self, share: str) -> Mapping[str, MemberRecord]:
        members = self.share_members(share)
        return {} if members is None else members.records
