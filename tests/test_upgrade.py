"""Upgrades from releases 0.1.0 to 0.4.0: their state dirs open with nothing lost, an old peer is
told which release to upgrade to, and 0.3.0 and 0.4.0 peers (same protocol) keep syncing
(fixtures made by each release's own code, see tests/fixtures/; a real daemon of 0.4.0's code
beside current ones: tests/test_upgrade_mixed.py)."""

import json
import shutil
from pathlib import Path

import msgpack
import pytest

from p2psync import __version__, entry, keystore, store, wire
from p2psync.replica import Replica
from p2psync.session import CLOSED, NEED_DATA, ProtocolError, SyncConnection
from p2psync.session_events import Bye, Entries, PeerHello
from p2psync.shares import DEFAULT_SHARE as SHARE
from tests.daemons import DaemonProcess, introduce, log_since, running, wait_for
from tests.hostile_peer import HostileMember

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def open_copy(tmp_path: Path, device: str, fixture: Path = FIXTURE) -> Replica:
    state_dir = tmp_path / fixture.name / device
    shutil.copytree(fixture / device, state_dir)
    return Replica.open(state_dir / "replica.db", keystore.load_or_create_identity(state_dir))


def test_a_0_1_state_dir_opens_with_every_record_device_and_entry(tmp_path):
    replica = open_copy(tmp_path, "device-a")
    assert replica.summary_vector(SHARE) == EXPECTED["vector"]
    for path, (value_hex, siblings) in EXPECTED["records"].items():
        collection, key = path.split("/", 1)
        view = replica.get(SHARE, collection, key)
        assert view is not None and view.winner.value == bytes.fromhex(value_hex), path
        assert len(view.siblings) == siblings, path
    for path in EXPECTED["deleted"]:
        view = replica.get(SHARE, *path.split("/", 1))
        assert view is not None and view.deleted
    assert [f"{v.collection}/{v.key}" for v in replica.conflicts(SHARE)] == EXPECTED["conflicts"]
    assert {d.device_id: d.name for d in replica.devices()} == EXPECTED["devices"]
    assert replica.actor != EXPECTED["actors"]["device-a"], "a start writes as a new epoch"


def test_an_upgraded_device_writes_on_and_syncs_with_another_upgraded_one(tmp_path):
    a, b = open_copy(tmp_path, "device-a"), open_copy(tmp_path, "device-b")
    a.commit(SHARE, [entry.put("notes", "after-upgrade", msgpack.packb("a"))])
    b.commit(SHARE, [entry.put("shopping", "milk", msgpack.packb({"qty": 5}))])
    for source, target in ((a, b), (b, a)):
        items, _ = source.entries_after(SHARE, 0, target.summary_vector(SHARE), 1 << 30)
        target.apply(SHARE, items, source.device_id)
    for replica in (a, b):
        milk = replica.get(SHARE, "shopping", "milk")
        assert milk is not None and not milk.conflict, "the write after the upgrade resolved it"
        assert msgpack.unpackb(milk.winner.value) == {"qty": 5}
        assert replica.get(SHARE, "notes", "after-upgrade") is not None
    first = entry.decode(a.store.entry(SHARE, a.actor, 1))
    assert [r[0] for r in first.retires] == [EXPECTED["actors"]["device-a"]]


def test_a_0_1_peer_is_told_to_upgrade_and_its_frames_are_never_taken_as_data():
    frames = msgpack.unpackb((FIXTURE / "frames-from-device-b.msgpack").read_bytes())
    a_id = keystore.load_or_create_identity(FIXTURE / "device-a").device_id
    b_id = keystore.load_or_create_identity(FIXTURE / "device-b").device_id
    connection = SyncConnection(a_id, b_id)
    connection.send_hello({SHARE: {}})
    connection.receive_data(frames[0])
    with pytest.raises(ProtocolError) as refused:
        connection.next_event()
    assert "upgrade p2psync on " + b_id + " to 0.3.0 or newer" in refused.value.reason
    # What the 0.1 peer sees: a bye it can decode with its own (unchanged) frame codec.
    old_side = wire.FrameDecoder(wire.MAX_FRAME)
    old_side.feed(wire.encode_frame({"t": "bye", "r": refused.value.reason}))
    assert old_side.next_message() == {"t": "bye", "r": refused.value.reason}


