"""Snapshot bootstrap with real daemons: a device added to a household whose share was compacted
gets everything (the baseline by snapshot, then the log after it); a kill -9 of the receiver in
the middle of a transfer resumes after the last row it kept; a member that announces a snapshot
beyond the receiver's limit, or sends more than it announced, is dropped and leaves nothing
staged."""

import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from p2psync.history.snapshot import Offer, encode_row, pack_offer
from p2psync.merge import Sibling
from p2psync.session_events import SnapshotFrom, SnapshotStart
from p2psync.shares import DEFAULT_SHARE
from p2psync.wire import encode_frame
from tests.daemons import DaemonProcess, free_port, log_since, log_size, running, wait_for
from tests.hostile_peer import HostileMember
from tests.test_history_daemons import compacting, notes

ROWS = 400


def folded_household(tmp_path: Path) -> tuple[DaemonProcess, DaemonProcess]:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    return a, b


def fill_and_fold(a: DaemonProcess, b: DaemonProcess) -> dict:
    ops = [{"op": "put", "collection": "notes", "key": f"k{n:04}", "value": n} for n in range(ROWS)]
    for start in range(0, len(ops), 200):
        a.call("transaction", ops=ops[start : start + 200])
    a.call("transaction", ops=[{"op": "delete", "collection": "notes", "key": "k0000"}])
    wait_for(lambda: "k0000" not in notes(b) and "k0001" in notes(b), "b to hold a's writes", a, b)
    b.call("put", collection="notes", key="k0001", value="b's edit")
    expected = {f"k{n:04}": n for n in range(2, ROWS)} | {"k0001": "b's edit"}
    for daemon in (a, b):
        wait_for(lambda d=daemon: notes(d) == expected, f"{daemon.name} to hold it all", a, b)
        wait_for(lambda d=daemon: "log entries folded" in d.log(), f"{daemon.name} folds", a, b)
    return expected


def add_device(tmp_path: Path, *members: DaemonProcess) -> DaemonProcess:
    new = DaemonProcess(tmp_path, "new", peers=[m.address for m in members])
    new.start()
    for member in members:
        new.call("trust", cert=member.cert(), name=member.name)
        member.call("trust", cert=new.cert(), name="new")
    return new


