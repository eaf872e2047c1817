"""The control front-end's rules for a connection, and its frames (p2psync/control/front_end.py)."""

import itertools
import json

import msgpack
import pytest

from p2psync import entry
from p2psync.control.front_end import (
    ALONE_LINE_BYTES,
    HAND_OVER,
    WRITES,
    ClientConnection,
    FrameError,
    Frames,
    Queued,
    hand_over_frame,
    outcomes_frame,
    outcomes_of,
    writes_frame,
    writes_of,
)
from p2psync.control.lines import MAX_IN_FLIGHT, MAX_LINE_BYTES, MAX_UNSENT_BYTES
from p2psync.control.writes import Write, answer_line, single_write
from p2psync.merge import Precondition, dot_version

WRITTEN = (7, 3, 1234, "ACTOR/1")


def line(**request: object) -> bytes:
    return json.dumps(request).encode() + b"\n"


def put(request_id: int, key: str = "k", **more: object) -> bytes:
    return line(
        **{
            "id": request_id,
            "method": "put",
            "collection": "c",
            "key": key,
            "value": {"n": 1},
            **more,
        }
    )


def taking(connection: ClientConnection, data: bytes) -> list:
    connection.buffer += data
    return connection.take(itertools.count())


def test_pipelined_writes_are_taken_in_order_and_answered_in_order():
    connection = ClientConnection(admin=True)
    taken = taking(connection, put(1, "a") + put(2, "b") + b"\n" + put(3, "c"))
    assert [q.write.ops[0].key for q, _ in taken] == ["a", "b", "c"]
    assert [q.token for q, _ in taken] == [0, 1, 2]
    assert not connection.buffer and connection.reading
    connection.answered(taken[1][1], (WRITTEN, "", ""))
    assert not connection.unsent  # the first is not answered yet
    connection.answered(taken[0][1], (None, "conflict", "c/a is at version X"))
    connection.answered(taken[2][1], (WRITTEN, "", ""))
    answers = [json.loads(text) for text in connection.unsent.splitlines()]
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0] == {
        "id": 1,
        "ok": False,
        "error": {"code": "conflict", "message": "c/a is at version X"},
    }
    assert answers[1]["result"] == {
        "position": 7,
        "seq": 3,
        "hlc": 1234,
        "version": dot_version("ACTOR/1", 3),
    }
    connection.sent(len(connection.unsent))
    assert connection.settled


def test_the_answer_is_the_line_the_daemon_itself_would_send():
    connection = ClientConnection(admin=True)
    [(_, answer)] = taking(connection, put(9))
    connection.answered(answer, (WRITTEN, "", ""))
    assert bytes(connection.unsent) == answer_line(9, (WRITTEN, "", ""))


@pytest.mark.parametrize(
    "other",
    [
        line(id=2, method="get", collection="c", key="a"),
        line(id=2, method="watch"),
        line(id=2, method="put", collection="c", value=1),  # no key: the daemon says so
        line(id=2, method="put", collection="_devices", key="x", value=1),
        b'{"id": 2, "method": "put", "collection": "c", "key": "a", "value": NaN}\n',
        b"not json\n",
        line(id=2, method="put", collection="c", key="\ud800", value=1),
    ],
)
def test_any_other_line_and_all_after_it_are_left_for_the_daemon(other):
    connection = ClientConnection(admin=True)
    rest = other + put(3)
    taken = taking(connection, put(1) + rest)
    assert [q.token for q, _ in taken] == [0]
    assert connection.handing_over and not connection.reading
    assert bytes(connection.buffer) == rest  # read again by the daemon, from this line on
    assert not connection.settled  # the put before it is answered first
    connection.answered(taken[0][1], (WRITTEN, "", ""))
    connection.sent(len(connection.unsent))
    assert connection.settled
    assert taking(connection, put(4)) == []  # nothing more is taken once handing over


def test_an_apps_connection_is_the_daemons_from_its_first_byte():
    connection = ClientConnection(admin=False)
    assert connection.handing_over and connection.settled and not connection.reading
    assert taking(connection, put(1)) == []
    assert bytes(connection.buffer) == put(1)


