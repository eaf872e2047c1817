"""The control socket server against a real Node/Replica on a temporary SQLite file."""

import grp
import json
import os
import shlex
import shutil
import socket
import stat
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from p2psync import entry, identity
from p2psync.control import RequestError, serve_control
from p2psync.control_connection import MAX_LINE_BYTES
from p2psync.control_socket import ControlSocketError
from p2psync.node import Node
from p2psync.replica import DEFAULT_SHARE, Replica
from tests.daemons import DaemonProcess, running

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

    async def trust(
        self, cert_pem: bytes, name: str | None, address: str | None, readmit: bool = False
    ) -> dict[str, Any]:
        if not cert_pem.startswith(b"-----BEGIN"):
            raise ValueError("that is not a PEM certificate")
        self.trusted.append((cert_pem, name, address))
        await self.node.commit(DEFAULT_SHARE, [self.node.replica.device_op(cert_pem, name or "x")])
        return {"device": identity.device_id_from_certificate(cert_pem), "name": name}

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


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    return await start_served(nursery, tmp_path)


async def start_served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    """A control socket in `tmp_path` over a fresh replica, until `nursery` ends."""
    replica = open_replica(tmp_path / "replica.db")
    node = Node(replica)
    nursery.start_soon(node.run_group_commit)
    household = Household(node)
    path = tmp_path / "run" / "control.sock"
    await nursery.start(partial(serve_control, path, household, group=None))
    return Served(path, household)


async def test_socket_is_created_with_mode_and_parent_directory(served: Served) -> None:
    found = os.stat(served.path)
    assert stat.S_ISSOCK(found.st_mode)
    assert stat.S_IMODE(found.st_mode) == 0o660
    assert served.path.parent.is_dir()  # created on demand


async def test_put_then_get_round_trips_json_values_and_metadata(served: Served) -> None:
    client = await served.connect()
    value = {"title": "milk", "qty": 2, "tags": ["a", None, True], "price": 1.5, "note": "ünï"}
    written = await client.result(
        "put", collection="notes", key="a", value=value, type="todo", schema_version=3
    )
    assert written["position"] >= 1 and written["seq"] >= 1 and written["hlc"] > 0
    got = await client.result("get", collection="notes", key="a")
    assert got["value"] == value
    assert (got["type"], got["schema_version"]) == ("todo", 3)
    assert got["origin"] == served.household.device_id
    assert got["hlc"] == written["hlc"]
    assert got["deleted"] is False and got["conflict"] is False
    assert "siblings" not in got
    await client.result("put", collection="notes", key="null", value=None)
    assert (await client.result("get", collection="notes", key="null"))["value"] is None


async def test_response_echoes_any_json_id(served: Served) -> None:
    client = await served.connect()
    for request_id in [7, "x", {"nested": [1]}, None]:
        await client.send({"id": request_id, "method": "status"})
        assert (await client.receive())["id"] == request_id
    await client.send({"method": "status"})
    assert (await client.receive())["id"] is None


async def test_missing_and_deleted_records_are_not_found_with_a_reason(served: Served) -> None:
    client = await served.connect()
    missing = await client.error("get", collection="notes", key="nope")
    assert missing["code"] == "not_found" and "notes/nope" in missing["message"]
    await client.result("put", collection="notes", key="a", value=1)
    await client.result("delete", collection="notes", key="a")
    deleted = await client.error("get", collection="notes", key="a")
    assert deleted["code"] == "not_found" and "deleted" in deleted["message"]
    tombstone = await client.result("get", collection="notes", key="a", all=True)
    assert tombstone["deleted"] is True and tombstone["value"] is None


async def test_transaction_is_one_entry_and_all_or_nothing(served: Served) -> None:
    client = await served.connect()
    await client.result("put", collection="notes", key="gone", value=0)
    done = await client.result(
        "transaction",
        ops=[
            {"op": "put", "collection": "notes", "key": "x", "value": 1},
            {"op": "put", "collection": "other", "key": "y", "value": [2], "type": "t"},
            {"op": "delete", "collection": "notes", "key": "gone"},
        ],
    )
    changes = served.household.node.replica.changes(done["position"] - 1)
    assert [(c.lseq, c.op.key) for c in changes] == [(done["position"], k) for k in "xy"] + [
        (done["position"], "gone")
    ]
    assert (await client.result("get", collection="other", key="y"))["type"] == "t"
    refused = await client.error(
        "transaction",
        ops=[
            {"op": "put", "collection": "notes", "key": "z", "value": 1},
            {"op": "put", "collection": "notes", "value": 2},
        ],
    )
    assert refused["code"] == "bad_request" and refused["message"].startswith("ops[1]:")
    assert (await client.error("get", collection="notes", key="z"))["code"] == "not_found"
    for bad_ops in ([], [{"op": "frob", "collection": "c", "key": "k"}], ["x"], "x"):
        assert (await client.error("transaction", ops=bad_ops))["code"] == "bad_request"


