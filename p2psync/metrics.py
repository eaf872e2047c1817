"""What the optional Prometheus endpoint answers (pure): the figures of one moment in the text
exposition format, and the tiny HTTP/1.0 exchange around them.

Owns the metric names, their labels and help texts (a promise to dashboards: rename nothing), the
formatting through prometheus_client's `generate_latest` with a collector of one snapshot, and
which answer a request head gets. It never opens sockets, reads the clock or the database:
`metrics_server.py` serves it and the daemon gathers the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MAX_REQUEST_BYTES = 8192  # a request head longer than this is junk
PATH = "/metrics"
# what generate_latest writes (newer prometheus_client releases call another format "latest")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}  # fmt: skip


@dataclass(frozen=True)
class PeerFigures:
    device: str
    name: str
    connected: bool
    answering: bool  # connected, and no ping of the peer's overdue: `peers` says online
    entries_sent: int
    entries_received: int
    bytes_sent: int
    bytes_received: int
    they_lack: int | None  # entries (default share) we would send the peer; None: never met
    we_lack: int | None


@dataclass(frozen=True)
class ShareFigures:
    share: str
    records: int
    conflicts: int


@dataclass(frozen=True)
class Snapshot:
    device: str
    name: str
    version: str
    peers: tuple[PeerFigures, ...]
    shares: tuple[ShareFigures, ...]


def peer_figures(row: Mapping[str, Any]) -> PeerFigures:
    """A peer's figures from its `peers` row (daemon_status.peer_json), whose keys they share."""
    return PeerFigures(**{figure.name: row[figure.name] for figure in fields(PeerFigures)})


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        info_labels = ["device", "name", "version"]
        info = GaugeMetricFamily("p2psync_info", "This device and version", labels=info_labels)
        info.add_metric([snapshot.device, snapshot.name, snapshot.version], 1)
        yield info
        online = GaugeMetricFamily("p2psync_peers_online", "Peers connected and answering")
        online.add_metric([], sum(peer.answering for peer in snapshot.peers))
        yield online
        yield from _per_peer(snapshot.peers)
        records = GaugeMetricFamily("p2psync_records", "Live records", labels=["share"])
        conflicts = GaugeMetricFamily(
            "p2psync_conflicts", "Records with conflicting versions", labels=["share"]
        )
        for share in snapshot.shares:
            records.add_metric([share.share], share.records)
            conflicts.add_metric([share.share], share.conflicts)
        yield records
        yield conflicts


def _per_peer(peers: tuple[PeerFigures, ...]) -> Iterator[Metric]:
    labels = ["device", "name"]
    connected = GaugeMetricFamily(
        "p2psync_peer_connected", "1 while a session is up", labels=labels
    )
    answering = GaugeMetricFamily(
        "p2psync_peer_answering", "1 while connected and answering (online)", labels=labels
    )
    counters = {
        "entries_sent": CounterMetricFamily(
            "p2psync_peer_entries_sent", "Log entries sent to the peer", labels=labels
        ),
        "entries_received": CounterMetricFamily(
            "p2psync_peer_entries_received", "Log entries received from the peer", labels=labels
        ),
        "bytes_sent": CounterMetricFamily(
            "p2psync_peer_sent_bytes", "Sync bytes sent to the peer", labels=labels
        ),
        "bytes_received": CounterMetricFamily(
            "p2psync_peer_received_bytes", "Sync bytes received from the peer", labels=labels
        ),
    }
    lag = GaugeMetricFamily(
        "p2psync_peer_lag_entries",
        "Entries of the default share one side holds and the other lacks, as last told",
        labels=[*labels, "lacking"],
    )
    for peer in peers:
        values = [peer.device, peer.name]
        connected.add_metric(values, int(peer.connected))
        answering.add_metric(values, int(peer.answering))
        for attribute, family in counters.items():
            family.add_metric(values, getattr(peer, attribute))
        if peer.they_lack is not None:
            lag.add_metric([*values, "peer"], peer.they_lack)
        if peer.we_lack is not None:
            lag.add_metric([*values, "us"], peer.we_lack)
    yield connected
    yield answering
    yield from counters.values()
    yield lag


def exposition(snapshot: Snapshot) -> bytes:
    """The snapshot in the Prometheus text format (version 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


def request_status(head: bytes) -> int:
    """The status a request head (its bytes up to the blank line) gets: 200 only for
    `GET /metrics` (a query string is ignored)."""
    request_line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return 400
    method, target, _ = parts
    if method != b"GET":
        return 405
    return 200 if target.split(b"?", 1)[0] == PATH.encode() else 404


def response(status: int, body: bytes = b"") -> bytes:
    """A whole HTTP/1.0 response; the connection closes after it."""
    if status == 200:
        content_type = CONTENT_TYPE
    else:
        content_type = "text/plain; charset=utf-8"
        body = f"{status} {_REASONS[status]}: only GET {PATH} is served\n".encode()
    head = (
        f"HTTP/1.0 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        + ("Allow: GET\r\n" if status == 405 else "")
        + "\r\n"
    )
    return head.encode() + body
