"""Tests for p2psync.metrics: a snapshot in the text format, read back with prometheus_client's
own parser; which answer a request head gets."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2psync import metrics

KITCHEN = metrics.PeerFigures(
    device="NBSWY-3DPEB-3W64T-B", name='Küche "2.0"', connected=True, answering=True,
    entries_sent=12, entries_received=30, bytes_sent=4096, bytes_received=9000, they_lack=3,
    we_lack=0,
)  # fmt: skip
NEVER_MET = metrics.PeerFigures(
    device="ONSWG-4TFOR-XGK3T-C", name="living room.tv", connected=False, answering=False,
    entries_sent=0, entries_received=0, bytes_sent=0, bytes_received=0, they_lack=None,
    we_lack=None,
)  # fmt: skip
SNAPSHOT = metrics.Snapshot(
    device="MFRGG-ZDFMZ-GQ3TS-A",
    name="Anna's iPad",
    version="0.4.0",
    peers=(KITCHEN, NEVER_MET),
    shares=(metrics.ShareFigures("default", 120, 2), metrics.ShareFigures("photos", 7, 0)),
)


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition(SNAPSHOT).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _peer(peer: metrics.PeerFigures, **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"device": peer.device, "name": peer.name, **more}.items()))


def test_every_figure_is_there_with_its_labels() -> None:
    samples = _samples()
    assert samples[("p2psync_peers_online", ())] == 1
    assert samples[("p2psync_peer_connected", _peer(KITCHEN))] == 1
    assert samples[("p2psync_peer_connected", _peer(NEVER_MET))] == 0
    assert samples[("p2psync_peer_entries_sent_total", _peer(KITCHEN))] == 12
    assert samples[("p2psync_peer_entries_received_total", _peer(KITCHEN))] == 30
    assert samples[("p2psync_peer_sent_bytes_total", _peer(KITCHEN))] == 4096
    assert samples[("p2psync_peer_received_bytes_total", _peer(KITCHEN))] == 9000
    assert samples[("p2psync_peer_lag_entries", _peer(KITCHEN, lacking="peer"))] == 3
    assert samples[("p2psync_peer_lag_entries", _peer(KITCHEN, lacking="us"))] == 0
    assert samples[("p2psync_records", (("share", "default"),))] == 120
    assert samples[("p2psync_conflicts", (("share", "default"),))] == 2
    assert samples[("p2psync_conflicts", (("share", "photos"),))] == 0
    info = (("device", SNAPSHOT.device), ("name", SNAPSHOT.name), ("version", "0.4.0"))
    assert samples[("p2psync_info", info)] == 1


def test_a_peer_never_met_has_no_lag() -> None:
    assert not [key for key in _samples() if key[0] == "p2psync_peer_lag_entries"
                and dict(key[1])["device"] == NEVER_MET.device]  # fmt: skip


def test_quotes_in_names_are_escaped() -> None:
    assert b'name="K\xc3\xbcche \\"2.0\\""' in metrics.exposition(SNAPSHOT)


def test_peer_figures_come_from_a_peers_row() -> None:
    row = {**KITCHEN.__dict__, "address": "10.0.0.2:47100", "revoked": False}
    assert metrics.peer_figures(row) == KITCHEN


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", 200),
        (b"GET /metrics HTTP/1.0\n\n", 200),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        (b"\x16\x03\x01\x02\x00\x01\x00", 400),  # a TLS hello
        (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9
        (b"", 400),
    ],
)
def test_request_status(head: bytes, status: int) -> None:
    assert metrics.request_status(head) == status


def test_a_response_says_its_length_and_closes() -> None:
    answer = metrics.response(200, b"p2psync_records 1\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4" in head
    assert b"Content-Length: 18" in head and b"Connection: close" in head
    assert body == b"p2psync_records 1\n"


def test_a_refusal_says_what_is_served() -> None:
    answer = metrics.response(405)
    assert answer.startswith(b"HTTP/1.0 405 Method Not Allowed\r\n")
    assert b"Allow: GET" in answer
    assert answer.endswith(b"only GET /metrics is served\n")
