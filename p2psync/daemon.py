"""The daemon: one trio nursery owning the store, listeners, dialers, control socket and signals.

It wires the parts together and answers the control socket's questions about itself (status,
peers, reload); everything it does to data goes through `Node`, everything on the wire through
`PeerManager`. It must refuse to start twice on one state directory and must stop cleanly on
SIGTERM within a bounded grace period. Getting ready to run (settings, logging, the state
directory, its lock) is `daemon_setup.py`'s; the JSON shapes of its reports are
`daemon_status.py`'s; devices, rename, trust and revoke are `daemon_members.py`'s, pairing
`daemon_pairing.py`'s.
"""

import argparse
import errno
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from . import __version__, config, daemon_status, identity, keystore, metrics, netwatch
from .config import Config, ConfigError
from .control.server import serve_control
from .control.socket_file import remove_stale_socket
from .daemon_members import MembershipRole
from .daemon_pairing import PairingRole
from .daemon_setup import (
    StartupError,
    load_settings,
    open_state,
    prepare_state_dir,
    setup_logging,
    startup_failure,
    state_lock,
    warn_about_environment,
)
from .discovery import Discovery, Found
from .history.stability import Away, HistoryPolicy
from .history.timer import run_history
from .journal import log_extra
from .last_seen import LastSeen
from .metrics_server import MetricsListen, MetricsUnavailable, serve_metrics
from .node import Node
from .pairing_service import PairingService
from .peers import PeerManager, PeerState, Timeouts
from .replica import DEFAULT_SHARE, DeviceRecord, Replica
from .sdnotify import Notifier

if TYPE_CHECKING:
    from .webui.server import WebUI

log = logging.getLogger("p2psync")
STOP_GRACE_SECONDS = 5.0
ADDRESSES_FILE = "addresses.json"
CONFLICT_CHECK_SECONDS = 1.0
# The config's device.name when it last named this device: a name in the config counts only when
# it changes there, so a `rename` (which rewrites the replicated record) survives restarts.
CONFIG_NAME_META_KEY = "config_device_name"


