import base64
import hashlib
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync import session, wire
from p2psync.session import (
    CLOSED,
    NEED_DATA,
    LocalProtocolError,
    ProtocolError,
    SyncConnection,
    summary_digest,
)
from p2psync.session_events import (
    Bye,
    CaughtUp,
    Direct,
    Entries,
    Have,
    NotMember,
    PeerHello,
    PeerVector,
    Ping,
    Pong,
)


def device_id(n: int) -> str:
    """Shaped like a real id: base32 of a SHA-256, grouped by five, with a check character."""
    digits = base64.b32encode(hashlib.sha256(b"device %d" % n).digest()).decode().rstrip("=")
    return "-".join(digits[i : i + 5] for i in range(0, len(digits), 5)) + "-K"


ALICE, BOB, MALLORY = device_id(1), device_id(2), device_id(3)


def actor(device: str, epoch: int) -> str:
    return f"{device}/{epoch:08x}"


def hand_frame(message: dict) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def events_from(conn: SyncConnection, data: bytes) -> list:
    conn.receive_data(data)
    events = []
    while (event := conn.next_event()) not in (NEED_DATA, CLOSED):
        events.append(event)
    return events


CURRENT = session.PROTOCOL_VERSIONS[1]


def hello_frame(device=BOB, versions=session.PROTOCOL_VERSIONS, shares=None, **extra) -> bytes:
    """A hello naming `shares` (default: share `default`, empty)."""
    shares = {"default": {}} if shares is None else shares
    digests = {share: summary_digest(vector) for share, vector in shares.items()}
    return hand_frame({"t": "hello", "v": list(versions), "id": device, "s": digests, **extra})


def listening(shares=None, expected=BOB, **kwargs) -> SyncConnection:
    """Alice's side of a connection to Bob, with her hello already sent."""
    conn = SyncConnection(ALICE, expected, **kwargs)
    conn.send_hello({"default": {}} if shares is None else shares)
    return conn


def test_hello_then_entries_between_two_connections():
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    a1, b1 = actor(ALICE, 1), actor(BOB, 7)
    alice_out = alice.send_hello({"default": {a1: 2}})
    bob_out = bob.send_hello({"default": {a1: 1, b1: 4}})

    [bob_hello] = events_from(alice, bob_out)
    [alice_hello] = events_from(bob, alice_out)
    assert bob_hello == PeerHello(BOB, CURRENT, frozenset({"default"}), {})
    assert alice_hello == PeerHello(ALICE, CURRENT, frozenset({"default"}), {})
    assert alice.version == bob.version == CURRENT
    assert alice.peer_device_id == BOB and bob.peer_device_id == ALICE

    [bob_vector] = events_from(alice, bob.send_vector("default", {a1: 1, b1: 4}))
    assert bob_vector == PeerVector("default", {a1: 1, b1: 4})
    items = [(b"entry 2", b"signature"), (b"entry 3", None)]
    stream = alice.send_entries("default", items) + alice.send_caught_up("default", {a1: 2})
    assert events_from(bob, stream) == [
        Entries("default", tuple(items)),
        CaughtUp("default", {a1: 2}),
    ]


def test_equal_vectors_are_in_sync_from_the_hello_alone():
    vector = {actor(ALICE, 1): 5, actor(BOB, 1): 3}
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_out = alice.send_hello({"default": vector, "photos": {actor(ALICE, 1): 1}})
    # An actor at 0 is the same as an absent one.
    bob_out = bob.send_hello({"default": {**vector, actor(MALLORY, 1): 0}, "photos": {}})
    [hello] = events_from(alice, bob_out)
    assert hello.shares == {"default", "photos"}
    assert hello.in_sync == {"default": vector}
    [hello] = events_from(bob, alice_out)
    assert hello.in_sync == {"default": {**vector, actor(MALLORY, 1): 0}}


def test_reconnect_with_nothing_new_costs_two_small_hellos():
    devices = [device_id(n) for n in range(5)]
    vector = {actor(d, epoch): 1000 + epoch for d in devices for epoch in range(5)}
    alice, bob = SyncConnection(devices[0], devices[1]), SyncConnection(devices[1], devices[0])
    alice_out, bob_out = alice.send_hello({"default": vector}), bob.send_hello({"default": vector})

    assert len(alice_out) + len(bob_out) < 512
    assert events_from(alice, bob_out)[0].in_sync == {"default": vector}
    assert events_from(bob, alice_out)[0].in_sync == {"default": vector}
    bigger = {actor(device_id(n), 0): n for n in range(100)}
    assert len(SyncConnection(ALICE, None).send_hello({"default": bigger})) == len(alice_out)