def test_a_0_1_bye_still_reads_as_a_bye():
    frames = msgpack.unpackb((FIXTURE / "frames-from-device-b.msgpack").read_bytes())
    a_id = keystore.load_or_create_identity(FIXTURE / "device-a").device_id
    connection = SyncConnection(a_id, None)
    connection.send_hello({SHARE: {}})
    connection.receive_data(frames[-1])
    assert connection.next_event() == Bye("fixture ends")


# -- release 0.2.0 (protocol 2, schema 2): two shares, epochs per start, a revoked device ---------

FIXTURE_0_2 = Path(__file__).parent / "fixtures" / "release-0.2.0"
EXPECTED_0_2 = json.loads((FIXTURE_0_2 / "expected.json").read_text())
RECIPES = "recipes"  # a second share; in 0.2.0 any share name existed implicitly
SHARES_0_2 = (SHARE, RECIPES)  # the default share first: it holds the keys of the others' writers


def revocations(replica: Replica) -> dict[str, dict]:
    return {
        d.device_id: {
            "revoked_by": d.revoked_by,
            "revoked_at_ms": d.revoked_at_ms,
            "added_by": d.added_by,
            "cut": d.cut,
        }
        for d in replica.devices()
        if d.revoked
    }


def live_records(replica: Replica, share: str) -> dict[str, list]:
    """Every live record of `share` in the collections the fixture wrote: winner and siblings."""
    found = {}
    collections = {path.split("/", 1)[0] for path in EXPECTED_0_2["shares"][share]["records"]}
    for collection in sorted(collections):
        for view in replica.scan(share, collection, limit=10_000):
            found[f"{collection}/{view.key}"] = [view.winner.value, sorted(view.siblings)]
    return found


def sync_shares(source: Replica, target: Replica) -> None:
    for share in SHARES_0_2:
        items, _ = source.entries_after(share, 0, target.summary_vector(share), 1 << 30)
        result = target.apply(share, items, source.device_id)
        assert result.waiting == 0 and result.refused == 0, (share, result)


@pytest.mark.parametrize("device", ["device-a", "device-b"])
def test_a_0_2_state_dir_opens_with_every_record_sibling_tombstone_and_device(tmp_path, device):
    replica = open_copy(tmp_path, device, FIXTURE_0_2)
    assert replica.store.schema_version == store.SCHEMA_VERSION
    for share in SHARES_0_2:
        held = EXPECTED_0_2["shares"][share]
        assert replica.summary_vector(share) == held["vector"], share
        for path, (value_hex, siblings) in held["records"].items():
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.winner.value == bytes.fromhex(value_hex), path
            assert len(view.siblings) == siblings, path
        for path, meta_hex in held["meta"].items():
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.winner.meta == bytes.fromhex(meta_hex), path
        assert sorted(live_records(replica, share)) == sorted(held["records"]), "no more, no less"
        for path in held["deleted"]:
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.deleted, path
        assert [f"{v.collection}/{v.key}" for v in replica.conflicts(share)] == held["conflicts"]
        assert replica.store.count_records(share) == len(held["records"]), share
        assert replica.store.count_conflicts(share) == len(held["conflicts"]), share
    assert {d.device_id: d.name for d in replica.devices()} == EXPECTED_0_2["devices"]
    assert revocations(replica) == EXPECTED_0_2["revoked"]
    assert replica.actor != EXPECTED_0_2["actors"][device], "a start writes as a new epoch"


