"""Keeping the daemon's threads on one processor (p2psync/one_cpu.py), in real daemons."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2psync.one_cpu import running_processor
from tests.daemons import DaemonProcess, running

several_processors = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="this machine lets us use a single processor"
)


def test_the_processor_is_read_after_a_name_holding_parentheses_and_spaces():
    fields = " ".join(str(number) for number in range(3, 53))  # field 3 (the state) onwards
    assert running_processor(f"4242 (p2psync) (x 1) {fields}") == 39


def allowed_processors(pid: int) -> dict[str, set[int]]:
    """Each thread's name and the processors it may run on."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines())
        found[f"{status['Name']}/{task.name}"] = _listed(status["Cpus_allowed_list"])
    return found


def _listed(ranges: str) -> set[int]:
    """`0-2,5` as {0, 1, 2, 5}."""
    found: set[int] = set()
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


@several_processors
def test_every_thread_of_a_running_daemon_keeps_to_the_same_single_processor(tmp_path):
    daemon = DaemonProcess(tmp_path, "a")
    with running(daemon):
        daemon.call("put", collection="n", key="k", value=1)  # the database thread is up
        assert daemon.process is not None
        allowed = allowed_processors(daemon.process.pid)
    assert len(allowed) >= 2, allowed
    [processors] = {frozenset(each) for each in allowed.values()}
    assert len(processors) == 1 and processors <= os.sched_getaffinity(0), allowed


@several_processors
def test_with_one_cpu_off_the_daemon_may_run_anywhere_it_was_allowed(tmp_path):
    daemon = DaemonProcess(tmp_path, "a", extra_config="[process]\none_cpu = false\n")
    with running(daemon):
        daemon.call("put", collection="n", key="k", value=1)
        assert daemon.process is not None
        allowed = allowed_processors(daemon.process.pid)
    assert all(each == os.sched_getaffinity(0) for each in allowed.values()), allowed


@several_processors
def test_within_a_narrower_affinity_it_keeps_to_one_of_those(tmp_path):
    """As under systemd's CPUAffinity=: started with two processors allowed, it picks one."""
    two = sorted(os.sched_getaffinity(0))[:2]
    script = (
        "import os; from p2psync.one_cpu import keep_to_one_processor; "
        f"os.sched_setaffinity(0, {set(two)}); "
        "chosen = keep_to_one_processor(); print(chosen, sorted(os.sched_getaffinity(0)))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert int(shown[0]) in two and shown[1].strip() == f"[{shown[0]}]"


@several_processors
def test_turning_one_cpu_off_by_reload_says_it_waits_for_a_restart(tmp_path):
    daemon = DaemonProcess(tmp_path, "a")
    with running(daemon):
        assert daemon.process is not None
        before = allowed_processors(daemon.process.pid)
        daemon.extra_config = "[process]\none_cpu = false\n"
        daemon.write_config()
        assert daemon.call("reload") == {"reloaded": True, "changed": []}
        assert "process.one_cpu changed; it takes effect at the next restart" in daemon.log()
        assert allowed_processors(daemon.process.pid).items() >= before.items()
