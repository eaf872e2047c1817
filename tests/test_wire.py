import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.wire import MAX_FRAME, FrameDecoder, WireError, encode_frame


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def decode_all(data: bytes, max_frame: int = MAX_FRAME) -> list[dict]:
    decoder = FrameDecoder(max_frame)
    decoder.feed(data)
    return list(decoder)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)
messages = st.builds(
    lambda kind, fields: {**fields, "t": kind},
    st.text(min_size=1, max_size=10),
    st.dictionaries(st.text(max_size=4), values, max_size=5),
)


@given(messages)
def test_any_message_round_trips(message):
    assert decode_all(encode_frame(message)) == [message]


@given(st.lists(messages, max_size=5), st.data())
def test_any_split_of_the_stream_yields_the_same_messages(batch, data):
    stream = b"".join(encode_frame(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
        received.extend(decoder)
    assert received == batch
    assert decoder.buffered == 0


def test_bin_comes_back_as_bytes_and_str_as_str():
    [message] = decode_all(encode_frame({"t": "x", "b": b"\xff\x00", "s": "é"}))
    assert type(message["b"]) is bytes and message["b"] == b"\xff\x00"
    assert type(message["s"]) is str and message["s"] == "é"


def test_partial_frame_waits_for_more_bytes():
    frame = encode_frame({"t": "ping"})
    decoder = FrameDecoder()
    decoder.feed(frame[:-1])
    assert decoder.next_message() is None
    assert decoder.buffered == len(frame) - 1
    decoder.feed(frame[-1:])
    assert decoder.next_message() == {"t": "ping"}
    assert decoder.next_message() is None


def test_oversized_length_prefix_fails_before_any_body_arrives():
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(WireError, match="101 bytes announced, over the 100-byte cap"):
        decoder.feed(struct.pack(">I", 101))
    assert decoder.buffered == 0


def test_default_cap_refuses_a_huge_announced_frame():
    decoder = FrameDecoder()
    with pytest.raises(WireError, match="over the"):
        decoder.feed(struct.pack(">I", MAX_FRAME + 1) + b"\x80")


def test_frame_exactly_at_the_cap_is_accepted():
    body = msgpack.packb({"t": "x", "p": b"a" * 50})
    assert decode_all(frame_of(body), max_frame=len(body)) == [{"t": "x", "p": b"a" * 50}]
    with pytest.raises(WireError):
        decode_all(frame_of(body), max_frame=len(body) - 1)


def test_encoder_refuses_what_the_decoder_would_refuse():
    with pytest.raises(WireError, match="over the 64-byte cap"):
        encode_frame({"t": "entries", "i": b"x" * 100}, max_frame=64)
    with pytest.raises(WireError, match="string 't'"):
        encode_frame({"type": "ping"})


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"\xc1", "not valid msgpack"),  # a byte msgpack never uses
        (msgpack.packb({"t": "x"}) + b"\x00", "not valid msgpack"),  # trailing bytes
        (b"\x81\xa1t\xa2\xff\xfe", "not valid msgpack"),  # "t" holding invalid UTF-8
        (msgpack.packb({1: "x", "t": "x"}), "not valid msgpack"),  # integer map key
        (b"\x91" * 5000 + b"\xc0", "not valid msgpack"),  # nested too deep
        (b"\x81\xa1t\xdd\xff\xff\xff\xff", "not valid msgpack"),  # array claiming 4G items
        (b"\x81\xa1t\xd6\xff\x00", "not valid msgpack"),  # truncated timestamp ext
        (msgpack.packb([1, 2]), "map with a string 't'"),
        (msgpack.packb({"x": 1}), "map with a string 't'"),
        (msgpack.packb({"t": 3}), "map with a string 't'"),
        (msgpack.packb({b"t": "ping"}), "map with a string 't'"),
    ],
)
def test_malformed_bodies_raise_wire_error(body, complaint):
    with pytest.raises(WireError, match=complaint):
        decode_all(frame_of(body))


def test_decoder_stays_failed_after_an_error():
    decoder = FrameDecoder()
    decoder.feed(frame_of(b"\xc1"))
    with pytest.raises(WireError):
        decoder.next_message()
    with pytest.raises(WireError, match="already failed"):
        decoder.feed(encode_frame({"t": "ping"}))
    with pytest.raises(WireError, match="already failed"):
        decoder.next_message()


@given(st.binary(max_size=200), st.integers(1, 300))
def test_garbage_stream_only_ever_raises_wire_error(garbage, max_frame):
    decoder = FrameDecoder(max_frame)
    try:
        decoder.feed(garbage)
        messages = list(decoder)
    except WireError:
        return
    assert all(isinstance(m, dict) and isinstance(m["t"], str) for m in messages)


@given(st.binary(max_size=200))
def test_garbage_inside_a_well_framed_body_only_ever_raises_wire_error(garbage):
    try:
        messages = decode_all(frame_of(garbage))
    except WireError:
        return
    assert len(messages) == 1 and isinstance(messages[0]["t"], str)


@pytest.mark.parametrize("cap", [0, 2**32])
def test_cap_must_fit_the_length_prefix(cap):
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(cap)
