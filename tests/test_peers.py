"""Which of a device's sessions the PeerManager keeps (p2psync/peers.py), driven directly: the
same instance dialling at the same time, a second running copy, and naming the copy (no
sockets, no trio run)."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from p2psync.peer_state import PeerState
from p2psync.peers import PeerManager, Timeouts, _Session

US = "A" * 52  # the smaller id: a connection we dial is the one both sides keep
DEVICE = "B" * 52
ORIGINAL, COPY = f"{DEVICE}/00000001", f"{DEVICE}/00000002"


def manager() -> PeerManager:
    node: Any = SimpleNamespace(replica=SimpleNamespace(device_id=US))
    peers = PeerManager(node, Path("/nonexistent"), Timeouts(handshake=10.0, reconnect_max=60.0))
    peers._trusted = {DEVICE: b"its certificate"}
    return peers


def greeted(peers: PeerManager, address: str, dialer: str, actor: str) -> _Session:
    """A session with DEVICE that has said hello as `actor`; it must be kept."""
    state = PeerState(DEVICE, address, "out" if dialer == US else "in")
    session = _Session(None, state, dialer)  # type: ignore[arg-type]  # never read or written
    peers._register(session)
    session.greeted = True
    assert peers._greeted(session, actor)
    return session


def test_a_second_copy_is_named_when_it_speaks_after_the_other_copy_connected() -> None:
    peers = manager()
    original = greeted(peers, "10.0.0.2:50000", DEVICE, ORIGINAL)
    greeted(peers, "10.0.0.3:50001", DEVICE, COPY)
    assert peers.sessions[DEVICE] is original and original.newer_copy is not None
    peers.confirm_copies(original)  # what its pump does when the original says anything more
    assert peers.running_twice == {DEVICE: {"10.0.0.2", "10.0.0.3"}}


def test_the_copy_is_still_named_when_the_original_s_session_is_replaced_by_ours() -> None:
    """The original dialled us, the copy dialled us, then our own dial of the original said
    hello: ours replaces the original's first session, and must keep the news that another copy
    runs (it was lost with the replaced session, and the copy went unnamed)."""
    peers = manager()
    first = greeted(peers, "10.0.0.2:50000", DEVICE, ORIGINAL)
    greeted(peers, "10.0.0.3:50001", DEVICE, COPY)
    ours = greeted(peers, "10.0.0.2:47100", US, ORIGINAL)
    assert first.cancel_scope.cancel_called, "replaced by a simultaneous connection"
    assert peers.sessions[DEVICE] is ours
    assert ours.newer_copy is not None
    peers.confirm_copies(ours)
    assert peers.running_twice == {DEVICE: {"10.0.0.2", "10.0.0.3"}}


def test_the_copy_dialled_by_both_sides_at_once_keeps_one_session() -> None:
    """The copy dialled us while our dial of it said hello: the session with the copy is settled
    as the device's own session would be (one was filed over the other, left running untracked)."""
    peers = manager()
    original = greeted(peers, "10.0.0.2:50000", DEVICE, ORIGINAL)
    copys_dial = greeted(peers, "10.0.0.3:50001", DEVICE, COPY)
    ours = greeted(peers, "10.0.0.3:47100", US, COPY)
    assert copys_dial.cancel_scope.cancel_called, "replaced by a simultaneous connection"
    assert ours.reason == original.reason == "", "both kept"
    assert peers.sessions[DEVICE] is original and peers.twins[DEVICE] == {COPY: ours}
    assert original.newer_copy is ours
    peers._unregister(copys_dial)  # its end must not drop the session that replaced it
    assert peers.twins[DEVICE] == {COPY: ours}
    peers.confirm_copies(original)
    assert peers.running_twice == {DEVICE: {"10.0.0.2", "10.0.0.3"}}


def test_the_copy_s_second_session_that_loses_is_closed_and_the_first_kept() -> None:
    peers = manager()
    original = greeted(peers, "10.0.0.2:50000", DEVICE, ORIGINAL)
    ours = greeted(peers, "10.0.0.3:47100", US, COPY)
    state = PeerState(DEVICE, "10.0.0.3:50001", "in")
    copys_dial = _Session(None, state, DEVICE)  # type: ignore[arg-type]
    peers._register(copys_dial)
    copys_dial.greeted = True
    assert not peers._greeted(copys_dial, COPY)
    assert copys_dial.cancel_scope.cancel_called and ours.reason == ""
    assert peers.twins[DEVICE] == {COPY: ours} and original.newer_copy is ours