@pytest.mark.parametrize(
    ("ours", "theirs", "agreed"),
    [((1, 1), (1, 1), 1), ((1, 3), (2, 5), 3), ((2, 5), (1, 3), 3), ((1, 4), (2, 2), 2)],
)
def test_version_negotiation_picks_the_highest_common(ours, theirs, agreed):
    conn = listening(versions=ours)
    [hello] = events_from(conn, hello_frame(versions=theirs))
    assert hello.version == conn.version == agreed


def test_no_common_version_names_both_ranges():
    conn = listening(versions=(1, 2))
    with pytest.raises(ProtocolError, match=r"speaks 1\.\.2, .* speaks 3\.\.4; upgrade p2psync on"):
        events_from(conn, hello_frame(versions=(3, 4)))
    assert conn.version is None


def test_hello_from_another_device_than_the_certificate_is_refused():
    conn = listening(expected=BOB)
    with pytest.raises(ProtocolError, match=f"says it is {MALLORY} but its certificate is {BOB}"):
        events_from(conn, hello_frame(device=MALLORY))
    with pytest.raises(LocalProtocolError, match="before the peer's hello"):
        conn.send_entries("default", [])


def test_without_an_expected_id_any_device_may_say_hello():
    conn = listening(expected=None)
    [hello] = events_from(conn, hello_frame(device=MALLORY))
    assert hello.device_id == MALLORY


@pytest.mark.parametrize(
    "first",
    [
        {"t": "entries", "s": "default", "i": []},
        {"t": "caught_up", "s": "default", "vv": {}},
        {"t": "ping"},
        {"t": "gossip"},
    ],
)
def test_anything_but_hello_first_is_an_error(first):
    conn = listening()
    with pytest.raises(ProtocolError, match=f"peer sent '{first['t']}' before hello"):
        events_from(conn, hand_frame(first) + hello_frame())


def test_bye_before_hello_is_delivered_so_a_refusal_can_say_why():
    conn = listening()
    assert events_from(conn, hand_frame({"t": "bye", "r": "revoked"})) == [Bye("revoked")]
    assert conn.next_event() is CLOSED


def test_second_hello_is_an_error():
    conn = listening()
    with pytest.raises(ProtocolError, match="second hello"):
        events_from(conn, hello_frame() + hello_frame())


def test_we_must_send_hello_before_reading():
    conn = SyncConnection(ALICE, BOB)
    conn.receive_data(hello_frame())
    with pytest.raises(LocalProtocolError, match="send our hello"):
        conn.next_event()


def test_no_data_goes_to_a_peer_that_has_not_said_hello():
    conn = SyncConnection(ALICE, BOB)
    with pytest.raises(LocalProtocolError, match="before our hello"):
        conn.send_ping()
    conn.send_hello({"default": {}})
    for send in (
        lambda: conn.send_entries("default", [(b"e", None)]),
        lambda: conn.send_caught_up("default", {}),
        lambda: conn.send_vector("default", {}),
    ):
        with pytest.raises(LocalProtocolError, match="before the peer's hello"):
            send()
    assert conn.send_ping()  # keep-alives do not carry data
    with pytest.raises(LocalProtocolError, match="hello already sent"):
        conn.send_hello({})


def test_nothing_may_be_sent_after_bye():
    conn = listening()
    events_from(conn, hello_frame())
    conn.send_bye("shutting down")
    with pytest.raises(LocalProtocolError, match="after bye"):
        conn.send_entries("default", [])


def test_a_batch_over_the_frame_cap_is_our_bug():
    conn = listening(max_frame=1024)
    events_from(conn, hello_frame())
    with pytest.raises(LocalProtocolError, match="over the 1024-byte cap"):
        conn.send_entries("default", [(b"x" * 2000, None)])


def test_unknown_fields_and_message_types_are_ignored():
    conn = listening()
    stream = (
        hello_frame(extra={"nested": [1, 2]}, compression="zstd")
        + hand_frame({"t": "gossip", "rumour": b"\x00"})
        + hand_frame({"t": "entries", "s": "default", "i": [[b"e", None]], "prio": 3})
        + hand_frame({"t": "ping", "nonce": 7})
    )
    assert events_from(conn, stream) == [
        PeerHello(BOB, CURRENT, frozenset({"default"}), {"default": {}}),
        Entries("default", ((b"e", None),)),
        Ping(),
    ]


