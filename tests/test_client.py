"""The blocking client (p2psync/client/blocking.py) against a real daemon subprocess, and against
bare socket servers for what a daemon would not do (count requests, speak an older protocol).
Connecting and broken connections are tests/test_client_connection.py's."""

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from p2psync.client import (
    BadRequest,
    CaughtUp,
    ChangeEvent,
    Client,
    ClientError,
    Conflict,
    ControlError,
    Delete,
    Forbidden,
    Heartbeat,
    InvalidValue,
    NotFound,
    NotRunning,
    OutdatedEvent,
    PairingFailed,
    Put,
    Record,
    Sibling,
    Timeout,
    TooLarge,
    UnknownMethod,
    WriteResult,
)
from tests.client_daemon import collection_for, require_1_0, shared_daemon
from tests.daemons import DaemonProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    yield from shared_daemon(tmp_path_factory)


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Client]:
    with Client(daemon.socket_path, timeout=20) as opened:
        yield opened


@pytest.fixture
def collection(request: pytest.FixtureRequest) -> str:
    return collection_for(request)


# typed calls ------------------------------------------------------------------------------------


def test_typed_calls_return_dataclasses(client: Client, collection: str) -> None:
    written = client.put(collection, "a", {"items": ["milk"]}, type="list", schema_version=2)
    assert isinstance(written, WriteResult) and written.position >= 1 and written.seq >= 1
    record = client.get(collection, "a")
    assert isinstance(record, Record)
    assert (record.collection, record.key, record.value) == (collection, "a", {"items": ["milk"]})
    assert (record.type, record.schema_version, record.hlc) == ("list", 2, written.hlc)
    assert record.origin == client.call("id")["device"]
    assert not record.deleted and not record.conflict and record.siblings == ()
    client.put(collection, "null", None)
    assert client.get(collection, "null").value is None  # null is a value


def test_history_gives_each_write_newest_first(client: Client, collection: str) -> None:
    first = client.put(collection, "h", 1)
    last = client.put(collection, "h", b"\x00")
    found = client.history(collection, "h")
    assert [v.version.version for v in found.versions] == [last.version, first.version]
    assert [v.version.value for v in found.versions] == [b"\x00", 1]
    assert [(v.current, v.winner) for v in found.versions] == [(True, True), (False, False)]
    assert client.history(collection, "h", limit=1).more is True


def test_scan_pages_and_scan_all(client: Client, collection: str) -> None:
    client.put_many((collection, f"k{n:02}", n) for n in range(25))
    first = client.scan(collection, limit=10)
    assert [r.key for r in first.items] == [f"k{n:02}" for n in range(10)]
    assert first.next == "k09"
    assert client.scan(collection, after=first.next, limit=10).items[0].key == "k10"
    assert [r.value for r in client.scan_all(collection, page_size=7)] == list(range(25))
    assert [r.key for r in client.scan_all(collection, prefix="k1")] == [
        f"k{n}" for n in range(10, 20)
    ]


def test_transaction_delete_and_tombstones(client: Client, collection: str) -> None:
    client.put(collection, "old", 0)
    done = client.transaction(
        [Put(collection, "a", 1), Put(collection, "b", "two", type="t"), Delete(collection, "old")]
    )
    assert client.get(collection, "b").type == "t"
    with pytest.raises(NotFound, match="deleted"):
        client.get(collection, "old")
    tombstone = client.get(collection, "old", all_versions=True)
    assert tombstone.deleted and tombstone.hlc == done.hlc
    deleted = client.delete(collection, "a")
    assert deleted.position > done.position
    assert [r.key for r in client.scan(collection).items] == ["b"]
    assert client.conflicts(collection).items == () and not client.conflicts(collection).more


def test_raw_calls_keep_the_daemons_json(client: Client, collection: str) -> None:
    client.put(collection, "bytes", b"\x00\xff")
    assert client.call("get", collection=collection, key="bytes")["value"] == {"$base64": "AP8="}
    assert client.get(collection, "bytes").value == b"\x00\xff"


