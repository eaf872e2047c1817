import errno
import math
import sqlite3

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync import control_api, entry
from p2psync.control_api import (
    BAD_REQUEST,
    RequestError,
    json_from_value,
    param,
    transaction_ops,
    value_from_json,
    write_op,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip_through_the_stored_form(value):
    assert json_from_value(value_from_json(value)) == value


def test_what_json_cannot_carry_is_tagged_not_dropped():
    assert json_from_value(msgpack.packb(b"\x00\x01")) == {"$base64": "AAE="}
    assert json_from_value(msgpack.packb(math.inf)) == {"$float": "Infinity"}
    assert json_from_value(b"\xc1") == {"$raw": "wQ=="}, "an unreadable value is shown as raw"
    assert json_from_value(msgpack.packb({1: "a"})) == {"1": "a"}


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


def test_disk_full_is_recognised_through_wrapping_and_nothing_else_is() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert control_api.is_disk_full(full)
    assert control_api.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    try:
        try:
            raise full
        except sqlite3.OperationalError as exc:
            raise RuntimeError("commit failed") from exc
    except RuntimeError as wrapped:
        assert control_api.is_disk_full(wrapped)
    assert not control_api.is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not control_api.is_disk_full(OSError(errno.EIO, "I/O error"))
    assert not control_api.is_disk_full(ValueError("full"))


def test_lone_surrogates_are_refused_with_where_they_were() -> None:
    control_api.reject_lone_surrogates(
        {"method": "put", "key": "\U0001f600", "value": {"é": ["ok", 1, None, 1.5]}}
    )
    for request, where in [
        ({"key": "\ud800"}, "'key'"),
        ({"value": {"a": [1, "x\udfff"]}}, "'value.a[1]'"),
        ({"value": {"\ud800": 1}}, "a key in 'value'"),
        ({"\udc00": 1}, "a parameter name"),
    ]:
        with pytest.raises(control_api.RequestError) as refused:
            control_api.reject_lone_surrogates(request)
        assert refused.value.code == control_api.BAD_REQUEST
        assert refused.value.message.startswith(f"{where} is not valid Unicode"), where
