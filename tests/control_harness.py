"""The control socket served over a real Node/Replica on a temporary SQLite file, and raw
protocol clients, for the control tests (not a test module itself)."""

import json
import socket
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import trio
import trio.testing

from p2psync import daemon_status, entry, identity
from p2psync.control.errors import RequestError
from p2psync.control.server import serve_control
from p2psync.node import Node
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE
from tests.daemons import DaemonProcess

TIMEOUT = 10


class Household:
    """The daemon as the control socket sees it, around a real Node."""

    def __init__(self, node: Node, name: str = "kitchen") -> None:
        self.node = node
        self.device_name = name
        self.trusted: list[tuple[bytes, str | None, str | None]] = []
        self.status_error: Exception | None = None

    @property
    def device_id(self) -> str:
        return self.node.replica.device_id

    @property
    def members(self) -> dict[str, Any]:
        return {d.device_id: d for d in self.node.replica.devices()}

    def peer_state(self, device_id: str) -> tuple[None, bool]:
        return None, False  # no peers here: every other member is offline

    async def status(self) -> dict[str, Any]:
        if self.status_error is not None:
            raise self.status_error
        return {"device": self.device_id, "position": self.node.changes.position}

    async def peers_status(self) -> list[dict[str, Any]]:
        return [{"device": "PEER", "connected": False}]

    async def devices(self) -> list[dict[str, Any]]:
        return [
            daemon_status.device_json(
                device,
                this=device.device_id == self.device_id,
                state=None,
                connected=False,
                last_seen_ms=None,
                version=None,
                now=0.0,
            )
            for device in self.members.values()
        ]

    async def rename(self, name: str) -> dict[str, Any]:
        previous, self.device_name = self.device_name, name
        return {"device": self.device_id, "name": name, "previous": previous}

    async def trust(
        self, cert_pem: bytes, name: str | None, address: str | None, readmit: bool = False
    ) -> dict[str, Any]:
        if not cert_pem.startswith(b"-----BEGIN"):
            raise ValueError("that is not a PEM certificate")
        self.trusted.append((cert_pem, name, address))
        await self.node.commit(DEFAULT_SHARE, [self.node.replica.device_op(cert_pem, name or "x")])
        device_id = identity.device_id_from_certificate(cert_pem)
        return {"device": device_id, "name": name or "x", "address": address}

    async def revoke(self, device_id: str) -> dict[str, Any]:
        raise LookupError(f"no device {device_id} in this household")

    async def reload(self) -> dict[str, Any]:
        raise RequestError("conflict", "reload refused by the test")


class Connection:
    """A test client speaking raw newline-delimited JSON."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, request: dict[str, Any] | bytes) -> None:
        data = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
        await self.stream.send_all(data)

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(1 << 16)
                assert chunk, "server closed the connection"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        await self.send({"id": method, "method": method, **params})
        response = await self.receive()
        assert response["id"] == method
        return response

    async def result(self, method: str, **params: Any) -> Any:
        response = await self.call(method, **params)
        assert response["ok"], response
        return response["result"]

    async def error(self, method: str, **params: Any) -> dict[str, Any]:
        response = await self.call(method, **params)
        assert not response["ok"], response
        assert set(response["error"]) == {"code", "message"}
        return response["error"]


class Served:
    def __init__(self, path: Path, household: Household) -> None:
        self.path = path
        self.household = household

    async def connect(self) -> Connection:
        return Connection(await trio.open_unix_socket(str(self.path)))


def open_replica(path: Path) -> Replica:
    return Replica.open(path, identity.DeviceIdentity.generate())


async def start_served(
    nursery: trio.Nursery, tmp_path: Path, front_end: frozenset[int] | None = None
) -> Served:
    """A control socket in `tmp_path` over a fresh replica, until `nursery` ends; `front_end`:
    served through a front-end process (on those processors; empty: anywhere)."""
    replica = open_replica(tmp_path / "replica.db")
    node = Node(replica)
    nursery.start_soon(node.run_group_commit)
    household = Household(node)
    path = tmp_path / "run" / "control.sock"
    await nursery.start(partial(serve_control, path, household, group=None, front_end=front_end))
    return Served(path, household)


async def conflicting_write(served: Served, tmp_path: Path) -> Replica:
    """A second device, trusted here, writes c/x concurrently with us; we receive its write."""
    other = open_replica(tmp_path / "other.db")
    client = await served.connect()
    await client.result("trust", cert=other.identity.cert_pem.decode(), name="attic")
    await client.result("put", collection="c", key="x", value="ours", type="t")
    other.commit(DEFAULT_SHARE, [entry.put("c", "x", msgpack.packb("theirs"))])
    node = served.household.node
    items, _ = other.entries_after(DEFAULT_SHARE, 0, {}, max_bytes=1 << 20)
    applied = await node.call(node.replica.apply, DEFAULT_SHARE, items)
    await node.applied(applied.position, applied.devices_changed)
    return other


async def watch(served: Served, **params: Any) -> tuple[Connection, int]:
    client = await served.connect()
    started = await client.result("watch", **params)
    return client, started["position"]


def control_lines(daemon: DaemonProcess, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send raw request lines on one control connection and read one answer per line: all
    answers arriving shows the connection was never dropped."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(str(daemon.socket_path))
        sock.sendall(b"".join(lines))
        with sock.makefile("rb") as reader:
            return [json.loads(reader.readline()) for _ in lines]