def staged_rows(daemon: DaemonProcess) -> int:
    with closing(
        sqlite3.connect(f"file:{daemon.state_dir / 'replica.db'}?mode=ro", uri=True)
    ) as db:
        try:
            return int(db.execute("SELECT count(*) FROM snapshot_rows").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # not migrated yet


def test_a_device_added_after_compaction_gets_everything_by_snapshot(tmp_path: Path) -> None:
    a, b = folded_household(tmp_path)
    with running(a, b):
        compacting(a, b)
        expected = fill_and_fold(a, b)
        new = add_device(tmp_path, a, b)
        try:
            wait_for(lambda: notes(new) == expected, "the new device to hold everything", a, b, new)
            assert "installed the snapshot of share default" in new.log()
            # then it takes part as any member: its write reaches both
            new.call("put", collection="notes", key="from new", value=1)
            for daemon in (a, b):
                wait_for(lambda d=daemon: notes(d).get("from new") == 1, "the write", a, b, new)
            logs = a.log() + b.log() + new.log()
            assert "cannot catch up" not in logs and "broke the protocol" not in logs
        finally:
            new.stop()


def test_a_kill_9_of_the_receiver_mid_transfer_resumes_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one row per frame, so that the transfer is long enough to be cut
    monkeypatch.setenv("P2PSYNC_TEST_SNAPSHOT_CHUNK_BYTES", "1")
    a, b = folded_household(tmp_path)
    with running(a, b):
        compacting(a, b)
        expected = fill_and_fold(a, b)
        new = add_device(tmp_path, a, b)
        try:
            wait_for(lambda: staged_rows(new) > 20, "some rows to arrive", a, b, new)
            new.stop(signal.SIGKILL)
            kept = staged_rows(new)
            restarted_at = log_size(new)
            new.start()
            wait_for(lambda: notes(new) == expected, "the new device to hold everything", a, b, new)
            since = log_since(new, restarted_at)
            assert "resuming after" in since and "installed the snapshot" in since, since
            assert kept < ROWS and staged_rows(new) == 0
        finally:
            new.stop()


def test_a_device_back_after_compaction_passed_it_converges_without_resurrecting_deletes(
    tmp_path: Path,
) -> None:
    a, b = folded_household(tmp_path)
    c = DaemonProcess(tmp_path, "c", peers=[a.address, b.address])
    with running(a, b, c):
        # away after 17 s without a report: history stops waiting for it
        compacting(a, b, c, keep_for_absent_days=0.0002)
        for key in ("gone", "edited", "kept"):
            a.call("put", collection="notes", key=key, value=f"{key} 1")
        for daemon in (b, c):
            wait_for(lambda d=daemon: len(notes(d)) == 3, f"{daemon.name} holds it", a, b, c)
        # c goes offline (another port, no peers) and writes there
        c.stop()
        address = c.port
        c.port, c.peers = free_port(), []
        c.write_config()
        c.start()
        c.call("put", collection="notes", key="edited", value="c offline")
        c.stop()
        b.call("delete", collection="notes", key="gone")
        ops = [{"op": "put", "collection": "notes", "key": f"n{n}", "value": n} for n in range(50)]
        a.call("transaction", ops=ops)
        started = log_size(a)
        wait_for(
            lambda: "lacks folded entries" in log_since(a, started) or _folded_past_c(a),
            "a and b to fold past c",
            a,
            b,
            timeout=90,
        )
        c.port, c.peers = address, [a.address, b.address]
        c.write_config()
        c.start()
        expected = {"edited": "c offline", "kept": "kept 1"} | {f"n{n}": n for n in range(50)}
        for daemon in (a, b, c):
            wait_for(lambda d=daemon: notes(d) == expected, f"{daemon.name} converges", a, b, c)
        assert "installed the snapshot of share default" in c.log()


def _folded_past_c(daemon: DaemonProcess) -> bool:
    """Whether the daemon folded writes made after c left (the 50 puts of `n`)."""
    with closing(
        sqlite3.connect(f"file:{daemon.state_dir / 'replica.db'}?mode=ro", uri=True)
    ) as db:
        return db.execute("SELECT count(*) FROM baseline WHERE key = 'n49'").fetchone()[0] > 0


def forged_offer(actor: str, rows: int, size: int) -> bytes:
    """A snapshot start of a baseline at seq 5 of `actor`, announcing `rows` and `size`."""
    heads = {actor: (5, b"h" * 32, b"f" * 32)}
    offer = Offer(DEFAULT_SHARE, {actor: 5}, heads, {actor: 5}, b"d" * 32, rows, size)
    return encode_frame({"t": "snap_start", "s": DEFAULT_SHARE, "o": pack_offer(offer)})


def snapshot_rows(actor: str, numbers: range) -> bytes:
    rows = [
        encode_row(("notes", f"k{n:04}"), [Sibling(actor, n + 1, 1, False, b"x" * 40, None)])
        for n in numbers
    ]
    return encode_frame({"t": "snap_rows", "s": DEFAULT_SHARE, "r": rows})


def staged_offers(daemon: DaemonProcess) -> int:
    with closing(
        sqlite3.connect(f"file:{daemon.state_dir / 'replica.db'}?mode=ro", uri=True)
    ) as db:
        return int(db.execute("SELECT count(*) FROM snapshot_offers").fetchone()[0])


def test_a_member_announcing_too_much_or_sending_beyond_its_start_is_dropped_staging_nothing(
    tmp_path: Path,
) -> None:
    a = DaemonProcess(tmp_path, "a", extra_config="[history]\nmax_snapshot_mb = 1\n")
    with running(a):
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a)
        actor = mallory.new_actor()
        mark = log_size(a)
        # beyond the limit: refused at the start, before any row
        with mallory.connect(a) as attack:
            attack.hello()
            attack.send(forged_offer(actor, 10, 2 * 1024 * 1024))
            attack.wait_closed()
        refused = log_since(a, mark)
        assert f"refusing a snapshot from {mallory.device_id}" in refused, refused
        assert "more than the 1,048,576 this device takes" in refused
        assert staged_offers(a) == 0
        # within the limit, then more bytes than announced: dropped, and its rows go
        with mallory.connect(a) as attack:
            attack.hello()
            attack.send(forged_offer(actor, 1000, 6000))
            assert attack.read_until(lambda e: isinstance(e, SnapshotFrom)) is not None
            attack.send(snapshot_rows(actor, range(0, 50)))
            assert attack.roundtrip()
            assert staged_rows(a) == 50
            attack.send(snapshot_rows(actor, range(50, 100)))
            attack.wait_closed()
        dropped = log_since(a, mark)
        assert (
            f"peer {mallory.device_id} broke the protocol: snapshot of share default: a snapshot"
            " sent more rows than its start announced"
        ) in dropped, dropped
        assert staged_rows(a) == 0 and staged_offers(a) == 0
        # rows with no start in their session (another session may be receiving the share)
        with mallory.connect(a) as attack:
            attack.hello()
            attack.send(snapshot_rows(actor, range(0, 5)))
            attack.wait_closed()
        assert "rows or end without a snapshot start" in log_since(a, mark)
        assert staged_rows(a) == 0 and a.call("status")["records"] == 0