def test_upgraded_0_2_devices_write_on_in_both_shares_and_converge(tmp_path):
    a = open_copy(tmp_path, "device-a", FIXTURE_0_2)
    b = open_copy(tmp_path, "device-b", FIXTURE_0_2)
    a.commit(SHARE, [entry.put("notes", "after-upgrade", msgpack.packb("a"))])
    b.commit(SHARE, [entry.put("shopping", "milk", msgpack.packb({"qty": 5}))])
    a.commit(RECIPES, [entry.put("cards", "pancakes", msgpack.packb({"eggs": 4}))])
    b.commit(RECIPES, [entry.put("cards", "cake", msgpack.packb({"title": "Kuchen"}))])
    sync_shares(a, b)
    sync_shares(b, a)
    for replica in (a, b):
        milk = replica.get(SHARE, "shopping", "milk")
        assert milk is not None and not milk.conflict, "the write after the upgrade resolved it"
        assert msgpack.unpackb(milk.winner.value) == {"qty": 5}
        assert replica.get(SHARE, "notes", "after-upgrade") is not None
        pancakes = replica.get(RECIPES, "cards", "pancakes")
        assert pancakes is not None and msgpack.unpackb(pancakes.winner.value) == {"eggs": 4}
        assert not pancakes.conflict
        assert replica.get(RECIPES, "cards", "cake") is not None
        assert revocations(replica) == EXPECTED_0_2["revoked"], "the cut stays"
    for share in SHARES_0_2:
        assert a.summary_vector(share) == b.summary_vector(share), share
        assert live_records(a, share) == live_records(b, share), share
        assert a.conflicts(share) == b.conflicts(share), share
        for replica, device in ((a, "device-a"), (b, "device-b")):
            first = entry.decode(replica.store.entry(share, replica.actor, 1))
            assert [r[0] for r in first.retires] == [EXPECTED_0_2["actors"][device]], share


def test_a_0_2_peer_is_told_to_upgrade_and_its_frames_are_never_taken_as_data():
    frames = msgpack.unpackb((FIXTURE_0_2 / "frames-from-device-b.msgpack").read_bytes())
    a_id = keystore.load_or_create_identity(FIXTURE_0_2 / "device-a").device_id
    b_id = keystore.load_or_create_identity(FIXTURE_0_2 / "device-b").device_id
    connection = SyncConnection(a_id, b_id)
    connection.send_hello({SHARE: {}, RECIPES: {}})
    connection.receive_data(frames[0])
    with pytest.raises(ProtocolError) as refused:
        connection.next_event()
    assert "upgrade p2psync on " + b_id + " to 0.3.0 or newer" in refused.value.reason
    # The rest of the 0.2 session (vectors, entries, have, direct, ...) never becomes an event.
    connection.receive_data(b"".join(frames[1:]))
    with pytest.raises(ProtocolError):
        connection.next_event()
    # What the 0.2 peer sees: a bye it can decode with its own (unchanged) frame codec.
    old_side = wire.FrameDecoder(wire.MAX_FRAME)
    old_side.feed(wire.encode_frame({"t": "bye", "r": refused.value.reason}))
    assert old_side.next_message() == {"t": "bye", "r": refused.value.reason}


def test_a_0_2_bye_still_reads_as_a_bye():
    frames = msgpack.unpackb((FIXTURE_0_2 / "frames-from-device-b.msgpack").read_bytes())
    a_id = keystore.load_or_create_identity(FIXTURE_0_2 / "device-a").device_id
    connection = SyncConnection(a_id, None)
    connection.send_hello({SHARE: {}, RECIPES: {}})
    connection.receive_data(frames[-1])
    assert connection.next_event() == Bye("fixture ends")


# -- release 0.3.0 (protocol 3, schema 3): share members, deleted values; schema 3 -> 4 ----------

FIXTURE_0_3 = Path(__file__).parent / "fixtures" / "release-0.3.0"
EXPECTED_0_3 = json.loads((FIXTURE_0_3 / "expected.json").read_text())
SHARES_0_3 = (SHARE, RECIPES)  # recipes made with `share create`: it lists its members


