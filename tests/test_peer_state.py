"""What the daemon shows about one peer (p2psync/peer_state.py): counts and the receive rate."""

from p2psync.peer_state import RATE_WINDOW_SECONDS, PeerState


def test_the_receive_rate_counts_only_the_last_window() -> None:
    state = PeerState("B" * 52)
    state.count_received(0.0, 100)
    state.count_received(3.0, 20)
    assert state.entries_received == 120
    assert state.receive_rate(3.0) == 120 / RATE_WINDOW_SECONDS
    assert state.receive_rate(RATE_WINDOW_SECONDS + 1.0) == 20 / RATE_WINDOW_SECONDS
    assert state.receive_rate(100.0) == 0.0
    assert state.entries_received == 120  # the total stays


def test_receipts_older_than_the_window_are_let_go_as_new_ones_come() -> None:
    state = PeerState("B" * 52)
    for second in range(100):
        state.count_received(float(second), 1)
    assert len(state.recent_receipts) == RATE_WINDOW_SECONDS + 1
    assert state.entries_received == 100