async def test_scan_paginates_by_key_with_prefix(served: Served) -> None:
    client = await served.connect()
    for i in range(25):
        await client.result("put", collection="c", key=f"k{i:02}", value=i)
    await client.result("put", collection="c", key="other", value=0)
    await client.result("delete", collection="c", key="k05")
    seen, after = [], None
    pages = 0
    while True:
        page = await client.result("scan", collection="c", prefix="k", after=after, limit=10)
        pages += 1
        seen += [(item["key"], item["value"]) for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [(f"k{i:02}", i) for i in range(25) if i != 5]
    assert pages == 3
    everything = await client.result("scan", collection="c")
    assert len(everything["items"]) == 25 and everything["next"] is None
    for limit in (0, 1001, "5", True):
        assert (await client.error("scan", collection="c", limit=limit))["code"] == "bad_request"


async def test_junk_gets_stable_error_codes_and_the_connection_carries_on(served: Served) -> None:
    client = await served.connect()
    junk: list[tuple[bytes, str]] = [
        (b"this is not json\n", "bad_request"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"id": 1}\n', "bad_request"),
        (b'{"method": 5}\n', "bad_request"),
        (b"NaN\n", "bad_request"),
        (b"\xff\xfe\n", "bad_request"),
        (b'{"method": "frobnicate"}\n', "unknown_method"),
        (b'{"method": "get", "collection": "c"}\n', "bad_request"),
        (b'{"method": "get", "collection": "c", "key": 5}\n', "bad_request"),
        (b'{"method": "get", "collection": "", "key": "k"}\n', "bad_request"),
        (b'{"method": "get", "collection": "c", "key": "k", "all": "yes"}\n', "bad_request"),
        (b'{"method": "put", "collection": "c", "key": "k"}\n', "bad_request"),
        (
            b'{"method": "put", "collection": "c", "key": "k", "value": 18446744073709551616}\n',
            "bad_request",
        ),
        (b'{"method": "put", "collection": "_devices", "key": "k", "value": 1}\n', "bad_request"),
        (
            b'{"method": "put", "collection": "c", "key": "k", "value": 1, "schema_version": 1.5}'
            b"\n",
            "bad_request",
        ),
        (b"[" * 100_000 + b"\n", "bad_request"),
    ]
    for line, code in junk:
        await client.send(line)
        response = await client.receive()
        assert response["ok"] is False
        assert response["error"]["code"] == code, (line[:60], response)
        assert "Traceback" not in response["error"]["message"]
    unknown = (await client.error("frobnicate"))["message"]
    assert "frobnicate" in unknown and "put" in unknown
    await client.send(b"\n   \n")  # blank lines are not requests
    assert (await client.result("status"))["device"] == served.household.device_id


async def test_oversized_line_is_skipped_and_the_next_request_is_answered(served: Served) -> None:
    client = await served.connect()
    huge = {"method": "put", "collection": "c", "key": "big", "value": "x" * MAX_LINE_BYTES}
    await client.send(json.dumps(huge).encode() + b"\n" + b'{"id": 2, "method": "status"}\n')
    too_large = await client.receive()
    assert too_large["ok"] is False and too_large["error"]["code"] == "too_large"
    assert too_large["id"] is None
    after = await client.receive()
    assert after["id"] == 2 and after["ok"] is True
    assert (await client.error("get", collection="c", key="big"))["code"] == "not_found"


async def test_a_junk_or_stuck_client_does_not_affect_another(served: Served) -> None:
    stuck = await served.connect()
    await stuck.send(b'{"method": "status", "padding": "' + b"y" * 500_000)  # never finished
    flooding = await served.connect()
    # thousands of requests whose answers it never reads: its own socket fills, nobody else's
    await flooding.stream.send_all(b'{"method":"id"}\n' * 3000 + b"garbage\n" * 100)
    good = await served.connect()
    for i in range(20):
        await good.result("put", collection="c", key=str(i), value=i)
        assert (await good.result("get", collection="c", key=str(i)))["value"] == i
    await stuck.stream.aclose()
    await flooding.stream.aclose()
    assert (await good.result("status"))["device"] == served.household.device_id


async def test_answers_a_client_does_not_read_are_not_computed_ahead(served: Served) -> None:
    replica = served.household.node.replica
    scans = []
    real_scan = replica.scan

    def scan(*args: Any) -> list:
        scans.append(args)
        return real_scan(*args)

    replica.scan = scan  # type: ignore[method-assign]
    writer = await served.connect()
    ops = [
        {"op": "put", "collection": "big", "key": f"{i:03}", "value": "v" * 1000}
        for i in range(100)
    ]
    await writer.result("transaction", ops=ops)
    greedy = await served.connect()
    await greedy.stream.send_all(b'{"method": "scan", "collection": "big"}\n' * 200)
    with trio.fail_after(TIMEOUT):
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    # 200 pages of 100 kB were asked for; only those that fit in 1 MiB + the socket were made
    assert 5 < len(scans) < 40
    assert len((await writer.result("scan", collection="big"))["items"]) == 100


async def test_pipelined_writes_commit_in_order_and_reads_see_them(served: Served) -> None:
    client = await served.connect()
    requests: list[dict[str, Any]] = [
        {"id": i, "method": "put", "collection": "c", "key": "k", "value": i} for i in range(300)
    ]
    requests.append({"id": "read", "method": "get", "collection": "c", "key": "k"})
    await client.stream.send_all(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    responses = [await client.receive() for _ in requests]
    assert [r["id"] for r in responses] == [r["id"] for r in requests]
    positions = [r["result"]["position"] for r in responses[:-1]]
    assert positions == sorted(positions) and len(set(positions)) == 300
    assert responses[-1]["result"]["value"] == 299


async def test_id_status_and_peers_pass_through(served: Served) -> None:
    client = await served.connect()
    own = await client.result("id")
    replica = served.household.node.replica
    assert own == {
        "device": replica.device_id,
        "name": "kitchen",
        "cert": replica.identity.cert_pem.decode(),
    }
    assert (await client.result("status"))["device"] == replica.device_id
    assert await client.result("peers") == [{"device": "PEER", "connected": False}]


async def test_context_errors_become_codes_and_unexpected_ones_stay_internal(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    client = await served.connect()
    assert (await client.error("revoke", device="ABC"))["code"] == "not_found"
    forgotten = await client.error("forget", device="ABC")
    assert forgotten["message"] == "no device ABC in this household"
    assert (await client.error("trust", cert="junk"))["code"] == "bad_request"
    assert (await client.error("trust"))["code"] == "bad_request"
    assert (await client.error("reload"))["code"] == "conflict"
    served.household.status_error = RuntimeError("secret detail")
    internal = await client.error("status")
    assert internal["code"] == "internal" and "secret" not in internal["message"]
    assert "secret detail" in caplog.text
    served.household.status_error = None
    assert (await client.result("status"))["device"] == served.household.device_id


async def test_values_json_cannot_carry_are_tagged(served: Served) -> None:
    node = served.household.node
    stored = {"blob": b"\x00\x01", 1: "int key", "inf": float("inf")}
    await node.commit(DEFAULT_SHARE, [entry.put("c", "bin", msgpack.packb(stored))])
    await node.commit(DEFAULT_SHARE, [entry.put("c", "junk", b"\xc1")])
    client = await served.connect()
    got = await client.result("get", collection="c", key="bin")
    assert got["value"] == {
        "blob": {"$base64": "AAE="},
        "1": "int key",
        "inf": {"$float": "Infinity"},
    }
    assert (await client.result("get", collection="c", key="junk"))["value"] == {"$raw": "wQ=="}


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


async def test_conflicts_are_listed_with_siblings_and_resolved_by_pick(
    served: Served, tmp_path: Path
) -> None:
    other = await conflicting_write(served, tmp_path)
    client = await served.connect()
    got = await client.result("get", collection="c", key="x")
    assert got["conflict"] is True
    assert sorted(s["value"] for s in got["siblings"]) == ["ours", "theirs"]
    listed = await client.result("conflicts")
    assert [(i["collection"], i["key"]) for i in listed["items"]] == [("c", "x")]
    assert listed["more"] is False
    assert (await client.result("conflicts", collection="elsewhere"))["items"] == []
    theirs = next(s for s in got["siblings"] if s["origin"] == other.device_id)
    wrong = await client.error("resolve", collection="c", key="x", pick={"origin": "X", "hlc": 1})
    assert wrong["code"] == "conflict"
    await client.result("resolve", collection="c", key="x", pick=theirs)
    resolved = await client.result("get", collection="c", key="x")
    assert (resolved["value"], resolved["conflict"]) == ("theirs", False)
    assert (await client.result("conflicts"))["items"] == []


async def test_resolve_by_value_replaces_all_siblings(served: Served, tmp_path: Path) -> None:
    await conflicting_write(served, tmp_path)
    client = await served.connect()
    both = await client.error("resolve", collection="c", key="x", value=1, pick={})
    assert both["code"] == "bad_request"
    await client.result("resolve", collection="c", key="x", value={"merged": True})
    resolved = await client.result("get", collection="c", key="x", all=True)
    assert resolved["value"] == {"merged": True} and len(resolved["siblings"]) == 1


async def watch(served: Served, **params: Any) -> tuple[Connection, int]:
    client = await served.connect()
    started = await client.result("watch", **params)
    return client, started["position"]


async def test_watch_is_exactly_once_in_order_across_a_reconnect(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="c", key="before", value=0)
    watcher, position = await watch(served, since=None)
    written = [
        (await writer.result("put", collection="c", key=f"k{i}", value=i))["position"]
        for i in range(10)
    ]
    received = []
    for _ in range(4):
        event = await watcher.receive()
        received.append(event)
    await watcher.stream.aclose()
    written += [
        (await writer.result("put", collection="c", key=f"k{i}", value=i))["position"]
        for i in range(10, 15)
    ]
    watcher, resumed = await watch(served, since=received[-1]["position"])
    assert resumed == received[-1]["position"]
    while len(received) < len(written):
        received.append(await watcher.receive())
    assert [e["position"] for e in received] == written
    assert [e["changes"][0]["value"] for e in received] == list(range(15))
    assert position < written[0]
    first = received[0]
    assert first["event"] == "change" and first["share"] == DEFAULT_SHARE
    assert first["changes"] == [
        {
            "collection": "c",
            "key": "k0",
            "op": "put",
            "value": 0,
            "deleted": False,
            "origin": served.household.device_id,
            "type": None,
            "schema_version": None,
        }
    ]


async def test_watch_from_zero_replays_history_and_filters_collections(served: Served) -> None:
    writer = await served.connect()
    await writer.result("put", collection="a", key="1", value=1)
    await writer.result("put", collection="b", key="2", value=2)
    await writer.result("delete", collection="a", key="1")
    watcher, _ = await watch(served, since=0, collection="a")
    first, second = await watcher.receive(), await watcher.receive()
    assert [c["op"] for c in first["changes"] + second["changes"]] == ["put", "delete"]
    assert second["changes"][0]["deleted"] is True and second["changes"][0]["value"] is None
    last = (await writer.result("put", collection="a", key="3", value=3))["position"]
    assert (await watcher.receive())["position"] == last


async def test_watch_of_a_transaction_delivers_its_ops_together(served: Served) -> None:
    watcher, _ = await watch(served)
    writer = await served.connect()
    ops = [{"op": "put", "collection": "c", "key": str(i), "value": i} for i in range(5)]
    done = await writer.result("transaction", ops=ops)
    event = await watcher.receive()
    assert event["position"] == done["position"]
    assert [c["key"] for c in event["changes"]] == ["0", "1", "2", "3", "4"]


async def test_watch_rejects_positions_it_never_had(served: Served) -> None:
    client = await served.connect()
    assert (await client.error("watch", since=10**6))["code"] == "bad_request"
    assert (await client.error("watch", since="1"))["code"] == "bad_request"
    assert (await client.result("status"))["device"]  # still a request connection


async def test_many_watchers_each_get_every_change(served: Served) -> None:
    watchers = [(await watch(served))[0] for _ in range(5)]
    writer = await served.connect()
    positions = [
        (await writer.result("put", collection="c", key="k", value=i))["position"]
        for i in range(20)
    ]
    for watcher in watchers:
        assert [(await watcher.receive())["position"] for _ in positions] == positions


async def test_a_watcher_that_does_not_read_holds_back_only_itself(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    replica = served.household.node.replica
    read_up_to = []
    real_changes = replica.changes

    def changes(since: int, limit: int = 1000) -> list:
        read_up_to.append(since)
        return real_changes(since, limit)

    replica.changes = changes  # type: ignore[method-assign]
    idle, start = await watch(served)
    writer = await served.connect()
    batch = [{"op": "put", "collection": "c", "key": str(i), "value": "v" * 1000} for i in range(4)]
    for _ in range(1000):
        last = (await writer.result("transaction", ops=batch))["position"]
    with trio.fail_after(TIMEOUT):
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    # about 4 MB of events wait for it; the daemon read only what the socket buffers hold
    assert start < max(read_up_to) < last - 500
    await idle.stream.aclose()
    reader, _ = await watch(served, since=start)
    assert (await reader.receive())["position"] == start + 1
    assert "control connection failed" not in caplog.text


async def test_stale_socket_is_replaced_but_a_live_one_is_refused(
    served: Served, tmp_path: Path
) -> None:
    with pytest.raises(ControlSocketError, match="another p2psync daemon"):
        await serve_control(served.path, served.household, group=None)
    stale_path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(stale_path))
    stale.close()
    not_a_socket = tmp_path / "file.sock"
    not_a_socket.write_text("keep me")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await serve_control(not_a_socket, served.household, group=None)
    assert not_a_socket.read_text() == "keep me"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, stale_path, served.household, group=None))
        client = Connection(await trio.open_unix_socket(str(stale_path)))
        assert (await client.result("id"))["name"] == "kitchen"
        nursery.cancel_scope.cancel()
    assert not stale_path.exists()  # removed at shutdown


async def test_socket_goes_to_the_group_or_warns(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own_group = grp.getgrgid(os.getgid()).gr_name
    missing_group = "p2psync-no-such-group"
    async with trio.open_nursery() as nursery:
        for name, group in (("own.sock", own_group), ("missing.sock", missing_group)):
            await nursery.start(
                partial(serve_control, tmp_path / name, served.household, mode=0o600, group=group)
            )
        assert os.stat(tmp_path / "own.sock").st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(tmp_path / "missing.sock").st_mode) == 0o600
        nursery.cancel_scope.cancel()
    assert f"group '{missing_group}' does not exist" in caplog.text


async def test_a_socket_already_in_the_group_is_not_chowned_and_no_false_warning(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    """As under systemd: the daemon runs with Group=p2psync, so the socket is the group's from
    the start, and the system call filter refuses every chown."""
    tried: list[int] = []

    def refused(path: object, uid: int, gid: int) -> None:
        tried.append(gid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("p2psync.control_socket.os.chown", refused)
    own_group = grp.getgrgid(os.getgid()).gr_name
    other = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())
    async with trio.open_nursery() as nursery:
        for name, group in (("own.sock", own_group), ("other.sock", other.gr_name)):
            await nursery.start(
                partial(serve_control, tmp_path / name, served.household, group=group)
            )
        nursery.cancel_scope.cancel()
    assert tried == [other.gr_gid], "no chown for the group the socket already has"
    warnings = [r.getMessage() for r in caplog.records if "cannot give" in r.getMessage()]
    assert warnings == [
        f"cannot give {tmp_path / 'other.sock'} to group {other.gr_name!r} (this user is not a "
        f"member, or the system refuses chown here); it stays with group {own_group!r}"
    ]


# against a real daemon ------------------------------------------------------------------------


def control_lines(daemon: DaemonProcess, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send raw request lines on one control connection and read one answer per line: all
    answers arriving shows the connection was never dropped."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(str(daemon.socket_path))
        sock.sendall(b"".join(lines))
        with sock.makefile("rb") as reader:
            return [json.loads(reader.readline()) for _ in lines]


def test_lone_surrogates_and_non_finite_numbers_are_bad_requests(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "a")
    put = b'"method":"put","collection":"c","key":"k"'
    cases = [
        (b'{"id":1,"method":"put","collection":"c","key":"\\ud800","value":1}', "'key'"),
        (b'{"id":2,"method":"put","collection":"\\udc00x","key":"k","value":1}', "'collection'"),
        (b'{"id":3,' + put + b',"value":1,"type":"\\uDBFF"}', "'type'"),
        (b'{"id":4,' + put + b',"value":{"a":["ok","\\ud800"]}}', "'value.a[1]'"),
        (b'{"id":5,' + put + b',"value":{"\\ud800":1}}', "a key in 'value'"),
        (b'{"id":6,"method":"get","collection":"c","key":"\\ud800"}', "'key'"),
        (
            b'{"id":7,"method":"transaction","ops":[{"op":"put","collection":"c","key":"a",'
            b'"value":1},{"op":"delete","collection":"c","key":"\\ud801"}]}',
            "'ops[1].key'",
        ),
        (b'{"id":"\\ud800","method":"status"}', "'id'"),
        (b'{"id":9,' + put + b',"value":1e400}', "1e400"),
        (b'{"id":10,' + put + b',"value":[1,-1e999]}', "-1e999"),
        (b'{"id":11,' + put + b',"value":NaN}', "NaN"),
        (b'{"id":12,' + put + b',"value":{"x":Infinity}}', "Infinity"),
        (b'{"id":13,' + put + b',"value":-Infinity}', "Infinity"),
        (b'{"id":14,"method":"scan","collection":"c","limit":1e400}', "1e400"),
    ]
    valid_pair = b'{"id":15,' + put + b',"value":"\\ud83d\\ude00 1e300","type":"\\u00e9"}'
    with running(daemon):
        answers = control_lines(daemon, [line + b"\n" for line, _ in cases] + [valid_pair + b"\n"])
        for (line, where), answer in zip(cases, answers, strict=False):
            assert answer["ok"] is False, (line, answer)
            assert answer["error"]["code"] == "bad_request", (line, answer)
            assert where in answer["error"]["message"], (line, answer)
        assert "'key' is not valid Unicode text" in answers[0]["error"]["message"]
        assert "finite" in answers[8]["error"]["message"]
        assert answers[7]["id"] == "\ud800"  # the id comes back, escaped, so it can be matched
        assert answers[-1]["ok"] is True, answers[-1]
        stored = daemon.call("get", collection="c", key="k")
        assert stored["value"] == "\U0001f600 1e300" and stored["type"] == "é"
        assert daemon.call("scan", collection="c")["items"] == [stored]  # nothing else got in
        logged = daemon.log()
    assert "Traceback" not in logged and "ERROR" not in logged


class DaemonOnASmallDisk(DaemonProcess):
    """A daemon whose state dir is a 2 MiB tmpfs, mounted in a private mount namespace of its
    own (unshare -m): the test's view of the file system is untouched, and the mount is gone
    with the daemon. A real ENOSPC, not a simulated one."""

    def command(self) -> list[str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        daemon = shlex.join(super().command())
        mount = (
            f"mount -t tmpfs -o size=2m,mode=0700 p2psync-test {shlex.quote(str(self.state_dir))}"
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"{mount} && exec {daemon}",
        ]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to mount a small tmpfs in a private mount namespace",
)
def test_a_full_disk_answers_disk_full_and_reads_keep_working(tmp_path: Path) -> None:
    daemon = DaemonOnASmallDisk(tmp_path, "a")
    with running(daemon):
        daemon.call("put", collection="c", key="first", value="kept")
        chunk = "x" * 64 * 1024
        refused = None
        for i in range(200):  # 2 MiB fills after about 30 of these
            answer = control_lines(
                daemon,
                [
                    json.dumps(
                        {
                            "id": i,
                            "method": "put",
                            "collection": "c",
                            "key": f"k{i}",
                            "value": chunk,
                        }
                    ).encode()
                    + b"\n"
                ],
            )[0]
            if not answer["ok"]:
                refused = answer
                break
        assert refused is not None, "the disk never filled"
        assert refused["error"]["code"] == "disk_full", refused
        assert "disk" in refused["error"]["message"] and "full" in refused["error"]["message"]
        assert daemon.call("get", collection="c", key="first")["value"] == "kept"
        assert daemon.call("status")["records"] >= 2
        written = daemon.call("scan", collection="c", limit=1000)["items"]
        assert [item["key"] for item in written][:1] == ["first"]
        transaction = control_lines(
            daemon,
            [
                json.dumps(
                    {
                        "id": "t",
                        "method": "transaction",
                        "ops": [{"op": "put", "collection": "c", "key": "t", "value": chunk}],
                    }
                ).encode()
                + b"\n"
            ],
        )[0]
        assert transaction["error"]["code"] == "disk_full", transaction
        logged = daemon.log()
    assert "Traceback" not in logged and "ERROR" not in logged
    assert "the disk is full" in logged
