"""When a peer counts as gone and when we ping it: the pure clocks (p2psync/liveness.py), and one
session's pump (p2psync/pump.py) driven by them over an in-memory stream, on trio's autojump
clock (no real sleeps, no sockets)."""

from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from p2psync import pump
from p2psync.liveness import (
    DEFAULT_LIMIT_SECONDS,
    PING_INTERVAL_SECONDS,
    Liveness,
    ping_interval,
)
from p2psync.peer_state import PeerState
from p2psync.peers import Timeouts, _Session
from p2psync.pump import SessionPump
from p2psync.sender import Neighbourhood
from p2psync.session import NEED_DATA, SyncConnection
from p2psync.session_events import Ping, Pong
from tests.test_session import ALICE, BOB, hand_frame

LIMIT = DEFAULT_LIMIT_SECONDS
HANDSHAKE = 10.0

# --- the pure clocks ------------------------------------------------------------------------------


def test_the_default_pings_every_3_s_and_gives_up_after_8():
    assert (PING_INTERVAL_SECONDS, DEFAULT_LIMIT_SECONDS) == (3.0, 8.0)
    assert ping_interval(8.0) == 3.0
    assert ping_interval(60.0) == 3.0, "a long limit of ours does not slow our pings"
    assert ping_interval(3.0) == 1.2, "2.5 pings fit in a short limit of ours"
    assert ping_interval(8.0, peer_limit=1.5) == 0.6, "and in a short limit of the peer's"
    assert ping_interval(8.0, peer_limit=60.0) == 3.0


def test_a_peer_is_gone_a_limit_after_its_last_word():
    clocks = Liveness.starting(100.0, LIMIT, opening_limit=HANDSHAKE)
    assert clocks.gone_at() == 110.0, "before its first bytes the handshake timeout applies"
    clocks.heard(101.0)
    assert clocks.gone_at() == 109.0
    clocks.heard(104.0)
    assert not clocks.is_gone(111.9)
    assert clocks.is_gone(112.0)
    assert clocks.silence(110.0) == 6.0


def test_silence_does_not_count_while_we_work_and_the_peer_gets_its_whole_limit_after():
    clocks = Liveness.starting(0.0, LIMIT)
    clocks.heard(1.0)
    clocks.waiting()  # applying a big batch on the database thread: 30 s
    assert clocks.gone_at() == float("inf") and clocks.silence(20.0) == 0.0
    assert clocks.answering(20.0)
    clocks.waited(31.0)
    assert clocks.gone_at() == 39.0
    assert not clocks.is_gone(38.9)


def test_answering_ends_once_a_ping_is_overdue():
    clocks = Liveness.starting(0.0, LIMIT)
    clocks.heard(0.0)
    assert clocks.answering(3.9)
    assert not clocks.answering(4.0), "half the limit without a word: silent"
    clocks.heard(5.0)
    assert clocks.answering(5.0)


def test_a_ping_is_due_an_interval_after_anything_we_sent():
    clocks = Liveness.starting(0.0, LIMIT)
    assert clocks.ping_at() == 3.0
    clocks.sent(2.5)  # entries went out: no ping needed for a while
    assert clocks.ping_at() == 5.5
    clocks.peer_limit_is(1.0)
    assert clocks.ping_at() == pytest.approx(2.9)
    clocks.peer_limit_is(None)  # a peer that does not say keeps what it said last
    assert clocks.ping_at() == pytest.approx(2.9)
    clocks.peer_limit_is(0.001)  # a peer cannot make us ping a thousand times a second
    assert clocks.ping_at() == pytest.approx(2.9)


# --- the pump, on an in-memory stream -------------------------------------------------------------


class FakeNode:
    """The database thread, answering at once except for the functions given a delay."""

    def __init__(self) -> None:
        self.replica = SimpleNamespace(
            actor=f"{ALICE}/00000001",
            chain_heads=lambda share: {},
            shares_for=lambda peer: [],
            holds=lambda share: True,
            removal_notice=lambda share: "",
            removal_reason=lambda share, peer: "",
        )
        self.delays: dict[Any, float] = {}

    async def call(self, function: Any, *args: Any) -> Any:
        await trio.sleep(self.delays.get(function, 0.0))
        return function(*args)


def fake_manager(node: FakeNode, idle: float = LIMIT) -> Any:
    return SimpleNamespace(
        node=node,
        replica=node.replica,
        device_id=ALICE,
        neighbourhood=Neighbourhood(),
        timeouts=Timeouts(handshake=HANDSHAKE, idle=idle),
        revoked_us={},
        _greeted=lambda session, actor: True,
        note_clock_offsets=lambda: None,
        on_change=lambda: None,
    )


class Stallable(trio.abc.Stream):
    """Our end of the connection; `stall()` makes every send hang, as to a peer that stopped
    reading (its receive window full)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.flowing = trio.Event()
        self.flowing.set()

    def stall(self) -> None:
        self.flowing = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.flowing.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Peer:
    """The other device, driven by the test: what it sends, and what it received when."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.connection = SyncConnection(BOB, ALICE)
        self.received: list[tuple[float, object]] = []

    async def say_hello(self, shares: dict | None = None) -> None:
        await self.stream.send_all(self.connection.send_hello(shares or {}))

    async def ping(self, idle_ms: int | None = 8000) -> None:
        await self.stream.send_all(self.connection.send_ping(None, idle_ms))

    async def read(self) -> None:
        while data := await self.stream.receive_some(65536):
            self.connection.receive_data(bytes(data))
            while (event := self.connection.next_event()) is not NEED_DATA:
                self.received.append((trio.current_time(), event))

    def pings(self) -> list[float]:
        return [when for when, event in self.received if isinstance(event, Ping)]

    def pongs(self) -> list[float]:
        return [when for when, event in self.received if isinstance(event, Pong)]


