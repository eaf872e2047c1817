"""The control front-end process, run for real with the test as its daemon
(p2psync/control/front_end_process.py)."""

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.control.front_end import HAND_OVER, WRITES, Frames, outcomes_frame, writes_of

TIMEOUT = 10
WRITTEN = [4, 2, 99, "ACTOR/1"]


class FakeDaemon:
    """The daemon's end of the pair: what the front-end sends, and outcomes sent back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = Frames()
        self.bodies: list[Any] = []
        self.handed: list[socket.socket] = []

    def next_body(self) -> Any:
        while not self.bodies:
            data, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
            assert data, "the front-end closed its end"
            self.handed += [socket.socket(fileno=fd) for fd in fds]
            self.bodies += self.frames.feed(data)
        return self.bodies.pop(0)

    def writes(self, count: int) -> list[tuple[int, str, list, list]]:
        found: list[tuple[int, str, list, list]] = []
        while len(found) < count:
            body = self.next_body()
            assert body[0] == WRITES, body
            found += writes_of(body[1])
        return found

    def answer(self, tokens: list[int]) -> None:
        self.sock.sendall(outcomes_frame([(token, (WRITTEN, "", "")) for token in tokens]))


@pytest.fixture
def front_end(tmp_path: Path) -> Iterator[tuple[Path, FakeDaemon, subprocess.Popen]]:
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    ours, theirs = socket.socketpair()
    ours.settimeout(TIMEOUT)
    fds = (listener.fileno(), theirs.fileno())
    process = subprocess.Popen(
        [sys.executable, "-m", "p2psync.control.front_end_process", *map(str, fds)], pass_fds=fds
    )
    theirs.close()
    listener.close()
    try:
        yield path, FakeDaemon(ours), process
    finally:
        process.kill()
        process.wait(TIMEOUT)
        ours.close()


def connect(path: Path) -> tuple[socket.socket, Any]:
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(TIMEOUT)
    client.connect(str(path))
    return client, client.makefile("rb")


def request(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def test_writes_go_to_the_daemon_in_batches_and_come_back_as_answers(front_end):
    path, daemon, _ = front_end
    first, first_answers = connect(path)
    second, second_answers = connect(path)
    first.sendall(
        b"".join(
            request(id=n, method="put", collection="c", key=f"a{n}", value=n) for n in range(3)
        )
    )
    second.sendall(request(id="x", method="delete", collection="c", key="b", share="photos"))
    writes = daemon.writes(4)
    by_key = {ops[0].key: (token, share) for token, share, ops, _ in writes}
    assert set(by_key) == {"a0", "a1", "a2", "b"}
    assert by_key["b"][1] == "photos" and by_key["a0"][1] == "default"
    # answered in the order the daemon commits, whatever connection each is of
    daemon.answer([by_key[key][0] for key in ("b", "a0", "a1", "a2")])
    assert json.loads(second_answers.readline())["id"] == "x"
    answers = [json.loads(first_answers.readline()) for _ in range(3)]
    assert [a["id"] for a in answers] == [0, 1, 2]
    assert answers[0]["result"]["position"] == 4


def test_the_first_line_not_a_write_hands_the_socket_over_with_what_was_read(front_end):
    path, daemon, _ = front_end
    _company = connect(path)
    client, answers = connect(path)
    rest = request(id=2, method="get", collection="c", key="a") + request(id=3, method="put")
    client.sendall(request(id=1, method="put", collection="c", key="a", value=1) + rest)
    [(token, _, _, _)] = daemon.writes(1)
    daemon.answer([token])
    assert json.loads(answers.readline())["id"] == 1  # the write before it is answered first
    body = daemon.next_body()
    assert body == [HAND_OVER, rest]
    [handed] = daemon.handed
    handed.sendall(b'{"id": 2, "from": "the daemon"}\n')  # the very connection the client holds
    assert json.loads(answers.readline()) == {"id": 2, "from": "the daemon"}
    handed.close()


def test_the_front_end_ends_when_the_daemon_does(front_end):
    path, daemon, process = front_end
    _company = connect(path)
    client, answers = connect(path)
    client.sendall(request(id=1, method="put", collection="c", key="a", value=1))
    daemon.writes(1)
    daemon.sock.close()
    assert process.wait(TIMEOUT) == 0
    assert answers.readline() == b""  # its clients are closed, their writes unanswered
    with pytest.raises(ConnectionRefusedError):
        connect(path)  # and nothing accepts on the daemon's socket any more


def test_a_client_that_hangs_up_with_writes_in_flight_costs_nothing_else(front_end):
    path, daemon, _ = front_end
    _company = connect(path)
    gone, _ = connect(path)
    gone.sendall(request(id=1, method="put", collection="c", key="a", value=1))
    [(token, _, _, _)] = daemon.writes(1)
    gone.close()
    client, answers = connect(path)
    client.sendall(request(id=2, method="put", collection="c", key="b", value=1))
    [(later, _, _, _)] = daemon.writes(1)
    daemon.answer([token, later])
    assert json.loads(answers.readline())["id"] == 2


def test_a_last_request_without_its_newline_is_the_daemons_to_answer(front_end):
    path, daemon, _ = front_end
    client, _ = connect(path)
    last = request(id=1, method="put", collection="c", key="a", value=1).rstrip(b"\n")
    client.sendall(last)
    client.shutdown(socket.SHUT_WR)
    assert daemon.next_body() == [HAND_OVER, last]
    assert len(daemon.handed) == 1


def test_a_client_alone_with_small_writes_is_the_daemons(front_end):
    path, daemon, _ = front_end
    client, _ = connect(path)
    first = request(id=1, method="put", collection="c", key="a", value=1)
    client.sendall(first)
    assert daemon.next_body() == [HAND_OVER, first]  # the hop would cost it more than it saves
    large, _ = connect(path)
    big = request(id=2, method="put", collection="c", key="b", value="v" * 20_000)
    large.sendall(big)
    [(_, _, ops, _)] = daemon.writes(1)  # alone too, but worth parsing here
    assert ops[0].key == "b"