def test_ping_pong_and_bye_round_trip():
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_hello, bob_hello = alice.send_hello({}), bob.send_hello({})
    events_from(bob, alice_hello)
    events_from(alice, bob_hello)
    assert events_from(bob, alice.send_ping()) == [Ping()]
    assert events_from(alice, bob.send_pong()) == [Pong()]
    assert events_from(bob, alice.send_bye("see you")) == [Bye("see you")]
    assert bob.next_event() is CLOSED


def test_after_bye_later_bytes_are_ignored():
    conn = listening()
    events = events_from(conn, hello_frame() + hand_frame({"t": "bye", "r": ""}) + b"\xff" * 9)
    assert events[-1] == Bye("")
    conn.receive_data(hand_frame({"t": "ping"}))
    assert conn.next_event() is CLOSED


@pytest.mark.parametrize(
    "message",
    [
        {"t": "hello", "v": [1], "id": BOB, "s": {}},
        {"t": "hello", "v": [2, 1], "id": BOB, "s": {}},
        {"t": "hello", "v": [True, 1], "id": BOB, "s": {}},
        {"t": "hello", "v": [2, 2], "id": 42, "s": {}},
        {"t": "hello", "v": [2, 2], "id": "", "s": {}},
        {"t": "hello", "v": [2, 2], "id": BOB, "s": {"default": {"a/1": 1}}},
        {"t": "hello", "v": [2, 2], "id": BOB},
    ],
)
def test_malformed_hello_is_a_protocol_error(message):
    conn = listening()
    with pytest.raises(ProtocolError, match="malformed 'hello'"):
        events_from(conn, hand_frame(message))


def test_garbage_frame_is_a_protocol_error_and_stays_one():
    conn = listening()
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        events_from(conn, hello_frame() + struct.pack(">I", 1) + b"\xc1")
    conn.receive_data(hand_frame({"t": "ping"}))
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        conn.next_event()


def test_oversized_frame_is_refused_as_soon_as_its_length_arrives():
    conn = listening(max_frame=1000)
    with pytest.raises(ProtocolError, match="1001 bytes announced"):
        conn.receive_data(struct.pack(">I", 1001))


def test_eof_inside_a_frame_is_an_error():
    conn = listening()
    frame = hello_frame()
    conn.receive_data(frame[:-3])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(ProtocolError, match="middle of a frame"):
        conn.next_event()


def test_clean_eof_closes():
    conn = listening()
    assert events_from(conn, hello_frame())[0].device_id == BOB
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED
    with pytest.raises(LocalProtocolError, match="after EOF"):
        conn.receive_data(b"more")


def test_eof_before_hello_closes_without_a_version():
    conn = listening()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    assert conn.version is None


SESSION_STREAM = (
    hello_frame(shares={"default": {"a/1": 1}})
    + hand_frame({"t": "vector", "s": "default", "vv": {"a/1": 1}})
    + hand_frame({"t": "entries", "s": "default", "i": [[b"e1", b"s"], [b"e2", None]]})
    + hand_frame({"t": "caught_up", "s": "default", "vv": {"a/1": 3}})
    + hand_frame({"t": "ping"})
    + hand_frame({"t": "pong"})
    + hand_frame({"t": "bye", "r": "done"})
)
EXPECTED_EVENTS = [
    PeerHello(BOB, CURRENT, frozenset({"default"}), {"default": {"a/1": 1}}),
    PeerVector("default", {"a/1": 1}),
    Entries("default", ((b"e1", b"s"), (b"e2", None))),
    CaughtUp("default", {"a/1": 3}),
    Ping(),
    Pong(),
    Bye("done"),
]


@given(st.lists(st.integers(0, len(SESSION_STREAM)), max_size=12))
def test_any_split_of_the_stream_delivers_the_same_events(cuts):
    conn = listening(shares={"default": {"a/1": 1}})
    events = []
    bounds = sorted(cuts)
    for start, end in zip([0, *bounds], [*bounds, len(SESSION_STREAM)], strict=True):
        if end > start:  # an empty read means EOF, not "nothing yet"
            events.extend(events_from(conn, SESSION_STREAM[start:end]))
    assert events == EXPECTED_EVENTS
    assert conn.next_event() is CLOSED


@given(st.binary(max_size=300))
def test_garbage_after_hello_only_ever_raises_protocol_error(garbage):
    conn = listening(max_frame=4096)
    try:
        events_from(conn, hello_frame() + garbage)
        conn.receive_data(b"")
        while conn.next_event() is not CLOSED:
            pass
    except ProtocolError as exc:
        assert exc.reason


