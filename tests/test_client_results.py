"""Typed results (p2psync/client/results.py): read from a real conflict between two daemons, and
from answers shaped as protocol 1.0 says (fields an older daemon does not send are tolerated)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.client import (
    Client,
    CollectionInfo,
    ConflictsPage,
    Delete,
    Hello,
    Put,
    Record,
    ScanPage,
    Sibling,
    WriteResult,
)
from p2psync.client.results import (
    History,
    TypeSchema,
    collections_from_json,
    manifest_from_json,
)
from tests.client_daemon import require_1_0
from tests.daemons import DaemonProcess, introduce, running, wait_for_value


@pytest.fixture(scope="module")
def conflicted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Client]]:
    """Two daemons that wrote notes/meet and notes/pick apart and then met: both records are in
    conflict."""
    directory: Path = tmp_path_factory.mktemp("conflict")
    a = DaemonProcess(directory, "a")
    b = DaemonProcess(directory, "b", peers=[a.address])
    with running(a, b), Client(a.socket_path) as on_a, Client(b.socket_path) as on_b:
        for key in ("meet", "pick"):
            on_a.put("notes", key, {"from": "a"}, type="note", schema_version=1)
            on_b.put("notes", key, b"from b")
        introduce(a, b)
        wait_for_value(a, "notes", "pick", {"$base64": "ZnJvbSBi"})
        wait_for_value(b, "notes", "pick", {"from": "a"})
        yield on_a, on_b


def test_a_conflict_reads_as_a_record_with_typed_siblings(
    conflicted: tuple[Client, Client],
) -> None:
    on_a, on_b = conflicted
    record = on_a.get("notes", "meet")
    assert record.conflict and len(record.siblings) == 2
    seen_by_b = on_b.get("notes", "meet")
    assert [(s.value, s.origin, s.hlc) for s in record.siblings] == [
        (s.value, s.origin, s.hlc) for s in seen_by_b.siblings
    ]  # both pick the same winner
    assert record.winner == record.siblings[0]  # the winner comes first
    assert {s.origin for s in record.siblings} == {
        on_a.call("id")["device"],
        on_b.call("id")["device"],
    }
    by_value = {repr(s.value): s for s in record.siblings}
    from_a, from_b = by_value["{'from': 'a'}"], by_value["b'from b'"]
    assert (from_a.type, from_a.schema_version) == ("note", 1)
    assert (from_b.type, from_b.schema_version) == (None, None)
    listed = on_a.conflicts("notes")
    assert isinstance(listed, ConflictsPage) and not listed.more
    assert listed.items[0] == record and listed.items[1].key == "pick"


def test_a_sibling_can_be_picked_by_what_get_showed(conflicted: tuple[Client, Client]) -> None:
    on_a, _ = conflicted
    before = on_a.get("notes", "pick")
    loser = before.siblings[1]
    on_a.resolve("notes", "pick", pick=loser)  # by version (1.0), else by origin and hlc
    after = on_a.get("notes", "pick")
    assert not after.conflict and after.value == loser.value and after.type == loser.type


def test_versions_name_siblings_and_resolve_picks_by_version(tmp_path: Path) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b), Client(a.socket_path) as on_a, Client(b.socket_path) as on_b:
        require_1_0(a)
        on_a.put("c", "k", "a")
        on_b.put("c", "k", "b")
        introduce(a, b)
        wait_for_value(a, "c", "k", "b")
        record = on_a.get("c", "k")
        versions = [s.version for s in record.siblings]
        assert all(isinstance(v, str) and v for v in versions) and len(set(versions)) == 2
        assert record.version == versions[0]
        written = on_a.resolve("c", "k", pick=versions[1])
        resolved = on_a.get("c", "k")
        assert not resolved.conflict and resolved.value == record.siblings[1].value
        assert resolved.version == written.version


def test_from_json_reads_protocol_1_0_fields() -> None:
    shown = {
        "collection": "c",
        "key": "k",
        "value": {"$base64": "AQ=="},
        "version": "v2",
        "deleted": False,
        "conflict": True,
        "origin": "DEV",
        "hlc": 7,
        "type": "t",
        "schema_version": 3,
        "siblings": [
            {"version": "v2", "value": {"$base64": "AQ=="}, "origin": "DEV", "hlc": 7},
            {"version": "v1", "value": None, "deleted": True, "origin": "OTHER", "hlc": 5},
        ],
    }
    record = Record.from_json(shown)
    assert (record.value, record.version, record.type, record.schema_version) == (
        b"\x01",
        "v2",
        "t",
        3,
    )
    assert record.siblings[1] == Sibling(None, "v1", True, None, None, "OTHER", 5)
    written = WriteResult.from_json({"position": 4, "seq": 2, "hlc": 9, "version": "v9"})
    assert written == WriteResult(4, 2, 9, "v9")


def test_from_json_tolerates_what_an_older_daemon_leaves_out() -> None:
    record = Record.from_json({"collection": "c", "key": "k", "value": 1})
    assert record == Record("c", "k", 1)
    assert record.version is None and record.siblings == () and not record.conflict
    assert WriteResult.from_json({"position": 1, "seq": 1}).version is None
    page = ScanPage.from_json({"items": [{"collection": "c", "key": "k", "value": 1}]})
    assert page.next is None and page.items == (record,)
    with pytest.raises(ValueError):
        WriteResult.from_json({"position": True, "seq": 1})  # a bool is no position
    with pytest.raises(KeyError):
        WriteResult.from_json({"seq": 1})


def test_hello_and_collections_shapes() -> None:
    hello = Hello.from_json(
        {
            "protocol": "1.0",
            "daemon": "0.4.0",
            "device": "DEV",
            "capabilities": ["if_version", "watch_events"],
            "limits": {"line_bytes": 1048576, "in_flight": 128},
            "methods": ["get", "hello"],
        }
    )
    assert hello.capabilities == frozenset({"if_version", "watch_events"})
    assert hello.limits["in_flight"] == 128 and hello.methods == ("get", "hello")
    assert Hello.from_json({"protocol": "1.0"}).limits == {}
    expected = [CollectionInfo("notes", 2), CollectionInfo("todo", None)]
    listed = [{"collection": "notes", "records": 2}, {"name": "todo"}]
    assert collections_from_json({"collections": listed}) == expected
    assert collections_from_json(listed) == expected
    assert collections_from_json(["notes"]) == [CollectionInfo("notes")]


def test_a_manifest_reads_as_typed_schemas_by_type() -> None:
    found = {
        "share": "default",
        "types": [
            {"type": "todo", "current": 2, "oldest_written": 1, "json_schemas": {"2": {"a": 1}}}
        ],
    }
    assert manifest_from_json(found) == {"todo": TypeSchema("todo", 2, 1, {2: {"a": 1}})}
    assert manifest_from_json({}) == {}


def test_writes_send_only_what_was_given() -> None:
    assert Put("c", "k", None).params() == {"collection": "c", "key": "k", "value": None}
    assert Put("c", "k", 1, type="t", if_version="").params() == {
        "collection": "c",
        "key": "k",
        "value": 1,
        "type": "t",
        "if_version": "",
    }
    assert Delete("c", "k").params() == {"collection": "c", "key": "k"}


def test_history_shape() -> None:
    written = {
        "version": "v2",
        "origin": "DEV",
        "hlc": 99,
        "deleted": False,
        "value": {"$base64": "AAE="},
        "type": None,
        "schema_version": None,
        "position": 12,
        "current": True,
        "winner": True,
    }
    found = History.from_json({"versions": [written, {**written, "winner": False}], "more": True})
    assert found.more is True
    newest = found.versions[0]
    assert (newest.position, newest.current, newest.winner) == (12, True, True)
    assert newest.version.value == b"\x00\x01" and newest.version.version == "v2"
    assert found.versions[1].winner is False
    assert History.from_json({}) == History((), False)
