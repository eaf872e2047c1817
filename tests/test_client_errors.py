"""The exception hierarchy (p2psync/client/errors.py): one class per code, the errors no ordinary
call provokes (a full disk, a failure inside the daemon) from real servers, and what a failed
connect says. The refusals of ordinary calls are in test_client.py and test_client_async.py."""

import os
import pickle
import shutil
from pathlib import Path

import pytest
import trio

from p2psync.client import (
    BadRequest,
    Client,
    ClientError,
    Conflict,
    ConnectionFailed,
    ControlError,
    DaemonNotRunning,
    DiskFull,
    Forbidden,
    Internal,
    InvalidValue,
    NotFound,
    NotRunning,
    PairingFailed,
    PermissionDenied,
    ProtocolViolation,
    Timeout,
    TooLarge,
    UnknownMethod,
)
from p2psync.client.errors import ERRORS_BY_CODE, connect_failure, error_for
from tests.control_harness import start_served
from tests.daemons import running
from tests.test_control_connection import DaemonOnASmallDisk

CODES = {
    "bad_request": BadRequest,
    "unknown_method": UnknownMethod,
    "not_found": NotFound,
    "forbidden": Forbidden,
    "too_large": TooLarge,
    "conflict": Conflict,
    "invalid_value": InvalidValue,
    "disk_full": DiskFull,
    "internal": Internal,
    "pairing_failed": PairingFailed,
    "timeout": Timeout,
    "protocol": ProtocolViolation,
    "not_running": NotRunning,
    "permission_denied": PermissionDenied,
}


def test_every_code_has_its_class_and_every_class_is_a_control_error() -> None:
    assert ERRORS_BY_CODE == CODES
    for code, error_class in CODES.items():
        error = error_for(code, "what happened")
        assert type(error) is error_class and error.code == code == error_class.code
        assert error.message == "what happened" and str(error) == f"what happened ({code})"
        assert isinstance(error, ControlError) and isinstance(error, ClientError)


def test_an_unknown_code_stays_a_control_error_with_that_code() -> None:
    error = error_for("outdated", "the share holds newer versions")
    assert type(error) is ControlError and error.code == "outdated"


def test_connection_failures_share_a_base_that_keeps_its_old_name() -> None:
    assert DaemonNotRunning is ConnectionFailed
    assert issubclass(NotRunning, ConnectionFailed)
    assert issubclass(PermissionDenied, ConnectionFailed)
    assert not issubclass(Timeout, ConnectionFailed)


def test_errors_survive_pickling() -> None:
    for error in (NotFound("no record c/k"), ControlError("outdated", "newer")):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.code, copy.message) == (type(error), error.code, error.message)


def test_what_a_failed_connect_says() -> None:
    path = Path("/run/x.sock")
    assert isinstance(connect_failure(path, FileNotFoundError()), NotRunning)
    refused = connect_failure(path, ConnectionRefusedError())
    assert isinstance(refused, NotRunning) and "has stopped" in refused.message
    denied = connect_failure(path, PermissionError(), "the socket belongs to group family: ...")
    assert isinstance(denied, PermissionDenied) and "group family" in denied.message
    assert "ask whoever runs the daemon" in connect_failure(path, PermissionError()).message
    assert isinstance(connect_failure(path, TimeoutError()), Timeout)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to mount a small tmpfs in a private mount namespace",
)
def test_a_full_disk_is_disk_full_and_reads_keep_working(tmp_path: Path) -> None:
    daemon = DaemonOnASmallDisk(tmp_path, "a")
    with running(daemon), Client(daemon.socket_path) as client:
        client.put("c", "first", "kept")
        chunk = "x" * 64 * 1024
        with pytest.raises(DiskFull) as full:
            for number in range(200):  # 2 MiB fills after about 30 of these
                client.put("c", f"k{number}", chunk)
        assert full.value.code == "disk_full" and "full" in full.value.message
        assert client.get("c", "first").value == "kept"


async def test_a_failure_inside_the_daemon_is_internal(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    served = await start_served(nursery, tmp_path)
    served.household.status_error = RuntimeError("secret detail")

    def ask() -> Internal:
        with Client(served.path) as client, pytest.raises(Internal) as failed:
            client.call("status")
        assert client.call("id")["name"] == "kitchen"  # and the connection goes on
        return failed.value

    with trio.fail_after(10):
        failed = await trio.to_thread.run_sync(ask)
    assert failed.code == "internal" and "secret" not in failed.message
