"""The trio dialers (p2psync/dialers.py) driven by their schedule, through a `PeerManager`, on
trio's autojump clock (no real sleeps, no sockets)."""

from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from p2psync import dialers
from p2psync.peers import PeerManager, Timeouts
from p2psync.redial import PROBE_CONNECT_SECONDS, PROBE_SECONDS, WAKE_FLOOR_SECONDS

CAP = 60.0
HANDSHAKE_SECONDS = 10.0
ADDRESS = ("10.9.9.9", 47100)
DEVICE = "B" * 52


class Network:
    """Stands in for trio.open_tcp_stream: every connect is refused at once, or hangs (a
    dropped SYN) while `silent`."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self.silent = False

    async def open_tcp_stream(self, host: str, port: int, **kwargs: Any) -> trio.SocketStream:
        self.attempts.append(trio.current_time())
        if self.silent:
            await trio.sleep_forever()
        raise ConnectionRefusedError(111, "Connection refused")


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    fake = Network()
    monkeypatch.setattr(dialers.trio, "open_tcp_stream", fake.open_tcp_stream)
    return fake


def manager(cap: float = CAP) -> PeerManager:
    node: Any = SimpleNamespace(replica=SimpleNamespace(device_id="A" * 52))
    return PeerManager(
        node, Path("/nonexistent"), Timeouts(handshake=HANDSHAKE_SECONDS, reconnect_max=cap)
    )


async def test_a_backed_off_dialer_tries_at_once_when_woken(network: Network, autojump_clock):
    peer_manager = manager()
    async with trio.open_nursery() as nursery:
        peer_manager.dialers.start(nursery)
        peer_manager.dial(ADDRESS, DEVICE)
        await trio.sleep(300.0)
        backed_off = len(network.attempts)
        assert 8 <= backed_off <= 20, network.attempts  # 0.5, 1, 2 ... 60 s with jitter
        last_gap = network.attempts[-1] - network.attempts[-2]
        assert last_gap >= CAP / 2

        woken_at = trio.current_time()
        peer_manager.wake(DEVICE)
        await trio.sleep(0.001)
        assert network.attempts[-1] == woken_at, "news: dialled at once"
        peer_manager.wake("C" * 52)  # another device's news changes nothing here
        await trio.sleep(0.2)
        assert len(network.attempts) == backed_off + 1
        await trio.sleep(10.0)
        # a floor apart during the grace period, then the back-off starts over (0.5-1 s ...)
        gaps = [later - earlier for earlier, later in pairwise(network.attempts[backed_off:])]
        assert gaps[:4] == pytest.approx([WAKE_FLOOR_SECONDS] * 4)
        assert all(gap > WAKE_FLOOR_SECONDS for gap in gaps[5:])
        assert 0.5 <= gaps[5] <= 1.0
        peer_manager.undial(ADDRESS)
    assert ADDRESS not in peer_manager.dialers.running


async def test_news_interrupts_a_connect_that_hangs(network: Network, autojump_clock):
    peer_manager = manager()
    async with trio.open_nursery() as nursery:
        peer_manager.dialers.start(nursery)
        network.silent = True  # the partition: SYNs are dropped, each connect times out
        peer_manager.dial(ADDRESS, DEVICE)
        await trio.sleep(100.0)
        dialer = peer_manager.dialers.running[ADDRESS]
        while dialer.connecting is None or trio.current_time() - network.attempts[-1] < 1.0:
            await trio.sleep(0.1)  # until a connect has been waiting for an answer for 1 s
        count = len(network.attempts)
        network.silent = False  # the partition heals
        woken_at = trio.current_time()
        peer_manager.wake()  # a link came up: news for every device
        await trio.sleep(0.001)
        assert len(network.attempts) == count + 1, "the hanging connect gave way to a new one"
        assert network.attempts[-1] == woken_at
        peer_manager.undial(ADDRESS)


async def gaps_after_a_session_ends(network: Network, address: tuple[str, int]) -> list[float]:
    """Dial `address` while its device's session (which it dialled) runs; end the session as
    the path is cut where neither end can see it; the gaps between the attempts of a minute."""
    peer_manager = manager()
    session = SimpleNamespace(closed=trio.Event(), greeted=True)
    peer_manager.sessions[DEVICE] = session
    async with trio.open_nursery() as nursery:
        peer_manager.dialers.start(nursery)
        peer_manager.dial(address, DEVICE)
        await trio.sleep(30.0)
        assert network.attempts == [], "no dialling while a session with the device runs"
        network.silent = True
        del peer_manager.sessions[DEVICE]
        session.closed.set()
        ended_at = trio.current_time()
        await trio.sleep(60.0)
        assert network.attempts[0] == ended_at
        peer_manager.undial(address)
    return [later - earlier for earlier, later in pairwise(network.attempts)]


async def test_after_a_session_ends_a_silent_path_is_probed_every_two_seconds(
    network: Network, autojump_clock
):
    gaps = await gaps_after_a_session_ends(network, ADDRESS)
    shortest = PROBE_CONNECT_SECONDS + PROBE_SECONDS / 2
    assert all(shortest <= gap <= PROBE_CONNECT_SECONDS + PROBE_SECONDS for gap in gaps), gaps


async def test_a_host_name_keeps_its_usual_time_to_be_looked_up_and_answer(
    network: Network, autojump_clock
):
    gaps = await gaps_after_a_session_ends(network, ("laptop.home.arpa", 47100))
    assert gaps and all(gap >= HANDSHAKE_SECONDS for gap in gaps), gaps


async def test_a_wake_with_nothing_to_dial_does_nothing(network: Network, autojump_clock):
    peer_manager = manager()
    peer_manager.wake()
    peer_manager.wake(DEVICE)
    assert network.attempts == []
