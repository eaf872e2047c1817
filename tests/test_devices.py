"""`devices` (every member, this one included, last seen kept across restarts), `rename` (a name
replicated to the other devices) and `reload` applying a new device.name, between real daemons on
127.0.0.1."""

from datetime import UTC, datetime
from pathlib import Path

from p2psync import __version__
from p2psync.daemon_status import iso_utc
from p2psync.last_seen import decode, wall_ms_of
from p2psync.session_events import PeerHello
from tests.daemons import DaemonProcess, introduce, running, wait_for
from tests.hostile_peer import HostileMember


def _row(daemon: DaemonProcess, name: str) -> dict:
    return next(row for row in daemon.call("devices") if row["name"] == name)


def test_devices_lists_this_device_and_its_peers_and_keeps_last_seen_over_a_restart(
    tmp_path: Path,
) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        a_id, b_id = a.device_id, b.device_id
        wait_for(lambda: _row(a, "b")["connected"], "a to see b", a, b)
        this, peer = a.call("devices")  # this device first
        assert (this["name"], this["device"], this["this"]) == ("a", a_id, True)
        assert this["connected"] and this["version"] and this["last_seen"]
        assert (peer["name"], peer["device"], peer["this"]) == ("b", b_id, False)
        assert peer["short_id"] == b_id[:5] and peer["version"] == __version__  # its hello's
        assert peer["address"] and not peer["revoked"]

        b.stop()
        wait_for(lambda: not _row(a, "b")["connected"], "a to see b leave", a)
        seen = _row(a, "b")["last_seen"]
        assert seen is not None
        seen_at = datetime.strptime(seen, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - seen_at).total_seconds()) < 60

        assert a.stop() == 0
        a.start()
        after = _row(a, "b")
        assert after["last_seen"] == seen and not after["connected"]
        assert after["version"] == __version__  # what b's last hello said, kept too
        assert _row(a, "a")["this"]


def test_a_device_is_connected_only_once_its_session_is_past_the_hello(tmp_path: Path) -> None:
    """A session the daemon holds before the device's hello (TLS done, the daemon's hello sent)
    is no connection yet: `devices` and `status` say so until the hello comes."""
    member = HostileMember(tmp_path)
    daemon = DaemonProcess(tmp_path, "a")
    with running(daemon):
        member.admitted_by(daemon)  # its probe session said hello, and left
        wait_for(lambda: not _row(daemon, member.name)["connected"], "the probe to leave", daemon)
        with member.connect(daemon) as session:
            our_hello = session.hello_bytes()  # not sent yet; lets us read the daemon's frames
            assert isinstance(session.read_until(lambda e: isinstance(e, PeerHello)), PeerHello)
            assert not _row(daemon, member.name)["connected"]
            assert daemon.call("status")["peers_connected"] == 0
            session.send(our_hello)
            wait_for(lambda: _row(daemon, member.name)["connected"], "the hello to count", daemon)
            assert daemon.call("status")["peers_connected"] == 1
            session.finish()


def test_rename_reaches_the_other_device_and_survives_a_restart(tmp_path: Path) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        done = a.call("rename", name="Küche")
        assert done == {"device": a.device_id, "name": "Küche", "previous": "a"}
        assert a.call("id")["name"] == "Küche" and a.call("status")["name"] == "Küche"
        wait_for(
            lambda: any(row["name"] == "Küche" for row in b.call("devices")),
            "b to learn a's new name",
            a,
            b,
        )
        assert a.error("rename", name="  ")["code"] == "bad_request"
        # the config still says "a", but it did not change: the replicated name stays
        assert a.stop() == 0
        a.start()
        assert a.call("id")["name"] == "Küche"


def test_reload_applies_a_new_device_name_and_says_so(tmp_path: Path) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        assert a.call("reload") == {"reloaded": True, "changed": []}
        a.name = "living room.tv"
        a.write_config()
        assert a.call("reload") == {"reloaded": True, "changed": ["device.name"]}
        assert a.call("id")["name"] == "living room.tv"
        wait_for(
            lambda: any(row["name"] == "living room.tv" for row in b.call("devices")),
            "b to learn a's name from its config",
            a,
            b,
        )


def test_last_seen_times_are_read_back_as_stored_and_odd_entries_are_skipped() -> None:
    stored = {"last_seen/AAAAA": b"1764666000000", "last_seen/BBBBB": b"soon"}
    assert decode(stored) == {"AAAAA": 1764666000000}
    assert wall_ms_of(10.0, 12.5, 1_000_000) == 997_500  # 2.5 s before now
    assert wall_ms_of(13.0, 12.5, 1_000_000) == 1_000_000  # never in the future
    assert iso_utc(1764666000000) == "2025-12-02T09:00:00Z" and iso_utc(None) is None
