"""Compaction with real daemons (`[history] compaction = true`, reports every 0.2 s): a device
offline across compaction and tombstone purge comes back without resurrecting anything, and its
offline writes merge as they should; kill -9 in the middle of compacting loses nothing.

The household is made first and restarted with these settings after (compaction is on by
default, but reports at its default interval would come every 5 minutes); idle, it settles."""

import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.daemons import (
    DaemonProcess,
    free_port,
    introduce,
    log_since,
    log_size,
    running,
    wait_for,
)

HISTORY = "[history]\ncompaction = true\ninterval = 0.2\n"


def household(tmp_path: Path) -> tuple[DaemonProcess, DaemonProcess, DaemonProcess]:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    c = DaemonProcess(tmp_path, "c", peers=[a.address, b.address])
    return a, b, c


def compacting(*daemons: DaemonProcess, keep_for_absent_days: float = 30) -> None:
    """Introduce the daemons to each other, then restart each with compaction on."""
    introduce(*daemons)
    for daemon in daemons:
        wait_for(
            lambda d=daemon: len(d.call("devices")) == len(daemons),
            f"{daemon.name} to know every device",
            *daemons,
        )
    for daemon in daemons:
        daemon.stop()
        daemon.extra_config = f"{HISTORY}keep_for_absent_days = {keep_for_absent_days}\n"
        daemon.write_config()
        daemon.start()


def notes(daemon: DaemonProcess) -> dict[str, Any]:
    """Every live note: its value, or the sorted values of a conflict."""
    found: dict[str, Any] = {}
    for record in daemon.call("scan", collection="notes", limit=1000, deleted=True)["items"]:
        if record.get("conflict"):
            shown = daemon.call("get", collection="notes", key=record["key"], all=True)
            found[record["key"]] = sorted(
                "(deleted)" if v["deleted"] else str(v["value"]) for v in shown["siblings"]
            )
        else:
            found[record["key"]] = record["value"]
    return found


def stable_reporters(daemon: DaemonProcess) -> set[str]:
    """The names of the devices whose stability report the daemon holds."""
    names = {d["device"]: d["name"] for d in daemon.call("devices")}
    with closing(
        sqlite3.connect(f"file:{daemon.state_dir / 'replica.db'}?mode=ro", uri=True)
    ) as db:
        rows = db.execute("SELECT key FROM records WHERE coll = '_stable'").fetchall()
    return {names.get(key, key) for (key,) in rows}


def purged(daemon: DaemonProcess, count: int) -> bool:
    return daemon.log().count("deleted records purged") >= count and "1 deleted" in daemon.log()


def test_a_device_offline_across_compaction_and_purge_returns_without_resurrecting_anything(
    tmp_path: Path,
) -> None:
    a, b, c = household(tmp_path)
    with running(a, b, c):
        compacting(a, b, c)
        for key in ("gone", "edited", "kept", "later"):
            a.call("put", collection="notes", key=key, value=f"{key} 1")
        wait_for(lambda: len(notes(b)) == 4, "b to hold a's writes", a, b)
        b.call("delete", collection="notes", key="gone")
        everything = {"edited": "edited 1", "kept": "kept 1", "later": "later 1"}
        for daemon in (a, b, c):
            wait_for(lambda d=daemon: notes(d) == everything, "the first writes", a, b, c)
        # every device folds its log and purges the tombstone of "gone"
        for daemon in (a, b, c):
            wait_for(lambda d=daemon: purged(d, 1), f"{daemon.name} to purge", a, b, c)
        # not even its tombstone is left
        gone = b.error("get", collection="notes", key="gone", all=True)
        assert gone["message"].startswith("no record notes/gone")
        # c goes offline: on another port, with no peers
        c.stop()
        address = c.port
        c.port, c.peers = free_port(), []
        c.write_config()
        c.start()
        c.call("put", collection="notes", key="edited", value="c offline")
        c.call("put", collection="notes", key="gone", value="c after the delete")
        a.call("put", collection="notes", key="edited", value="a meanwhile")
        a.call("delete", collection="notes", key="later")
        c.stop()
        c.port, c.peers = address, [a.address, b.address]
        c.write_config()
        c.start()
        expected = {
            "edited": ["a meanwhile", "c offline"],  # concurrent edits stay a conflict
            "gone": "c after the delete",  # c had the delete: its write comes after, and wins
            "kept": "kept 1",  # "later" was deleted while c was away: it stays deleted
        }
        for daemon in (a, b, c):
            wait_for(lambda d=daemon: notes(d) == expected, f"{daemon.name} to converge", a, b, c)
        status = a.call("status")
        assert status["history"] == {"compaction": True, "away": [], "unreported": []}


