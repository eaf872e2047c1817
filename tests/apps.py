"""Control-socket clients running as another user, for the tests of apps (not a test module).

An `AppClient` is a small relay process that starts as root, drops to the given uid, gid and
groups with os.setgroups/setgid/setuid *before* it connects (so the kernel records those
credentials for the connection), then copies its stdin to the socket and the socket to its
stdout; the test speaks the protocol through the pipes, with a timeout on every read. It imports
everything before it drops root: the interpreter may live where the app's uid cannot read (a
pyenv under /root). Needs root to change user.
"""

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parent.parent
APP_UID = 4242  # no user has it: an app known only by its uid
APP_GID = 4242
TIMEOUT = 20.0

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to run a client as another uid (os.setuid)"
)
needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a user namespace",
)

# Drops to uid argv[2], gid argv[3] and groups argv[4] (comma-separated), connects to argv[1].
DROP_AND_CONNECT = """
import os, socket, sys, threading
os.setgroups([int(g) for g in sys.argv[4].split(",") if g])
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[2]))
connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
connection.connect(sys.argv[1])
"""
_RELAY = (
    DROP_AND_CONNECT
    + """
def upstream():
    for line in sys.stdin.buffer:
        connection.sendall(line)
    connection.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := connection.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"""
)


def app_command(
    code: str, socket_path: Path, uid: int, gid: int, groups: Sequence[int]
) -> list[str]:
    """A Python child running `code` (which starts with DROP_AND_CONNECT) as uid/gid/groups."""
    return [
        sys.executable,
        "-c",
        code,
        str(socket_path),
        str(uid),
        str(gid),
        ",".join(str(group) for group in groups),
    ]


def python_env() -> dict[str, str]:
    """The worktree's package for child processes, whatever the venv's editable install says."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


class AppClient:
    """One control connection opened by another user; `call`, `error`, `events` as with a raw
    protocol client."""

    def __init__(
        self,
        socket_path: Path,
        uid: int = APP_UID,
        gid: int = APP_GID,
        groups: Sequence[int] = (),
    ) -> None:
        self.process = subprocess.Popen(
            app_command(_RELAY, socket_path, uid, gid, groups),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
        )
        self.buffer = b""
        self.ids = 0

    def send(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not readable:
                raise AssertionError(f"no answer within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"the connection closed; relay said: {stderr}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.send({"id": self.ids, "method": method, **params})
        answer = self.receive()
        assert answer["id"] == self.ids, answer
        return answer

    def result(self, method: str, **params: Any) -> Any:
        answer = self.call(method, **params)
        assert answer["ok"] is True, answer
        return answer["result"]

    def error(self, method: str, **params: Any) -> dict[str, Any]:
        answer = self.call(method, **params)
        assert answer["ok"] is False, answer
        error: dict[str, Any] = answer["error"]
        return error

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> "AppClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# The CLI as an app: everything it needs is imported while still root (see the module docstring).
_CLI_AS = """
import os, shutil, sys
from p2psync.cli import build_parser, main
build_parser().format_help()  # argparse imports some modules only when it formats
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[1]))
sys.exit(main(sys.argv[3:]))
"""


def run_cli_as(uid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """`p2psync ARGV...` run by `uid` (gid APP_GID, no groups): exit code, stdout, stderr."""
    return subprocess.run(
        [sys.executable, "-c", _CLI_AS, str(uid), str(APP_GID), *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd="/",
        env=python_env(),
    )
