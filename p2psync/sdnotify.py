"""The sd_notify protocol: tell systemd we are ready, reloading, stopping or alive (I/O).

One datagram of newline-separated `KEY=value` lines per message, sent to the AF_UNIX socket named
by $NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). Without $NOTIFY_SOCKET every
method does nothing, so the daemon calls them unconditionally. It never blocks (a full queue drops
the message) and never raises: systemd being unreachable must not stop the daemon. No libsystemd.
"""

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        """`address` as in $NOTIFY_SOCKET; None (or a kind we cannot use) disables notifying."""
        self.address = _socket_address(address) if address else None
        self._warned = False
        if address and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying", address)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Notifier":
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete; also ends a RELOADING=1 phase."""
        return self.send("READY=1", *([_status(status)] if status is not None else []))

    def status(self, text: str) -> bool:
        """A one-line description shown by `systemctl status`."""
        return self.send(_status(text))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """A reload began; send `ready()` when it is done. MONOTONIC_USEC lets systemd >= 253
        (Type=notify-reload) match this message to the reload it asked for."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def watchdog(self) -> bool:
        """We are alive; must come more often than WatchdogSec= (see `watchdog_interval`)."""
        return self.send("WATCHDOG=1")

    @staticmethod
    def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
        """Seconds between `watchdog()` calls (half the timeout, the systemd convention), or
        None when systemd does not watch this process."""
        try:
            timeout_usec = int(environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        watched_pid = environ.get("WATCHDOG_PID")
        if watched_pid and watched_pid != str(os.getpid() if pid is None else pid):
            return None
        return timeout_usec / 2 / 1e6 if timeout_usec > 0 else None

    def send(self, *assignments: str) -> bool:
        """Send one message; True when it was handed to the socket."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            # once is enough: a notify socket nobody reads would otherwise flood the log
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot notify systemd (%s): %s", assignments[0], exc)
            return False
        return True


watchdog_interval = Notifier.watchdog_interval


def _socket_address(address: str) -> str | None:
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def _status(text: str) -> str:
    # A newline would end the assignment and start a bogus one.
    return "STATUS=" + " ".join(text.splitlines())