class Harness:
    def __init__(self, idle: float = LIMIT) -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        self.stream = Stallable(ours)
        self.node = FakeNode()
        self.session = _Session(self.stream, PeerState(BOB), ALICE)  # type: ignore[arg-type]
        self.pump = SessionPump(fake_manager(self.node, idle), self.session)
        self.peer = Peer(theirs)
        self.ended_at: float | None = None

    async def run(self) -> None:
        with self.session.cancel_scope:
            await self.pump.run()
        self.ended_at = trio.current_time()


async def start(harness: Harness, nursery: trio.Nursery) -> float:
    nursery.start_soon(harness.peer.read)
    nursery.start_soon(harness.run)
    await harness.peer.say_hello()
    return trio.current_time()


async def test_an_idle_session_pings_every_3_s_and_lasts_while_the_peer_does(autojump_clock):
    harness = Harness()
    async with trio.open_nursery() as nursery:
        began = await start(harness, nursery)
        while trio.current_time() < began + 60:
            await trio.sleep(3.0)
            await harness.peer.ping()
        assert harness.ended_at is None, harness.session.reason
        assert harness.session.state.liveness is not None
        assert harness.session.state.liveness.answering(trio.current_time())
        pings = harness.peer.pings()
        assert 19 <= len(pings) <= 21
        assert {round(b - a, 6) for a, b in pairwise(pings)} == {3.0}
        assert harness.peer.pongs() == [], "a peer that says its limit hears our pings only"
        nursery.cancel_scope.cancel()


async def test_a_peer_that_goes_silent_is_gone_8_s_after_its_last_word(autojump_clock):
    harness = Harness()
    async with trio.open_nursery() as nursery:
        began = await start(harness, nursery)
        await trio.sleep(2.0)
        await harness.peer.ping()  # its last word, at began + 2
        await trio.sleep(3.9)
        assert harness.session.state.liveness.answering(trio.current_time())
        await trio.sleep(0.2)
        assert not harness.session.state.liveness.answering(trio.current_time()), "silent"
        await trio.sleep(30)
        assert harness.ended_at == began + 2 + LIMIT
        assert harness.session.reason == "peer went silent (nothing for 8 s)"
        nursery.cancel_scope.cancel()


async def test_a_peer_that_never_says_hello_gets_the_handshake_timeout(autojump_clock):
    harness = Harness()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.run)
        await trio.sleep(30)
        assert harness.ended_at == HANDSHAKE
        nursery.cancel_scope.cancel()


async def test_a_peer_with_a_shorter_limit_is_pinged_often_enough_for_it(autojump_clock):
    harness = Harness()
    async with trio.open_nursery() as nursery:
        began = await start(harness, nursery)
        await harness.peer.ping(idle_ms=1500)
        while trio.current_time() < began + 10:
            await trio.sleep(0.5)
            await harness.peer.ping(idle_ms=1500)
        late = [when for when in harness.peer.pings() if when > began + 1]
        assert {round(b - a, 6) for a, b in pairwise(late)} == {0.6}
        nursery.cancel_scope.cancel()


async def test_an_older_peers_ping_still_gets_its_pong(autojump_clock):
    harness = Harness()
    async with trio.open_nursery() as nursery:
        await start(harness, nursery)
        await harness.peer.ping(idle_ms=None)
        await trio.sleep(0.1)
        assert len(harness.peer.pongs()) == 1
        nursery.cancel_scope.cancel()


async def test_our_own_work_on_the_database_is_not_the_peers_silence(autojump_clock):
    harness = Harness()
    # the peer offers a share we did not: asking the database whether we hold it takes 30 s
    harness.node.delays[pump._offer_facts] = 30.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.peer.read)
        nursery.start_soon(harness.run)
        await harness.peer.say_hello({"family": {}})
        began = trio.current_time()
        await trio.sleep(60)
        assert harness.ended_at == began + 30 + LIMIT, "a whole limit after our work ended"
        nursery.cancel_scope.cancel()


async def test_a_receiver_stuck_sending_to_a_peer_that_stopped_reading_still_ends(autojump_clock):
    harness = Harness()
    async with trio.open_nursery() as nursery:
        began = await start(harness, nursery)
        await trio.sleep(1.0)
        harness.stream.stall()  # the peer stops reading; its last word asks for a pong
        await harness.peer.ping(idle_ms=None)
        await trio.sleep(30)
        assert harness.ended_at == began + 1 + LIMIT
        assert harness.session.reason.startswith("peer went silent")
        nursery.cancel_scope.cancel()


async def test_a_large_frame_trickling_in_on_a_slow_link_is_not_silence(autojump_clock):
    harness = Harness()
    big = hand_frame({"t": "from-a-later-release", "pad": b"x" * 200_000})  # ignored, but heard
    async with trio.open_nursery() as nursery:
        began = await start(harness, nursery)
        for offset in range(0, len(big), 10_000):  # 10 kB every 2 s: 40 s for the whole frame
            await trio.sleep(2.0)
            await harness.peer.stream.send_all(big[offset : offset + 10_000])
        assert trio.current_time() >= began + 40
        assert harness.ended_at is None, harness.session.reason
        nursery.cancel_scope.cancel()
