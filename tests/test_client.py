"""The blocking client against a real control socket server, run from a worker thread."""

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psync.client import Client, ControlError, DaemonNotRunning
from tests.control_harness import Served
from tests.daemons import run_python_as_nobody


async def in_thread(function, *args):
    with trio.fail_after(10):
        return await trio.to_thread.run_sync(function, *args)


async def test_calls_return_results_and_raise_control_errors(served: Served) -> None:
    def session() -> None:
        with Client(served.path) as client:
            written = client.call("put", collection="c", key="k", value={"n": 1})
            assert written["position"] >= 1
            assert client.call("get", collection="c", key="k")["value"] == {"n": 1}
            client.call("put", collection="c", key="null", value=None)
            assert client.call("get", collection="c", key="null")["value"] is None
            with pytest.raises(ControlError) as missing:
                client.call("get", collection="c", key="nope")
            assert missing.value.code == "not_found" and "c/nope" in missing.value.message
            with pytest.raises(ControlError) as unknown:
                client.call("frobnicate")
            assert unknown.value.code == "unknown_method"
            assert client.call("id")["name"] == "kitchen"  # the connection survived the errors

    await in_thread(session)


async def test_watch_iterates_events_and_resumes_from_its_position(served: Served) -> None:
    def session() -> None:
        with Client(served.path) as client:
            start = client.call("put", collection="c", key="first", value=0)["position"]
            with client.watch(since=start - 1, collection="c") as events:
                assert events.position == start - 1
                written = [
                    client.call("put", collection="c", key="k", value=i)["position"]
                    for i in range(3)
                ]
                seen = [change["position"] for change in islice(changes(events), 2)]
                resume = events.position
            assert seen == [start, written[0]] and resume == written[0]
            with client.watch(since=resume) as events:
                assert [next(events)["position"] for _ in range(2)] == written[1:]
                assert next(events) == {"event": "caught_up", "position": written[-1]}
            with pytest.raises(ControlError) as bad:
                client.watch(since=10**9)
            assert bad.value.code == "bad_request"

    await in_thread(session)


def changes(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The change events of a watch (its caught_up marker comes between them, when it does)."""
    return (event for event in events if event["event"] == "change")


async def test_generic_stream_gives_its_first_answer_then_events(served: Served) -> None:
    def session() -> None:
        with Client(served.path) as client:
            written = client.call("put", collection="c", key="k", value=1)["position"]
            with client.stream("watch", since=0, collection="c", idle_timeout=5) as stream:
                assert stream.result == {"position": 0}
                assert next(stream)["position"] == written
            with pytest.raises(ControlError) as refused:
                client.stream("watch", since=10**9)
            assert refused.value.code == "bad_request"

    await in_thread(session)


async def test_watch_idle_timeout(served: Served) -> None:
    def session() -> None:
        events = Client(served.path).watch(idle_timeout=0.05)
        with events, pytest.raises(ControlError) as idle:
            assert next(events)["event"] == "caught_up"  # nothing to replay: at once
            next(events)
        assert idle.value.code == "timeout"

    await in_thread(session)


def test_missing_socket_says_how_to_start_the_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning) as missing:
        Client(tmp_path / "control.sock").call("status")
    assert "is the daemon running?" in str(missing.value)
    assert "systemctl start p2psync" in str(missing.value)


def test_stale_socket_says_the_daemon_stopped(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    with pytest.raises(DaemonNotRunning, match="the daemon has stopped"):
        Client(path).call("status")


@contextmanager
def listening(path: Path, answer: bytes | None) -> Iterator[None]:
    """A bare server that accepts one connection, then sends `answer` and closes, or stays
    silent (None) until the test is over."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    done = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(4096)
            if answer is None:
                done.wait(10)
            else:
                connection.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
        server.close()


def test_silence_times_out(tmp_path: Path) -> None:
    with listening(tmp_path / "s.sock", None), pytest.raises(ControlError) as silent:
        Client(tmp_path / "s.sock", timeout=0.1).call("status")
    assert silent.value.code == "timeout" and "journalctl" in silent.value.message


def test_a_closed_connection_and_garbage_are_errors(tmp_path: Path) -> None:
    with listening(tmp_path / "a.sock", b""), pytest.raises(DaemonNotRunning, match="closed"):
        Client(tmp_path / "a.sock").call("status")
    with listening(tmp_path / "b.sock", b"<html>\n"), pytest.raises(ControlError) as garbage:
        Client(tmp_path / "b.sock").call("status")
    assert garbage.value.code == "protocol"
    wrong_id = b'{"id": 99, "ok": true, "result": 1}\n'
    with listening(tmp_path / "c.sock", wrong_id), pytest.raises(ControlError) as mixed:
        Client(tmp_path / "c.sock").call("status")
    assert mixed.value.code == "protocol"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_permission_denied_says_to_join_the_group(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(1)
        probe = (
            "import sys\n"
            "from p2psync.client import Client, DaemonNotRunning\n"
            "try:\n"
            f"    Client({str(path)!r}).call('status')\n"
            "except DaemonNotRunning as exc:\n"
            "    print(exc)\n"
        )
        result = run_python_as_nobody(probe)
    assert "permission denied" in result.stdout, result.stderr
    assert "group p2psync" in result.stdout
