"""The daemon's side of LAN discovery (trio): announcing this device, dialling the members heard
nearby, forgetting the addresses of those that left, waking dialers when a link changes, and
the `nearby` answer (a mixin of `Daemon`, kept apart so each file reads whole).

mDNS itself is `discovery.py`'s, the network's news `netwatch.py`'s; this module only decides
what the daemon does with what they hear. Discovery is a hint: it never dials a device that is
not a trusted member, and never takes an announcement for an identity (TLS checks who answers).
"""

import logging
from typing import Any

import trio

from . import netwatch
from .config_values import format_address
from .daemon_role import DaemonRole
from .discovery import Discovery, Found

log = logging.getLogger("p2psync")


class DiscoveryRole(DaemonRole):
    async def _run_discovery(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        interfaces = list(self.config.discovery_interfaces)
        async with Discovery(
            self.device_id,
            self.device_name,
            self.listen_port,
            interfaces=interfaces,
            on_heard=self._heard,
        ) as discovery:
            self.discovery = discovery
            log.info("discovery: announcing on %s", ", ".join(interfaces) or "all interfaces")
            task_status.started()
            try:
                async for event in discovery.events():
                    if isinstance(event, Found):
                        log.debug("nearby: %s %s", event.device_id, event.addresses)
                        self._dial_if_member(event)
                    else:
                        log.info("device %s left the network", event.device_id)
                        for address in self._discovered.pop(event.device_id, ()):
                            self.peers.undial(address)
                    self.nearby_changed.set()
                    self.nearby_changed = trio.Event()
            finally:
                self.discovery = None

    def _dial_if_member(self, found: Found) -> None:
        if found.device_id == self.device_id or not self.peers.trusts(found.device_id):
            return
        known = self._discovered.setdefault(found.device_id, [])
        for address in found.addresses:
            if address not in known:
                known.append(address)
                self.peers.dial(address, found.device_id)
        self.peers.wake(found.device_id)  # addresses dialled before: it announced itself anew

    def _recheck_nearby(self) -> None:
        """Membership changed: forget the devices no longer trusted, dial those nearby that are
        members now."""
        for device_id in [d for d in self._discovered if not self.peers.trusts(d)]:
            del self._discovered[device_id]  # its dialers stopped; a re-pairing redials
        if self.discovery is not None:
            for found in self.discovery.nearby().values():
                self._dial_if_member(found)

    def _heard(self, device_id: str) -> None:
        """A member spoke on the LAN (announced itself, answered a query): dial it at once if a
        dialer of it is backing off."""
        if device_id in self._discovered:
            self.peers.wake(device_id)

    async def _follow_network(self) -> None:
        """A link of ours came up or gained an address: every dialer tries at once, and
        discovery announces us again, so that peers backing off from us dial us at once too."""
        async for news in netwatch.changes():
            log.info("network change (%s): dialling peers again", "; ".join(news))
            self.peers.wake()
            if self.discovery is not None:
                self.discovery.links_changed()

    def nearby(self) -> list[dict[str, Any]]:
        if self.discovery is None:
            return []
        return [
            {
                "device": found.device_id,
                "name": found.name,
                "addresses": [format_address(host, port) for host, port in found.addresses],
                "member": found.device_id in self.members
                and not self.members[found.device_id].revoked,
                "pairing": int(found.txt["pair"]) if found.txt.get("pair", "").isdigit() else None,
            }
            for found in self.discovery.nearby().values()
            if found.device_id != self.device_id
        ]
