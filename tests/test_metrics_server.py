"""Tests for p2psync.metrics_server over real sockets (loopback TCP and a Unix socket): answers,
junk, an oversized head, a silent client, too many clients, the socket file; and a real daemon
whose endpoint shows a peer's traffic."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from p2psync import metrics_server
from p2psync.metrics_server import MetricsListen, MetricsUnavailable, serve_metrics
from tests.daemons import DaemonProcess, free_port, introduce, running, wait_for, wait_for_value

BODY = b"p2psync_records 1\n"


async def _collect() -> bytes:
    return BODY


@asynccontextmanager
async def serving(listen: MetricsListen) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        [where] = await nursery.start(serve_metrics, listen, _collect)
        yield where
        nursery.cancel_scope.cancel()


async def _connect(where: str) -> trio.SocketStream:
    if where.startswith("/"):
        return await trio.open_unix_socket(where)
    host, _, port = where.rpartition(":")
    return await trio.open_tcp_stream(host, int(port))


async def _exchange(where: str, request: bytes) -> bytes:
    stream = await _connect(where)
    async with stream:
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                answer += chunk
    return answer


async def test_get_metrics_over_loopback_tcp() -> None:
    async with serving(("127.0.0.1", 0)) as where:
        answer = await _exchange(where, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n" + BODY)


async def test_get_metrics_over_a_unix_socket_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sock"
    async with serving(path) as where:
        assert (path.stat().st_mode & 0o777) == metrics_server.SOCKET_MODE
        answer = await _exchange(where, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert answer.endswith(BODY)
    assert not path.exists()  # removed on the way out


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /other HTTP/1.1\r\n\r\n", b"404"),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n", b"431"),
    ],
)
async def test_junk_gets_a_short_refusal(request_bytes: bytes, status: bytes) -> None:
    async with serving(("127.0.0.1", 0)) as where:
        answer = await _exchange(where, request_bytes)
    assert answer.startswith(b"HTTP/1.0 " + status)
    assert BODY not in answer


async def test_a_client_that_stops_after_its_request_line_still_gets_its_answer() -> None:
    async with serving(("127.0.0.1", 0)) as where:
        stream = await _connect(where)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.0\r\n")
            await stream.send_eof()
            with trio.fail_after(5):
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
    assert answer.endswith(BODY)


async def test_a_silent_client_is_dropped_and_others_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_server, "EXCHANGE_TIMEOUT_SECONDS", 0.5)
    async with serving(("127.0.0.1", 0)) as where:
        silent = [await _connect(where) for _ in range(metrics_server.MAX_CONNECTIONS)]
        await trio.testing.wait_all_tasks_blocked()  # each holds its slot, waiting to read
        # every slot is taken: one more is closed at once, without an answer
        assert await _exchange(where, b"GET /metrics HTTP/1.0\r\n\r\n") == b""
        with trio.fail_after(5):
            for stream in silent:
                assert await stream.receive_some() == b""  # closed by the server
                await stream.aclose()
        answer = await _exchange(where, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert answer.endswith(BODY)


async def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a killed daemon leaves
    async with serving(path) as where:
        assert (await _exchange(where, b"GET /metrics HTTP/1.0\r\n\r\n")).endswith(BODY)
        with pytest.raises(ExceptionGroup) as refused:
            async with serving(path):
                pass
        assert refused.group_contains(MetricsUnavailable, match="in use by another process")


async def test_an_address_in_use_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ExceptionGroup) as refused:
            async with serving(("127.0.0.1", port)):
                pass
        assert refused.group_contains(
            MetricsUnavailable, match=r"127\.0\.0\.1:\d+: .*\[metrics\] listen"
        )


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK"), head
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_a_daemon_serves_its_peers_traffic(tmp_path: Path) -> None:
    port = free_port()
    a = DaemonProcess(tmp_path, "a", extra_config=f'[metrics]\nlisten = "127.0.0.1:{port}"')
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        b_id = b.device_id
        a.call("put", collection="notes", key="k", value="from a")
        wait_for_value(b, "notes", "k", "from a")
        peer = frozenset({"device": b_id, "name": "b"}.items())

        def shows_traffic() -> bool:
            samples = _scrape(port)
            return (
                samples[("p2psync_peers_online", frozenset())] == 1
                and samples[("p2psync_peer_entries_sent_total", peer)] >= 1
                and samples[("p2psync_peer_sent_bytes_total", peer)] > 0
            )

        wait_for(shows_traffic, "a's metrics to show the entries sent to b", a, b)
        samples = _scrape(port)
        assert samples[("p2psync_records", frozenset({("share", "default")}))] >= 1
        assert samples[("p2psync_conflicts", frozenset({("share", "default")}))] == 0
        assert samples[("p2psync_peer_lag_entries", peer | {("lacking", "peer")})] >= 0
