"""The session's inbound messages after hello (session_inbound.py): each field checked, a
malformed one or one of a share the session does not sync ending it, vectors gathered over
frames, the events made."""

import pytest

from p2psync import wire
from p2psync.session import ProtocolError, SyncConnection
from p2psync.session_events import PeerVector, Ping
from p2psync.session_inbound import BadField, is_count, on_ping, require
from tests.test_session import ALICE, BOB, events_from, hand_frame, hello_frame, listening


def test_field_checks_raise_bad_field_with_the_complaint():
    require(True, "never said")
    with pytest.raises(BadField, match="'x' must be"):
        require(False, "'x' must be a thing")
    assert [is_count(v) for v in (0, 7, -1, True, 1.0, "1")] == [True, True] + [False] * 4
    assert on_ping({"t": "ping", "ms": 5, "idle": 0}) == Ping(5, None), "no limit of 0"


def test_a_vector_in_several_frames_is_one_event_once_its_last_frame_is_in():
    conn = listening()
    events_from(conn, hello_frame())
    first = hand_frame({"t": "vector", "s": "default", "vv": {"a/1": 1}, "more": True})
    assert events_from(conn, first) == []
    last = hand_frame({"t": "vector", "s": "default", "vv": {"b/1": 2}})
    assert events_from(conn, last) == [PeerVector("default", {"a/1": 1, "b/1": 2})]


@pytest.mark.parametrize(
    "message",
    [
        {"t": "entries", "i": []},
        {"t": "entries", "s": "default", "i": {}},
        {"t": "entries", "s": "default", "i": [[b"e"]]},
        {"t": "entries", "s": "default", "i": [["e", None]]},
        {"t": "entries", "s": "default", "i": [[b"e", "sig"]]},
        {"t": "caught_up", "s": "default", "vv": {"a/1": -1}},
        {"t": "caught_up", "s": "default", "vv": {"a/1": 1.5}},
        {"t": "caught_up", "s": "default", "vv": [["a/1", 1]]},
        {"t": "vector", "s": 3, "vv": {}},
        {"t": "bye", "r": 3},
    ],
)
def test_bad_field_types_are_protocol_errors(message):
    conn = listening()
    with pytest.raises(ProtocolError, match=f"malformed '{message['t']}'"):
        events_from(conn, hello_frame() + hand_frame(message))


def test_a_ping_may_carry_the_senders_wall_clock_for_skew_estimates():
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_hello, bob_hello = alice.send_hello({}), bob.send_hello({})
    events_from(bob, alice_hello)
    events_from(alice, bob_hello)
    assert events_from(bob, alice.send_ping(wall_ms=1_700_000_000_123)) == [Ping(1_700_000_000_123)]
    odd = wire.encode_frame({"t": "ping", "ms": "soon"})
    assert events_from(bob, odd) == [Ping()], "a clock that is not a number is ignored"


def test_a_ping_may_say_how_soon_its_sender_gives_up_on_silence():
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_hello, bob_hello = alice.send_hello({}), bob.send_hello({})
    events_from(bob, alice_hello)
    events_from(alice, bob_hello)
    assert events_from(bob, alice.send_ping(123, idle_ms=8000)) == [Ping(123, 8000)]
    assert events_from(bob, alice.send_ping()) == [Ping(None, None)], "older peers do not say"
    for odd in ("soon", -5, 0, True, 2.5):
        frame = wire.encode_frame({"t": "ping", "idle": odd})
        assert events_from(bob, frame) == [Ping()], f"{odd!r} is no limit"


@pytest.mark.parametrize(
    "message",
    [
        {"t": "have", "s": "default", "vv": {"x": -1}},
        {"t": "have", "s": "", "vv": {}},
        {"t": "direct", "d": {}},
        {"t": "direct", "a": 7, "d": {}},
        {"t": "direct", "a": "x", "d": {"default": "y"}},
        {"t": "direct", "a": "x", "d": {"default": [1]}},
        {"t": "direct", "a": "x", "d": {"default": [str(n) for n in range(10_001)]}},
    ],
)
def test_malformed_have_and_direct_are_protocol_errors(message):
    conn = listening()
    events_from(conn, hello_frame())
    with pytest.raises(ProtocolError, match=f"malformed '{message['t']}'"):
        events_from(conn, hand_frame(message))


@pytest.mark.parametrize(
    "message",
    [
        {"t": "entries", "s": "parents", "i": [[b"e", None]]},
        {"t": "caught_up", "s": "parents", "vv": {}},
        {"t": "have", "s": "parents", "vv": {}},
        {"t": "direct", "a": "x", "d": {"parents": ["y"]}},
        {"t": "vector", "s": "parents", "vv": {}},
    ],
)
def test_a_peer_sending_anything_of_a_share_we_did_not_offer_breaks_the_protocol(message):
    conn = listening()  # our hello named only `default`
    events_from(conn, hello_frame(shares={"default": {}, "parents": {}}))
    with pytest.raises(ProtocolError, match=r"parents|not sync"):
        events_from(conn, hand_frame(message))


def test_a_malformed_snapshot_message_ends_the_session():
    conn = listening()
    events_from(conn, hello_frame())
    with pytest.raises(ProtocolError, match="snap_rows"):
        events_from(conn, hand_frame({"t": "snap_rows", "s": "default", "r": [1]}))