def test_a_peer_that_stalls_a_snapshot_loses_its_session_once_the_hold_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PSYNC_TEST_SNAPSHOT_HOLD_SECONDS", "2")
    a, b = folded_household(tmp_path)
    with running(a, b):
        compacting(a, b)
        fill_and_fold(a, b)
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a)
        mark = log_size(a)
        with mallory.connect(a, timeout=30) as stall:
            stall.send(stall.session.send_hello({DEFAULT_SHARE: {}}, snapshots=True))
            stall.send_vector({})
            start = stall.read_until(lambda e: isinstance(e, SnapshotStart))
            assert start is not None, stall.events
            # it never says where to resume: the sender gives up once the hold is over
            stall.wait_closed()
        ended = log_since(a, mark)
        assert (
            f"ending the session with {mallory.device_id}: its snapshot of share default" in ended
        )
        assert "took over 2 s" in ended, ended


def test_a_transfer_resumed_from_rows_a_member_staged_fails_without_blaming_the_honest_sender(
    tmp_path: Path,
) -> None:
    a, b = folded_household(tmp_path)
    with running(a, b):
        compacting(a, b)
        expected = fill_and_fold(a, b)
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a)
        with mallory.connect(a) as taking:  # the honest offer, as any member can get it
            taking.send(taking.session.send_hello({DEFAULT_SHARE: {}}, snapshots=True))
            taking.send_vector({})
            honest = taking.read_until(lambda e: isinstance(e, SnapshotStart))
            assert isinstance(honest, SnapshotStart), taking.events
        new = DaemonProcess(tmp_path, "new")  # no peers yet: mallory comes first
        new.start()
        try:
            for member in (a, b):
                new.call("trust", cert=member.cert(), name=member.name)
                member.call("trust", cert=new.cert(), name="new")
            mallory.admitted_by(new)
            with mallory.connect(new) as staging:  # junk rows under the honest offer, cut cleanly
                staging.hello()
                staging.send(
                    encode_frame({"t": "snap_start", "s": DEFAULT_SHARE, "o": honest.offer})
                )
                assert staging.read_until(lambda e: isinstance(e, SnapshotFrom)) is not None
                staging.send(snapshot_rows(mallory.new_actor(), range(50)))
                assert staging.roundtrip()
                staging.finish()
            assert staged_rows(new) == 50
            new.stop()
            new.peers = [a.address]
            new.write_config()
            mark = log_size(new)
            new.start()
            wait_for(lambda: notes(new) == expected, "the new device to hold everything", a, new)
            since = log_since(new, mark)
            assert "resumed from rows kept earlier, does not verify" in since, since
            assert "installed the snapshot of share default" in since
            assert f"peer {a.device_id} broke the protocol" not in since
        finally:
            new.stop()
