import itertools

import msgpack
import pytest

from p2psync import entry, identity
from p2psync.merge import Precondition
from p2psync.replica import Replica, VersionConflict
from p2psync.shares import DEFAULT_SHARE as SHARE

_identities = [identity.DeviceIdentity.generate() for _ in range(5)]


class FakeClock:
    """Wall clocks of several devices, each a little off, advancing on every read."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


def household(count: int, path_of=lambda i: ":memory:") -> list[Replica]:
    replicas = [
        Replica.open(path_of(i), _identities[i], FakeClock(1_000_000 + 7 * i)) for i in range(count)
    ]
    for replica in replicas:
        others = [r for r in replicas if r is not replica]
        if others:
            ops = [replica.device_op(r.identity.cert_pem, f"dev{i}") for i, r in enumerate(others)]
            replica.commit(SHARE, ops)
    return replicas


def put(replica, key, value, collection="notes"):
    return replica.commit(SHARE, [entry.put(collection, key, msgpack.packb(value))])


def all_items(replica):
    items, _ = replica.entries_after(SHARE, 0, {}, max_bytes=1 << 30)
    return items


def sync(source, target):
    cursor = target_cursor = source.cursor_for(SHARE, target.summary_vector(SHARE))
    while True:
        items, cursor = source.entries_after(SHARE, cursor, target.summary_vector(SHARE))
        if not items:
            break
        target.apply(SHARE, items)
    return target_cursor


def converge(replicas):
    for _ in range(len(replicas)):
        for source, target in itertools.permutations(replicas, 2):
            sync(source, target)


def state(replica):
    records = {}
    for collection in ("notes", "conflict", "_devices"):
        after = None
        while page := replica.scan(SHARE, collection, after=after, limit=50):
            for view in page:
                records[(collection, view.key)] = (
                    sorted((s.actor, s.seq, s.value) for s in view.siblings),
                    view.winner.dot,
                )
            after = page[-1].key
    conflicts = [(v.collection, v.key, v.winner.dot) for v in replica.conflicts(SHARE)]
    return records, conflicts


def test_local_writes_read_back_with_winner_and_change_feed():
    (replica,) = household(1)
    start = replica.last_position()
    put(replica, "a", {"title": "milk"})
    replica.commit(SHARE, [entry.put("notes", "b", msgpack.packb(2)), entry.delete("notes", "a")])
    assert replica.get(SHARE, "notes", "a").deleted
    assert msgpack.unpackb(replica.get(SHARE, "notes", "b").winner.value) == 2
    assert [v.key for v in replica.scan(SHARE, "notes")] == ["b"]
    changes = replica.changes(start)
    assert [(c.op.key, c.op.kind) for c in changes] == [("a", "p"), ("b", "p"), ("a", "d")]
    assert changes[0].lseq < changes[1].lseq == changes[2].lseq


def test_scan_pages_by_prefix():
    (replica,) = household(1)
    replica.commit(
        SHARE,
        [entry.put("notes", f"k{i:02}", b"\x01") for i in range(25)]
        + [entry.put("notes", "z", b"\x01")],
    )
    first = replica.scan(SHARE, "notes", prefix="k", limit=10)
    rest = replica.scan(SHARE, "notes", prefix="k", after=first[-1].key, limit=100)
    assert [v.key for v in first + rest] == [f"k{i:02}" for i in range(25)]


def test_preconditions_compare_the_winner_version_and_say_what_it_is():
    (replica,) = household(1)
    written = put(replica, "a", 1)
    replica.check_preconditions(SHARE, [Precondition("notes", "a", written.version)])
    replica.check_preconditions(SHARE, [Precondition("notes", "none", "")])
    with pytest.raises(VersionConflict) as stale:
        replica.check_preconditions(SHARE, [Precondition("notes", "a", "old", "ops[3]: ")])
    assert str(stale.value) == (
        f"ops[3]: notes/a has changed: it is at version {written.version!r}, not 'old'; "
        "read it again"
    )
    with pytest.raises(VersionConflict, match="exists, at version"):
        replica.check_preconditions(SHARE, [Precondition("notes", "a", "")])
    with pytest.raises(VersionConflict, match="does not exist"):
        replica.check_preconditions(SHARE, [Precondition("notes", "none", written.version)])
    deleted = replica.commit(SHARE, [entry.delete("notes", "a")])
    replica.check_preconditions(SHARE, [Precondition("notes", "a", "")])  # deleted: as absent
    replica.check_preconditions(SHARE, [Precondition("notes", "a", deleted.version)])


def test_two_replicas_converge_and_concurrent_writes_become_siblings():
    left, right = household(2)
    put(left, "a", "from left")
    put(right, "a", "from right")
    converge([left, right])
    assert state(left) == state(right)
    view = left.get(SHARE, "notes", "a")
    assert view.conflict and len(view.siblings) == 2
    put(left, "a", "resolved")
    converge([left, right])
    assert not right.get(SHARE, "notes", "a").conflict
    assert msgpack.unpackb(right.get(SHARE, "notes", "a").winner.value) == "resolved"


def test_relay_through_a_middle_replica_preserves_bytes_and_unknown_fields():
    a, b, c = household(3)
    a.commit(
        SHARE,
        [
            entry.put(
                "notes", "x", msgpack.packb(1), type="note", schema_version=3, future_field=[1]
            )
        ],
    )
    converge([a, b])
    converge([b, c])
    from_a = [raw for raw, _ in all_items(a) if entry.decode(raw).actor == a.actor]
    from_c = [raw for raw, _ in all_items(c) if entry.decode(raw).actor == a.actor]
    assert from_a == from_c
    meta = msgpack.unpackb(c.get(SHARE, "notes", "x").winner.meta)
    assert meta == {"future_field": [1], "schema_version": 3, "type": "note"}


def test_an_up_to_date_peer_costs_nothing_to_check():
    a, b = household(2)
    put(a, "a", 1)
    converge([a, b])
    cursor = a.cursor_for(SHARE, b.summary_vector(SHARE))
    assert cursor == a.last_position()
    assert a.entries_after(SHARE, cursor, b.summary_vector(SHARE)) == ([], cursor)


def test_each_start_writes_as_a_new_epoch_that_retires_the_last_and_keeps_the_clock(tmp_path):
    path = tmp_path / "replica.db"
    first = Replica.open(path, _identities[0], FakeClock(1))
    put(first, "a", 1)
    actor, clock = first.actor, first.get(SHARE, "notes", "a").winner.hlc
    first.close()
    again = Replica.open(path, _identities[0], FakeClock(0))
    assert again.actor != actor and again.device_id == first.device_id
    assert put(again, "b", 2).hlc > clock, "the clock never runs backwards across restarts"
    first_of_epoch = entry.decode(again.store.entry(SHARE, again.actor, 1))
    assert [(a, n) for a, n, _ in first_of_epoch.retires] == [(actor, 1)]
    again.close()
    from p2psync.replica import ReplicaError

    with pytest.raises(ReplicaError, match="belongs to device"):
        Replica.open(path, _identities[1])


def test_membership_records_list_devices_and_revocation_is_sticky():
    a, b = household(2)
    device = next(d for d in a.devices() if d.device_id == b.device_id)
    assert not device.revoked and device.added_by == a.device_id
    a.commit(SHARE, [a.revocation_op(device)])
    b.commit(SHARE, [b.device_op(b.identity.cert_pem, "renamed")])
    converge([a, b])
    for replica in (a, b):
        assert next(d for d in replica.devices() if d.device_id == b.device_id).revoked


def test_a_replica_restored_from_a_backup_starts_a_new_epoch_and_recovers_its_tail(tmp_path):
    import sqlite3

    path = tmp_path / "device.db"
    device = Replica.open(path, _identities[0], FakeClock(10))
    peer = Replica.open(":memory:", _identities[1], FakeClock(20))
    device.commit(SHARE, [device.device_op(peer.identity.cert_pem, "peer")])
    peer.commit(SHARE, [peer.device_op(device.identity.cert_pem, "device")])
    put(device, "a", 1)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(backup) as copy:
        device.store._db.backup(copy)
    put(device, "b", 2)
    converge([device, peer])
    old_actor = device.actor
    device.close()

    restored = Replica.open(backup, _identities[0], FakeClock(30))
    new_actor = restored.actor
    assert new_actor != old_actor and new_actor.startswith(restored.device_id)
    put(restored, "c", 3)  # writes before it meets the peer: still no (actor, seq) reused
    converge([restored, peer])
    assert msgpack.unpackb(restored.get(SHARE, "notes", "b").winner.value) == 2, "tail recovered"
    assert peer.get(SHARE, "notes", "c").winner.actor == new_actor
    assert state(restored) == state(peer)
    notices = [n for n in peer.notices.values() if n.device_id == restored.device_id]
    assert [n.kind for n in notices] == ["restored"], "the peer says the device was restored"