class Daemon(MembershipRole, PairingRole):
    def __init__(
        self,
        settings: Config,
        device: identity.DeviceIdentity,
        replica: Replica,
        args: argparse.Namespace,
    ) -> None:
        self.config = settings
        self.args = args
        self.identity = device
        self.node = Node(replica)
        self.peers = PeerManager(
            self.node,
            settings.state_dir,
            Timeouts(settings.handshake_timeout, settings.idle_timeout, settings.reconnect_max),
            on_change=self._update_status_line,
        )
        replica.now_ms = self.peers.now_ms  # a fast clock here gains no lead over the household
        self.peers.snapshots.max_bytes = settings.max_snapshot_mb * 1024 * 1024
        self.notifier = Notifier.from_environ(os.environ)
        self.listen_addresses: list[str] = []
        self.listen_port = 0
        self.members: dict[str, DeviceRecord] = {}
        self.counts: dict[str, Any] = {"records": 0, "conflicts": 0, "shares": []}
        self.counted_at = -1
        self.readmit_by_pairing = False
        self.shares_by_pairing: list[str] = []
        self.started_at = 0.0
        self.discovery: Discovery | None = None
        self.nearby_changed = trio.Event()
        self._discovered: dict[str, list[tuple[str, int]]] = {}
        self.pairing = PairingService(
            device.cert_pem, lambda: self.device_name, self._member_certs, self._paired
        )
        self.peers.pairing_handler = self.pairing.handle_incoming
        self.peers.on_peer = self._peer_changed
        self.node.device_name = self._name_of
        self.last_seen = LastSeen(self.node, self.peers)
        self.peers.on_synced = self._publish_synced
        self.share_members: dict[str, frozenset[str]] = {}  # what membership events compare
        self.ui: WebUI | None = _web_ui(self, settings.ui_port) if settings.ui_enabled else None
        # [history] as the daemon started with it (a reload changes it at the next restart)
        self.compaction = settings.history_compaction
        self.history_policy = HistoryPolicy.of(
            settings.history_interval, settings.keep_for_absent_days
        )

    @property
    def device_id(self) -> str:
        return self.identity.device_id


    @property
    def device_name(self) -> str:
        """The name in our replicated membership record (what every device shows), else the
        config's (before that record is loaded)."""
        own = self.members.get(self.device_id)
        return own.name if own is not None and own.name else self.config.device_name

    # lifetime -----------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # a socket another daemon answers on stops the start before anything else is started
        await remove_stale_socket(self.config.control_socket)
        listeners = await self._open_listeners()
        # Signals are caught from before READY=1, so a stop request is never lost to a race.
        stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        with trio.open_signal_receiver(*stop_signals) as signals:
            await self._serve(listeners, signals, task_status)

    async def _serve(
        self,
        listeners: list[trio.SocketListener],
        signals: AsyncIterator[int],
        task_status: trio.TaskStatus[Any],
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.node.run_group_commit)
            await self._announce_self()
            await self._load_members()
            await self.last_seen.load()
            nursery.start_soon(self.last_seen.run)
            for address in [*self.config.peers, *self._saved_addresses()]:
                self.peers.dial(address)
            await nursery.start(self.peers.run, listeners)
            nursery.start_soon(self._follow_network)
            if self.config.discovery_enabled:
                await nursery.start(self._run_discovery)
            await nursery.start(
                partial(
                    serve_control,
                    self.config.control_socket,
                    self,
                    mode=self.config.control_socket_mode,
                    group=self.config.control_group,
                )
            )
            if self.ui is not None:
                await nursery.start(self.ui.run)
            if self.config.metrics_listen is not None:
                await self._start_metrics(nursery, self.config.metrics_listen)
            nursery.start_soon(self._follow_membership)
            nursery.start_soon(self._report_conflicts)
            if self.compaction:
                nursery.start_soon(run_history, self.node, self.history_policy)
            interval = self.notifier.watchdog_interval(os.environ)
            if interval:
                nursery.start_soon(self._feed_watchdog, interval)
            self.started_at = trio.current_time()
            log.info(
                "p2psync %s ready: device %s (%s), listening on %s, control socket %s",
                __version__,
                self.device_id,
                self.device_name,
                ", ".join(self.listen_addresses),
                self.config.control_socket,
            )
            # Everything loaded so far lives as long as the daemon: keep the collector from
            # re-scanning it on every full collection during a large catch-up.
            gc.freeze()
            self.notifier.ready(self._status_line())
            task_status.started(self)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                log.info("stopping on %s", signal.Signals(signum).name)
                self.notifier.stopping()
                _exit_if_stuck(STOP_GRACE_SECONDS)
                nursery.cancel_scope.cancel()
                return

    async def _start_metrics(self, nursery: trio.Nursery, listen: MetricsListen) -> None:
        try:
            await nursery.start(serve_metrics, listen, self.metrics)
        except MetricsUnavailable as exc:
            raise StartupError(str(exc)) from None

    async def metrics(self) -> bytes:
        """The Prometheus endpoint's answer: this moment's figures."""
        rows = await self.peers_status()
        shares = await self.node.call(_share_figures, self.node.replica)
        peers = [metrics.peer_figures(row) for row in rows if not row["revoked"]]
        snapshot = metrics.Snapshot(
            self.device_id, self.device_name, __version__, tuple(peers), tuple(shares)
        )
        return metrics.exposition(snapshot)

    async def _open_listeners(self) -> list[trio.SocketListener]:
        listeners: list[trio.SocketListener] = []
        failures: list[tuple[str, int, OSError]] = []
        for host, port in self.config.listen:
            try:
                opened = await trio.open_tcp_listeners(port, host=host)
            except OSError as exc:
                failures.append((host, port, exc))
                continue
            listeners.extend(opened)
            for listener in opened:
                bound = listener.socket.getsockname()
                self.listen_addresses.append(config.format_address(bound[0], bound[1]))
                self.listen_port = self.listen_port or int(bound[1])
        for host, port, failure in failures:
            where = config.format_address(host, port)
            if failure.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"cannot listen on {where}: the port is in use (is another p2psync "
                    f"running?); choose another port with network.listen in the config"
                )
            if listeners and failure.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                log.warning("not listening on %s: %s", where, failure.strerror)
                continue
            raise StartupError(f"cannot listen on {where}: {failure.strerror or failure}")
        if not listeners:
            raise StartupError("no listen address configured (network.listen is empty)")
        return listeners

    async def _announce_self(self) -> None:
        """Keep our own membership record current, so pairing introduces our name and cert. The
        config's name replaces the record's only when the config changed it since the last start:
        otherwise the record's (perhaps from `p2psync rename`) stays."""
        own = await self.node.call(self._own_record)
        configured = self.config.device_name
        stored = await self.node.call(self.node.replica.store.get_meta, CONFIG_NAME_META_KEY)
        config_changed = stored is None or stored.decode(errors="replace") != configured
        name = configured if own is None or config_changed or not own.name else own.name
        if own is None or own.name != name or own.cert_pem != self.identity.cert_pem:
            await self._write_own_record(name)
        if config_changed:
            await self.node.call(
                self.node.replica.store.set_meta, CONFIG_NAME_META_KEY, configured.encode()
            )

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
            for device_id in [d for d in self._discovered if not self.peers.trusts(d)]:
                del self._discovered[device_id]  # its dialers stopped; a re-pairing redials
            if self.discovery is not None:
                for found in self.discovery.nearby().values():
                    self._dial_if_member(found)

    # events for watchers (docs/control-protocol.md, watch) -------------------------------------

    def _name_of(self, device_id: str) -> str | None:
        record = self.members.get(device_id)
        return record.name if record is not None else None

    def _peer_changed(self, device_id: str, connected: bool) -> None:
        name = self._name_of(device_id)
        log.info(
            "%s (%s) %s", name or "unnamed device", device_id,
            "is online" if connected else "went offline",
            extra=log_extra("peer_connected" if connected else "peer_disconnected",
                            peer=device_id, peer_name=name),
        )  # fmt: skip
        self.last_seen.session_changed(device_id, connected)
        self._publish_peer(device_id, connected)

    def _publish_peer(self, device_id: str, connected: bool) -> None:
        self.node.events.publish(
            {
                "event": "peer",
                "device": device_id,
                "name": self._name_of(device_id),
                "connected": connected,
            }
        )

    def _publish_synced(self, device_id: str, share: str) -> None:
        self.node.events.publish(
            {
                "event": "synced",
                "device": device_id,
                "name": self._name_of(device_id),
                "share": share,
            }
        )

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

    # discovery and pairing ----------------------------------------------------------------

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
                "addresses": [config.format_address(host, port) for host, port in found.addresses],
                "member": found.device_id in self.members
                and not self.members[found.device_id].revoked,
                "pairing": int(found.txt["pair"]) if found.txt.get("pair", "").isdigit() else None,
            }
            for found in self.discovery.nearby().values()
            if found.device_id != self.device_id
        ]

    def peer_state(self, device_id: str) -> tuple[PeerState | None, bool]:
        """A device's session state (or its last one) and whether it is connected now."""
        session = self.peers.sessions.get(device_id)
        if session is not None:
            return session.state, True
        return self.peers.offline.get(device_id), False

    async def _feed_watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    def _status_line(self) -> str:
        online = len(self.peers.sessions)
        return f"{online} peer{'s' if online != 1 else ''} connected"

    def _update_status_line(self) -> None:
        self.notifier.status(self._status_line())

    # control context ----------------------------------------------------------------------

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
            "peers_connected": len(self.peers.sessions),
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
            session = self.peers.sessions.get(device.device_id)
            state = session.state if session else self.peers.offline.get(device.device_id)
            connected = session is not None
            found.append(daemon_status.peer_json(device, state, connected, ours, now))
        return found

    async def ui_link(self) -> dict[str, Any]:
        if self.ui is None:
            raise LookupError("the web UI is off on this device (ui.enabled = false in its config)")
        return self.ui.login_link()

    async def reload(self) -> dict[str, Any]:
        self.notifier.reloading()
        try:
            fresh = load_settings(self.args)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status_line())
            return {"reloaded": False, "error": str(exc)}
        changes = []
        if fresh.device_name != self.config.device_name:
            await self._write_own_record(fresh.device_name)
            await self.node.call(
                self.node.replica.store.set_meta, CONFIG_NAME_META_KEY, fresh.device_name.encode()
            )
            if self.discovery is not None:
                self.discovery.rename(self.device_name)
            changes.append("device.name")
        if fresh.log_level != self.config.log_level:
            logging.getLogger().setLevel(fresh.log_level.upper())
            changes.append("log.level")
        for address in fresh.peers:
            if address not in self.config.peers:
                self.peers.dial(address)
                changes.append(f"peer {config.format_address(*address)}")
        if fresh.listen != self.config.listen:
            log.warning("network.listen changed; it takes effect at the next restart")
        if (fresh.ui_enabled, fresh.ui_port) != (self.config.ui_enabled, self.config.ui_port):
            log.warning("ui.enabled or ui.port changed; it takes effect at the next restart")
        if fresh.metrics_listen != self.config.metrics_listen:
            log.warning("metrics.listen changed; it takes effect at the next restart")
        history = ("history_compaction", "keep_for_absent_days", "history_interval")
        if any(getattr(fresh, name) != getattr(self.config, name) for name in history):
            log.warning("a [history] setting changed; it takes effect at the next restart")
        if fresh.max_snapshot_mb != self.config.max_snapshot_mb:
            self.peers.snapshots.max_bytes = fresh.max_snapshot_mb * 1024 * 1024
            changes.append("history.max_snapshot_mb")
        if fresh.control_socket_mode != self.config.control_socket_mode:
            log.warning("control.apps or control.mode changed; it takes effect at the next restart")
        self.config = fresh
        log.info("configuration reloaded%s", f": {', '.join(changes)}" if changes else "")
        self.notifier.ready(self._status_line())
        return {"reloaded": True, "changed": changes}

    def _saved_addresses(self) -> list[tuple[str, int]]:
        path = self.config.state_dir / ADDRESSES_FILE
        try:
            return [(str(host), int(port)) for host, port in json.loads(path.read_text())]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return []

    def _save_address(self, address: tuple[str, int]) -> None:
        saved = self._saved_addresses()
        if address not in saved:
            path = self.config.state_dir / ADDRESSES_FILE
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps([*saved, address]))
            temporary.replace(path)


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


def _web_ui(daemon: Daemon, port: int) -> "WebUI":
    # imported only when on: the web stack adds a fifth of a second to every start
    from .webui.server import WebUI

    return WebUI(daemon, port)


def _exit_if_stuck(seconds: float) -> None:
    """Shutdown is bounded: committed data is safe in SQLite, so a stop that hangs (a thread that
    does not return) may end the process outright."""

    def give_up() -> None:
        log.error("did not stop within %s s; exiting anyway", seconds)
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"p2psync: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    warn_about_environment()
    try:
        prepare_state_dir(settings.state_dir)
        with state_lock(settings.state_dir):
            device, replica = open_state(settings)
            try:
                trio.run(_run, settings, device, replica, args)
            except BaseExceptionGroup as group:  # a failure inside the nursery comes wrapped
                failure = startup_failure(group)
                if failure is None:
                    raise
                raise failure from None
            finally:
                replica.close()
    except (StartupError, keystore.KeystoreError, OSError) as exc:
        log.error("%s", exc)
        Notifier.from_environ(os.environ).status(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _run(
    settings: Config, device: identity.DeviceIdentity, replica: Replica, args: argparse.Namespace
) -> None:
    await Daemon(settings, device, replica, args).run()
