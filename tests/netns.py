"""Multi-host test harness: Linux network namespaces joined by a bridge.

Owns creating and removing the namespaces, veth pairs and bridge of one test network, and the
per-host helpers (run commands inside, cut links, drop packets with nftables). It must never
touch the root network namespace: the bridge lives in an extra "switch" namespace, every veth is
created with one end there and the other end directly in its host namespace, and everything is
removed afterwards even when the test fails.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest

NAMESPACE_PREFIX = "p2ps-"
HOST_IFACE = "eth0"
_BRIDGE = "p2ps-br"
_LOSS_TABLE = "p2ps_loss"
_OWN_NAME = re.compile(rf"^{NAMESPACE_PREFIX}(\d+)-\d+-")
_network_counter = itertools.count()


def netns_unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2 ('ip')"
    return None


def require_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def wait_until_up(namespace: str, iface: str, timeout: float = 5.0) -> None:
    """Wait for the kernel to finish bringing a link up.

    Carrier changes are applied by the kernel's link watcher up to a second later; until then
    the link drops every packet sent, which would make the first packets of a test vanish.
    """
    deadline = time.monotonic() + timeout
    while " state UP " not in _ip("-n", namespace, "-o", "link", "show", iface):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{iface} in {namespace} did not come up within {timeout} s")
        time.sleep(0.02)


def list_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _kill_processes_in(namespace: str) -> None:
    # A process still inside a namespace keeps it (and its veth) alive after `ip netns del`.
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in out.stdout.split():
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def delete_namespace(namespace: str) -> None:
    _kill_processes_in(namespace)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def remove_stale_namespaces() -> list[str]:
    """Delete our namespaces left behind by test runs whose process no longer exists."""
    removed = []
    for namespace in list_namespaces():
        match = _OWN_NAME.match(namespace)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            delete_namespace(namespace)
            removed.append(namespace)
    return removed


def own_namespaces() -> list[str]:
    """Namespaces created by this process that still exist."""
    mine = f"{NAMESPACE_PREFIX}{os.getpid()}-"
    return [name for name in list_namespaces() if name.startswith(mine)]


@dataclass
class Host:
    """One machine of the test network: a namespace with `eth0` cabled to the switch."""

    name: str
    namespace: str
    ip: str
    ip6: str
    iface: str
    switch_namespace: str
    switch_port: str
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside this host (for trio.run_process / open_process)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 30)
        return subprocess.run(self.command(argv), check=check, text=True, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the host; it is killed when the network is torn down."""
        process = subprocess.Popen(self.command(argv), **kwargs)
        self._processes.append(process)
        return process

    def link_down(self, side: str = "bridge") -> None:
        """Unplug the cable: down the switch-side port ("bridge") or the host's own "host" end."""
        self._set_link(side, "down")

    def link_up(self, side: str = "bridge") -> None:
        self._set_link(side, "up")

    def _set_link(self, side: str, state: str) -> None:
        if side == "bridge":
            _ip("-n", self.switch_namespace, "link", "set", self.switch_port, state)
        elif side == "host":
            _ip("-n", self.namespace, "link", "set", self.iface, state)
        else:
            raise ValueError(f"side must be 'bridge' or 'host', not {side!r}")
        if state == "up":
            wait_until_up(self.namespace, self.iface)
            wait_until_up(self.switch_namespace, self.switch_port)

    def drop_packets(self, percent: int) -> None:
        """Drop `percent`% of packets entering and of packets leaving this host, at random."""
        if shutil.which("nft") is None:
            pytest.skip("packet loss needs nftables ('nft')")
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be within 0..100, not {percent}")
        self.clear_drops()
        # nft refuses "< 100" for a value that is at most 99.
        rule = "drop" if percent == 100 else f"numgen random mod 100 < {percent} drop"
        ruleset = (
            f"table inet {_LOSS_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept; {rule}; }}\n"
            f"  chain output {{ type filter hook output priority 0; policy accept; {rule}; }}\n"
            "}\n"
        )
        self.run(["nft", "-f", "-"], input=ruleset)

    def clear_drops(self) -> None:
        if shutil.which("nft") is not None:
            self.run(["nft", "delete", "table", "inet", _LOSS_TABLE], check=False)

    def kill_processes(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        self._processes.clear()


def _make_switch(namespace: str) -> None:
    _ip("netns", "add", namespace)
    _ip("-n", namespace, "link", "set", "lo", "up")
    # No STP delay, and no multicast snooping: without an MLD/IGMP querier snooping could
    # starve mDNS (ff02::fb) of its listeners; a plain hub is what a home switch behaves like.
    _ip("-n", namespace, "link", "add", _BRIDGE, "type", "bridge", "forward_delay", "0")
    _ip("-n", namespace, "link", "set", _BRIDGE, "type", "bridge", "mcast_snooping", "0")
    _ip("-n", namespace, "link", "set", _BRIDGE, "up")


def _make_host(index: int, base: str, switch: str, subnet: int) -> Host:
    namespace = f"{base}-h{index}"
    port = f"p2ps-h{index}"
    ip = f"10.77.{subnet}.{index + 1}"
    ip6 = f"fd77:{subnet:x}::{index + 1:x}"
    _ip("netns", "add", namespace)
    # Before the veth exists, so that its link-local address skips duplicate detection and is
    # usable at once instead of after ~2 s of tentative state.
    for conf in ("all", "default"):
        sysctl = ["sysctl", "-qw", f"net.ipv6.conf.{conf}.accept_dad=0"]
        subprocess.run(["ip", "netns", "exec", namespace, *sysctl], check=True, capture_output=True)
    _ip(
        "-n",
        switch,
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        HOST_IFACE,
        "netns",
        namespace,
    )
    _ip("-n", switch, "link", "set", port, "master", _BRIDGE)
    _ip("-n", switch, "link", "set", port, "up")
    _ip("-n", namespace, "link", "set", "lo", "up")
    _ip("-n", namespace, "addr", "add", f"{ip}/24", "dev", HOST_IFACE)
    _ip("-n", namespace, "addr", "add", f"{ip6}/64", "dev", HOST_IFACE, "nodad")
    _ip("-n", namespace, "link", "set", HOST_IFACE, "up")
    wait_until_up(namespace, HOST_IFACE)
    wait_until_up(switch, port)
    return Host(f"h{index}", namespace, ip, ip6, HOST_IFACE, switch, port)


@contextmanager
def netns_hosts(count: int) -> Iterator[list[Host]]:
    """Build `count` hosts on one bridged LAN; tear everything down on exit, whatever happens."""
    require_netns()
    run_id = next(_network_counter)
    base = f"{NAMESPACE_PREFIX}{os.getpid()}-{run_id}"
    subnet = (os.getpid() + run_id) % 250 + 1
    switch = f"{base}-sw"
    hosts: list[Host] = []
    with ExitStack() as cleanup:
        cleanup.callback(delete_namespace, switch)
        _make_switch(switch)
        for index in range(count):
            cleanup.callback(delete_namespace, f"{base}-h{index}")
            host = _make_host(index, base, switch, subnet)
            cleanup.callback(host.kill_processes)
            hosts.append(host)
        yield hosts
