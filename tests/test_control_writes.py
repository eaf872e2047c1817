"""Request parameters and the ops of writes (p2psync/control/writes.py)."""

import pytest

from p2psync import entry
from p2psync.control.errors import BAD_REQUEST, RequestError
from p2psync.control.writes import param, single_write, transaction_write, write_op


def test_parameters_are_checked_with_a_message_naming_them():
    with pytest.raises(RequestError, match="'key' must be a string") as wrong:
        param({"key": 5}, "key", str)
    assert wrong.value.code == BAD_REQUEST
    with pytest.raises(RequestError, match="missing parameter 'key'"):
        param({}, "key", str)
    assert param({"limit": None}, "limit", int, 10) == 10
    with pytest.raises(RequestError, match="must be an integer"):
        param({"limit": True}, "limit", int)


def test_writes_to_system_collections_are_refused():
    with pytest.raises(RequestError, match="reserved"):
        write_op({"collection": "_devices", "key": "x", "value": 1}, "put")


def test_a_transaction_names_the_op_that_is_wrong():
    write = transaction_write(
        {
            "ops": [
                {"op": "put", "collection": "c", "key": "a", "value": 1},
                {"op": "delete", "collection": "c", "key": "b"},
            ]
        }
    )
    assert [(op.kind, op.key) for op in write.ops] == [(entry.PUT, "a"), (entry.DELETE, "b")]
    assert write.preconditions == []
    broken = [{"op": "put", "collection": "c", "key": "a", "value": 1}, {"op": "put"}]
    with pytest.raises(RequestError, match=r"ops\[1\]: missing parameter 'collection'"):
        transaction_write({"ops": broken})
    misspelt = [{"op": "put", "collection": "c", "key": "a", "vlaue": 1}]
    with pytest.raises(RequestError) as unknown:
        transaction_write({"ops": misspelt})
    assert unknown.value.code == BAD_REQUEST
    assert unknown.value.message == (
        "ops[0]: unknown parameter 'vlaue' for an op of a transaction; known: collection, "
        "if_version, key, op, schema_version, type, value"
    )


def test_if_version_becomes_a_precondition_on_the_record_it_writes():
    put = single_write({"collection": "c", "key": "k", "value": 1, "if_version": "v1"}, "put")
    assert [(p.collection, p.key, p.version, p.label) for p in put.preconditions] == [
        ("c", "k", "v1", "")
    ]
    absent = single_write({"collection": "c", "key": "k", "if_version": ""}, "delete")
    assert [p.version for p in absent.preconditions] == [""]  # "": only if there is none
    assert single_write({"collection": "c", "key": "k", "value": 1}, "put").preconditions == []
    with pytest.raises(RequestError, match="'if_version' must be a string"):
        single_write({"collection": "c", "key": "k", "value": 1, "if_version": 7}, "put")
    both = transaction_write(
        {
            "ops": [
                {"op": "put", "collection": "c", "key": "a", "value": 1},
                {"op": "delete", "collection": "c", "key": "b", "if_version": "v2"},
            ]
        }
    )
    assert [(p.key, p.version, p.label) for p in both.preconditions] == [("b", "v2", "ops[1]: ")]
