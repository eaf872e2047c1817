"""Shared fixtures: the network-namespace harness (see tests/netns.py) and its leak check, and a
control socket served in-process (see tests/control_harness.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from hypothesis import settings

from tests.control_harness import Served, start_served
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


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    """A control socket over a fresh replica in `tmp_path`, served until the test ends."""
    return await start_served(nursery, tmp_path)
