"""The configuration in a running daemon (trio): the config's device name at each start, and
`reload` (SIGHUP or the control method) — what a new config changes at once and what waits for
the next restart (a mixin of `Daemon`, kept apart so each file reads whole).

Reading and checking the config file is `config.py`'s and `daemon_setup.load_settings`'s; this
module only applies the result. A config that fails to load changes nothing: the daemon keeps
running on the one it has.
"""

import logging
from typing import Any

from . import config_values
from .config import ConfigError
from .daemon_role import DaemonRole
from .daemon_setup import load_settings

log = logging.getLogger("p2psync")
# The config's device.name when it last named this device: a name in the config counts only when
# it changes there, so a `rename` (which rewrites the replicated record) survives restarts.
CONFIG_NAME_META_KEY = "config_device_name"


class ReloadRole(DaemonRole):
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
                self.node.replica.store.save_meta, CONFIG_NAME_META_KEY, configured.encode()
            )

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
                self.node.replica.store.save_meta, CONFIG_NAME_META_KEY, fresh.device_name.encode()
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
                changes.append(f"peer {config_values.format_address(*address)}")
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
        if fresh.one_cpu != self.config.one_cpu:
            log.warning("process.one_cpu changed; it takes effect at the next restart")
        if fresh.control_socket_mode != self.config.control_socket_mode:
            log.warning("control.apps or control.mode changed; it takes effect at the next restart")
        if fresh.control_front_end != self.config.control_front_end:
            log.warning("control.front_end changed; it takes effect at the next restart")
        self.config = fresh
        log.info("configuration reloaded%s", f": {', '.join(changes)}" if changes else "")
        self.notifier.ready(self._status_line())
        return {"reloaded": True, "changed": changes}
