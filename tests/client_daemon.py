"""A real daemon for the client tests (not a test module itself).

Starting a daemon takes a good part of a second, so a test module shares one (`shared_daemon`,
from a module-scoped fixture) and each test writes to collections of its own (`collection_for`).
Tests of what protocol 1.0 adds call `require_1_0`: until the daemon speaks it they are skipped,
saying so; once it does they run.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.client import Client, UnknownMethod
from tests.daemons import DaemonProcess, running


def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A running daemon on 127.0.0.1 with its own config, for the tests of one module."""
    daemon = DaemonProcess(tmp_path_factory.mktemp("client"), "kitchen")
    with running(daemon):
        yield daemon


def collection_for(request: pytest.FixtureRequest) -> str:
    """A collection name of the test's own, so tests sharing a daemon do not see each other."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


def speaks_1_0(socket_path: Path) -> bool:
    with Client(socket_path, timeout=10) as client:
        try:
            major = client.hello().protocol.split(".")[0]
        except UnknownMethod:
            return False
    return major.isdigit() and int(major) >= 1


def require_1_0(daemon: DaemonProcess) -> None:
    """Skip the test until the daemon speaks control protocol 1.0 (issue 12)."""
    if not speaks_1_0(daemon.socket_path):
        pytest.skip("needs control protocol 1.0 (hello, versions...), which this daemon lacks")