def test_a_line_over_the_limit_is_left_for_the_daemon_to_refuse():
    connection = ClientConnection(admin=True)
    assert taking(connection, b"x" * MAX_LINE_BYTES) == []
    assert not connection.handing_over  # it may still end within the limit
    assert taking(connection, b"xx") == []
    assert connection.handing_over


def test_requests_in_flight_are_held_to_the_daemons_limit():
    connection = ClientConnection(admin=True)
    taken = taking(connection, b"".join(put(n) for n in range(MAX_IN_FLIGHT + 5)))
    assert len(taken) == MAX_IN_FLIGHT
    assert connection.full and not connection.reading
    connection.answered(taken[0][1], (WRITTEN, "", ""))
    more = connection.take(itertools.count(MAX_IN_FLIGHT))
    assert len(more) == 1 and more[0][0].write.ops[0] == taken[0][0].write.ops[0]


def test_uncommitted_bytes_are_held_to_the_daemons_limit():
    connection = ClientConnection(admin=True)
    big = line(id=1, method="put", collection="c", key="k", value="v" * 700_000)
    taken = taking(connection, big + big)
    assert len(taken) == 1 and connection.full
    connection.answered(taken[0][1], (WRITTEN, "", ""))
    assert len(connection.take(itertools.count())) == 1


def test_a_client_that_reads_no_answers_is_not_read_either():
    connection = ClientConnection(admin=True)
    answered = 0
    while taken := taking(
        connection, line(id="x" * 40_000, method="put", key="k", collection="c", value=1)
    ):
        connection.answered(taken[0][1], (WRITTEN, "", ""))
        answered += 1
    assert connection.full and not connection.reading
    assert len(connection.unsent) > MAX_UNSENT_BYTES > len(connection.unsent) - 41_000
    connection.sent(len(connection.unsent))
    assert len(connection.take(itertools.count())) == 1  # the line read last


# frames ---------------------------------------------------------------------------------------


def test_frames_carry_writes_and_outcomes_whichever_way_the_stream_is_cut():
    write = Write(
        [
            entry.packed_op(
                entry.PUT, "c", "k", msgpack.packb({"a": 1}), entry.pack_meta({"type": "t"})
            )
        ],
        [Precondition("c", "k", "VERSION", "ops[0]: ")],
    )
    delete = single_write({"collection": "c", "key": "gone"}, "delete")
    stream = (
        writes_frame([Queued(5, "default", write), Queued(6, "photos", delete)])
        + hand_over_frame(b"unread bytes")
        + outcomes_frame([(5, (WRITTEN, "", "")), (6, (None, "forbidden", "no"))])
    )
    frames = Frames()
    bodies = [
        body for offset in range(len(stream)) for body in frames.feed(stream[offset : offset + 1])
    ]
    assert [body[0] for body in bodies[:2]] == [WRITES, HAND_OVER]
    assert list(writes_of(bodies[0][1])) == [
        (5, "default", write.ops, write.preconditions),
        (6, "photos", delete.ops, []),
    ]
    assert bodies[1][1] == b"unread bytes"
    assert list(outcomes_of(bodies[2])) == [
        (5, (list(WRITTEN), "", "")),
        (6, (None, "forbidden", "no")),
    ]


def test_a_frame_no_version_sends_is_an_error():
    with pytest.raises(FrameError, match="bytes"):
        Frames().feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameError, match="not msgpack"):
        Frames().feed(b"\x00\x00\x00\x01\xc1")


def test_a_connection_alone_whose_first_write_is_small_goes_to_the_daemon():
    alone = ClientConnection(admin=True)
    alone.buffer += put(1) + put(2)
    assert alone.take(itertools.count(), alone=True) == []
    assert alone.handing_over and bytes(alone.buffer) == put(1) + put(2)
    large = ClientConnection(admin=True)
    large.buffer += put(1, value="v" * ALONE_LINE_BYTES)
    assert len(large.take(itertools.count(), alone=True)) == 1
    kept = ClientConnection(admin=True)
    kept.buffer += put(1)
    assert len(kept.take(itertools.count(), alone=False)) == 1
    kept.buffer += put(2)  # once served here, it stays, alone or not
    assert len(kept.take(itertools.count(), alone=True)) == 1