def members_of(replica: Replica) -> dict[str, dict]:
    return {
        share: {
            device_id: {
                "added_by": record.added_by,
                "removed": record.removed,
                "cut": record.cut,
                "removed_by": record.removed_by,
                "removed_at_ms": record.removed_at_ms,
            }
            for device_id, record in replica.share_records(share).items()
        }
        for share in SHARES_0_3
        if replica.share_records(share)
    }


def hidden_by_deletes(replica: Replica) -> list[list[str]]:
    return [
        [change.share, f"{change.op.collection}/{change.op.key}", change.previous.hex()]
        for change in replica.changes(0, 1 << 30)
        if change.op.kind == entry.DELETE and change.previous is not None
    ]


@pytest.mark.parametrize("device", ["device-a", "device-b"])
def test_a_0_3_state_dir_opens_with_members_deleted_values_and_every_record(tmp_path, device):
    replica = open_copy(tmp_path, device, FIXTURE_0_3)
    assert EXPECTED_0_3["schema"] == 3 and replica.store.schema_version == store.SCHEMA_VERSION
    for share in SHARES_0_3:
        held = EXPECTED_0_3["shares"][share]
        assert replica.summary_vector(share) == held["vector"], share
        found = {
            path: [view.winner.value.hex(), len(view.siblings)]
            for path, view in (
                (path, replica.get(share, *path.split("/", 1))) for path in held["records"]
            )
            if view is not None
        }
        assert found == held["records"], share
        assert sorted(live_records(replica, share)) == sorted(held["records"]), "no more, no less"
        for path, meta_hex in held["meta"].items():
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.winner.meta == bytes.fromhex(meta_hex), path
        for path in held["deleted"]:
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.deleted, path
        assert [f"{v.collection}/{v.key}" for v in replica.conflicts(share)] == held["conflicts"]
        assert replica.store.count_records(share) == len(held["records"]), share
    assert {d.device_id: d.name for d in replica.devices()} == EXPECTED_0_3["devices"]
    assert revocations(replica) == EXPECTED_0_3["revoked"]
    assert members_of(replica) == EXPECTED_0_3["share_members"]
    assert hidden_by_deletes(replica) == EXPECTED_0_3["deleted_values"][device], "watch's previous"
    c_id = EXPECTED_0_3["device_ids"]["device-c"]
    assert not replica.is_share_member(RECIPES, c_id) and replica.was_removed_from(RECIPES, c_id)
    assert replica.actor != EXPECTED_0_3["actors"][device], "a start writes as a new epoch"


def test_upgraded_0_3_devices_write_on_in_both_shares_and_converge(tmp_path):
    a = open_copy(tmp_path, "device-a", FIXTURE_0_3)
    b = open_copy(tmp_path, "device-b", FIXTURE_0_3)
    a.commit(SHARE, [entry.put("notes", "after-upgrade", msgpack.packb("a"))])
    b.commit(SHARE, [entry.put("shopping", "milk", msgpack.packb({"qty": 5}))])
    b.commit(SHARE, [entry.delete("notes", "n0")])
    a.commit(RECIPES, [entry.put("cards", "pancakes", msgpack.packb({"eggs": 4}))])
    b.commit(RECIPES, [entry.put("cards", "cake", msgpack.packb({"title": "Kuchen"}))])
    sync_shares(a, b)
    sync_shares(b, a)
    for replica in (a, b):
        milk = replica.get(SHARE, "shopping", "milk")
        assert milk is not None and not milk.conflict, "the write after the upgrade resolved it"
        assert msgpack.unpackb(milk.winner.value) == {"qty": 5}
        assert replica.get(SHARE, "notes", "after-upgrade") is not None
        pancakes = replica.get(RECIPES, "cards", "pancakes")
        assert pancakes is not None and msgpack.unpackb(pancakes.winner.value) == {"eggs": 4}
        assert replica.get(RECIPES, "cards", "cake") is not None
        assert revocations(replica) == EXPECTED_0_3["revoked"], "the cut stays"
        assert members_of(replica) == EXPECTED_0_3["share_members"], "the members stay"
        old_and_new = hidden_by_deletes(replica)
        assert old_and_new[-1][:2] == [SHARE, "notes/n0"], "deletes after the upgrade keep theirs"
    for share in SHARES_0_3:
        assert a.summary_vector(share) == b.summary_vector(share), share
        assert live_records(a, share) == live_records(b, share), share
        assert a.conflicts(share) == b.conflicts(share), share
        for replica, device in ((a, "device-a"), (b, "device-b")):
            first = entry.decode(replica.store.entry(share, replica.actor, 1))
            assert [r[0] for r in first.retires] == [EXPECTED_0_3["actors"][device]], share


