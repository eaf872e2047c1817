"""The daemon's side of membership (trio): the household's devices as the control socket sees
them — listing them, renaming this one, trusting and revoking others — and following membership
as it changes: trust refreshed, members reloaded, watchers told (`membership` events). A mixin
of `Daemon`, kept apart so each file reads whole, like `daemon_pairing.py`.

The rules of membership are `membership.py`'s and the replica's; this module only turns control
requests into membership writes through the node and reports the result. It never writes
membership except through the node, never revokes this device, and never lets a revoked device
back in without `readmit`.
"""

import logging
import time
from typing import Any

import trio

from . import __version__, config_values, daemon_status, identity
from .daemon_role import DaemonRole
from .device_names import find_device
from .journal import log_extra
from .membership import DeviceRecord
from .shares import DEFAULT_SHARE

log = logging.getLogger("p2psync")


class MembershipRole(DaemonRole):
    async def _write_own_record(self, name: str) -> None:
        op = self.node.replica.device_op(self.identity.cert_pem, name)
        await self.node.commit(DEFAULT_SHARE, [op])
        await self._load_members()  # `status` and `id` show the name at once

    def _own_record(self):
        return next((d for d in self.node.replica.devices() if d.device_id == self.device_id), None)

    async def _load_members(self) -> None:
        devices = await self.node.call(self.node.replica.devices)
        self.members = {d.device_id: d for d in devices}

    async def devices(self) -> list[dict[str, Any]]:
        """Every member, this device first, with when each was last heard from."""
        await self.last_seen.flush()
        now, wall_ms = trio.current_time(), int(time.time() * 1000)
        found = []
        for device in sorted(
            self.members.values(), key=lambda d: (d.device_id != self.device_id, d.name)
        ):
            this = device.device_id == self.device_id
            state, connected = self.peer_state(device.device_id)
            found.append(
                daemon_status.device_json(
                    device,
                    this=this,
                    state=state,
                    connected=connected,
                    last_seen_ms=wall_ms if this else self.last_seen.of(device.device_id, now),
                    version=__version__ if this else self.last_seen.version_of(device.device_id),
                    now=now,
                )
            )
        return found

    async def rename(self, name: str) -> dict[str, Any]:
        """Give this device a new name, replicated to every member (the config's stays as it
        is, and counts again only once it is changed there)."""
        name = config_values.check_device_name(name)
        previous = self.device_name
        if name != previous:
            await self._write_own_record(name)
            if self.discovery is not None:
                self.discovery.rename(name)
            log.info("renamed this device from %r to %r", previous, name)
        return {"device": self.device_id, "name": name, "previous": previous}

    async def trust(
        self, cert_pem: bytes, name: str | None, address: str | None, readmit: bool = False
    ) -> dict[str, Any]:
        device_id = identity.device_id_from_certificate(cert_pem)
        if device_id == self.device_id:
            raise ValueError("that is this device's own certificate")
        known = await self._member(device_id)
        if known is not None and known.revoked and not readmit:
            raise ValueError(
                f"{known.name or device_id} was revoked; to let it back in, confirm with "
                "`p2psync trust --readmit` (it starts on a new epoch; what it wrote after the "
                "revocation stays out)"
            )
        parsed = config_values.parse_address(address) if address else None
        label = name or f"device {identity.short_id(device_id)}"
        await self.node.commit(DEFAULT_SHARE, [self.node.replica.device_op(cert_pem, label)])
        log.info("trusted device %s (%s)", device_id, label)
        if parsed:
            self._save_address(parsed)
            self.peers.dial(parsed, device_id)
        return {"device": device_id, "name": label, "address": address}

    async def _member(self, device_id: str) -> DeviceRecord | None:
        """From the database, not `self.members`: that follows membership a moment later, and
        a revoke right after a trust (or a trust right after a revoke) must see it."""
        devices = await self.node.call(self.node.replica.devices)
        return next((d for d in devices if d.device_id == device_id), None)

    async def revoke(self, device_id: str) -> dict[str, Any]:
        devices = await self.node.call(self.node.replica.devices)
        device_id = find_device(device_id, {d.device_id: d.name for d in devices})
        device = await self._member(device_id)
        if device is None:
            raise LookupError(f"no device {device_id} in this household")
        if device_id == self.device_id:
            raise ValueError("a device cannot revoke itself; revoke it from another member")
        op = await self.node.call(self.node.replica.revocation_op, device)
        await self.node.commit(DEFAULT_SHARE, [op])
        self.peers.drop(device_id, "device was revoked")
        log.info(
            "revoked device %s (%s)", device_id, device.name,
            extra=log_extra("revoked", peer=device_id, peer_name=device.name),
        )  # fmt: skip
        return {"device": device_id, "name": device.name, "revoked": True}

    # following membership, and its events for watchers (docs/control-protocol.md, watch) ------

    async def _load_share_members(self) -> dict[str, frozenset[str]]:
        def current() -> dict[str, frozenset[str]]:
            replica = self.node.replica
            return {
                share: frozenset(
                    d for d, r in replica.share_records(share).items() if not r.removed
                )
                for share in replica.shares()
                if share != DEFAULT_SHARE
            }

        return await self.node.call(current)

    async def _follow_membership(self) -> None:
        seen = self.node.membership_changed.position
        self.share_members = await self._load_share_members()
        while True:
            seen = await self.node.membership_changed.wait_beyond(seen)
            await self.peers.refresh_trust()
            before = self.members
            await self._load_members()
            self._publish_membership(before, self.members)
            shares_before, self.share_members = self.share_members, await self._load_share_members()
            self._publish_share_members(shares_before, self.share_members)
            self._recheck_nearby()

    def _name_of(self, device_id: str) -> str | None:
        record = self.members.get(device_id)
        return record.name if record is not None else None

    def _publish_membership(
        self, before: dict[str, DeviceRecord], after: dict[str, DeviceRecord]
    ) -> None:
        for device_id, record in sorted(after.items()):
            was = before.get(device_id)
            if record.revoked and (was is None or not was.revoked):
                change = "device_revoked"
            elif not record.revoked and (was is None or was.revoked):
                change = "device_added"
            else:
                continue
            self.node.events.publish(
                {"event": "membership", "change": change, "device": device_id, "name": record.name}
            )

    def _publish_share_members(
        self, before: dict[str, frozenset[str]], after: dict[str, frozenset[str]]
    ) -> None:
        for share in sorted(after.keys() | before.keys()):
            now, was = after.get(share, frozenset()), before.get(share, frozenset())
            if now != was:
                self.node.events.publish(
                    {
                        "event": "membership",
                        "change": "share_members",
                        "share": share,
                        "members": sorted(now),
                        "added": sorted(now - was),
                        "removed": sorted(was - now),
                        "names": {d: self._name_of(d) for d in sorted(now | was)},
                    }
                )
