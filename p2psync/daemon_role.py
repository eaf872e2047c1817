"""What the daemon's roles may count on: the base of the mixins `Daemon` is made of
(`daemon_members.py`, `daemon_pairing.py`, `daemon_discovery.py`, `daemon_reports.py`,
`daemon_reload.py`), so that each of them reads whole on its own.

It declares the attributes `Daemon.__init__` sets that the roles read, and the methods one role
calls that another role (or `Daemon` itself) defines; the definition wins over the declaration
here whatever the order of the mixins. It must never hold state or do anything: a method here
that runs is a method no role defined.
"""

import argparse
from typing import Any

import trio

from . import identity
from .config import Config
from .discovery import Discovery
from .history.stability import HistoryPolicy
from .last_seen import LastSeen
from .membership import DeviceRecord
from .node import Node
from .pairing_service import PairingService
from .peer_state import PeerState
from .peers import PeerManager
from .sdnotify import Notifier


class DaemonRole:
    # set by Daemon.__init__
    config: Config
    args: argparse.Namespace
    identity: identity.DeviceIdentity
    node: Node
    peers: PeerManager
    notifier: Notifier
    pairing: PairingService
    last_seen: LastSeen
    listen_addresses: list[str]
    listen_port: int
    started_at: float
    members: dict[str, DeviceRecord]
    share_members: dict[str, frozenset[str]]
    counts: dict[str, Any]
    counted_at: int
    readmit_by_pairing: bool
    shares_by_pairing: list[str]
    discovery: Discovery | None
    nearby_changed: trio.Event
    _discovered: dict[str, list[tuple[str, int]]]
    compaction: bool
    history_policy: HistoryPolicy

    # defined by Daemon
    @property
    def device_id(self) -> str:
        raise NotImplementedError

    @property
    def device_name(self) -> str:
        raise NotImplementedError

    def _status_line(self) -> str:
        raise NotImplementedError

    def _save_address(self, address: tuple[str, int]) -> None:
        raise NotImplementedError

    # defined by MembershipRole
    def _own_record(self) -> DeviceRecord | None:
        raise NotImplementedError

    async def _write_own_record(self, name: str) -> None:
        raise NotImplementedError

    async def _member(self, device_id: str) -> DeviceRecord | None:
        raise NotImplementedError

    # defined by DiscoveryRole
    def _recheck_nearby(self) -> None:
        raise NotImplementedError

    def nearby(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    # defined by ReportsRole
    def peer_state(self, device_id: str) -> tuple[PeerState | None, bool]:
        raise NotImplementedError