def test_a_vector_of_any_size_crosses_in_frames_under_the_cap_and_arrives_whole():
    alice, bob = listening(), listening(expected=ALICE)
    [_] = events_from(alice, hello_frame())
    [_] = events_from(bob, hello_frame(device=ALICE))
    huge = {actor(f"{n:05d}", n): n + 1 for n in range(50_000)}
    data = alice.send_vector("default", huge) + alice.send_caught_up("default", huge)
    decoder = wire.FrameDecoder(wire.MAX_FRAME)
    decoder.feed(data)
    frames = []
    while (message := decoder.next_message()) is not None:
        frames.append(message)
    assert len(frames) == 6 and all(len(wire.encode_frame(f)) < wire.MAX_FRAME for f in frames)
    assert events_from(bob, data) == [PeerVector("default", huge), CaughtUp("default", huge)]


def test_hello_digests_differ_when_the_same_seqs_hold_different_histories():
    same_seqs = {actor(ALICE, 1): (3, b"\x01" * 32)}
    forked = {actor(ALICE, 1): (3, b"\x02" * 32)}
    assert session.summary_digest(same_seqs) != session.summary_digest(forked)
    assert session.summary_digest({actor(ALICE, 1): 0}) == session.summary_digest({})


def test_a_bye_carries_a_machine_readable_code():
    conn = listening()
    assert events_from(conn, hand_frame({"t": "bye", "r": "revoked by Küche", "c": "revoked"})) == [
        Bye("revoked by Küche", "revoked")
    ]


def test_hello_says_which_epoch_the_peer_writes_as():
    alice, bob = listening(), listening(expected=ALICE)
    alice_out = SyncConnection(ALICE, BOB).send_hello({}, actor(ALICE, 7))
    [hello] = events_from(bob, alice_out)
    assert hello.actor == actor(ALICE, 7)
    [without] = events_from(alice, hello_frame())
    assert without.actor == ""


def test_have_and_direct_cross_between_two_connections():
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_hello = alice.send_hello({"default": {}, "photos": {}})
    bob_hello = bob.send_hello({"default": {}, "music": {}})
    events_from(alice, bob_hello)
    events_from(bob, alice_hello)
    assert alice.common_shares == bob.common_shares == frozenset({"default"})
    a1, m1 = actor(ALICE, 1), actor(MALLORY, 4)
    stream = alice.send_have("default", {m1: 17}) + alice.send_direct(a1, {"default": {m1}})
    assert events_from(bob, stream) == [
        Have("default", {m1: 17}),
        Direct(a1, {"default": frozenset({m1})}),
    ]
    assert events_from(bob, alice.send_direct(a1, {"default": set()})) == [Direct(a1, {})]


def test_common_shares_are_empty_until_the_peer_said_hello():
    conn = listening({"default": {}})
    assert conn.common_shares == frozenset()
    events_from(conn, hello_frame(shares={"default": {}}))
    assert conn.common_shares == frozenset({"default"})


def test_have_and_direct_wait_for_the_peers_hello():
    conn = listening()
    with pytest.raises(LocalProtocolError, match="before the peer's hello"):
        conn.send_have("default", {actor(BOB, 1): 1})
    with pytest.raises(LocalProtocolError, match="before the peer's hello"):
        conn.send_direct(actor(ALICE, 1), {})
    with pytest.raises(ProtocolError, match="'have' before hello"):
        events_from(listening(), hand_frame({"t": "have", "s": "default", "vv": {}}))


def test_a_big_have_is_split_into_frames_that_each_stand_alone():
    alice = listening()
    events_from(alice, hello_frame())
    bob = listening(expected=ALICE)
    events_from(bob, hello_frame(device=ALICE))
    huge = {actor(f"{n:05d}", n): n + 1 for n in range(45_000)}
    events = events_from(bob, alice.send_have("default", huge))
    assert len(events) == 3 and all(isinstance(e, Have) for e in events)
    assert {k: v for e in events for k, v in e.vector.items()} == huge


def test_too_many_direct_actors_is_our_bug():
    conn = listening()
    events_from(conn, hello_frame())
    with pytest.raises(LocalProtocolError, match="direct actors"):
        conn.send_direct(actor(ALICE, 1), {"default": {str(n) for n in range(10_001)}})


# shares (protocol 3): nothing of a share crosses a session unless both hellos named it ----------


def connected(alice_shares: dict, bob_shares: dict) -> tuple[SyncConnection, SyncConnection]:
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_hello, bob_hello = alice.send_hello(alice_shares), bob.send_hello(bob_shares)
    events_from(alice, bob_hello)
    events_from(bob, alice_hello)
    return alice, bob


