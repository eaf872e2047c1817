"""Real `p2psync daemon` subprocesses for end-to-end tests (not a test module itself).

Each daemon gets its own state directory, control socket, config file and loopback port, and
reports readiness through a real sd_notify socket, so tests wait on READY=1 instead of sleeping.
Tests wait for data with the control socket's `watch` stream, never with sleeps. Daemons run the
worktree's code (PYTHONPATH; with `code=`, another release's exported tree, as their working
directory and only path, unchecked by the schema), and with P2PSYNC_SCHEMA_CHECK=1 (the tests'
default) every line on their control sockets is checked against the protocol's JSON Schema
(tests/schema_check.py): a violation fails the test when the daemon stops.
"""

import contextlib
import itertools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from p2psync.client import Client, ControlError

READY_TIMEOUT = 20.0
SOCKET_VARIABLES = ("P2PSYNC_SOCKET", "P2PSYNC_CONTROL_SOCKET")
REPO = Path(__file__).parent.parent
SCHEMA_CHECK_ENV = "P2PSYNC_SCHEMA_CHECK"
POLL_LINE = "p2psync.control: control client pid"  # logged for every control connection
LOG_TAIL_CHARS = 12_000


def schema_checked() -> bool:
    return os.environ.get(SCHEMA_CHECK_ENV) == "1"