def apply_recorded(replica: Replica, events: list[object], peer: str) -> None:
    """Apply every entries frame of a recorded session, which must all be taken at once, and
    check the session held every kind of message and ended as recorded."""
    for event in events:
        if isinstance(event, Entries):
            result = replica.apply(event.share, event.items, peer)
            assert result.refused == 0 and result.waiting == 0, result
    kinds = [type(event).__name__ for event in events]
    assert {"PeerVector", "Entries", "CaughtUp", "Direct", "Have"} <= set(kinds), kinds
    assert kinds[-3:] == ["Ping", "Pong", "Bye"] and events[-1] == Bye("fixture ends")


def recorded_events(connection: SyncConnection, frames: list[bytes]) -> list[object]:
    """What our session makes of a peer's recorded frames, in order."""
    events = []
    for frame in frames:
        connection.receive_data(frame)
        while (event := connection.next_event()) not in (NEED_DATA, CLOSED):
            events.append(event)
    return events


def test_a_0_3_peer_keeps_syncing_its_session_is_understood_whole(tmp_path):
    """The frames a 0.3.0 daemon sent (protocol 3, as today) decode in order into the events the
    current pump handles, and its entries apply to an upgraded replica without a refusal."""
    frames = msgpack.unpackb((FIXTURE_0_3 / "frames-from-device-b.msgpack").read_bytes())
    a = open_copy(tmp_path, "device-a", FIXTURE_0_3)
    b_id = EXPECTED_0_3["device_ids"]["device-b"]
    connection = SyncConnection(a.device_id, b_id)
    connection.send_hello({s: a.chain_heads(s) for s in a.shares_for(b_id)}, a.actor, __version__)
    events = recorded_events(connection, frames)
    hello = events[0]
    assert isinstance(hello, PeerHello) and hello.device_id == b_id
    assert hello.shares == set(SHARES_0_3) and hello.actor == EXPECTED_0_3["actors"]["device-b"]
    assert hello.software == "", "a 0.3.0 hello has no `sw`: the devices list shows no version"
    apply_recorded(a, events, b_id)
    assert events[-3].idle_ms is not None, "0.3.0 states its idle limit in its pings"
    assert hello.version == EXPECTED_0_3["protocol"], "protocol 3, as today"


def test_our_hello_with_sw_is_one_a_0_3_peer_decodes():
    """What 0.3.0's session reads of a hello: `t`, `v` (3 within its range), `id`, `s`, `a`;
    `sw` is a key it never looks at (checked by hand against 0.3.0's code, see the README)."""
    a_id = EXPECTED_0_3["device_ids"]["device-a"]
    out = SyncConnection(a_id, None).send_hello({SHARE: {}}, "x/1", __version__)
    decoder = wire.FrameDecoder()
    decoder.feed(out)
    hello = decoder.next_message()
    assert hello is not None and hello["sw"] == __version__
    assert set(hello) == {"t", "v", "id", "s", "a", "sw"} and hello["v"][0] <= 3 <= hello["v"][1]


def device_row(daemon: DaemonProcess, device_id: str) -> dict:
    return next(row for row in daemon.call("devices") if row["device"] == device_id)