def test_a_kill_9_once_compaction_runs_loses_nothing_and_compaction_goes_on(
    tmp_path: Path,
) -> None:
    a, b, _ = household(tmp_path)
    with running(a, b):
        compacting(a, b)
        ops = [
            {"op": "put", "collection": "notes", "key": f"k{n}", "value": n} for n in range(2000)
        ]
        for start in range(0, len(ops), 500):
            a.call("transaction", ops=ops[start : start + 500])
        a.call("transaction", ops=[{"op": "delete", "collection": "notes", "key": "k0"}])
        wait_for(lambda: _count(b) == 1999, "b to hold every write", a, b)
        wait_for(lambda: "log entries folded" in a.log(), "a to fold", a, b)
        a.stop(signal.SIGKILL)
        restarted_at = log_size(a)
        a.start()
        assert _count(a) == 1999
        a.call("put", collection="notes", key="after", value="the restart")
        wait_for(lambda: _count(b) == 2000, "b to get a's write after the restart", a, b)
        wait_for(
            lambda: "log entries folded" in log_since(a, restarted_at),
            "a to fold again after the restart",
            a,
            b,
        )
        assert _count(a) == _count(b) == 2000


def _count(daemon: DaemonProcess) -> int:
    status = daemon.call("status")
    return int(status["records"])


def test_status_names_a_member_away_and_until_when_history_waits_for_it(tmp_path: Path) -> None:
    a, b, c = household(tmp_path)
    with running(a, b, c):
        # a bound of about 35 s: quiet members report every 8.6 s, away after 17 s of silence
        compacting(a, b, c, keep_for_absent_days=0.0004)
        c_id = c.device_id
        # c's first report has reached a: c is a member that has been heard from
        wait_for(lambda: "c" in stable_reporters(a), "c's report to reach a", a, c)
        c.stop()
        away = wait_for(
            lambda: a.call("status")["history"]["away"], "a to see c away", a, b, timeout=40
        )
        (row,) = away
        assert row["device"] == c_id and row["name"] == "c"
        assert row["kept_until_ms"] - row["since_ms"] == int(0.0004 * 86_400_000)
        assert row["text"].startswith("c has been away 0 days; history since then is kept for it")
        assert b.call("status")["history"]["away"][0]["device"] == row["device"]


class Quiet:
    """True once no daemon's log position has moved for `seconds` (polled by wait_for)."""

    def __init__(self, daemons: tuple[DaemonProcess, ...], seconds: float) -> None:
        self.daemons, self.seconds = daemons, seconds
        self.positions: list[int] = []
        self.since = time.monotonic()

    def __call__(self) -> bool:
        positions = [daemon.call("status")["position"] for daemon in self.daemons]
        if positions != self.positions:
            self.positions, self.since = positions, time.monotonic()
        return time.monotonic() - self.since >= self.seconds


def test_an_idle_household_settles_and_its_logs_stop_growing(tmp_path: Path) -> None:
    """Compaction as configured by default (the config names only a short interval): once the
    writes stop, a few rounds of reports settle and then no device writes or receives another
    entry for 40 intervals, though each one's timer runs every interval: no report ping-pong
    between idle devices (the next report is the daily refresh)."""
    interval = 0.1
    daemons = household(tmp_path)
    for daemon in daemons:
        daemon.extra_config = f"[history]\ninterval = {interval}\n"
        daemon.write_config()
    a, b, c = daemons
    with running(*daemons):
        introduce(*daemons)
        for n in range(30):
            a.call("put", collection="notes", key=f"k{n % 7}", value=n)
        for daemon in (b, c):
            wait_for(lambda d=daemon: notes(d).get("k1") == 29, "a's writes", *daemons)
        b.call("delete", collection="notes", key="k0")
        c.call("put", collection="notes", key="k1", value="c")
        quiet = Quiet(daemons, 40 * interval)
        wait_for(quiet, "every device's log to stop growing", *daemons, timeout=60)
        assert len(set(quiet.positions)) == 1, "each holds every entry (its own and the others')"
        for daemon in daemons:
            whole = log_since(daemon, 0)  # the polls above pushed it out of log()'s tail
            assert "log entries folded" in whole and "1 deleted records purged" in whole
            assert notes(daemon) == {"k1": "c"} | {f"k{n}": 21 + n for n in range(2, 7)}
        assert stable_reporters(a) == {"a", "b", "c"}
        assert a.call("status")["history"] == {"compaction": True, "away": [], "unreported": []}
