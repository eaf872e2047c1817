"""The daemon: one trio nursery owning the store, listeners, dialers, control socket and signals.

It wires the parts together: it opens the listeners, starts every task, tells systemd how it
is doing (sd_notify), publishes peers' comings and goings to watchers, keeps the addresses
`trust` was given, and stops on a signal; everything it does to data goes through `Node`,
everything on the wire through `PeerManager`. It must refuse to start twice on one state
directory and must stop cleanly on SIGTERM within a bounded grace period. What it answers the
control socket about itself is its roles': membership `daemon_members.py`'s, pairing
`daemon_pairing.py`'s, discovery and `nearby` `daemon_discovery.py`'s, `status`, `peers` and
metrics `daemon_reports.py`'s, `reload` `daemon_reload.py`'s (`daemon_role.py` says what they
share). Getting ready to run (settings, logging, the state directory, its lock) is
`daemon_setup.py`'s.
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
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from . import __version__, config_values, identity, keystore
from .config import Config, ConfigError
from .control.server import serve_control
from .control.socket_file import remove_stale_socket
from .daemon_discovery import DiscoveryRole
from .daemon_members import MembershipRole
from .daemon_pairing import PairingRole
from .daemon_reload import ReloadRole
from .daemon_reports import ReportsRole
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
from .discovery import Discovery
from .history.stability import HistoryPolicy
from .history.timer import run_history
from .journal import log_extra
from .last_seen import LastSeen
from .metrics_server import MetricsListen, MetricsUnavailable, serve_metrics
from .node import Node
from .one_cpu import keep_to_one_processor, processors_for_helpers
from .pairing_service import PairingService
from .peers import PeerManager, Timeouts
from .replica import DeviceRecord, Replica
from .sdnotify import Notifier

if TYPE_CHECKING:
    from .webui.server import WebUI

log = logging.getLogger("p2psync")
STOP_GRACE_SECONDS = 5.0
ADDRESSES_FILE = "addresses.json"


class Daemon(MembershipRole, PairingRole, DiscoveryRole, ReportsRole, ReloadRole):
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
                    front_end=processors_for_helpers() if self.config.control_front_end else None,
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
                self.listen_addresses.append(config_values.format_address(bound[0], bound[1]))
                self.listen_port = self.listen_port or int(bound[1])
        for host, port, failure in failures:
            where = config_values.format_address(host, port)
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

    async def _feed_watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    def _status_line(self) -> str:
        online = len(self.peers.connected)
        return f"{online} peer{'s' if online != 1 else ''} connected"

    def _update_status_line(self) -> None:
        self.notifier.status(self._status_line())

    # events for watchers (docs/control-protocol.md, watch) -------------------------------------

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

    # control context ----------------------------------------------------------------------

    async def ui_link(self) -> dict[str, Any]:
        if self.ui is None:
            raise LookupError("the web UI is off on this device (ui.enabled = false in its config)")
        return self.ui.login_link()

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
    if settings.one_cpu:  # before any thread starts: they inherit it
        keep_to_one_processor()
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
