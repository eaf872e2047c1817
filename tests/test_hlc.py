from hypothesis import given
from hypothesis import strategies as st

from p2psync import hlc

millis = st.integers(min_value=0, max_value=2**40)


@given(st.lists(millis, min_size=1, max_size=50))
def test_ticks_strictly_increase_even_when_the_wall_clock_goes_back(readings):
    last = 0
    for now in readings:
        stamp = hlc.tick(last, now)
        assert stamp > last
        assert hlc.to_millis(stamp) >= now
        last = stamp


@given(millis, millis, millis)
def test_a_tick_after_observing_is_later_than_the_observed_stamp(local_ms, remote_ms, now):
    last = hlc.from_millis(local_ms)
    remote = hlc.from_millis(min(remote_ms, now))
    assert hlc.tick(hlc.observe(last, remote, now), now) > remote


def test_a_clock_far_in_the_future_is_not_adopted():
    now = 1_000_000
    far = hlc.from_millis(now + hlc.MAX_ADOPTED_DRIFT_MS + 1)
    assert hlc.observe(hlc.from_millis(now), far, now) == hlc.from_millis(now)


def test_a_clock_ahead_of_every_peer_is_held_back_to_the_adopted_drift():
    hour, drift = 3_600_000, hlc.MAX_ADOPTED_DRIFT_MS
    assert hlc.corrected_now(10 * hour, []) == 10 * hour, "alone, a device keeps its own clock"
    assert hlc.corrected_now(10 * hour, [-hour, -hour - 5]) == 9 * hour + drift
    assert hlc.corrected_now(10 * hour, [-hour, 0]) == 10 * hour, "one peer agrees with us"
    assert hlc.corrected_now(10 * hour, [hour]) == 10 * hour, "a slow self is not pushed ahead"


def test_a_remote_clock_more_than_minutes_ahead_is_not_adopted():
    now = 1_000_000_000
    assert hlc.MAX_ADOPTED_DRIFT_MS <= 10 * 60 * 1000
    ahead = hlc.from_millis(now + 3_600_000)
    assert hlc.observe(hlc.from_millis(now), ahead, now) == hlc.from_millis(now)


@given(
    st.integers(min_value=0, max_value=2**40),
    st.lists(st.integers(min_value=0, max_value=2**56), max_size=8),
    st.integers(min_value=0, max_value=2**40),
)
def test_observing_a_batch_at_once_is_observing_each_in_turn(last, remotes, now):
    one_by_one = last
    for remote in remotes:
        one_by_one = hlc.observe(one_by_one, remote, now)
    assert hlc.observe_all(last, remotes, now) == one_by_one


def test_observing_a_batch_skips_only_the_stamps_too_far_ahead():
    now = 1_000_000
    edge = hlc.from_millis(now + hlc.MAX_ADOPTED_DRIFT_MS)
    far = hlc.from_millis(now + hlc.MAX_ADOPTED_DRIFT_MS + 1)
    assert hlc.observe_all(0, [edge + 5, far, edge], now) == edge + 5