def test_a_daemon_greeted_by_the_recorded_0_3_hello_lists_that_peer_without_a_version(tmp_path):
    """A real daemon, a TLS session with device B's own key, and B's recorded 0.3.0 hello (no
    `sw`): the session goes on, and `devices` shows B connected with no version, not a guess."""
    hello = msgpack.unpackb((FIXTURE_0_3 / "frames-from-device-b.msgpack").read_bytes())[0]
    shutil.copytree(FIXTURE_0_3 / "device-b", tmp_path / "device-b")
    old_peer = HostileMember(tmp_path, "device-b")  # B's own key; its hello is the recorded one
    daemon = DaemonProcess(tmp_path, "current")
    with running(daemon):
        old_peer.admitted_by(daemon)
        with old_peer.connect(daemon) as session:
            # our side of the session reads the daemon's frames as B's hello announced
            session.session.send_hello({share: {} for share in SHARES_0_3})
            session.send(hello)
            assert isinstance(session.read_until(lambda e: isinstance(e, PeerHello)), PeerHello)
            assert session.roundtrip(), "the daemon took the 0.3.0 hello and kept the session"
            row = device_row(daemon, old_peer.device_id)
            assert row["connected"] and row["version"] is None, row
            session.finish()
        wait_for(
            lambda: not device_row(daemon, old_peer.device_id)["connected"], "B to leave", daemon
        )
        assert device_row(daemon, old_peer.device_id)["version"] is None, "none kept either"
        assert device_row(daemon, daemon.device_id)["version"] == __version__


def test_a_0_3_peer_lacking_folded_entries_is_told_to_upgrade_and_named_in_status(tmp_path):
    """A real daemon that compacted with another member, then B's key and its recorded 0.3.0
    hello (no `sn`): B lacks what was folded and cannot take a snapshot, so instead of a session
    stuck without a word it gets a bye naming it, the share and the release to upgrade to (0.3.0
    logs "peer said goodbye: " and the text); its next connection gets the same bye before any
    hello (0.3.0 dials again at once after a greeted session, and backs off after a refusal);
    and `status` says history is kept for it now, and why."""
    hello = msgpack.unpackb((FIXTURE_0_3 / "frames-from-device-b.msgpack").read_bytes())[0]
    shutil.copytree(FIXTURE_0_3 / "device-b", tmp_path / "device-b")
    old_peer = HostileMember(tmp_path, "device-b")
    compacting = "[history]\ncompaction = true\ninterval = 0.2\n"
    daemon = DaemonProcess(tmp_path, "current", extra_config=compacting)
    other = DaemonProcess(tmp_path, "other", peers=[daemon.address], extra_config=compacting)
    with running(daemon, other):
        introduce(daemon, other)
        for n in range(20):
            daemon.call("put", collection="notes", key=f"n{n}", value=n)
        wait_for(lambda: "log entries folded" in daemon.log(), "a fold", daemon, other)
        old_peer.admitted_by(daemon)
        with old_peer.connect(daemon) as session:
            session.session.send_hello({share: {} for share in SHARES_0_3})
            session.send(hello)
            session.send_vector({})  # B holds none of this household's writes
            reason = session.wait_closed()
        assert reason == (
            f"{old_peer.device_id} lacks entries of share {SHARE} that {daemon.device_id} has"
            " folded away (history compaction) and its p2psync cannot take a snapshot of them;"
            f" upgrade p2psync on {old_peer.device_id} to 0.4.0 or newer"
        )
        with old_peer.connect(daemon) as again:
            again.session.send_hello({share: {} for share in SHARES_0_3})
            again.send(hello)
            assert again.wait_closed() == reason
            assert not [event for event in again.events if isinstance(event, PeerHello)]
        lines = log_since(daemon, 0).splitlines()
        warned = [line for line in lines if "WARNING" in line and reason in line]
        assert len(warned) == 1, "said once, not at every connection"
        history = daemon.call("status")["history"]
        assert history["unreported"] == [
            {
                "device": old_peer.device_id,
                "name": "device-b",
                "version": None,
                "text": "history is kept until device-b reports: it may run p2psync before"
                " 0.4.0 (upgrade it) or have [history] compaction off",
            }
        ]


