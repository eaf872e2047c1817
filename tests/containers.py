"""Debian containers booted by a real systemd: the harness of tests/test_service_container.py.

Owns the Debian rootfs that `debootstrap` builds (cached outside the checkout, keyed by what it
holds, built in a temporary directory and renamed into place so a half-built tree is never used),
the wheelhouse that lets pip install p2psync inside a container with no network, and booting
containers with `systemd-nspawn --boot`: each boots a throwaway copy of the rootfs,
on a private network or in a network namespace of tests/netns.py, and is powered off and removed
even when the test fails. Commands run inside through `nsenter` into the container's init (there
is no systemd-machined on a host whose PID 1 is not systemd). It must never change the cached
rootfs (containers boot copies of it) nor give a container the host's network.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.installed import REPO

CACHE = Path(os.environ.get("P2PSYNC_TEST_CACHE", "/var/cache/p2psync-tests"))
SUITE = "bookworm"  # Debian 12: systemd 252, Python 3.11
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("dbus", "iproute2", "python3", "python3-venv", "systemd", "systemd-sysv")
BOOT_TIMEOUT = 60.0
_COPY_PREFIX = ".booted-"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_machine_counter = itertools.count()


def containers_unavailable_reason() -> str | None:
    """Why containers cannot be booted here, or None when they may be tried."""
    if os.geteuid() != 0:
        return "booting systemd containers needs root"
    for program, package in (
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install {package})"
    if sys.version_info[:2] != (3, 11):
        # the wheels of the dependencies are fetched by this Python's pip for the container's
        return "the containers run Debian 12's Python 3.11; these tests need a Python 3.11 too"
    return None


def rootfs_key() -> str:
    """What the cached rootfs holds, as a short hash: a change of any of it builds a new one."""
    recipe = "\n".join([SUITE, MIRROR, "minbase", *sorted(PACKAGES)])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Make `final` by `build(temporary_path)` and a rename, unless another run made it first."""
    if final.exists():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=CACHE))
    try:
        build(scratch / "tree")
        with suppress(FileExistsError, OSError):
            os.rename(scratch / "tree", final)
        if not final.exists():
            raise RuntimeError(f"could not move the new {final.name} into {CACHE}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def debian_rootfs() -> Path:
    """The cached Debian rootfs, built by debootstrap on first use (about a minute)."""

    def build(target: Path) -> None:
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(target),
            MIRROR,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{tail}")

    return _build_atomically(CACHE / f"rootfs-{SUITE}-{rootfs_key()}", build)


def dependency_wheelhouse() -> Path:
    """Wheels of p2psync's dependencies for the containers' Python, cached by the requirements.

    The containers have no network: pip inside installs from this directory only. The wheels are
    fetched with the host's pip, whose Python is the container's version (3.11).
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = sorted(project["dependencies"])
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]

    def build(target: Path) -> None:
        download = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(target)]
        subprocess.run([*download, *requirements], check=True, capture_output=True, timeout=600)

    return _build_atomically(CACHE / f"wheelhouse-py311-{key}", build)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _is_container_init(pid: int) -> bool:
    """Pid 1 of its own pid namespace (the last NSpid field), i.e. the container's systemd."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspids = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
    return len(nspids) > 1 and nspids[-1] == "1"


@dataclass
class Container:
    """One booted Debian: `run` executes a command in it as root, with all its namespaces."""

    name: str
    process: subprocess.Popen[bytes]
    init_pid: int = 0

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "--target", str(self.init_pid), "--all", "--", *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed in {self.name} ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def shell(self, script: str, check: bool = True, timeout: float = 60) -> str:
        return self.run(["sh", "-euc", script], check=check, timeout=timeout).stdout

    def wait_until_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.init_pid:
            if self.process.poll() is not None:
                said = (
                    self.process.stdout.read().decode(errors="replace")
                    if self.process.stdout
                    else ""
                )
                raise RuntimeError(f"systemd-nspawn exited with {self.process.returncode}: {said}")
            # the container's pid 1 is among nspawn's children or their children
            children = _children(self.process.pid)
            candidates = [*children, *(pid for child in children for pid in _children(child))]
            self.init_pid = next((p for p in candidates if _is_container_init(p)), 0)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no init process within {BOOT_TIMEOUT} s")
            time.sleep(0.05)
        # `--wait` blocks until boot is over; before systemd listens it fails at once: try again
        while True:
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not boot: {state.stdout}{state.stderr}")
            time.sleep(0.1)


@contextmanager
def booted(
    rootfs: Path,
    binds: Sequence[tuple[Path, str]] = (),
    network_namespace: str | None = None,
) -> Iterator[Container]:
    """Boot a throwaway copy of `rootfs`; `binds` are host directories mounted read-only."""
    name = f"p2ps-{os.getpid()}-{next(_machine_counter)}"
    remove_stale_copies()
    # our own copy rather than --ephemeral: nspawn leaves its copy behind when it is killed
    copy = CACHE / f"{_COPY_PREFIX}{name}"
    network = (
        [f"--network-namespace-path=/run/netns/{network_namespace}"]
        if network_namespace
        else ["--private-network"]
    )
    command = [
        "systemd-nspawn",
        "--boot",
        "--register=no",  # no systemd-machined on the host
        "--keep-unit",  # and no system bus to ask for a scope unit
        "--console=passive",
        f"--machine={name}",
        f"--directory={copy}",
        *network,
        *(f"--bind-ro={source}:{target}" for source, target in binds),
    ]
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(copy)], check=True)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_power_off_when_we_die,
        )
        container = Container(name, process)
        try:
            container.wait_until_booted()
            yield container
        finally:
            _power_off(container)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def remove_stale_copies() -> None:
    """Delete the copies booted by test runs whose process no longer exists."""
    for copy in CACHE.glob(f"{_COPY_PREFIX}p2ps-*"):
        owner = copy.name.removeprefix(_COPY_PREFIX).split("-")[1]
        if not os.path.exists(f"/proc/{owner}"):
            shutil.rmtree(copy, ignore_errors=True)


def _power_off_when_we_die() -> None:
    """In nspawn before it starts: a test run that is killed does not leave its container up
    (SIGTERM is nspawn's clean shutdown, as in `_power_off`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _power_off(container: Container) -> None:
    """SIGTERM asks nspawn to shut the container down cleanly; SIGKILL if it takes too long."""
    process = container.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
