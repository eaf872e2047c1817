"""The optional Prometheus endpoint (trio): a loopback TCP port or a Unix socket that answers
`GET /metrics` (HTTP/1.0, one request per connection) with what `metrics.py` formats.

Owns the listener, the per-connection limits (a head of at most `MAX_REQUEST_BYTES`, a whole
exchange within `EXCHANGE_TIMEOUT_SECONDS`, at most `MAX_CONNECTIONS` at once: junk, slow or
many clients cost a socket each for a few seconds, never the daemon) and the socket file. It
never listens beyond loopback (config.py refuses such an address) and never answers anything but
the metrics.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from . import metrics
from .config_values import format_address

EXCHANGE_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 8
LINGER_BYTES = 65536
SOCKET_MODE = 0o660

log = logging.getLogger(__name__)

MetricsListen = tuple[str, int] | Path


class MetricsUnavailable(Exception):
    """The endpoint cannot be opened; the message names the address and what to change."""


async def serve_metrics(
    listen: MetricsListen,
    collect: Callable[[], Awaitable[bytes]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started` gets the addresses listened on."""
    listeners = await _open(listen)
    try:
        where = [_describe(listener) for listener in listeners]
        log.info("metrics on %s", ", ".join(where))
        task_status.started(where)
        limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
        await trio.serve_listeners(partial(_exchange, collect, limiter), listeners)
    finally:
        if isinstance(listen, Path):
            listen.unlink(missing_ok=True)


async def _open(listen: MetricsListen) -> list[trio.SocketListener]:
    try:
        if isinstance(listen, Path):
            return [await _unix_listener(listen)]
        host, port = listen
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise MetricsUnavailable(
            f"cannot serve metrics on {_shown(listen)}: {exc.strerror or exc}; change "
            '[metrics] listen, or set it to "" to turn the endpoint off'
        ) from None


async def _unix_listener(path: Path) -> trio.SocketListener:
    await _remove_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        sock.listen(MAX_CONNECTIONS)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _remove_stale(path: Path) -> None:
    """A socket left by a daemon that is gone is removed; one that answers is in use."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, "exists and is not a socket")
    except FileNotFoundError:
        return
    try:
        probe = await trio.open_unix_socket(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
        return
    await probe.aclose()
    raise OSError(errno.EADDRINUSE, "in use by another process")


async def _exchange(
    collect: Callable[[], Awaitable[bytes]],
    limiter: trio.CapacityLimiter,
    stream: trio.SocketStream,
) -> None:
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await trio.aclose_forcefully(stream)  # too many at once: this one is not worth a wait
        return
    try:
        with trio.move_on_after(EXCHANGE_TIMEOUT_SECONDS):
            head = await _read_head(stream)
            status = 431 if head is None else metrics.request_status(head)
            body = await collect() if status == 200 else b""
            await stream.send_all(metrics.response(status, body))
            await _linger(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away: nothing to tell anyone
    finally:
        limiter.release()
        await trio.aclose_forcefully(stream)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request up to its blank line; None when it grows past the cap first."""
    received = b""
    while b"\r\n\r\n" not in received and b"\n\n" not in received:
        if len(received) > metrics.MAX_REQUEST_BYTES:
            return None
        chunk = await stream.receive_some(metrics.MAX_REQUEST_BYTES)
        if not chunk:
            break  # a client that half-closed after its request line still gets an answer
        received += chunk
    return received


async def _linger(stream: trio.SocketStream) -> None:
    """Close only once the client has, reading what it still sends (a little): closing with
    unread bytes would reset the connection, and the client could lose the answer."""
    await stream.send_eof()
    drained = 0
    while drained <= LINGER_BYTES and (chunk := await stream.receive_some(LINGER_BYTES)):
        drained += len(chunk)


def _describe(listener: trio.SocketListener) -> str:
    name = listener.socket.getsockname()
    return name if isinstance(name, str) else format_address(*name[:2])


def _shown(listen: MetricsListen) -> str:
    return str(listen) if isinstance(listen, Path) else format_address(*listen)
