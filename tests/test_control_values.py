"""Values between control-socket JSON and stored msgpack (p2psync/control/values.py)."""

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.control import values
from p2psync.control.errors import BAD_REQUEST, RequestError
from p2psync.control.values import json_from_value, value_from_json

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


def test_lone_surrogates_are_refused_with_where_they_were() -> None:
    values.reject_lone_surrogates(
        {"method": "put", "key": "\U0001f600", "value": {"é": ["ok", 1, None, 1.5]}}
    )
    for request, where in [
        ({"key": "\ud800"}, "'key'"),
        ({"value": {"a": [1, "x\udfff"]}}, "'value.a[1]'"),
        ({"value": {"\ud800": 1}}, "a key in 'value'"),
        ({"\udc00": 1}, "a parameter name"),
    ]:
        with pytest.raises(RequestError) as refused:
            values.reject_lone_surrogates(request)
        assert refused.value.code == BAD_REQUEST
        assert refused.value.message.startswith(f"{where} is not valid Unicode"), where


tagged_or_not = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from(["$base64", "AAE=", "not base64", ""])
    | st.builds(
        lambda data: {"$base64": data}, st.sampled_from(["AAE=", "AAE", "", "!!", "$base64"])
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["$base64", "a", "b"]), children, max_size=3)
    ),
    max_leaves=12,
)


@given(tagged_or_not)
def test_bytes_tags_are_found_at_any_depth_and_only_there(value):
    walked = values._untagged(value) if values._holds_bytes_tag(value) else value
    assert value_from_json(value) == msgpack.packb(walked)


def test_a_bytes_tag_is_stored_as_its_bytes_wherever_it_sits():
    assert value_from_json({"$base64": "AAE="}) == msgpack.packb(b"\x00\x01")
    assert value_from_json([{"x": {"$base64": "AAE="}}]) == msgpack.packb([{"x": b"\x00\x01"}])
    # what only looks like a tag stays what it is
    for plain in ["$base64", {"$base64": "AAE"}, {"$base64": "AAE=", "b": 1}, {"a": "$base64"}]:
        assert value_from_json(plain) == msgpack.packb(plain)
