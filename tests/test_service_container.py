"""The system service under a real systemd: a Debian 12 container (tests/containers.py) with the
package installed as README.md says, `p2psync install-service`, `systemctl enable --now`; then
what systemd and the people using the machine see. Two containers on one bridge (booted once for
the module) are the household: the first is looked at, the two pair by code and sync at the end."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.containers import (
    Container,
    booted,
    containers_unavailable_reason,
    debian_rootfs,
    dependency_wheelhouse,
)
from tests.daemons import wait_for
from tests.installed import project_wheel
from tests.netns import netns_hosts, netns_unavailable_reason

# the first run builds the rootfs with debootstrap (about a minute and a half)
pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(900)]

WHEELHOUSE = "/run/wheelhouse"  # the dependencies' wheels, bound read-only
PACKAGE = "/run/package"  # the wheel of this checkout
STATE_DIR = "/var/lib/p2psync"
SOCKET = "/run/p2psync/control.sock"
CONFIG = "/etc/p2psync/config.toml"


def install_commands() -> str:
    """README's five-minute walkthrough; pip gets this checkout's wheel and no network."""
    pip = f"/opt/p2psync/bin/pip install -q --no-index --find-links {WHEELHOUSE}"
    return "\n".join(
        [
            f"python3 -m venv /opt/p2psync && {pip} {PACKAGE}/p2psync-*.whl",
            "ln -s /opt/p2psync/bin/p2psync /usr/local/bin/p2psync",
            "p2psync install-service --completion --man",
            "systemctl enable --now p2psync",
        ]
    )


@pytest.fixture(scope="module")
def household() -> Iterator[list[Container]]:
    """Two booted Debian 12 on one bridged LAN (tests/netns.py), the service installed and
    started on each."""
    reason = containers_unavailable_reason() or netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        rootfs = debian_rootfs()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no Debian rootfs (debootstrap needs the Debian mirror): {exc}")
    with ExitStack() as stack:
        build = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2ps-build-")))
        package = project_wheel(build).parent
        binds = [(dependency_wheelhouse(), WHEELHOUSE), (package, PACKAGE)]
        hosts = stack.enter_context(netns_hosts(2))
        machines = []
        for host in hosts:
            try:
                machines.append(stack.enter_context(booted(rootfs, binds, host.namespace)))
            except (RuntimeError, TimeoutError) as exc:
                pytest.skip(f"systemd-nspawn cannot boot Debian 12 here: {exc}")
        for machine in machines:
            machine.shell(install_commands(), timeout=180)
        yield machines


@pytest.fixture
def debian(household: list[Container]) -> Container:
    return household[0]


def unit_property(debian: Container, name: str) -> str:
    return debian.run(["systemctl", "show", "--value", "-p", name, "p2psync"]).stdout.strip()


def journal(debian: Container, *options: str) -> list[str]:
    command = ["journalctl", "--no-pager", "-o", "cat", "-u", "p2psync", *options]
    return debian.run(command).stdout.splitlines()


def test_the_service_is_ready_and_says_how_it_is(debian: Container) -> None:
    assert unit_property(debian, "ActiveState") == "active"
    assert unit_property(debian, "SubState") == "running"
    assert unit_property(debian, "Type") == "notify"  # active means READY=1 arrived
    assert unit_property(debian, "StatusText")  # STATUS= was sent
    debian.run(["p2psync", "put", "notes", "shopping", '{"milk": 2}'])
    assert debian.run(["p2psync", "get", "notes", "shopping"]).stdout.strip() == '{"milk":2}'


def test_the_journal_tells_what_happened_and_warns_of_nothing(debian: Container) -> None:
    lines = journal(debian)
    assert any("created device identity" in line and STATE_DIR in line for line in lines)
    ready = [line for line in lines if " ready: device " in line]
    assert ready and "listening on 0.0.0.0:47100" in ready[0], lines
    assert f"control socket {SOCKET}" in ready[0]
    assert not [line for line in lines if "not a member" in line]
    assert journal(debian, "-p", "warning") == []


def test_reload_applies_the_config_file_and_refuses_a_broken_one(debian: Container) -> None:
    pid = unit_property(debian, "MainPID")
    debian.shell(
        f"cp {CONFIG} /root/config.toml.shipped\n"
        f"sed -i 's/^\\[log\\]$/[log]\\nlevel = \"debug\"/' {CONFIG}"
    )
    debian.run(["systemctl", "reload", "p2psync"])
    assert "configuration reloaded: log.level" in journal(debian)

    debian.shell(f"echo 'level = [' >> {CONFIG}")
    refused = debian.run(["systemctl", "reload", "p2psync"], check=False)
    assert refused.returncode != 0
    assert any("reload failed, keeping the running configuration" in x for x in journal(debian))
    assert unit_property(debian, "ActiveState") == "active"
    assert unit_property(debian, "MainPID") == pid
    debian.shell(f"cp /root/config.toml.shipped {CONFIG} && systemctl reload p2psync")


def test_a_member_of_the_group_may_use_the_socket_and_no_one_else(debian: Container) -> None:
    assert debian.shell("stat -c '%a %U %G' /run/p2psync").split() == ["750", "p2psync", "p2psync"]
    assert debian.shell(f"stat -c '%a %U %G' {SOCKET}").split() == ["660", "p2psync", "p2psync"]
    debian.shell("useradd --create-home --groups p2psync alice && useradd --create-home bob")
    member = debian.run(["runuser", "-u", "alice", "--", "p2psync", "status"], check=False)
    assert member.returncode == 0, member.stderr
    stranger = debian.run(["runuser", "-u", "bob", "--", "p2psync", "status"], check=False)
    assert stranger.returncode != 0 and f"permission denied on {SOCKET}" in stranger.stderr
    assert "usermod -aG p2psync" in stranger.stderr
    assert "Traceback" not in stranger.stderr


def test_the_state_dir_is_private_and_the_only_place_the_daemon_writes(debian: Container) -> None:
    assert debian.shell(f"stat -c '%a %U %G' {STATE_DIR}").split() == ["700", "p2psync", "p2psync"]
    # every directory the daemon could write to, seen from its own mount namespace and as its
    # own user (PrivateTmp gives it an empty /tmp and /var/tmp of its own)
    pid = unit_property(debian, "MainPID")
    search = "find / \\( -path /proc -o -path /sys \\) -prune -o -type d -writable -print"
    as_the_daemon = [
        "nsenter", f"--target={pid}", "--mount", "--",
        "setpriv", "--reuid=p2psync", "--regid=p2psync", "--clear-groups", "--inh-caps=-all",
        "sh", "-c", search,
    ]  # fmt: skip
    writable = set(debian.run(as_the_daemon, check=False).stdout.split())
    allowed = {STATE_DIR, "/run/p2psync", "/tmp", "/var/tmp"}
    assert writable - allowed == set()
    assert STATE_DIR in writable


def test_the_watchdog_restarts_a_hung_daemon(debian: Container) -> None:
    # the shipped WatchdogSec=60 would make this test wait a minute: shorter, by a drop-in
    debian.shell(
        "mkdir -p /etc/systemd/system/p2psync.service.d\n"
        "printf '[Service]\\nWatchdogSec=2s\\nRestartSec=100ms\\n'"
        " > /etc/systemd/system/p2psync.service.d/zz-test-watchdog.conf\n"
        "systemctl daemon-reload && systemctl restart p2psync"
    )
    hung = unit_property(debian, "MainPID")
    debian.run(["systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", "p2psync"])

    def restarted() -> bool:
        pid = unit_property(debian, "MainPID")
        return pid not in (hung, "0") and unit_property(debian, "ActiveState") == "active"

    wait_for(restarted, "systemd restarts the daemon stopped by SIGSTOP", timeout=30.0)
    assert int(unit_property(debian, "NRestarts")) >= 1
    assert any("Watchdog timeout" in line for line in journal(debian))
    assert debian.run(["p2psync", "get", "notes", "shopping"]).stdout.strip() == '{"milk":2}'


def test_two_containers_pair_by_code_and_sync(household: list[Container]) -> None:
    first, second = household
    inviting = subprocess.Popen(
        first.command(["p2psync", "--json", "pair"]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert inviting.stdout is not None
        code = json.loads(inviting.stdout.readline())["code"]
        second.run(["p2psync", "join", code], timeout=60)
        assert inviting.wait(timeout=30) == 0
    finally:
        inviting.kill()
        inviting.wait()
    first.run(["p2psync", "put", "notes", "bread", '"rye"'])

    def arrived() -> bool:
        got = second.run(["p2psync", "get", "notes", "bread"], check=False)
        return got.stdout.strip() == '"rye"'

    wait_for(arrived, "the record put on the first container reaches the second", timeout=30.0)
    wait_for(
        lambda: unit_property(first, "StatusText") == "1 peer connected",
        "STATUS= says so",
        timeout=30.0,
    )