# -- release 0.4.0 (protocol 3, schema 5): compaction on, folded retired epochs, reports ---------

FIXTURE_0_4 = Path(__file__).parent / "fixtures" / "release-0.4.0"
EXPECTED_0_4 = json.loads((FIXTURE_0_4 / "expected.json").read_text())
KEEP_FOR_ABSENT_MS = 30 * 86_400_000


def baseline_of(replica: Replica, share: str) -> dict:
    """B and every baseline row, siblings in dot order, as the fixture's script lists them."""
    rows = {
        f"{collection}/{key}": sorted(
            [actor, seq, hlc, bool(deleted), value and value.hex(), meta and meta.hex()]
            for actor, seq, hlc, deleted, value, meta in fields
        )
        for collection, key, fields in replica.store.baseline_fields(share)
    }
    return {"frontier": replica.store.baseline_frontier(share), "rows": rows}


def reports_of(replica: Replica, share: str) -> dict:
    return {
        device_id: [list(report.dot), report.vector, report.at_ms]
        for device_id, report in sorted(replica.stability_reports(share).items())
        if report is not None
    }


def own_epochs_with_heads(replica: Replica, share: str) -> list[str]:
    return sorted(a for a in replica.store.heads(share) if a.startswith(f"{replica.device_id}/"))


@pytest.mark.parametrize("device", ["device-a", "device-b"])
def test_a_0_4_state_dir_opens_with_every_record_conflict_baseline_row_and_report(tmp_path, device):
    replica = open_copy(tmp_path, device, FIXTURE_0_4)
    assert EXPECTED_0_4["schema"] == store.SCHEMA_VERSION == replica.store.schema_version
    for share in SHARES_0_3:
        held = EXPECTED_0_4["shares"][share]
        assert replica.summary_vector(share) == held["vector"], share
        live = {
            f"{collection}/{view.key}": [view.winner.value.hex(), len(view.siblings)]
            for collection in sorted({path.split("/", 1)[0] for path in held["records"]})
            for view in replica.scan(share, collection, limit=10_000)
        }
        assert live == held["records"], share
        for path, meta_hex in held["meta"].items():
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.winner.meta == bytes.fromhex(meta_hex), path
        for path in held["deleted"]:
            view = replica.get(share, *path.split("/", 1))
            assert view is not None and view.deleted, path
        for path in EXPECTED_0_4["purged"].get(share, []):
            assert replica.get(share, *path.split("/", 1)) is None, "purged stays purged"
        assert [f"{v.collection}/{v.key}" for v in replica.conflicts(share)] == held["conflicts"]
        assert baseline_of(replica, share) == held["baseline"], share
        assert reports_of(replica, share) == held["reports"], share
        assert replica.store.count_records(share) == len(held["records"]), share
    assert {d.device_id: d.name for d in replica.devices()} == EXPECTED_0_4["devices"]
    assert revocations(replica) == EXPECTED_0_4["revoked"]
    assert members_of(replica) == EXPECTED_0_4["share_members"]
    assert hidden_by_deletes(replica) == EXPECTED_0_4["deleted_values"][device], "watch's previous"
    assert {s: sorted(replica.store.heads(s)) for s in SHARES_0_3} == EXPECTED_0_4["heads"][device]
    assert replica.actor != EXPECTED_0_4["actors"][device], "a start writes as a new epoch"


def report_and_compact(replicas: list[Replica], rounds: int = 3) -> None:
    """As the fixture's script: each member reports, the reports reach all, each one folds."""
    for _ in range(rounds):
        for replica in replicas:
            for share in SHARES_0_3:
                replica.commit(share, [replica.stability_op(share)])
        for source in replicas:
            for target in replicas:
                if target is not source:
                    sync_shares(source, target)
        for replica in replicas:
            for share in SHARES_0_3:
                replica.compact(share, KEEP_FOR_ABSENT_MS)