def _ports_below_the_ephemeral_range() -> Iterator[int]:
    """Ports no outgoing connection takes, each handed out once per test process.

    A port from the ephemeral range can be the source port of some connection while a daemon
    restarts on it; the kernel then checks the restart's bind against the old daemon's closing
    connections, and refuses it (EADDRINUSE, seen in CI). Below the range only listeners use
    ports, and handing each out once keeps two daemons of one test off the same one."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_low = int(ranges.read().split()[0])
    lowest = 10000
    first = lowest + os.getpid() % (ephemeral_low - lowest)  # parallel runs start apart
    for port in itertools.chain(range(first, ephemeral_low), range(lowest, first)):
        with socket.socket() as probe:
            try:
                # binding sends nothing; the wildcard collides with a use on any address
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
        yield port
    raise RuntimeError("no free port left below the ephemeral range")


_unused_ports = _ports_below_the_ephemeral_range()


# The tests read the daemons' debug lines; a benchmark sets this to the level the daemon ships
# with (bench/report.py), since logging every request and frame at debug costs CPU users never pay.
LOG_LEVEL_ENV = "P2PSYNC_TEST_DAEMON_LOG_LEVEL"


def free_port() -> int:
    return next(_unused_ports)


class DaemonProcess:
    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        peers: list[str] | None = None,
        host: str = "127.0.0.1",
        discovery: bool = False,
        interfaces: list[str] | None = None,
        netns: str | None = None,
        idle_timeout: float | None = None,  # None: the daemon's default
        reconnect_max: float = 2.0,
        extra_config: str = "",
        nofile: int | None = None,
        ui_port: int | None = None,  # None: the web UI off; 0: on, on any free loopback port
        code: Path | None = None,  # None: this worktree; else another release's exported tree
    ) -> None:
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port() if netns is None else 47100
        self.host = host
        self.netns = netns
        self.socket_path = self.directory / "control.sock"
        self.state_dir = self.directory / "state"
        self.config_path = self.directory / "config.toml"
        self.log_path = self.directory / "daemon.log"
        self.violations_path = self.directory / "schema-violations.txt"
        self.peers = list(peers or [])
        self.discovery = discovery
        self.interfaces = interfaces or []
        self.idle_timeout = idle_timeout
        self.reconnect_max = reconnect_max
        self.extra_config = extra_config
        self.nofile = nofile  # RLIMIT_NOFILE for the daemon, to make fd exhaustion reachable
        # None: wherever the kernel starts it; benches that run several daemons as separate
        # devices spread them over this machine's processors
        self.processor: int | None = None
        self.ui_port = ui_port
        self.code = code
        self.process: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.notifications: list[str] = []
        self.write_config()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def write_config(self) -> None:
        self.config_path.write_text(
            "\n".join(
                [
                    "[device]",
                    f"name = {json.dumps(self.name)}",
                    "[paths]",
                    f"state_dir = {json.dumps(str(self.state_dir))}",
                    "[control]",
                    f"socket = {json.dumps(str(self.socket_path))}",
                    "[network]",
                    f"listen = [{json.dumps(self.address)}]",
                    f"peers = {json.dumps(self.peers)}",
                    "[discovery]",
                    f"enabled = {json.dumps(self.discovery)}",
                    f"interfaces = {json.dumps(self.interfaces)}",
                    "[sync]",
                    *([f"idle_timeout = {self.idle_timeout}"] if self.idle_timeout else []),
                    f"reconnect_max = {self.reconnect_max}",
                    "[log]",
                    f"level = {json.dumps(os.environ.get(LOG_LEVEL_ENV, 'debug'))}",
                    *self.ui_config(),
                    self.extra_config,
                    "",
                ]
            )
        )

    def ui_config(self) -> list[str]:
        """Always explicit: daemons of parallel tests must never meet on the UI's default port."""
        if self.ui_port is None:
            return ["[ui]", "enabled = false"]
        return ["[ui]", "enabled = true", f"port = {self.ui_port}"]

    def command(self) -> list[str]:
        # another release's tree has its own schema: only this worktree's daemon is checked
        checked = schema_checked() and self.code is None
        program = "tests.schema_daemon" if checked else "p2psync"
        command = [sys.executable, "-m", program, "daemon", "--config", str(self.config_path)]
        return ["ip", "netns", "exec", self.netns, *command] if self.netns else command

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> "DaemonProcess":
        notify_path = self.directory / "notify.sock"
        with contextlib.suppress(FileNotFoundError):
            notify_path.unlink()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        # the socket of the config file, not one a developer's shell names for its CLI
        inherited = {k: v for k, v in os.environ.items() if k not in SOCKET_VARIABLES}
        env = {
            **inherited,
            "NOTIFY_SOCKET": str(notify_path),
            "PYTHONUNBUFFERED": "1",
            # this worktree's p2psync (and tests.schema_daemon), whatever the venv installed, or
            # only the other release's tree (also the working directory, first on the path)
            "PYTHONPATH": str(self.code)
            if self.code is not None
            else os.pathsep.join(
                [str(REPO), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
            ).rstrip(os.pathsep),
            "P2PSYNC_SCHEMA_VIOLATIONS": str(self.violations_path),
            **(env or {}),
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.spawned_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.code,
            preexec_fn=self._in_child if (self.nofile, self.processor) != (None, None) else None,
        )
        log.close()
        if wait:
            self.wait_for_notification("READY=1")
        return self

    def _in_child(self) -> None:
        """Before exec: the open-file limit, and the processor it starts on (the daemon keeps to
        the one it is allowed, as a device keeps to its own)."""
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        if self.processor is not None:
            os.sched_setaffinity(0, {self.processor})

    def wait_for_notification(self, wanted: str, timeout: float = READY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.notifications:
                if wanted in message.split("\n"):
                    self.notifications.remove(message)
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.process and self.process.poll() is not None):
                raise AssertionError(
                    f"{self.name}: no {wanted} (exit code {self.process and self.process.poll()});"
                    f" log:\n{self.log_tail()}"
                )
            self._notify.settimeout(min(remaining, 0.5))
            with contextlib.suppress(TimeoutError):
                self.notifications.append(self._notify.recv(4096).decode())

    def log(self) -> str:
        """The whole log: a line looked for may be followed by many of the test's own polls."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        """The end of the log for a failure message, without the lines the test's own control
        calls leave (a wait polls every 50 ms: they would fill it)."""
        lines = [line for line in self.log().splitlines() if POLL_LINE not in line]
        return "\n".join(lines)[-LOG_TAIL_CHARS:]

    def check_schema_violations(self) -> None:
        """Fail if any line on this daemon's control socket broke the protocol's schema."""
        if self.violations_path.exists():
            found = self.violations_path.read_text(errors="replace")
            self.violations_path.unlink()
            raise AssertionError(f"{self.name}: control lines that break the schema:\n{found}")

    def client(self, timeout: float = 20.0) -> Client:
        return Client(self.socket_path, timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        return self.client().call(method, **params)

    def error(self, method: str, **params: Any) -> dict[str, str]:
        """The error a call must end in: its code and message."""
        try:
            result = self.call(method, **params)
        except ControlError as exc:
            return {"code": exc.code, "message": str(exc)}
        raise AssertionError(f"{self.name}: {method} {params} succeeded: {result}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._notify.close()
        self.check_schema_violations()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cert(self) -> str:
        return str(self.call("id")["cert"])

    @property
    def device_id(self) -> str:
        return str(self.call("id")["device"])


def introduce(*daemons: DaemonProcess) -> None:
    """Make every daemon trust every other (the explicit way, without pairing codes)."""
    certs = {d.name: d.cert() for d in daemons}
    for daemon in daemons:
        for other in daemons:
            if other is not daemon:
                daemon.call("trust", cert=certs[other.name], name=other.name)


def wait_for_change(
    daemon: DaemonProcess,
    matches: Callable[[dict[str, Any]], bool],
    since: int | None = 0,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Follow the daemon's watch stream until a change satisfies `matches`."""
    with daemon.client(timeout=timeout) as client:
        deadline = time.monotonic() + timeout
        for event in client.stream("watch", since=since, idle_timeout=timeout):
            for change in event.get("changes", []):
                if matches(change):
                    return change
            if time.monotonic() > deadline:
                break
    raise AssertionError(
        f"{daemon.name}: the expected change never arrived; log:\n{daemon.log_tail()}"
    )


def wait_for_value(daemon: DaemonProcess, collection: str, key: str, value: Any, **kw: Any) -> None:
    wait_for_change(
        daemon,
        lambda c: c["collection"] == collection and c["key"] == key and c.get("value") == value,
        **kw,
    )


def wait_for(
    condition: Callable[[], Any], what: str, *daemons: DaemonProcess, timeout: float = 20.0
) -> Any:
    """Poll a cheap condition every 50 ms until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.name} ---\n{d.log_tail()}" for d in daemons)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(*daemons: DaemonProcess) -> Iterator[tuple[DaemonProcess, ...]]:
    try:
        waiting = [daemon for daemon in daemons if daemon.process is None]
        for daemon in waiting:  # side by side: start-up is mostly Python importing
            daemon.start(wait=False)
        for daemon in waiting:
            daemon.wait_for_notification("READY=1")
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait()
    for daemon in daemons:  # only when the test passed so far: its own failure says more
        daemon.check_schema_violations()


def log_since(daemon: DaemonProcess, offset: int) -> str:
    with open(daemon.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def log_size(daemon: DaemonProcess) -> int:
    return daemon.log_path.stat().st_size
