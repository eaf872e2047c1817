"""The examples in examples/ run as an app developer would run them: as subprocesses against real
daemons (127.0.0.1, explicit configs), judged by what they print and what the daemon holds after.

The conflicts they resolve are real: two daemons that trust each other write the same key while
they are apart (each stopped in turn), then meet again.
"""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.client_daemon import collection_for, shared_daemon
from tests.daemons import (
    REPO,
    SOCKET_VARIABLES,
    DaemonProcess,
    introduce,
    running,
    wait_for,
    wait_for_value,
)

EXAMPLES = REPO / "examples"
RUN_TIMEOUT = 60.0
NODE = shutil.which("node")


def example_env() -> dict[str, str]:
    """This worktree's p2psync; the socket only from --socket, never a developer's shell."""
    inherited = {k: v for k, v in os.environ.items() if k not in SOCKET_VARIABLES}
    return {**inherited, "PYTHONPATH": str(REPO)}


def run_example(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO, env=example_env()
    )


def shopping_list(daemon: DaemonProcess, collection: str, *args: str) -> str:
    """Run the shopping list, which must succeed; its output."""
    done = run_example(
        sys.executable,
        str(EXAMPLES / "shopping_list.py"),
        "--socket",
        str(daemon.socket_path),
        "--collection",
        collection,
        *args,
    )
    assert done.returncode == 0, f"shopping_list {args}: {done.stderr}"
    return done.stdout