def test_upgraded_0_4_devices_write_on_compact_drop_retired_heads_and_converge(tmp_path):
    a = open_copy(tmp_path, "device-a", FIXTURE_0_4)
    b = open_copy(tmp_path, "device-b", FIXTURE_0_4)
    retired = {
        name: own_epochs_with_heads(replica, SHARE)
        for name, replica in (("device-a", a), ("device-b", b))
    }
    assert all(len(epochs) > 1 for epochs in retired.values()), "0.4.0 kept retired ones"
    assert not any(r.reads_implied for r in a.stability_reports(SHARE).values() if r), "no `i`"
    first_report = msgpack.unpackb(a.stability_op(SHARE).value or b"")
    assert first_report["v"] == a.held_vector(SHARE), "every epoch, while B's report is 0.4.0's"
    a.commit(SHARE, [entry.put("shopping", "milk", msgpack.packb({"qty": 5}))])
    b.commit(SHARE, [entry.delete("notes", "n0")])
    b.commit(RECIPES, [entry.put("cards", "cake", msgpack.packb({"title": "Kuchen"}))])
    sync_shares(a, b)
    sync_shares(b, a)
    report_and_compact([a, b])
    for replica, name in ((a, "device-a"), (b, "device-b")):
        milk = replica.get(SHARE, "shopping", "milk")
        assert milk is not None and not milk.conflict, "the write after the upgrade resolved it"
        for path in ("notes/n0", "notes/n11", *EXPECTED_0_4["purged"][SHARE]):
            assert replica.get(SHARE, *path.split("/", 1)) is None, f"{path}: purged"
        assert replica.get(RECIPES, "cards", "cake") is not None
        assert revocations(replica) == EXPECTED_0_4["revoked"], "the cut stays"
        assert members_of(replica) == EXPECTED_0_4["share_members"], "the members stay"
        # the epochs 0.4.0's restarts retired (folded to their retirement) lose their heads
        assert own_epochs_with_heads(replica, SHARE) == [replica.actor], name
        first = entry.decode(replica.store.entry(SHARE, replica.actor, 1))
        assert [r[0] for r in first.retires] == [EXPECTED_0_4["actors"][name]]
    for share in SHARES_0_3:
        assert a.summary_vector(share) == b.summary_vector(share), share
        assert a.store.baseline_frontier(share) == b.store.baseline_frontier(share), share
        assert baseline_of(a, share) == baseline_of(b, share), share
        assert a.conflicts(share) == b.conflicts(share), share


def test_a_0_4_peer_session_is_understood_whole(tmp_path):
    """B's recorded 0.4.0 session (hello with `sw` and `sn`, vectors, entries past a compacted
    log, caught_up, direct, have, ping, pong, bye) decodes into the current session's events,
    and its entries apply to an upgraded A without a refusal."""
    frames = msgpack.unpackb((FIXTURE_0_4 / "frames-from-device-b.msgpack").read_bytes())
    a = open_copy(tmp_path, "device-a", FIXTURE_0_4)
    b_id = EXPECTED_0_4["device_ids"]["device-b"]
    connection = SyncConnection(a.device_id, b_id)
    heads = {s: a.chain_heads(s) for s in a.shares_for(b_id)}
    connection.send_hello(heads, a.actor, __version__, True)
    events = recorded_events(connection, frames)
    hello = events[0]
    assert isinstance(hello, PeerHello) and hello.device_id == b_id
    assert hello.shares == set(SHARES_0_3) and hello.actor == EXPECTED_0_4["actors"]["device-b"]
    assert hello.software == "0.4.0" and hello.snapshots, "0.4.0 says its release and `sn`"
    assert hello.version == EXPECTED_0_4["protocol"]
    apply_recorded(a, events, b_id)
    for share in SHARES_0_3:  # A held all of it already: nothing is applied twice
        assert a.summary_vector(share) == EXPECTED_0_4["shares"][share]["vector"], share
