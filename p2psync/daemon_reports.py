"""The daemon's reports (trio): its answers to `status`, `peers` and the Prometheus endpoint, a
device's session state for `devices` and `shares`, and the log line on new conflicts (a mixin of
`Daemon`, kept apart so each file reads whole).

It gathers what they say from the node, the peer manager and membership, at the moment they are
asked; the JSON shapes are `daemon_status.py`'s, the exposition format `metrics.py`'s. It never
writes, changes no state but its cache of the counts (read again only once something changed),
and reads the store only through the node's worker thread.
"""

import logging
import time
from typing import Any

import trio

from . import __version__, daemon_status, metrics
from .daemon_role import DaemonRole
from .history.stability import Away
from .journal import log_extra
from .peer_state import PeerState
from .replica import Replica
from .shares import DEFAULT_SHARE

log = logging.getLogger("p2psync")
CONFLICT_CHECK_SECONDS = 1.0


class ReportsRole(DaemonRole):
    async def status(self) -> dict[str, Any]:
        if self.counted_at != self.node.changes.position:
            self.counted_at = self.node.changes.position
            self.counts = await self.node.call(_counts, self.node.replica)
        invitation = self.pairing.invitation
        notices = await self.node.call(lambda: list(self.node.replica.notices.values()))
        away: list[Away] = []
        unheard: list[str] = []
        if self.compaction:
            away, unheard = await self.node.call(
                self.node.replica.away_devices, self.history_policy
            )
        return {
            "device": self.device_id,
            "name": self.device_name,
            "version": __version__,
            "actor": self.node.replica.actor,
            "listen": self.listen_addresses,
            "control_socket": str(self.config.control_socket),
            "state_dir": str(self.config.state_dir),
            "position": self.node.changes.position,
            "uptime": round(trio.current_time() - self.started_at, 1),
            "peers_connected": len(self.peers.connected),
            "peers_known": len([d for d in self.members.values() if not d.revoked]) - 1,
            "records": self.counts["records"],
            "conflicts": self.counts["conflicts"],
            "shares": self.counts["shares"],
            "discovery": {
                "enabled": self.config.discovery_enabled,
                "interfaces": list(self.config.discovery_interfaces),
                "nearby": len(self.nearby()),
            },
            "pairing": (
                {"active": True, "expires_in": invitation.expires_in()} if invitation else None
            ),
            "notices": daemon_status.notices_json(notices, self.peers.running_twice, self.members),
            "revoked": daemon_status.revoked_json(self.peers.revoked_us, self.members),
            "clock_skew": daemon_status.clock_skew_json(self.peers.skewed_clocks(), self.members),
            "history": daemon_status.history_json(
                self.compaction,
                away,
                unheard,
                self.members,
                int(time.time() * 1000),
                {device_id: self.last_seen.version_of(device_id) for device_id in unheard},
            ),
        }

    async def peers_status(self) -> list[dict[str, Any]]:
        now = trio.current_time()
        ours = await self.node.call(self.node.replica.summary_vector, DEFAULT_SHARE)
        found = []
        for device in sorted(self.members.values(), key=lambda d: d.name):
            if device.device_id == self.device_id:
                continue
            state, connected = self.peer_state(device.device_id)
            found.append(daemon_status.peer_json(device, state, connected, ours, now))
        return found

    async def metrics(self) -> bytes:
        """The Prometheus endpoint's answer: this moment's figures."""
        rows = await self.peers_status()
        shares = await self.node.call(_share_figures, self.node.replica)
        peers = [metrics.peer_figures(row) for row in rows if not row["revoked"]]
        snapshot = metrics.Snapshot(
            self.device_id, self.device_name, __version__, tuple(peers), tuple(shares)
        )
        return metrics.exposition(snapshot)

    def peer_state(self, device_id: str) -> tuple[PeerState | None, bool]:
        """A device's session state (or its last one) and whether it is connected now (its
        session got past the hello)."""
        session = self.peers.sessions.get(device_id)
        if session is not None:
            return session.state, device_id in self.peers.connected
        return self.peers.offline.get(device_id), False

    async def _report_conflicts(self) -> None:
        """One log line when syncing or writing leaves new conflicts (checked at most once a
        second, and only after something changed)."""
        seen, known = self.node.changes.position, -1
        while True:
            conflicts = await self.node.call(_count_conflicts, self.node.replica)
            if known >= 0 and conflicts > known:
                log.info(
                    "%d new conflict(s), %d in all: see `p2psync conflicts`",
                    conflicts - known,
                    conflicts,
                    extra=log_extra("conflict"),
                )
            known = conflicts
            seen = await self.node.changes.wait_beyond(seen)
            await trio.sleep(CONFLICT_CHECK_SECONDS)


def _counts(replica: Replica) -> dict[str, Any]:
    return {
        "records": replica.store.count_records(DEFAULT_SHARE),
        "conflicts": _count_conflicts(replica),
        "shares": [replica.share_summary(share) for share in replica.shares()],
    }


def _share_figures(replica: Replica) -> list[metrics.ShareFigures]:
    return [
        metrics.ShareFigures(
            share, replica.store.count_records(share), replica.store.count_conflicts(share)
        )
        for share in replica.shares()
    ]


def _count_conflicts(replica: Replica) -> int:
    """One row read whatever the size of the store: the store keeps the count as it writes."""
    return replica.store.count_conflicts(DEFAULT_SHARE)
