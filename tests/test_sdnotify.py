import os
import secrets
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from p2psync.sdnotify import Notifier, watchdog_interval


class Receiver:
    """The systemd end: a datagram socket that also reports each sender's pid (SO_PASSCRED)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def receive(self) -> tuple[list[str], int]:
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        (pid,) = next(
            struct.unpack("i", cmsg_data[:4])
            for level, kind, cmsg_data in ancillary
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        )
        return data.decode().split("\n"), pid


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path) -> Iterator[tuple[str, Receiver]]:
    if request.param == "path":
        address = shown = str(tmp_path / "notify")
    else:
        shown = f"@p2psync-test-{secrets.token_hex(8)}"
        address = "\0" + shown[1:]
    receiver = Receiver(address)
    yield shown, receiver
    receiver.sock.close()


def test_each_message_arrives_as_one_datagram_from_our_pid(notify_socket):
    address, receiver = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("2 peers connected")
    assert receiver.receive() == (["READY=1", "STATUS=2 peers connected"], os.getpid())
    notifier.status("syncing\nwith 3 peers")
    assert receiver.receive()[0] == ["STATUS=syncing with 3 peers"]
    notifier.watchdog()
    assert receiver.receive()[0] == ["WATCHDOG=1"]
    notifier.stopping()
    assert receiver.receive()[0] == ["STOPPING=1"]
    assert notifier.ready()
    assert receiver.receive()[0] == ["READY=1"]


def test_reloading_carries_the_monotonic_time_systemd_expects(notify_socket):
    address, receiver = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier.from_environ({"NOTIFY_SOCKET": address}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, stamp = receiver.receive()[0]
    assert reloading == "RELOADING=1"
    key, _, usec = stamp.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not Notifier.from_environ({"NOTIFY_SOCKET": ""}).enabled


def test_an_unusable_address_disables_notifying_with_a_warning(caplog):
    assert not Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert "vsock:2:1234" in caplog.text


def test_a_vanished_socket_is_reported_not_raised(tmp_path, caplog):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.ready("x") is False
    assert "cannot notify systemd (READY=1)" in caplog.text


def test_a_full_queue_drops_messages_instead_of_blocking(tmp_path):
    receiver = Receiver(str(tmp_path / "notify"))
    notifier = Notifier(str(tmp_path / "notify"))
    try:
        sent = 0
        while notifier.watchdog():  # nobody reads, so the kernel queue fills up
            sent += 1
            assert sent < 100_000, "the queue never filled; the test proves nothing"
        assert sent > 0
        assert receiver.receive()[0] == ["WATCHDOG=1"]
    finally:
        receiver.sock.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_our_pid_only(environ, expected):
    assert watchdog_interval(environ, pid=4242) == expected


def test_watchdog_interval_checks_our_own_pid_by_default():
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(None).watchdog_interval(environ) == 1.0