class RunningExample:
    """An example running in the background, its output read line by line as it comes."""

    def __init__(self, *command: str) -> None:
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=example_env(),
        )
        self.lines: list[str] = []
        self._arriving: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._arriving.put(line.rstrip("\n"))
        self._arriving.put(None)  # the end of its output

    def wait_for_line(self, wanted: str, timeout: float = 20.0) -> str:
        """The first line from now on that contains `wanted`."""
        while True:
            try:
                line = self._arriving.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no line with {wanted!r} in {timeout} s: {self.lines}"
                ) from None
            if line is None:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"ended before {wanted!r}: {self.lines}\n{stderr}")
            self.lines.append(line)
            if wanted in line:
                return line

    def interrupt(self) -> int:
        """Ctrl-C: its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=RUN_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    yield from shared_daemon(tmp_path_factory)


@pytest.fixture(scope="module")
def apart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, ...]]:
    """Two daemons of one household, a and b (b dials a), to make conflicts with."""
    directory = tmp_path_factory.mktemp("apart")
    a = DaemonProcess(directory, "a")
    b = DaemonProcess(directory, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        yield a, b


@pytest.fixture
def collection(request: pytest.FixtureRequest) -> str:
    return collection_for(request)


def conflict(
    a: DaemonProcess, b: DaemonProcess, collection: str, key: str, from_a: Any, from_b: Any
) -> None:
    """Leave collection/key in conflict on both: b writes `from_b` while a is down, then a writes
    `from_a` (later, so it is the winner shown) while b is down, and they meet again."""
    a.call("put", collection=collection, key=key, value="before")
    wait_for_value(b, collection, key, "before")
    a.stop()
    b.call("put", collection=collection, key=key, value=from_b)
    b.stop()
    a.start()
    a.call("put", collection=collection, key=key, value=from_a)
    b.start()
    for daemon in (a, b):
        wait_for(
            lambda d=daemon: d.call("get", collection=collection, key=key)["conflict"],
            f"{daemon.name} to hold both versions",
            a,
            b,
        )


# the shopping list (blocking client) -------------------------------------------------------------


def test_shopping_list_adds_checks_off_and_lists_items(daemon: DaemonProcess, collection: str):
    assert shopping_list(daemon, collection, "add", "milk", "--quantity", "2") == "added milk x2\n"
    shopping_list(daemon, collection, "add", "eggs")
    assert shopping_list(daemon, collection, "check", "milk") == "checked off milk\n"
    assert shopping_list(daemon, collection, "list") == "[ ] eggs x1\n[x] milk x2\n"
    record = daemon.client().get(collection, "milk")
    assert record.value == {"name": "milk", "quantity": 2, "done": True}
    assert (record.type, record.schema_version) == ("shopping-item", 1)


def test_shopping_list_never_overwrites_an_item_already_there(
    daemon: DaemonProcess, collection: str
):
    shopping_list(daemon, collection, "add", "bread", "--quantity", "3")
    again = run_example(
        sys.executable,
        str(EXAMPLES / "shopping_list.py"),
        "--socket",
        str(daemon.socket_path),
        "--collection",
        collection,
        "add",
        "bread",
    )
    assert again.returncode == 1 and "bread is already on the list" in again.stderr
    assert daemon.client().get(collection, "bread").value["quantity"] == 3


def test_shopping_list_watch_shows_changes_as_they_come(daemon: DaemonProcess, collection: str):
    shopping_list(daemon, collection, "add", "tea")
    watching = RunningExample(
        sys.executable,
        str(EXAMPLES / "shopping_list.py"),
        "--socket",
        str(daemon.socket_path),
        "--collection",
        collection,
        "watch",
    )
    try:
        assert watching.wait_for_line("+ tea") == "+ tea"  # replayed
        watching.wait_for_line("(up to date")
        shopping_list(daemon, collection, "add", "jam")
        assert watching.wait_for_line("jam") == "+ jam"  # live
        shopping_list(daemon, collection, "check", "tea")
        assert watching.wait_for_line("tea") == "x tea"
        assert watching.interrupt() == 0
    finally:
        watching.stop()


def test_shopping_list_keeps_its_list_in_the_share_it_is_given(
    daemon: DaemonProcess, collection: str
):
    daemon.call("share_create", share="household")
    shopping_list(daemon, collection, "--share", "household", "add", "soap")
    assert shopping_list(daemon, collection, "--share", "household", "list") == "[ ] soap x1\n"
    assert daemon.client().get(collection, "soap", share="household").value["name"] == "soap"
    assert shopping_list(daemon, collection, "list") == "", "nothing in the default share"


@pytest.mark.slow
def test_shopping_list_merges_an_item_changed_on_two_devices_apart(
    apart: tuple[DaemonProcess, ...], collection: str
):
    a, b = apart
    from_a = {"name": "milk", "quantity": 1, "done": True}
    from_b = {"name": "milk", "quantity": 3, "done": False}
    conflict(a, b, collection, "milk", from_a=from_a, from_b=from_b)
    assert shopping_list(a, collection, "list") == "[x] milk x3  (in conflict: run merge)\n"
    assert "merged the versions of milk" in shopping_list(a, collection, "merge")
    assert shopping_list(a, collection, "merge") == "no conflicts\n"
    record = a.client().get(collection, "milk")
    assert not record.conflict
    assert record.value == {"name": "milk", "quantity": 3, "done": True}
    wait_for(lambda: not b.client().get(collection, "milk").conflict, "b to learn the merge", a, b)


# the todo list moving from v1 to v2 (schema evolution) ----------------------------------------


def todo_app(daemon: DaemonProcess, app: int, *args: str) -> subprocess.CompletedProcess[str]:
    return run_example(
        sys.executable,
        str(EXAMPLES / "todo_migration.py"),
        "--socket",
        str(daemon.socket_path),
        "--share",
        "todo-migration",  # a share of its own: its manifest concerns no other test
        "--app",
        str(app),
        *args,
    )


def todo_says(daemon: DaemonProcess, app: int, *args: str) -> str:
    done = todo_app(daemon, app, *args)
    assert done.returncode == 0, f"todo_migration --app {app} {args}: {done.stderr}"
    return done.stdout


def test_todo_app_moves_to_v2_while_the_old_app_keeps_running(daemon: DaemonProcess) -> None:
    daemon.call("share_create", share="todo-migration")
    assert todo_says(daemon, 1, "add", "milk") == "added milk (v1)\n"
    assert todo_says(daemon, 1, "outdated") == "up to date\n"
    assert todo_says(daemon, 2, "setup") == "todo: current v2, written from v1\n"
    assert todo_says(daemon, 1, "outdated") == "the share holds todo v2; this app reads v1\n"
    assert todo_says(daemon, 2, "add", "tea") == "added tea (v2)\n"
    assert todo_says(daemon, 1, "add", "eggs") == "added eggs (v1)\n", "v1 is still written"
    assert todo_says(daemon, 1, "list") == (
        "[ ] eggs  (v1)\n[ ] milk  (v1)\n"
        "(1 todo(s) of a newer version not shown: upgrade this app)\n"
    )
    assert todo_says(daemon, 2, "list") == "[ ] eggs  (v1)\n[ ] milk  (v1)\n[ ] tea  (v2)\n"
    assert todo_says(daemon, 2, "migrate") == "migrated 2 todo(s) to v2\n"
    assert todo_says(daemon, 2, "migrate") == "migrated 0 todo(s) to v2\n"
    assert todo_says(daemon, 2, "list") == "[ ] eggs  (v2)\n[ ] milk  (v2)\n[ ] tea  (v2)\n"
    assert todo_says(daemon, 2, "setup", "--retire-v1") == "todo: current v2, written from v2\n"
    refused = todo_app(daemon, 1, "add", "bread")
    assert refused.returncode == 1
    assert "no longer written below version 2" in refused.stderr
    record = daemon.client().get("todos", "milk", share="todo-migration")
    assert record.value == {"title": "milk", "state": "open"} and record.schema_version == 2


# the dashboard (asyncio, AsyncClient) ------------------------------------------------------------


def dashboard(daemon: DaemonProcess, share: str, *args: str) -> list[str]:
    return [
        sys.executable,
        str(EXAMPLES / "dashboard.py"),
        "--socket",
        str(daemon.socket_path),
        "--share",
        share,
        *args,
    ]


def test_dashboard_prints_the_changes_and_the_counts_once_caught_up(daemon: DaemonProcess):
    daemon.call("share_create", share="dash-once")
    client = daemon.client()
    for item in ("apples", "pears", "plums"):
        client.put("fruit", item, {"kg": 1}, share="dash-once")
    client.put("chores", "dishes", "tonight", share="dash-once")
    last = client.delete("fruit", "pears", share="dash-once")
    done = run_example(*dashboard(daemon, "dash-once", "--until-caught-up"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"device {daemon.device_id}, daemon ")
    assert "fruit/apples = {'kg': 1}" in done.stdout and "fruit/pears deleted" in done.stdout
    assert "chores/dishes = 'tonight'" in done.stdout
    caught_up = next(i for i, line in enumerate(lines) if "caught up" in line)
    assert lines[caught_up] == f"@{last.position} caught up: what follows is live"
    assert lines[caught_up + 1 :] == [
        f"@{last.position} records: 3 in 2 collection(s)",
        f"@{last.position}   chores: 1",
        f"@{last.position}   fruit: 2",
    ]


def test_dashboard_resumes_from_a_position(daemon: DaemonProcess):
    daemon.call("share_create", share="dash-since")
    client = daemon.client()
    seen = client.put("fruit", "old", 1, share="dash-since")
    client.put("fruit", "new", 2, share="dash-since")
    done = run_example(*dashboard(daemon, "dash-since", "--since", str(seen.position), "--once"))
    assert done.returncode == 0, done.stderr
    assert "fruit/new = 2" in done.stdout and "fruit/old" not in done.stdout
    assert "records: 2 in 1 collection(s)" in done.stdout


def test_dashboard_follows_live_changes_and_stops_on_ctrl_c(daemon: DaemonProcess):
    daemon.call("share_create", share="dash-live")
    watching = RunningExample(*dashboard(daemon, "dash-live", "--heartbeat", "1"))
    try:
        watching.wait_for_line("caught up")
        assert watching.wait_for_line("records:").endswith("records: 0 in 0 collection(s)")
        written = daemon.client().put("fruit", "figs", [1, 2], share="dash-live")
        assert watching.wait_for_line("figs") == f"@{written.position} fruit/figs = [1, 2]"
        # counted again at the next heartbeat, the household being quiet
        assert watching.wait_for_line("fruit:") == f"@{written.position}   fruit: 1"
        assert watching.interrupt() == 0
        assert watching.wait_for_line("stopped") == "stopped"
    finally:
        watching.stop()


# the Node.js client (node:net only) --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(NODE is None, reason="needs Node.js (`node`; Debian's nodejs package)")
def test_node_example_resolves_a_conflict_by_picking_a_version(
    apart: tuple[DaemonProcess, ...], collection: str
):
    a, b = apart
    conflict(a, b, collection, "meet", from_a="at noon", from_b="at six")
    shown = b.client().get(collection, "meet")
    assert shown.value == "at noon", "a wrote last: its version is the winner shown"
    ours = next(s for s in shown.siblings if s.origin == b.device_id)
    assert NODE is not None
    done = run_example(
        NODE,
        str(EXAMPLES / "node" / "resolve_conflict.mjs"),
        "--socket",
        str(b.socket_path),
        "--collection",
        collection,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f'resolved {collection}/meet: kept "at six" (version {ours.version}) -> '
    )
    new_version = done.stdout.split()[-1]
    for daemon in (b, a):
        wait_for(
            lambda d=daemon: d.client().get(collection, "meet").version == new_version,
            f"{daemon.name} to hold the resolution",
            a,
            b,
        )
        record = daemon.client().get(collection, "meet")
        assert (record.conflict, record.value) == (False, "at six")
    again = run_example(*done.args)
    assert (again.returncode, again.stdout) == (0, "no conflicts\n"), again.stderr
