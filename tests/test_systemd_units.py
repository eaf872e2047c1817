"""The systemd units: valid, sandboxed to an exposure of at most 2.0, consistent with the config
defaults, and roomy enough for the real daemon (checked by tracing its system calls)."""

import functools
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync import admission, config
from p2psync.client import Client
from tests.daemons import DaemonProcess

REPO = Path(__file__).resolve().parent.parent
SYSTEM_UNIT = REPO / "systemd" / "p2psync.service"
USER_UNIT = REPO / "systemd" / "user" / "p2psync.service"
SYSUSERS = REPO / "systemd" / "p2psync.sysusers.conf"
MAX_EXPOSURE = 2.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)


def directives(unit: Path) -> list[tuple[str, str]]:
    """(key, value) for every assignment, in order; comments and section headers left out."""
    found = []
    for line in unit.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith(("#", ";", "[")):
            found.append((key.strip(), value.strip()))
    return found


def directive(unit: Path, key: str) -> str:
    values = [value for found, value in directives(unit) if found == key]
    assert len(values) == 1, f"{unit.name}: expected one {key}=, found {values}"
    return values[0]


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0", **(env or {})},
    )


def systemd_version() -> int:
    first_line = analyze("--version").stdout.splitlines()[0]  # "systemd 252 (252.38-1~deb12u1)"
    return int(first_line.split()[1])


def with_stand_in_program(unit: Path, directory: Path) -> Path:
    """A copy of `unit` whose ExecStart= and ExecReload= program exists on this machine.

    `systemd-analyze verify` fails when a program it runs is missing, and the units name where
    an installation puts p2psync (/usr/local/bin, ~/.local/bin), not this checkout. The copy
    points both at an executable stand-in; every other line is verified as shipped."""
    stand_in = directory / "p2psync"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text, replaced = re.subn(
        r"^(ExecStart|ExecReload)=\S+/p2psync ", rf"\1={stand_in} ", unit.read_text(), flags=re.M
    )
    assert replaced == 2, f"{unit}: expected ExecStart= and ExecReload= running p2psync"
    copy = directory / unit.name
    copy.write_text(text)
    return copy


@needs_systemd_analyze
def test_the_system_unit_verifies_cleanly(tmp_path):
    checked = analyze("verify", str(with_stand_in_program(SYSTEM_UNIT, tmp_path)))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout + checked.stderr == "", "warnings mean ignored lines"


@needs_systemd_analyze
def test_the_user_unit_verifies_cleanly(tmp_path):
    runtime = tmp_path / "runtime"  # the user manager that verify sets up needs one
    runtime.mkdir(mode=0o700)
    unit = with_stand_in_program(USER_UNIT, tmp_path)
    checked = analyze("--user", "verify", str(unit), env={"XDG_RUNTIME_DIR": str(runtime)})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout + checked.stderr == "", "warnings mean ignored lines"


@needs_systemd_analyze
def test_the_system_unit_exposure_is_ok():
    if systemd_version() < 250:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    checked = analyze("security", "--offline=true", str(SYSTEM_UNIT))
    assert checked.returncode == 0, checked.stderr
    score = re.search(
        r"Overall exposure level for p2psync\.service: (\d+\.\d+) (\w+)", checked.stdout
    )
    assert score, checked.stdout[-500:]
    print(f"exposure {score[1]} {score[2]}")
    assert float(score[1]) <= MAX_EXPOSURE, checked.stdout


# the units and the code must agree on names and places


def test_the_system_directories_are_where_the_code_looks_by_default():
    env = {
        "STATE_DIRECTORY": f"/var/lib/{directive(SYSTEM_UNIT, 'StateDirectory')}",
        "RUNTIME_DIRECTORY": f"/run/{directive(SYSTEM_UNIT, 'RuntimeDirectory')}",
        "CONFIGURATION_DIRECTORY": f"/etc/{directive(SYSTEM_UNIT, 'ConfigurationDirectory')}",
    }
    service = config.default_config(env, euid=995, hostname="nas")
    assert service.state_dir == config.SYSTEM_STATE_DIR
    assert service.control_socket == config.SYSTEM_CONTROL_SOCKET  # where the CLI looks
    assert config.find_config_path(env, 995).path == config.SYSTEM_CONFIG_FILE


