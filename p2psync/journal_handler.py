"""A logging.Handler that sends records to journald over its native protocol (I/O).

One datagram per record to /run/systemd/journal/socket, with the fields `journal.py` makes; a
record too large for a datagram goes in a sealed memfd passed along (as systemd's own
sd_journal_send does). It never blocks the daemon on journald (a full socket buffer drops the
record rather than wait) and never raises: when journald cannot be reached the record goes to the
fallback handler (the plain stderr lines of before). No libsystemd.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Mapping

from . import journal

JOURNAL_SOCKET = "/run/systemd/journal/socket"


class JournalHandler(logging.Handler):
    def __init__(self, fallback: logging.Handler, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.fallback = fallback
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            datagram = journal.encode(journal.record_fields(record, journal.message_text(record)))
            self._send(datagram)
        except BlockingIOError:
            pass  # journald is behind: losing a line beats stalling the daemon
        except OSError:
            self.fallback.handle(record)
        except Exception:  # a log call must never take the daemon down
            self.handleError(record)

    def _send(self, datagram: bytes) -> None:
        try:
            self._socket.sendto(datagram, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_in_memfd(datagram)

    def _send_in_memfd(self, datagram: bytes) -> None:
        fd = os.memfd_create("p2psync-journal", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
        try:
            os.write(fd, datagram)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())
            self._socket.sendmsg([], [rights], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._socket.close()
        super().close()


def stderr_is_journal(environ: Mapping[str, str]) -> bool:
    try:
        status = os.fstat(2)
    except OSError:
        return False
    return journal.is_journal_stream(environ.get("JOURNAL_STREAM"), status.st_dev, status.st_ino)


def journal_reachable(path: str = JOURNAL_SOCKET) -> bool:
    """Whether journald listens at `path` (connecting sends nothing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
