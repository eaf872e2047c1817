"""A real household of mixed releases: a daemon running release 0.4.0's own code (its tree
exported from this repository's history) beside current daemons, on 127.0.0.1, compaction on.
The fixtures of tests/test_upgrade.py show old state and frames are understood; this shows the
two releases, both running, keep syncing, compacting and settling together."""

import re
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from p2psync import __version__
from p2psync.shares import DEFAULT_SHARE as SHARE
from tests.daemons import (
    REPO,
    DaemonProcess,
    introduce,
    log_since,
    log_size,
    running,
    wait_for,
)
from tests.test_history_daemons import Quiet, notes
from tests.test_upgrade import device_row

RELEASE_0_4_0 = "5097098"  # the commit of release 0.4.0 (store schema 5, sync protocol 3)
HISTORY = "[history]\ncompaction = true\ninterval = 0.2\n"
# what no session of a household of good members may log, on either side
PURGED = re.compile(r"folded, [1-9][0-9]* deleted records purged")
LOG_FAULTS = (
    "broke the protocol",
    "has two different signed histories",
    "session with",
    "Traceback",
)


@pytest.fixture(scope="session")
def tree_0_4_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 0.4.0's tree, exported from this repository's history once per test session."""
    tree = tmp_path_factory.mktemp("p2psync-0.4.0")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", RELEASE_0_4_0], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def own_heads(daemon: DaemonProcess, device_id: str) -> int:
    """How many heads rows of the default share name an epoch of `device_id` (read-only)."""
    with closing(
        sqlite3.connect(f"file:{daemon.state_dir / 'replica.db'}?mode=ro", uri=True)
    ) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM heads JOIN actors ON actors.id = heads.actor"
            " JOIN shares ON shares.id = heads.share WHERE shares.name = ? AND actors.name LIKE ?",
            (SHARE, f"{device_id}/%"),
        ).fetchone()
    return int(count)


def folds_since(daemon: DaemonProcess, offset: int) -> int:
    return log_since(daemon, offset).count("log entries folded")


def test_a_0_4_0_daemon_and_current_ones_sync_compact_and_converge(tmp_path, tree_0_4_0):
    """One daemon runs release 0.4.0's own code, two run this tree's; compaction on everywhere.
    Writes and deletes on all, folds and purges, restarts of a current daemon (its epochs retire
    and their heads drop on the current ones): they converge, nothing deleted comes back, and no
    log names a protocol fault or a fork."""
    old = DaemonProcess(tmp_path, "old", code=tree_0_4_0, extra_config=HISTORY)
    new = DaemonProcess(tmp_path, "new", peers=[old.address], extra_config=HISTORY)
    third = DaemonProcess(tmp_path, "third", peers=[old.address, new.address], extra_config=HISTORY)
    daemons = (old, new, third)
    with running(*daemons):
        assert device_row(old, old.device_id)["version"] == "0.4.0", "0.4.0's own code"
        assert device_row(new, new.device_id)["version"] == __version__
        introduce(*daemons)
        for n in range(10):
            old.call("put", collection="notes", key=f"old{n}", value=n)
        new.call("put", collection="notes", key="new0", value="new")
        third.call("put", collection="notes", key="third0", value="third")
        expected: dict = {f"old{n}": n for n in range(10)} | {"new0": "new", "third0": "third"}
        converge(daemons, expected)
        old.call("delete", collection="notes", key="old1")
        new.call("delete", collection="notes", key="old2")
        del expected["old1"], expected["old2"]
        converge(daemons, expected)
        for daemon in daemons:  # every member reports, so every one folds and purges
            wait_for(
                lambda d=daemon: PURGED.search(log_since(d, 0)), f"{daemon.name} to purge", *daemons
            )
        new_id = new.device_id
        for restart in range(3):  # each start is an epoch that retires the one before
            new.stop()
            new.start()
            new.call("put", collection="notes", key="new0", value=f"new {restart}")
            third.call("delete", collection="notes", key=f"old{3 + restart}")
            old.call("put", collection="notes", key=f"late{restart}", value=restart)
            del expected[f"old{3 + restart}"]
            expected |= {"new0": f"new {restart}", f"late{restart}": restart}
            converge(daemons, expected)
        old.call("put", collection="notes", key="old1", value="written again after the purge")
        new.call("delete", collection="notes", key="old0")
        del expected["old0"]
        expected["old1"] = "written again after the purge"
        offsets = {daemon.name: log_size(daemon) for daemon in daemons}
        converge(daemons, expected)
        # compaction goes on after the restarts on both releases: while a member reads vectors
        # as written (0.4.0), the current ones report the epochs they dropped in full
        for daemon in daemons:
            wait_for(
                lambda d=daemon: folds_since(d, offsets[d.name]) >= 1,
                f"{daemon.name} to fold again",
                *daemons,
            )
        # the current members drop the heads of the retired epochs folded to their retirement
        for daemon in (new, third):
            wait_for(
                lambda d=daemon: own_heads(d, new_id) == 1,
                f"{daemon.name} to hold one head of new's four epochs",
                *daemons,
            )
        # and it settles: no member, of either release, reports on and on (a 0.4.0 member
        # whose frontiers lacked the dropped epochs held entries it took for unsettled forever)
        wait_for(Quiet(daemons, 3.0), "the household to settle", *daemons, timeout=40)
        for daemon in daemons:
            found = [fault for fault in LOG_FAULTS if fault in log_since(daemon, 0)]
            assert not found, f"{daemon.name}: {found}\n{daemon.log()}"
        converge(daemons, expected)  # and it stays so


def converge(daemons: tuple[DaemonProcess, ...], expected: dict) -> None:
    for daemon in daemons:
        wait_for(lambda d=daemon: notes(d) == expected, f"{daemon.name} to converge", *daemons)