def test_the_user_unit_puts_things_where_a_daemon_run_by_hand_would():
    home = {"HOME": "/home/alice", "XDG_RUNTIME_DIR": "/run/user/1000"}
    by_hand = config.default_config(home, 1000, "laptop")
    under_systemd = {
        **home,
        "RUNTIME_DIRECTORY": f"/run/user/1000/{directive(USER_UNIT, 'RuntimeDirectory')}",
        "CONFIGURATION_DIRECTORY": f"/home/alice/.config/"
        f"{directive(USER_UNIT, 'ConfigurationDirectory')}",
    }
    assert config.default_config(under_systemd, 1000, "laptop") == by_hand
    assert config.find_config_path(under_systemd, 1000) == config.find_config_path(home, 1000)
    assert "StateDirectory" not in dict(directives(USER_UNIT))


def test_the_service_user_and_socket_group_are_the_ones_sysusers_creates():
    created = [
        line.split()
        for line in SYSUSERS.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert [(kind, name) for kind, name, *_ in created] == [("u", "p2psync")]  # user + group
    assert directive(SYSTEM_UNIT, "User") == directive(SYSTEM_UNIT, "Group") == "p2psync"
    assert config.default_config({}, 0, "nas").control_group == "p2psync"
    assert directive(SYSTEM_UNIT, "RuntimeDirectoryMode") == "0750"
    assert config.default_config({}, 0, "nas").control_mode == 0o660


# the sandbox must fit the real daemon: trace it and compare with what the unit allows


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    listing = analyze("syscall-filter", name).stdout.splitlines()[1:]
    calls: set[str] = set()
    for line in (entry.strip() for entry in listing):
        if line.startswith("@"):
            calls |= syscall_group(line)
        elif line and not line.startswith("#"):
            calls.add(line)
    return frozenset(calls)


def allowed_syscalls(unit: Path) -> frozenset[str]:
    """The unit's SystemCallFilter=: an allow list, then ~ entries taking calls out of it."""
    allowed: set[str] = set()
    for key, value in directives(unit):
        if key == "SystemCallFilter":
            names = value.removeprefix("~").split()
            expanded = set().union(*(syscall_group(n) if n[0] == "@" else {n} for n in names))
            allowed = allowed - expanded if value.startswith("~") else allowed | expanded
    return frozenset(allowed)


class NotifyReceiver:
    """systemd's end of sd_notify: one datagram per message, with the sender's pid (systemd
    uses it the same way, to tell the main process from others)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))

    def receive(self, timeout: float) -> tuple[list[str], int] | None:
        """One message's assignments and its sender's pid, or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        return data.decode().split("\n"), struct.unpack("i", ancillary[0][2][:4])[0]


class TracedDaemon:
    """The real daemon under strace, in a network namespace of its own (only a loopback)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.control = workdir / "control.sock"
        self.trace = workdir / "trace"
        # group = "": as in the unit, the socket's group is the daemon's own (Group=p2psync);
        # whether a p2psync group exists on this machine must not change what is traced.
        (workdir / "config.toml").write_text(
            f'[control]\nsocket = "{self.control}"\ngroup = ""\n'
            f'[network]\nlisten = ["127.0.0.1:0", "[::1]:0"]\n[ui]\nenabled = false\n'
        )
        self.notify = NotifyReceiver(workdir / "notify")
        command = (
            f"ip link set lo up && exec strace -f -qq -o {self.trace} {sys.executable} -m p2psync "
            f"daemon --config {workdir / 'config.toml'} --state-dir {workdir / 'state'}"
        )
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(workdir / "notify"),
            "WATCHDOG_USEC": "1000000",
            "PYTHONPATH": str(REPO),
        }
        with (workdir / "daemon.log").open("w") as log:
            self.process = subprocess.Popen(
                ["unshare", "--net", "sh", "-c", command], env=env, stdout=log, stderr=log
            )

    def output(self) -> str:
        return (self.workdir / "daemon.log").read_text()[-3000:]

    def wait_for(self, message: str, timeout: float) -> int:
        """Read notifications until one holds `message`; returns the sender's pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            received = self.notify.receive(timeout=0.5)
            if received and message in received[0]:
                return received[1]
        raise AssertionError(f"no {message} from the daemon; its output:\n{self.output()}")

    def calls(self) -> list[tuple[str, str]]:
        """Every traced system call as (name, arguments), once the daemon has exited cleanly."""
        assert self.process.wait(timeout=30) == 0, self.output()
        found = []
        for line in self.trace.read_text().splitlines():
            call = re.match(r"\d+ +(\w+)\((.*)", line)
            if call:
                found.append((call[1], call[2]))
        return found

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.sock.close()


@pytest.fixture
def traced_daemon(tmp_path) -> Iterator[TracedDaemon]:
    for tool in ("strace", "unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install strace util-linux iproute2)")
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed; it names the calls in each filter group")
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace (unshare --net)")
    daemon = TracedDaemon(tmp_path)
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.mark.slow
def test_the_daemon_works_within_the_system_units_sandbox(traced_daemon):
    """Start, serve the control socket, write, feed the watchdog, reload and stop, all traced;
    then every system call, socket family and memory mapping must be one the unit allows."""
    daemon_pid = traced_daemon.wait_for("READY=1", timeout=60)
    with Client(traced_daemon.control) as client:
        assert client.call("status")["listen"]
        client.call("put", collection="notes", key="k", value="v")
        assert client.call("get", collection="notes", key="k")
    traced_daemon.wait_for("WATCHDOG=1", timeout=10)
    os.kill(daemon_pid, signal.SIGHUP)
    traced_daemon.wait_for("RELOADING=1", timeout=10)
    traced_daemon.wait_for("READY=1", timeout=10)
    os.kill(daemon_pid, signal.SIGTERM)
    traced_daemon.wait_for("STOPPING=1", timeout=10)
    calls = traced_daemon.calls()

    # SQLite fchown()s new journal files only when running as root, never as User=p2psync.
    ours_as_root = {"fchown"} if os.geteuid() == 0 else set()
    refused = {name for name, _ in calls} - allowed_syscalls(SYSTEM_UNIT) - ours_as_root
    assert not refused, f"calls the unit's SystemCallFilter= refuses: {sorted(refused)}"

    families = set(directive(SYSTEM_UNIT, "RestrictAddressFamilies").split())
    opened = {args.split(",")[0] for name, args in calls if name == "socket"}
    assert opened, "the trace shows no sockets; it cannot be the daemon's"
    assert opened <= families, f"socket families the unit refuses: {opened - families}"

    assert directive(SYSTEM_UNIT, "MemoryDenyWriteExecute") == "yes"
    writable_code = [
        f"{name}({args}"
        for name, args in calls
        if (name == "mmap" and "PROT_WRITE" in args and "PROT_EXEC" in args)
        or (name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in args)
    ]
    assert not writable_code, f"refused by MemoryDenyWriteExecute=: {writable_code[:3]}"


def test_both_units_set_a_file_limit_that_holds_the_stranger_caps_well_inside() -> None:
    for unit in (SYSTEM_UNIT, USER_UNIT):
        limit = int(directive(unit, "LimitNOFILE"))
        assert admission.total_cap(limit) == admission.MAX_UNAUTHENTICATED, unit
        assert limit >= 16 * admission.MAX_UNAUTHENTICATED, unit


# reload: `systemctl reload` runs ExecReload=, which must work on a minimal system


def test_both_units_reload_with_their_own_program_and_nothing_else() -> None:
    for unit in (SYSTEM_UNIT, USER_UNIT):
        program, command = directive(unit, "ExecStart").split()
        assert command == "daemon"
        assert directive(unit, "ExecReload").split() == [program, "reload"], unit
        # /bin/kill is missing from a minimal Debian; only the daemon's own program is sure
        programs = {value.split()[0] for key, value in directives(unit) if key.startswith("Exec")}
        assert programs == {program}, unit


def test_the_units_reload_command_rereads_the_config_and_fails_on_a_bad_one(tmp_path):
    """ExecReload= run with what systemd gives it: the CLI finds the daemon's socket through
    the config file in $CONFIGURATION_DIRECTORY, or, when that file is broken, where the defaults
    put it ($RUNTIME_DIRECTORY/control.sock, as in the units); its exit code is what `systemctl
    reload` reports."""
    daemon = DaemonProcess(tmp_path, "service").start()
    assert daemon.socket_path == daemon.directory / "control.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSYNC_")}
    env.update(
        CONFIGURATION_DIRECTORY=str(daemon.directory),
        RUNTIME_DIRECTORY=str(daemon.directory),
        PYTHONPATH=str(REPO),
    )
    reload_command = directive(SYSTEM_UNIT, "ExecReload").split()[1:]

    def reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "p2psync", *reload_command],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        daemon.config_path.write_text(daemon.config_path.read_text().replace('"debug"', '"info"'))
        done = reload()
        assert done.returncode == 0, done.stderr
        daemon.wait_for_notification("RELOADING=1")
        daemon.wait_for_notification("READY=1")
        assert "configuration reloaded: log.level" in daemon.log()
        daemon.config_path.write_text(daemon.config_path.read_text() + "[nonsense]\n")
        refused = reload()
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "nonsense" in refused.stdout
    finally:
        assert daemon.stop() == 0
