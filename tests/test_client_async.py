"""The async client (p2psync/client/asynchronous.py) against a real daemon subprocess, under both
of anyio's backends: every test runs once on asyncio and once on trio (`anyio.run`, so pytest-trio's
trio mode does not claim the asyncio runs)."""

import contextlib
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from p2psync.client import (
    AsyncClient,
    AsyncWatch,
    BadRequest,
    CaughtUp,
    ChangeEvent,
    Delete,
    InvalidValue,
    NotFound,
    NotRunning,
    OutdatedEvent,
    ProtocolViolation,
    Put,
    Record,
    Timeout,
    TooLarge,
    UnknownMethod,
    WriteResult,
)
from tests.client_daemon import collection_for, require_1_0, shared_daemon
from tests.daemons import DaemonProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    yield from shared_daemon(tmp_path_factory)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def collection(request: pytest.FixtureRequest) -> str:
    return collection_for(request)


def run(backend: str, test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(30):
            await test()

    anyio.run(bounded, backend=backend)


async def changes(events: AsyncWatch, count: int) -> list[ChangeEvent]:
    found: list[ChangeEvent] = []
    async for event in events:
        if isinstance(event, ChangeEvent):
            found.append(event)
            if len(found) == count:
                break
    return found


def test_typed_calls_and_bytes(daemon: DaemonProcess, backend: str, collection: str) -> None:
    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            written = await client.put(collection, "k", {"b": b"\x00\xff"}, type="t")
            assert isinstance(written, WriteResult) and written.position >= 1
            record = await client.get(collection, "k")
            assert isinstance(record, Record) and record.value == {"b": b"\x00\xff"}
            assert record.type == "t" and record.hlc == written.hlc
            raw = await client.call("get", collection=collection, key="k")
            assert raw["value"] == {"b": {"$base64": "AP8="}}
            await client.transaction([Put(collection, "a", 1), Delete(collection, "k")])
            assert [r.key for r in (await client.scan(collection)).items] == ["a"]
            await client.put_many((collection, f"p{n}", n) for n in range(10))
            keys = [r.key async for r in client.scan_all(collection, prefix="p", page_size=3)]
            assert keys == [f"p{n}" for n in range(10)]
            assert (await client.conflicts(collection)).items == ()

    run(backend, test)


def test_refusals_are_their_classes_and_the_connection_survives(
    daemon: DaemonProcess, backend: str, collection: str
) -> None:
    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            with pytest.raises(NotFound, match="nope"):
                await client.get(collection, "nope")
            with pytest.raises(UnknownMethod):
                await client.call("frobnicate")
            with pytest.raises(BadRequest, match="reserved"):
                await client.put("_devices", "k", 1)
            with pytest.raises(TooLarge):
                await client.put(collection, "big", "x" * (1 << 20))
            assert (await client.call("id"))["name"] == "kitchen"

    run(backend, test)


def test_pipeline_and_put_many_answer_in_order(
    daemon: DaemonProcess, backend: str, collection: str
) -> None:
    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            async with client.pipeline(raise_errors=False) as batch:
                writes = [batch.put(collection, "k", n) for n in range(300)]
                read = batch.get(collection, "k")
                missing = batch.get(collection, "missing")
                after = batch.put(collection, "after", 1)
            positions = [w.result().position for w in writes]
            assert positions == sorted(positions) and len(set(positions)) == 300
            assert read.result().value == 299 and isinstance(missing.error, NotFound)
            assert after.result().position > positions[-1]
            with pytest.raises(NotFound):
                async with client.pipeline() as batch:
                    batch.get(collection, "missing")
            many = await client.put_many((collection, f"m{n}", n) for n in range(500))
            assert [w.position for w in many] == sorted(w.position for w in many)

    run(backend, test)


def test_tasks_sharing_a_client_take_turns(
    daemon: DaemonProcess, backend: str, collection: str
) -> None:
    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            found: dict[int, Any] = {}

            async def worker(number: int) -> None:
                for round_ in range(10):
                    await client.put(collection, f"w{number}", [number, round_])
                    found[number] = (await client.get(collection, f"w{number}")).value

            async with anyio.create_task_group() as tasks:
                for number in range(8):
                    tasks.start_soon(worker, number)
            assert found == {number: [number, 9] for number in range(8)}

    run(backend, test)


def test_watch_is_an_async_iterator_of_typed_events(
    daemon: DaemonProcess, backend: str, collection: str
) -> None:
    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            start = (await client.put(collection, "first", b"\x01")).position
            async with client.watch(since=start - 1, collection=collection) as events:
                assert events.position == start - 1
                written = (await client.put(collection, "k", 1)).position
                seen = await changes(events, 2)
                assert events.position == written
            assert [e.position for e in seen] == [start, written]
            assert seen[0].changes[0].value == b"\x01"
            lazily = client.watch(since=start, collection=collection)  # connects on first step
            async for event in lazily:
                assert isinstance(event, ChangeEvent) and event.position == written
                break
            await lazily.aclose()
            with pytest.raises(BadRequest):
                async with client.watch(since=10**9):
                    pass

    run(backend, test)


def test_schema_manifest_calls_filters_and_a_reading_watch(
    daemon: DaemonProcess, backend: str, collection: str
) -> None:
    kind = f"{collection}-{backend}"  # the daemon is shared: a type of this run's own

    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            await client.schema_set(kind, 2, json_schema={"type": "object"})
            assert (await client.schema_get())[kind].current == 2
            with pytest.raises(InvalidValue):
                await client.put(collection, "bad", [], type=kind, schema_version=2)
            await client.put(collection, "old", {}, type=kind, schema_version=1)
            page = await client.scan(collection, type=kind, max_schema_version=1)
            assert [record.key for record in page.items] == ["old"]
            reading = client.watch(collection=collection, reads={kind: 1})
            async with reading as events:
                async for event in events:
                    assert isinstance(event, OutdatedEvent) and event.schema_version == 2
                    break

    run(backend, test)


def test_watch_idle_timeout(daemon: DaemonProcess, backend: str) -> None:
    async def test() -> None:
        async with AsyncClient(daemon.socket_path).watch(idle_timeout=0.05) as events:
            with pytest.raises(Timeout):
                async for _ in events:  # a 1.0 daemon first says it caught up
                    pass

    run(backend, test)


def test_watch_reconnects_after_a_restart(tmp_path: Path, backend: str) -> None:
    daemon = DaemonProcess(tmp_path, "restarting").start()

    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            before = (await client.put("c", "before", 1)).position
            watch = client.watch(since=before - 1, collection="c", reconnect=True)
            async with watch as events:
                assert (await changes(events, 1))[0].changes[0].key == "before"
                daemon.stop()
                daemon.start()
                after = (await client.put("c", "after", 2)).position  # a new connection
                resumed = (await changes(events, 1))[0]
            assert resumed.position == after and resumed.changes[0].key == "after"

    try:
        run(backend, test)
    finally:
        daemon.kill()


@contextmanager
def late_server(path: Path) -> Iterator[threading.Event]:
    """Answers the first connection's request only when told to (too late), and the second
    connection's requests at once: a client that reused its first connection after giving up on
    it would read the late answer as the answer to its next request."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(2)
    go = threading.Event()

    def answer(connection: socket.socket, line: bytes, result: str) -> None:
        request = json.loads(line)
        connection.sendall(json.dumps({"id": request["id"], "ok": True, "result": result}).encode())
        connection.sendall(b"\n")

    def serve() -> None:
        first, _ = server.accept()
        with first:
            line = first.recv(4096)
            second, _ = server.accept()
            with second:
                go.wait(10)
                with contextlib.suppress(OSError):  # the client closed it, as it should have
                    answer(first, line, "late")
                answer(second, second.recv(4096), "fresh")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield go
    finally:
        go.set()
        thread.join(10)
        server.close()


def test_a_cancelled_call_closes_its_connection(tmp_path: Path, backend: str) -> None:
    async def test() -> None:
        with late_server(tmp_path / "s.sock") as go:
            async with AsyncClient(tmp_path / "s.sock") as client:
                with anyio.move_on_after(0.1) as gave_up:
                    await client.call("status")
                assert gave_up.cancelled_caught
                go.set()
                assert await client.call("status") == "fresh"

    run(backend, test)


def test_connection_failures(tmp_path: Path, backend: str) -> None:
    async def test() -> None:
        with pytest.raises(NotRunning, match="is the daemon running"):
            await AsyncClient(tmp_path / "none.sock").call("status")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
            silent.bind(str(tmp_path / "silent.sock"))
            silent.listen(1)  # the kernel accepts the connection; nobody ever answers
            with pytest.raises(Timeout):
                await AsyncClient(tmp_path / "silent.sock", timeout=0.2).call("status")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as garbage:
            garbage.bind(str(tmp_path / "garbage.sock"))
            garbage.listen(1)
            sender = threading.Thread(target=_send_garbage, args=(garbage,))
            sender.start()
            with pytest.raises(ProtocolViolation, match="not JSON"):
                await AsyncClient(tmp_path / "garbage.sock").call("status")
            sender.join(10)

    run(backend, test)


def _send_garbage(server: socket.socket) -> None:
    connection, _ = server.accept()
    with connection:
        connection.recv(4096)  # the request, so that the client is done sending when we close
        connection.sendall(b"<html>\n")


# protocol 1.0 -----------------------------------------------------------------------------------


def test_watch_says_when_it_caught_up(daemon: DaemonProcess, backend: str, collection: str) -> None:
    require_1_0(daemon)

    async def test() -> None:
        async with AsyncClient(daemon.socket_path) as client:
            written = await client.put(collection, "k", 1)
            async with client.watch(since=0, collection=collection) as events:
                replayed = await changes(events, 1)
                caught_up = await anext(aiter(events))
            assert replayed[0].position == written.position
            assert isinstance(caught_up, CaughtUp) and caught_up.position >= written.position
            hello = await client.hello()
            assert hello.protocol.startswith("1.")

    run(backend, test)
