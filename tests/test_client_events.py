"""Typed watch events (p2psync/client/events.py): a real daemon's change events, the event kinds
of protocol 1.0 (peer, conflict...) between two real daemons, and reading each kind's line."""

from pathlib import Path

from p2psync.client import (
    CaughtUp,
    ChangeEvent,
    Client,
    ConflictEvent,
    Delete,
    Heartbeat,
    MembershipEvent,
    PeerEvent,
    Put,
    SyncedEvent,
    UnknownEvent,
)
from p2psync.client.events import OutdatedEvent, event_from_json, resume_position
from tests.client_daemon import require_1_0
from tests.daemons import DaemonProcess, introduce, running


def test_a_transaction_is_one_event_of_typed_changes(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "kitchen")
    with running(daemon), Client(daemon.socket_path) as client:
        client.put("c", "old", 0)
        done = client.transaction(
            [Put("c", "a", b"\x01", type="t", schema_version=2), Delete("c", "old")]
        )
        with client.watch(since=done.position - 1, collection="c", idle_timeout=10) as events:
            event = next(events)
        device = client.call("id")["device"]
    assert isinstance(event, ChangeEvent)
    assert (event.position, event.hlc, event.share) == (done.position, done.hlc, "default")
    put, deleted = event.changes
    assert (put.collection, put.key, put.op, put.value, put.deleted) == (
        "c",
        "a",
        "put",
        b"\x01",
        False,
    )
    assert (put.origin, put.type, put.schema_version) == (device, "t", 2)
    assert (deleted.op, deleted.deleted, deleted.value) == ("delete", True, None)


def test_peer_and_conflict_events_between_two_daemons(tmp_path: Path) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b), Client(a.socket_path) as on_a, Client(b.socket_path) as on_b:
        require_1_0(a)
        on_a.put("c", "k", "a")
        on_b.put("c", "k", "b")
        kinds = ["change", "peer", "conflict", "synced"]
        with on_a.watch(events=kinds, idle_timeout=20) as events:
            introduce(a, b)
            seen: dict[type, object] = {}
            for event in events:
                seen.setdefault(type(event), event)
                if {PeerEvent, ConflictEvent} <= set(seen):
                    break
        peer, conflict = seen[PeerEvent], seen[ConflictEvent]
        assert isinstance(peer, PeerEvent) and peer.connected
        assert peer.device == on_b.call("id")["device"]
        assert isinstance(conflict, ConflictEvent) and (conflict.collection, conflict.key) == (
            "c",
            "k",
        )
        assert not conflict.resolved
        ids = {on_a.call("id")["device"]: "a", on_b.call("id")["device"]: "b"}
        assert conflict.devices == ids  # both wrote a version, each named


def test_each_kind_of_line_reads_as_its_event() -> None:
    change = event_from_json(
        {
            "event": "change",
            "position": 3,
            "share": "default",
            "hlc": 9,
            "changes": [
                {
                    "collection": "c",
                    "key": "k",
                    "op": "delete",
                    "value": None,
                    "deleted": True,
                    "origin": "DEV",
                    "version": "v3",
                    "previous": {"was": {"$base64": "AQ=="}},
                }
            ],
        }
    )
    assert isinstance(change, ChangeEvent) and change.changes[0].version == "v3"
    assert change.changes[0].previous == {"was": b"\x01"}
    caught_up = event_from_json({"event": "caught_up", "position": 5})
    assert caught_up == CaughtUp(5, {"event": "caught_up", "position": 5})
    assert isinstance(event_from_json({"event": "heartbeat", "position": 5}), Heartbeat)
    peer = event_from_json({"event": "peer", "device": "D", "name": "n", "connected": False})
    assert isinstance(peer, PeerEvent) and not peer.connected and peer.name == "n"
    synced = event_from_json({"event": "synced", "device": "D", "share": "s"})
    assert isinstance(synced, SyncedEvent) and synced.share == "s"
    line = {"event": "conflict", "collection": "c", "key": "k", "state": "resolved", "position": 8}
    resolved = event_from_json(line)
    assert isinstance(resolved, ConflictEvent) and resolved.resolved and resolved.position == 8
    appeared = event_from_json({**line, "state": "appeared"})
    assert isinstance(appeared, ConflictEvent) and not appeared.resolved
    line = {"event": "membership", "change": "share_members", "share": "s", "added": ["D"]}
    member = event_from_json(line)
    assert isinstance(member, MembershipEvent) and member.change == "share_members"
    assert member.share == "s" and member.fields["added"] == ["D"]
    assert appeared.devices == {} and member.names == {}  # from a daemon before watch.names
    future = event_from_json({"event": "frobnicated", "type": "todo"})
    assert future == UnknownEvent("frobnicated", {"event": "frobnicated", "type": "todo"})


def test_an_outdated_line_reads_as_its_event() -> None:
    line = {"event": "outdated", "share": "s", "type": "todo", "schema_version": 3, "reads": 1}
    assert event_from_json(line) == OutdatedEvent("s", "todo", 3, 1, line)


def test_a_put_has_no_previous_value() -> None:
    line = {"event": "change", "position": 1, "changes": [{"op": "put", "value": 1}]}
    event = event_from_json(line)
    assert isinstance(event, ChangeEvent) and event.changes[0].previous is None


def test_which_events_move_the_resume_position() -> None:
    assert resume_position(ChangeEvent(4, "default", None, ())) == 4
    assert resume_position(CaughtUp(6, {})) == 6
    assert resume_position(Heartbeat(7, {})) == 7
    assert resume_position(PeerEvent("D", None, True, {})) is None
    # a conflict event is live only: it may come before the replay is done
    assert resume_position(ConflictEvent("s", "c", "k", False, 9, {})) is None


def test_a_daemon_names_the_devices_of_its_membership_events(tmp_path: Path) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "living room.tv")
    with running(a, b), Client(a.socket_path) as on_a:
        b_id = b.device_id
        with on_a.watch(events=["membership"], idle_timeout=20) as events:
            with on_a.pipeline() as batch:  # share_add at once finds the device just trusted
                batch.call("trust", cert=b.cert(), name=b.name)
                batch.call("share_create", share="photos")
                batch.call("share_add", share="photos", device=b_id)
            found: list[MembershipEvent] = []
            for event in events:
                if not isinstance(event, MembershipEvent):
                    continue  # caught_up
                found.append(event)
                # share_create and share_add may come as one change (added: both)
                if event.change == "share_members" and b_id in event.fields["added"]:
                    break
        a_id = on_a.call("id")["device"]
    added = next(e for e in found if e.change == "device_added")
    assert (added.device, added.name) == (b_id, "living room.tv")
    assert found[-1].names == {a_id: "a", b_id: "living room.tv"}


def test_conflict_and_membership_events_name_their_devices() -> None:
    conflict = event_from_json(
        {"event": "conflict", "share": "s", "collection": "c", "key": "k", "state": "appeared",
         "position": 3,
         "devices": [{"device": "A", "name": "Küche"}, {"device": "B", "name": None}]}
    )  # fmt: skip
    assert isinstance(conflict, ConflictEvent) and conflict.devices == {"A": "Küche", "B": None}
    member = event_from_json(
        {"event": "membership", "change": "share_members", "share": "s", "members": ["A"],
         "added": ["A"], "removed": ["B"], "names": {"A": "Küche", "B": "living room.tv"}}
    )  # fmt: skip
    assert isinstance(member, MembershipEvent)
    assert member.names == {"A": "Küche", "B": "living room.tv"}
