"""The web UI's server inside the daemon: hypercorn's trio worker serving `app.py` (trio).

It owns the UI's listening sockets, on 127.0.0.1 and ::1 only, one port for both (`ui.port`; 0
picks a free one), the login links `p2psync ui` hands out (`login_link`), and the UI's lifetime:
it runs as a task of the daemon's nursery and ends with it. A port in use does not stop the
daemon: the UI is a window on it, syncing is its job; the daemon starts without the UI, says so
once in its log, and `ui_link` answers why. It never listens on any other
address, whatever the config says about the sync port: other devices of the household have
their own UI, and nothing here is meant for the network.
"""

import errno
import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from ..control.methods_admin import ControlContext
from ..daemon_setup import StartupError
from .app import build_app
from .auth import LINK_SECONDS, Gate
from .facade import Facade

log = logging.getLogger("p2psync.ui")
_HYPERCORN_LOG = logging.getLogger("p2psync.ui.hypercorn")
_HYPERCORN_LOG.setLevel(logging.WARNING)
BIND_ATTEMPTS = 5  # port 0: a port free on 127.0.0.1 may be taken on ::1; try another


class PortInUse(Exception):
    """Another program holds the UI's port on a loopback address."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is in use")
        self.host, self.port = host, port


class WebUI:
    def __init__(self, context: ControlContext, port: int) -> None:
        self.facade = Facade(context)
        self.gate = Gate()
        self.configured_port = port
        self.port = 0  # the bound one, once running
        self.unavailable = ""  # why the UI did not start, when it did not

    def login_link(self) -> dict[str, Any]:
        """A one-time URL that logs a browser in (what the `ui_link` method answers); LookupError
        when the UI could not start."""
        if self.unavailable:
            raise LookupError(self.unavailable)
        token = self.gate.issue_link(trio.current_time())
        return {
            "url": f"http://127.0.0.1:{self.port}/login?token={token}",
            "expires_in": round(LINK_SECONDS),
        }

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            sockets = bind_loopback(self.configured_port)
        except PortInUse as exc:
            self.unavailable = (
                f"the web UI is unavailable: port {exc.port} on {exc.host} was in use when the "
                "daemon started; set another ui.port in the daemon's config and restart it"
            )
            log.warning(
                "web UI not started: %s (another p2psync, or another program?); this device "
                "syncs as usual, and `p2psync ui` says the UI is unavailable. Set another ui.port "
                "in the config (or ui.enabled = false) and restart the daemon",
                exc,
            )
            task_status.started()
            return
        self.port = sockets[0].getsockname()[1]
        config = HypercornConfig()
        # hypercorn takes sockets by descriptor: it owns them from here on
        config.bind = [f"fd://{sock.detach()}" for sock in sockets]
        config.accesslog = None
        config.errorlog = _HYPERCORN_LOG  # its "Running on" lines say less than ours
        config.graceful_timeout = 1.0
        async with trio.open_nursery() as nursery:
            self.facade.nursery = nursery
            app = build_app(self.facade, self.gate, self.port)
            await nursery.start(serve, app, config)
            log.info("web UI on http://127.0.0.1:%d/ (`p2psync ui` logs a browser in)", self.port)
            task_status.started()


def bind_loopback(port: int) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1 and ::1 (where the host has IPv6) on one port."""
    for _ in range(BIND_ATTEMPTS):
        v4 = _bound(socket.AF_INET, "127.0.0.1", port)
        chosen = v4.getsockname()[1]
        try:
            v6 = _bound(socket.AF_INET6, "::1", chosen)
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                log.warning("web UI: no ::1 on this host, serving 127.0.0.1 only")
                return [v4]
            v4.close()
            if exc.errno == errno.EADDRINUSE and port == 0:
                continue
            raise _bind_failure("[::1]", chosen, exc) from None
        return [v4, v6]
    raise StartupError("web UI: found no port free on both 127.0.0.1 and ::1; set ui.port")


def _bound(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if family == socket.AF_INET:
            raise _bind_failure(host, port, exc) from None
        raise
    return sock


def _bind_failure(host: str, port: int, exc: OSError) -> StartupError | PortInUse:
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(host, port)
    return StartupError(f"web UI: cannot listen on {host}:{port}: {exc.strerror or exc}")