def test_bytes_go_both_ways(client: Client, collection: str) -> None:
    value = {"blob": b"\x00\x01\xfe", "list": [bytearray(b"ab"), memoryview(b"cd")], "text": "t"}
    client.put(collection, "k", value)
    assert client.get(collection, "k").value == {
        "blob": b"\x00\x01\xfe",
        "list": [b"ab", b"cd"],
        "text": "t",
    }
    with client.watch(since=0, collection=collection, idle_timeout=10) as events:
        change = next(events)
    assert isinstance(change, ChangeEvent) and change.changes[0].value["blob"] == b"\x00\x01\xfe"


def test_values_json_cannot_carry_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(TypeError, match="set"):
        client.put("c", "k", {1, 2})
    with pytest.raises(ValueError, match="finite"):
        client.put("c", "k", float("nan"))
    assert client.call("id")["name"] == "kitchen"  # nothing half-sent: the connection is fine


# errors, each from a real answer ----------------------------------------------------------------


def test_each_refusal_is_its_own_class_and_the_connection_survives(
    client: Client, collection: str, daemon: DaemonProcess
) -> None:
    client.put(collection, "k", 1)
    with pytest.raises(NotFound) as missing:
        client.get(collection, "nope")
    assert missing.value.code == "not_found" and f"{collection}/nope" in missing.value.message
    with pytest.raises(UnknownMethod) as unknown:
        client.call("frobnicate")
    assert unknown.value.code == "unknown_method"
    with pytest.raises(BadRequest, match="reserved"):
        client.put("_devices", "k", 1)
    with pytest.raises(BadRequest, match="missing parameter 'key'"):
        client.call("get", collection=collection)
    with pytest.raises(TooLarge) as large:
        client.put(collection, "big", "x" * (1 << 20))
    assert large.value.code == "too_large"
    assert client.get(collection, "k").value == 1  # every refusal left the connection usable
    assert isinstance(missing.value, ControlError) and isinstance(missing.value, ClientError)


def test_forbidden_conflict_and_pairing_failed(client: Client, collection: str) -> None:
    client.call("share_create", share=collection)
    client.call("share_leave", share=collection)
    with pytest.raises(Forbidden) as left:
        client.put(collection, "k", 1, share=collection)
    assert left.value.code == "forbidden" and "not a member" in left.value.message
    client.put(collection, "k", 1)
    gone = Sibling(None, origin=client.get(collection, "k").origin, hlc=1)  # never written
    with pytest.raises(Conflict) as picked:
        client.resolve(collection, "k", pick=gone)
    assert picked.value.code == "conflict"
    with socket.socket() as closed:  # a port nobody listens on: the inviter cannot be reached
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(PairingFailed) as pairing:
        client.call("join", code="7-guitar-orbit", address=f"127.0.0.1:{port}")
    assert pairing.value.code == "pairing_failed"


