"""Request parameters and the ops of writes (p2psync/control/api.py)."""

import pytest

from p2psync import entry
from p2psync.control.api import param, transaction_ops, write_op
from p2psync.control.errors import BAD_REQUEST, RequestError


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
    ops = transaction_ops(
        {
            "ops": [
                {"op": "put", "collection": "c", "key": "a", "value": 1},
                {"op": "delete", "collection": "c", "key": "b"},
            ]
        }
    )
    assert [(op.kind, op.key) for op in ops] == [(entry.PUT, "a"), (entry.DELETE, "b")]
    broken = [{"op": "put", "collection": "c", "key": "a", "value": 1}, {"op": "put"}]
    with pytest.raises(RequestError, match=r"ops\[1\]: missing parameter 'collection'"):
        transaction_ops({"ops": broken})
