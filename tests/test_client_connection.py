"""The blocking client's connections (p2psync/client/connection.py): connecting and what a failed
connection says, against bare socket servers for what a daemon would not do (stay silent, send
garbage, refuse a user); whether the other end closed a socket. Streams and watches against a
real daemon are in tests/test_client.py."""

import grp
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from p2psync.client import (
    Client,
    ConnectionFailed,
    NotRunning,
    PermissionDenied,
    ProtocolViolation,
    Timeout,
)
from p2psync.client.connection import peer_closed
from tests.installed import RunAsNobody


def test_peer_closed_tells_a_closed_end_from_one_with_data_waiting() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        assert not peer_closed(ours)
        theirs.sendall(b"{}\n")
        assert not peer_closed(ours)
        assert ours.recv(16) == b"{}\n"  # peeking took nothing
        theirs.close()
        assert peer_closed(ours)


# connecting -------------------------------------------------------------------------------------


def test_missing_socket_says_how_to_start_the_daemon(tmp_path: Path) -> None:
    with pytest.raises(NotRunning) as missing:
        Client(tmp_path / "control.sock").call("status")
    assert missing.value.code == "not_running"
    assert "is the daemon running?" in str(missing.value)
    assert "systemctl start p2psync" in str(missing.value)


def test_stale_socket_says_the_daemon_stopped(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    with pytest.raises(ConnectionFailed, match="the daemon has stopped"):
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
    with listening(tmp_path / "s.sock", None), pytest.raises(Timeout) as silent:
        Client(tmp_path / "s.sock", timeout=0.1).call("status")
    assert silent.value.code == "timeout" and "journalctl" in silent.value.message


def test_a_closed_connection_and_garbage_are_errors(tmp_path: Path) -> None:
    with listening(tmp_path / "a.sock", b""), pytest.raises(NotRunning, match="closed"):
        Client(tmp_path / "a.sock").call("status")
    with listening(tmp_path / "b.sock", b"<html>\n"), pytest.raises(ProtocolViolation) as garbage:
        Client(tmp_path / "b.sock").call("status")
    assert garbage.value.code == "protocol"
    wrong_id = b'{"id": 99, "ok": true, "result": 1}\n'
    with listening(tmp_path / "c.sock", wrong_id), pytest.raises(ProtocolViolation):
        Client(tmp_path / "c.sock").call("status")
    not_a_record = b'{"id": 1, "ok": true, "result": [1]}\n'
    with listening(tmp_path / "d.sock", not_a_record), pytest.raises(ProtocolViolation) as odd:
        Client(tmp_path / "d.sock").get("c", "k")
    assert "the answer to get" in odd.value.message


def refusal_seen_by_nobody(as_nobody: RunAsNobody, path: Path) -> str:
    """What the client tells user nobody (no groups) who tries the socket at `path`."""
    probe = (
        "from p2psync.client import Client, PermissionDenied\n"
        "try:\n"
        f"    Client({str(path)!r}).call('status')\n"
        "except PermissionDenied as exc:\n"
        "    print(exc.code, exc)\n"
    )
    result = as_nobody(probe)
    assert result.stdout.startswith(f"permission_denied permission denied on {path}"), result.stderr
    return " ".join(result.stdout.split())


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory under /tmp that user nobody may enter (pytest's tmp_path is private)."""
    directory = Path(tempfile.mkdtemp(prefix="p2ps-perm-", dir="/tmp"))
    os.chmod(directory, 0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_permission_denied_names_the_group_that_would_let_you_in(
    open_directory: Path, as_nobody: RunAsNobody
) -> None:
    # whatever group it is: p2psync's by default, but control.group may name any
    group = next(g for g in grp.getgrall() if 0 < g.gr_gid < 65534 and g.gr_name != "nogroup")
    path = open_directory / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        os.chown(path, -1, group.gr_gid)
        os.chmod(path, 0o660)
        told = refusal_seen_by_nobody(as_nobody, path)
        assert f"the socket belongs to group {group.gr_name}" in told
        assert f"usermod -aG {group.gr_name} $USER" in told and "p2psync $USER" not in told

        os.chmod(path, 0o600)
        told = refusal_seen_by_nobody(as_nobody, path)
        assert "open to its owner root only (mode 0600)" in told and "usermod" not in told

        os.chmod(path, 0o660)
        os.chown(open_directory, -1, group.gr_gid)
        os.chmod(open_directory, 0o750)  # as systemd makes /run/p2psync: the group may enter
        told = refusal_seen_by_nobody(as_nobody, path)
        assert f"the directory {open_directory} belongs to group {group.gr_name}" in told
        assert issubclass(PermissionDenied, ConnectionFailed)