def test_nothing_of_a_share_the_peer_did_not_name_can_be_sent():
    alice, _ = connected({"default": {}, "parents": {}}, {"default": {}})
    assert alice.common_shares == frozenset({"default"})
    for send in (
        lambda: alice.send_entries("parents", [(b"e", None)]),
        lambda: alice.send_caught_up("parents", {}),
        lambda: alice.send_have("parents", {actor(ALICE, 1): 1}),
        lambda: alice.send_direct(actor(ALICE, 1), {"parents": {actor(BOB, 1)}}),
        lambda: alice.send_vector("recipes", {}),  # not even named in our own hello
    ):
        with pytest.raises(LocalProtocolError, match=r"parents|recipes"):
            send()


def test_a_device_offered_a_share_it_lacks_joins_it_and_then_it_flows_both_ways():
    alice, bob = connected({"default": {}, "family": {actor(ALICE, 1): 3}}, {"default": {}})
    assert bob.common_shares == frozenset({"default"})
    [joined] = events_from(alice, bob.join_share("family"))
    assert joined == PeerVector("family", {})
    assert alice.common_shares == bob.common_shares == frozenset({"default", "family"})
    items = ((b"entry", b"sig"),)
    assert events_from(bob, alice.send_entries("family", items)) == [Entries("family", items)]
    assert events_from(alice, bob.send_have("family", {actor(BOB, 2): 1})) == [
        Have("family", {actor(BOB, 2): 1})
    ]
    with pytest.raises(LocalProtocolError, match="not offered"):
        bob.join_share("parents")


def test_a_device_offering_a_share_it_was_removed_from_is_told_so():
    alice, bob = connected({"default": {}}, {"default": {}, "shopping": {}})
    told = alice.send_not_member("shopping", "removed from share 'shopping' by ALICE")
    assert events_from(bob, told) == [
        NotMember("shopping", "removed from share 'shopping' by ALICE")
    ]
    with pytest.raises(LocalProtocolError, match="did not offer"):
        alice.send_not_member("parents", "no")
    with pytest.raises(ProtocolError, match="which we did not offer"):
        events_from(alice, hand_frame({"t": "not_member", "s": "parents", "r": "x"}))


def test_a_hello_may_carry_the_peer_s_p2psync_version() -> None:
    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_out = alice.send_hello({"default": {}}, software="0.4.0")
    bob_out = bob.send_hello({"default": {}})
    [from_alice] = events_from(bob, alice_out)
    [from_bob] = events_from(alice, bob_out)
    assert from_alice.software == "0.4.0"
    assert from_bob.software == ""  # a peer before 0.4 sends none
    assert b"sw" not in bob_out


def test_a_hello_reader_ignores_keys_it_does_not_know() -> None:
    """Why `sw` needs no new protocol version: hello readers take the keys they know and ignore
    the rest (0.3.0's `_on_hello` too, which read this hello as its own)."""
    [hello] = events_from(listening(), hello_frame(later="something new"))
    assert hello.device_id == BOB and hello.software == ""


@pytest.mark.parametrize("software", [7, "x" * 65, None])
def test_a_bad_version_in_a_hello_is_a_protocol_error(software: object) -> None:
    with pytest.raises(ProtocolError, match="'sw' must be a version"):
        events_from(listening(), hello_frame(sw=software))


def test_snapshot_messages_go_only_to_a_peer_that_said_it_takes_them():
    from p2psync.session import LocalProtocolError
    from p2psync.session_events import SnapshotEnd, SnapshotFrom, SnapshotRows, SnapshotStart

    alice, bob = SyncConnection(ALICE, BOB), SyncConnection(BOB, ALICE)
    alice_out = alice.send_hello({"default": {}}, snapshots=True)
    bob_out = bob.send_hello({"default": {}})  # a 0.4 peer: no "sn"
    [bob_hello] = events_from(alice, bob_out)
    [alice_hello] = events_from(bob, alice_out)
    assert alice_hello.snapshots and not bob_hello.snapshots
    with pytest.raises(LocalProtocolError):
        alice.send_snap_start("default", b"offer")  # bob would not understand
    stream = (
        bob.send_snap_start("default", b"offer")
        + bob.send_snap_rows("default", [b"r1", b"r2"])
        + bob.send_snap_end("default")
    )
    assert events_from(alice, stream) == [
        SnapshotStart("default", b"offer"),
        SnapshotRows("default", (b"r1", b"r2")),
        SnapshotEnd("default"),
    ]
    assert events_from(bob, alice.send_snap_from("default", ("notes", "k"))) == [
        SnapshotFrom("default", ("notes", "k"))
    ]
    assert events_from(bob, alice.send_snap_from("default", None)) == [
        SnapshotFrom("default", None)
    ]
