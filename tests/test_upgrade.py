"""Upgrades from release 0.1.0: its state dir opens with nothing lost, and a 0.1.0 peer is told
which release to upgrade to (fixtures made by 0.1.0's own code, see tests/fixtures/)."""

import json
import shutil
from pathlib import Path

import msgpack
import pytest

from p2psync import entry, keystore, wire
from p2psync.replica import DEFAULT_SHARE as SHARE
from p2psync.replica import Replica
from p2psync.session import Bye, ProtocolError, SyncConnection

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def open_copy(tmp_path: Path, device: str) -> Replica:
    state_dir = tmp_path / device
    shutil.copytree(FIXTURE / device, state_dir)
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
    assert "upgrade p2psync on " + b_id + " to 0.2.0 or newer" in refused.value.reason
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
