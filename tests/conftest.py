"""Shared fixtures: the network-namespace harness (see tests/netns.py) and its leak check, a
control socket served in-process (see tests/control_harness.py), and the check of every control
line against the protocol's JSON Schema (tests/schema_check.py; off with P2PSYNC_SCHEMA_CHECK=0),
and the check that every store opened in-process writes only inside its transactions."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from hypothesis import settings

from p2psync.store import Store
from tests import schema_check
from tests.control_harness import Served, start_served
from tests.daemons import SCHEMA_CHECK_ENV, schema_checked
from tests.installed import RunAsNobody, install_for_nobody
from tests.netns import (
    Host,
    netns_unavailable_reason,
    own_namespaces,
    remove_stale_namespaces,
    require_netns,
)
from tests.netns import netns_hosts as build_network

# CI runs the same examples every time (a property that finds a new bug there should find it
# in a developer's run first, where the random search goes on); deadlines only measure noise.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# A suite started as a background job (`cmd &` in a script, `setsid`) inherits SIGINT ignored,
# and so would every CLI and example it starts: the tests that press Ctrl-C on them would wait
# in vain. A handler, unlike "ignored", is not inherited across exec, so they get the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The tests exercise the protocol's schema unless told not to: their daemons (tests/daemons.py)
# and the control sockets they serve in-process check every line against it.
os.environ.setdefault(SCHEMA_CHECK_ENV, "1")


@pytest.fixture(autouse=True)
def control_lines_follow_the_schema() -> Iterator[None]:
    """Every control connection served in this process during the test is checked; the test
    fails on the first line that breaks the schema."""
    if not schema_checked():
        yield
        return
    violations: list[str] = []
    uninstall = schema_check.install(violations.append)
    try:
        yield
    finally:
        uninstall()
    assert not violations, "control lines that break the schema:\n" + "\n".join(violations)


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# Names given ids on first use, by reads too: a row nothing durable refers to until a commit
# that uses it, which the WAL's order makes durable after it.
_ID_ROWS = ("INSERT INTO SHARES(", "INSERT INTO ACTORS(")


@pytest.fixture(autouse=True)
def store_writes_are_in_transactions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A store leaves SQLite's synchronous level as its last transaction set it (see
    `Store.transaction`), so a write made outside one could skip its fsync: every store this
    test opens traces its statements, and the test fails on a write outside a transaction."""
    outside: list[str] = []
    opened = Store.__init__

    def open_traced(store: Store, *args: object, **kwargs: object) -> None:
        opened(store, *args, **kwargs)  # type: ignore[arg-type]
        connection = store._db

        def trace(statement: str) -> None:
            written = statement.lstrip().upper()
            if (
                written.startswith(_WRITES)
                and not written.startswith(_ID_ROWS)
                and not connection.in_transaction
            ):
                outside.append(statement[:200])

        connection.set_trace_callback(trace)

    monkeypatch.setattr(Store, "__init__", open_traced)
    yield
    assert not outside, "store writes outside a transaction:\n" + "\n".join(outside)


@pytest.fixture
def netns_hosts() -> Iterator[Callable[[int], list[Host]]]:
    """Factory: `a, b = netns_hosts(2)` builds a bridged LAN, removed after the test."""
    require_netns()  # here rather than in the test body, where trio would hide the reason
    with ExitStack() as stack:
        yield lambda count: stack.enter_context(build_network(count))


@pytest.fixture(scope="session", autouse=True)
def no_leaked_namespaces() -> Iterator[None]:
    if netns_unavailable_reason() is not None:
        yield
        return
    remove_stale_namespaces()
    yield
    leaked = own_namespaces()
    assert not leaked, f"network namespaces left behind: {leaked}"


@pytest.fixture(scope="session")
def as_nobody() -> Iterator[RunAsNobody]:
    """Runs a snippet of Python as user nobody (no groups) against an installed copy of the
    package that nobody can read, built once per run (tests/installed.py): not the checkout,
    which may sit where nobody cannot look."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running as user nobody needs root and setpriv")
    try:
        copy = install_for_nobody()
    except LookupError as exc:
        pytest.skip(str(exc))
    try:
        yield copy.run_as_nobody
    finally:
        copy.remove()


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    """A control socket over a fresh replica in `tmp_path`, served until the test ends."""
    return await start_served(nursery, tmp_path)