@contextmanager
def daemon_before_1_0(path: Path) -> Iterator[list[str]]:
    """A server that answers like a 0.2 daemon: no `hello` (unknown_method), every other request
    ok; it notes the methods it was sent."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    methods: list[str] = []

    def serve() -> None:
        connection, _ = server.accept()
        with connection, connection.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                methods.append(request["method"])
                error = {"code": "unknown_method", "message": "no method 'hello'"}
                answer = (
                    {"id": request.get("id"), "ok": False, "error": error}
                    if request["method"] == "hello"
                    else {"id": request.get("id"), "ok": True, "result": {"position": 1}}
                )
                connection.sendall(json.dumps(answer).encode() + b"\n")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield methods
    finally:
        thread.join(20)
        server.close()


def test_if_version_is_refused_by_a_daemon_that_would_ignore_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sock"
    with daemon_before_1_0(path) as methods, Client(path, timeout=10) as client:
        with pytest.raises(UnknownMethod, match="if_version"):
            client.put("c", "k", "overwritten", if_version="")
        with pytest.raises(UnknownMethod, match="if_version"):
            client.delete("c", "k", if_version="v")
        client.call("put", collection="c", key="k", value="plain")
    assert "put" in methods and "delete" not in methods, "conditional writes were never sent"
    assert methods.count("put") == 1


# pipelining -------------------------------------------------------------------------------------


def test_pipeline_answers_in_order_and_reads_see_earlier_writes(
    client: Client, collection: str
) -> None:
    with client.pipeline(raise_errors=False) as batch:
        writes = [batch.put(collection, "k", n) for n in range(300)]
        read = batch.get(collection, "k")
        missing = batch.get(collection, "missing")
        after = batch.put(collection, "after", True)
        assert len(writes) == 300  # queued at once; answers come at the end of the block
    positions = [w.result().position for w in writes]
    assert positions == sorted(positions) and len(set(positions)) == 300
    assert read.result().value == 299
    assert isinstance(missing.error, NotFound)
    with pytest.raises(NotFound):
        missing.result()
    assert after.result().position > positions[-1]  # an error does not stop what follows


def test_pipeline_raises_its_first_error_once_every_answer_is_in(
    client: Client, collection: str
) -> None:
    with pytest.raises(NotFound), client.pipeline() as batch:
        batch.get(collection, "missing")
        last = batch.put(collection, "last", 1)
    assert last.result().position >= 1 and client.get(collection, "last").value == 1


def test_a_call_inside_a_pipeline_goes_out_after_its_requests(
    client: Client, collection: str
) -> None:
    with client.pipeline() as batch:
        queued = [batch.put(collection, "k", n) for n in range(5)]
        assert client.get(collection, "k").value == 4  # the pipeline's answers were read first
        assert all(answer.done for answer in queued)


def test_put_many_takes_puts_and_tuples_and_generators(client: Client, collection: str) -> None:
    written = client.put_many(
        [Put(collection, "typed", 1, type="t"), (collection, "plain", b"\x01")], share="default"
    )
    assert [type(w) for w in written] == [WriteResult, WriteResult]
    assert client.get(collection, "typed").type == "t"
    assert client.get(collection, "plain").value == b"\x01"
    many = client.put_many((collection, f"g{n}", n) for n in range(1000))
    assert [w.position for w in many] == sorted(w.position for w in many)
    with pytest.raises(BadRequest, match="reserved"):
        client.put_many([(collection, "x", 1), ("_devices", "y", 2), (collection, "z", 3)])
    assert client.get(collection, "z").value == 3  # the others were written


@contextmanager
def counting_server(path: Path, window: int) -> Iterator[dict[str, Any]]:
    """A server that answers only when `window` requests wait for their answers (then the three
    oldest), or everything once a request of method `last` came; it notes the most requests it
    ever saw unanswered."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: dict[str, Any] = {"most_unanswered": 0, "requests": 0}

    def answer(connection: socket.socket, requests: list[dict[str, Any]]) -> None:
        lines = [{"id": r["id"], "ok": True, "result": r.get("n")} for r in requests]
        connection.sendall(b"".join(json.dumps(line).encode() + b"\n" for line in lines))

    def serve() -> None:
        connection, _ = server.accept()
        unanswered: list[dict[str, Any]] = []
        buffer = b""
        with connection:
            while chunk := connection.recv(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                unanswered += [json.loads(line) for line in lines]
                seen["requests"] += len(lines)
                seen["most_unanswered"] = max(seen["most_unanswered"], len(unanswered))
                if unanswered and unanswered[-1]["method"] == "last":
                    answer(connection, unanswered)
                    unanswered = []
                elif len(unanswered) >= window:
                    answer(connection, unanswered[:3])
                    del unanswered[:3]

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield seen
    finally:
        thread.join(20)
        server.close()


@pytest.mark.parametrize("window", [8, 128])
def test_pipelines_keep_the_window_full_and_never_exceed_it(tmp_path: Path, window: int) -> None:
    path = tmp_path / "s.sock"
    with counting_server(path, window) as seen, Client(path, timeout=10, window=window) as client:
        with client.pipeline() as batch:
            answers = [batch.call("echo", n=n) for n in range(500)]
            batch.call("last")
        assert [a.result() for a in answers] == list(range(500))
    assert seen["requests"] == 501
    assert seen["most_unanswered"] == window  # filled, never exceeded


# watch ------------------------------------------------------------------------------------------


def test_watch_gives_typed_events_and_resumes_from_its_position(
    client: Client, collection: str
) -> None:
    start = client.put(collection, "first", 0).position
    with client.watch(since=start - 1, collection=collection, idle_timeout=10) as events:
        assert events.position == start - 1
        written = [client.put(collection, "k", n).position for n in range(3)]
        client.delete(collection, "k")
        seen = _changes(events, 5)
        resume = events.position
    assert [e.position for e in seen[:4]] == [start, *written]
    assert seen[0].changes[0].key == "first" and seen[0].share == "default"
    assert seen[4].changes[0].op == "delete" and seen[4].changes[0].deleted
    assert resume == seen[4].position
    with client.watch(since=written[0], collection=collection, idle_timeout=10) as events:
        again = [e.position for e in _changes(events, 2)]
    assert again == written[1:]
    with pytest.raises(BadRequest):
        client.watch(since=10**9)


def _changes(events: Iterator[Any], count: int) -> list[ChangeEvent]:
    found: list[ChangeEvent] = []
    while len(found) < count:
        event = next(events)
        if isinstance(event, ChangeEvent):
            found.append(event)
    return found


def test_schema_manifest_refused_writes_filters_and_outdated_events(
    client: Client, collection: str
) -> None:
    kind = f"{collection}-todo"  # the daemon is shared: a type of this test's own
    schema = {"type": "object", "required": ["title"]}
    assert client.schema_set(kind, 2, json_schema=schema).json_schemas == {2: schema}
    assert client.schema_get()[kind].current == 2
    with pytest.raises(InvalidValue, match=r"at \$: 'title' is a required property"):
        client.put(collection, "bad", {}, type=kind, schema_version=2)
    client.put(collection, "v1", {"title": "a"}, type=kind, schema_version=1)
    client.put(collection, "v2", {"title": "b"}, type=kind, schema_version=2)
    page = client.scan(collection, type=kind, min_schema_version=2)
    assert [record.key for record in page.items] == ["v2"]
    reader = client.watch(
        collection=collection, reads={kind: 1}, type=kind, max_schema_version=1, idle_timeout=10
    )
    with reader as events:
        outdated = next(events)
        assert isinstance(outdated, OutdatedEvent)
        assert (outdated.type, outdated.schema_version, outdated.reads) == (kind, 2, 1)
        assert isinstance(next(events), CaughtUp)
        client.put(collection, "v1b", {"title": "c"}, type=kind, schema_version=1)
        client.put(collection, "v2b", {"title": "d"}, type=kind, schema_version=2)
        (change,) = _changes(events, 1)
        assert [c.key for c in change.changes] == ["v1b"]


def test_watch_idle_timeout(client: Client) -> None:
    with client.watch(idle_timeout=0.05) as events, pytest.raises(Timeout) as idle:
        while True:  # a 1.0 daemon first says it caught up
            next(events)
    assert idle.value.code == "timeout"


def test_generic_stream_gives_its_first_answer_then_raw_lines(
    client: Client, collection: str
) -> None:
    written = client.put(collection, "k", b"\x01").position
    with client.stream("watch", since=written - 1, collection=collection, idle_timeout=5) as lines:
        assert lines.result == {"position": written - 1}
        line = next(lines)
    assert line["event"] == "change" and line["changes"][0]["value"] == {"$base64": "AQ=="}


def test_watch_reconnects_after_a_restart_without_missing_or_repeating(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "restarting")
    with _running(daemon), Client(daemon.socket_path, timeout=20) as client:
        before = client.put("c", "before", 1).position
        events = client.watch(since=before - 1, collection="c", reconnect=True, idle_timeout=20)
        with events:
            assert _changes(events, 1)[0].changes[0].key == "before"
            daemon.stop()
            daemon.start()
            after = client.put("c", "after", 2).position  # a new connection, by itself
            resumed = _changes(events, 1)[0]
        assert resumed.position == after and resumed.changes[0].key == "after"


@contextmanager
def _running(daemon: DaemonProcess) -> Iterator[None]:
    daemon.start()
    try:
        yield
    finally:
        daemon.kill()


def test_watch_without_reconnect_says_the_daemon_went_away(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "stopping")
    with _running(daemon), Client(daemon.socket_path).watch(idle_timeout=20) as events:
        daemon.stop()
        with pytest.raises(NotRunning, match="closed the connection"):
            while True:  # a 1.0 daemon may have said it caught up before it stopped
                next(events)


# protocol 1.0 -----------------------------------------------------------------------------------


def test_hello_describes_the_daemon(client: Client, daemon: DaemonProcess) -> None:
    require_1_0(daemon)
    hello = client.hello()
    assert hello.protocol.startswith("1.")
    assert hello.device == client.call("id")["device"]
    assert {"get", "put", "watch", "hello", "collections"} <= set(hello.methods)
    assert hello.daemon and hello.limits


def test_if_version_compares_and_sets(
    client: Client, collection: str, daemon: DaemonProcess
) -> None:
    require_1_0(daemon)
    created = client.put(collection, "k", 1, if_version="")
    assert created.version and client.get(collection, "k").version == created.version
    with pytest.raises(ControlError) as taken:
        client.put(collection, "k", 2, if_version="")
    assert taken.value.code == "conflict"
    updated = client.put(collection, "k", 2, if_version=created.version)
    with pytest.raises(ControlError) as stale:
        client.delete(collection, "k", if_version=created.version)
    assert stale.value.code == "conflict" and client.get(collection, "k").value == 2
    client.delete(collection, "k", if_version=updated.version)
    with pytest.raises(NotFound):
        client.get(collection, "k")


def test_unknown_parameters_are_bad_requests(client: Client, daemon: DaemonProcess) -> None:
    require_1_0(daemon)
    with pytest.raises(BadRequest, match="limt"):
        client.call("scan", collection="c", limt=1)


def test_watch_says_when_it_caught_up_and_sends_heartbeats(
    client: Client, collection: str, daemon: DaemonProcess
) -> None:
    require_1_0(daemon)
    written = client.put_many((collection, f"k{n}", n) for n in range(3))
    positions = sorted({w.position for w in written})  # pipelined writes may share an entry
    with client.watch(since=0, collection=collection, heartbeat=1, idle_timeout=10) as events:
        replayed = _changes(events, len(positions))
        caught_up = next(events)
        assert isinstance(caught_up, CaughtUp) and caught_up.position >= written[-1].position
        beat = next(events)
        assert isinstance(beat, Heartbeat) and beat.position >= caught_up.position
        assert events.position >= caught_up.position
    assert [e.position for e in replayed] == positions
    assert sorted(c.key for e in replayed for c in e.changes) == ["k0", "k1", "k2"]


def test_deletes_carry_the_previous_value(
    client: Client, collection: str, daemon: DaemonProcess
) -> None:
    require_1_0(daemon)
    written = client.put(collection, "k", {"was": b"\x01"})
    client.delete(collection, "k")
    with client.watch(since=written.position, collection=collection, idle_timeout=10) as events:
        deletion = _changes(events, 1)[0]
    assert deletion.changes[0].deleted and deletion.changes[0].previous == {"was": b"\x01"}


def test_collections_are_listed_with_counts(
    client: Client, collection: str, daemon: DaemonProcess
) -> None:
    require_1_0(daemon)
    client.put_many([(collection, "a", 1), (collection, "b", 2)])
    counts = {info.name: info.records for info in client.collections()}
    assert counts[collection] == 2
