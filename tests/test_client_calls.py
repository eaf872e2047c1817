"""What each method sends (p2psync/client/calls.py): only the parameters given, picks by version
or by origin and hlc, and a Pipeline's queue and Pending answers."""

import json
from typing import Any

import pytest

from p2psync.client import ClientError, NotFound, Pending, Pipeline, Put, Sibling
from p2psync.client import calls as requests
from p2psync.client.calls import Call, WatchOptions


def sent(call: Call[Any], request_id: int = 7) -> dict[str, Any]:
    line = call.line(request_id)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded: dict[str, Any] = json.loads(line)
    return decoded


def test_only_given_parameters_go_out() -> None:
    assert sent(requests.get("c", "k", all_versions=False, share=None)) == {
        "id": 7,
        "method": "get",
        "collection": "c",
        "key": "k",
    }
    assert sent(requests.get("c", "k", all_versions=True, share="s"))["all"] is True
    scan = sent(requests.scan("c", prefix=None, after="a", limit=5, deleted=False, share=None))
    assert scan == {"id": 7, "method": "scan", "collection": "c", "after": "a", "limit": 5}
    assert sent(requests.conflicts(None, share=None)) == {"id": 7, "method": "conflicts"}
    put = requests.put("c", "k", None, type=None, schema_version=None, if_version=None, share=None)
    assert sent(put) == {"id": 7, "method": "put", "collection": "c", "key": "k", "value": None}
    assert put.needs is None


def test_what_an_older_daemon_would_ignore_is_marked() -> None:
    put = requests.put("c", "k", 1, type=None, schema_version=None, if_version="", share=None)
    assert put.needs == "if_version" and sent(put)["if_version"] == ""
    assert requests.delete("c", "k", if_version="v", share=None).needs == "if_version"
    assert requests.transaction([Put("c", "k", 1, if_version="v")], share=None).needs
    assert requests.transaction([Put("c", "k", 1)], share=None).needs is None
    assert requests.scan("c", prefix=None, after=None, limit=None, deleted=True, share=None).needs
    watch = WatchOptions(events=("peer",), heartbeat=5).call(3)
    assert watch.needs and sent(watch) == {
        "id": 7,
        "method": "watch",
        "since": 3,
        "events": ["peer"],
        "heartbeat": 5,
    }
    assert WatchOptions(collection="c").call(None).needs is None


def test_transactions_name_each_op() -> None:
    ops = sent(requests.transaction([Put("c", "a", 1, type="t")], share="s"))
    assert ops["ops"] == [{"op": "put", "collection": "c", "key": "a", "value": 1, "type": "t"}]
    assert ops["share"] == "s"
    with pytest.raises(TypeError, match="Put and Delete"):
        requests.transaction([("c", "k", 1)], share=None)  # type: ignore[list-item]


def test_resolve_takes_a_value_or_a_pick() -> None:
    merged = sent(requests.resolve("c", "k", value=None))
    assert merged["value"] is None and "pick" not in merged
    assert sent(requests.resolve("c", "k", pick="v1"))["pick"] == {"version": "v1"}
    versioned = Sibling("x", version="v2", origin="D", hlc=3)
    assert sent(requests.resolve("c", "k", pick=versioned))["pick"] == {"version": "v2"}
    unversioned = Sibling("x", origin="D", hlc=3)  # from a daemon before 1.0
    assert sent(requests.resolve("c", "k", pick=unversioned))["pick"] == {"origin": "D", "hlc": 3}
    with pytest.raises(ValueError, match="either"):
        requests.resolve("c", "k")
    with pytest.raises(ValueError, match="either"):
        requests.resolve("c", "k", value=1, pick="v1")
    with pytest.raises(ValueError, match="neither a version"):
        requests.resolve("c", "k", pick=Sibling("x"))


def test_a_value_that_cannot_be_sent_fails_when_the_call_is_made() -> None:
    with pytest.raises(TypeError):
        Pipeline().put("c", "k", object())


def test_a_pipeline_queues_calls_with_pending_answers() -> None:
    batch = Pipeline()
    written = batch.put("c", "k", 1)
    read = batch.get("c", "k")
    batch.call("status")
    assert len(batch) == 3
    taken = batch.take()
    assert [call.method for call, _ in taken] == ["put", "get", "status"] and len(batch) == 0
    assert taken[0][1] is written and not written.done
    with pytest.raises(ClientError, match="flush"):
        written.result()
    read.set_error(NotFound("gone"))
    with pytest.raises(NotFound):
        read.result()
    answered: Pending[int] = Pending()
    answered.set_result(5)
    assert answered.done and answered.result() == 5 and answered.error is None


def test_history_sends_the_record_and_only_what_was_given() -> None:
    assert sent(requests.history("c", "k", limit=None, share=None)) == {
        "id": 7,
        "method": "history",
        "collection": "c",
        "key": "k",
    }
    given = sent(requests.history("c", "k", limit=5, share="s"))
    assert (given["limit"], given["share"]) == (5, "s")


def test_schema_calls_type_filters_and_a_watch_that_declares_what_it_reads() -> None:
    filtered = requests.type_filter("todo", 2, None)
    scan = requests.scan(
        "c", prefix=None, after=None, limit=None, deleted=False, share=None, types=filtered
    )
    assert sent(scan) == {
        "id": 7,
        "method": "scan",
        "collection": "c",
        "type": "todo",
        "min_schema_version": 2,
    }
    assert requests.type_filter(None, None, None) is None
    assert sent(requests.schema_get(share=None)) == {"id": 7, "method": "schema_get"}
    schema_set = requests.schema_set(
        "todo", 2, oldest_written=None, json_schema={"type": "object"}, share="s"
    )
    assert sent(schema_set) == {
        "id": 7,
        "method": "schema_set",
        "type": "todo",
        "current": 2,
        "json_schema": {"type": "object"},
        "share": "s",
    }
    options = WatchOptions(types=requests.TypeFilter(max_schema_version=1), reads=(("todo", 1),))
    assert sent(options.call(None)) == {"id": 7, "method": "watch", "max_schema_version": 1}
    (hello,) = options.before()
    assert sent(hello) == {
        "id": 7,
        "method": "hello",
        "reads": {"todo": {"max_schema_version": 1}},
    }
    assert WatchOptions().before() == ()
