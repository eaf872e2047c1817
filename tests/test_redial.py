"""When a dialer retries: the pure schedule (p2psync/redial.py)."""

import pytest

from p2psync.redial import (
    PROBE_CONNECT_SECONDS,
    PROBE_SECONDS,
    RECENT_SECONDS,
    WAKE_FLOOR_SECONDS,
    Redial,
    backoff_delay,
)

CAP = 60.0


def fixed(value: float):
    return lambda: value


def test_backoff_grows_to_the_cap_with_jitter_between_half_and_all() -> None:
    assert [backoff_delay(n, CAP, fixed(1.0)) for n in range(9)] == [
        0.5,
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]
    assert backoff_delay(3, CAP, fixed(0.0)) == 2.0
    assert backoff_delay(10_000, CAP, fixed(1.0)) == CAP


def failing_for(schedule: Redial, attempts: int, now: float = 0.0) -> float:
    """Run `attempts` failed attempts, each at once when due; the time after the last."""
    for _ in range(attempts):
        now += schedule.delay(now)
        schedule.started(now)
        schedule.failed(now)
    return now


def test_the_first_attempt_is_at_once_and_failures_back_off_up_to_the_cap() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    assert schedule.delay(0.0) == 0.0
    delays = []
    now = 0.0
    for _ in range(10):
        schedule.started(now)
        assert schedule.delay(now) == float("inf"), "no second attempt while one is under way"
        schedule.failed(now)
        delays.append(schedule.delay(now))
        now += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_news_makes_a_backed_off_address_due_at_once_and_resets_the_back_off() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    now = failing_for(schedule, 8)
    assert schedule.delay(now) == CAP
    now += 5.0
    schedule.woken(now)
    assert schedule.delay(now) == 0.0
    # the link is still settling: attempts go on a floor apart for the grace period
    attempts = []
    while True:
        now += schedule.delay(now)
        attempts.append(now)
        schedule.started(now)
        schedule.failed(now + 0.1)
        if schedule.failures:
            break
    assert attempts == pytest.approx([now - 2.0 + i * WAKE_FLOOR_SECONDS for i in range(5)])
    assert schedule.failures == 1  # then ordinary back-off, from the start
    assert schedule.delay(now + 0.1) == 1.0


def test_news_right_after_an_attempt_waits_for_the_floor() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    schedule.started(10.0)
    schedule.failed(10.01)  # refused at once
    schedule.woken(10.1)
    assert schedule.delay(10.1) == pytest.approx(10.0 + WAKE_FLOOR_SECONDS - 10.1)


def test_news_during_an_attempt_that_fails_retries_at_once_not_after_back_off() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    now = failing_for(schedule, 6)
    schedule.started(now)
    schedule.woken(now + 3.0)  # e.g. a connect whose SYN was dropped, interrupted by the news
    schedule.failed(now + 3.0)
    assert schedule.delay(now + 3.0) == 0.0
    schedule.started(now + 3.0)
    schedule.failed(now + 3.2)  # within the grace period: the floor apart
    assert schedule.delay(now + 3.2) == pytest.approx(0.3)
    schedule.started(now + 3.5)
    schedule.failed(now + 5.6)  # news older than the attempt and the grace: back-off again
    assert schedule.delay(now + 5.6) == 1.0


def test_a_flapping_peer_gets_at_most_one_attempt_per_floor() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    now, attempts = 0.0, 0
    while now < 10.0:
        schedule.woken(now)  # news every 10 ms, every attempt refused at once
        if schedule.delay(now) == 0.0:
            attempts += 1
            schedule.started(now)
            schedule.failed(now)
        now = round(now + 0.01, 2)
    assert attempts == pytest.approx(10.0 / WAKE_FLOOR_SECONDS, abs=1)


def test_a_session_that_ran_starts_the_back_off_over() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    now = failing_for(schedule, 5)
    schedule.started(now)
    schedule.connected(now + 300.0)
    assert schedule.failures == 0
    assert schedule.delay(now + 300.0) == 0.5


HANDSHAKE = 10.0


def test_a_path_that_just_worked_is_probed_about_every_second_then_backed_off() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    schedule.connected(100.0)  # the session ends: its peer went silent
    now = 100.0
    delays = []
    while now < 100.0 + RECENT_SECONDS + 200.0:
        now += schedule.delay(now)
        assert schedule.connect_patience(now, HANDSHAKE) == (
            PROBE_CONNECT_SECONDS if now - 100.0 <= RECENT_SECONDS else HANDSHAKE
        )
        schedule.started(now)
        now += schedule.connect_patience(now, HANDSHAKE)  # the connect times out
        schedule.failed(now)
        delays.append((now - 100.0, schedule.delay(now)))
    probing = [delay for since, delay in delays if since <= RECENT_SECONDS]
    later = [delay for since, delay in delays if since > RECENT_SECONDS]
    assert set(probing) == {PROBE_SECONDS}
    assert len(probing) >= RECENT_SECONDS / (PROBE_SECONDS + PROBE_CONNECT_SECONDS) - 1
    assert later and set(later) == {CAP}, "a device away for long gets the ordinary back-off"


def test_probing_attempts_are_jittered_between_half_and_all_of_the_interval() -> None:
    schedule = Redial(CAP, rng=fixed(0.0))
    schedule.connected(0.0)
    schedule.started(0.5)
    schedule.failed(2.0)
    assert schedule.delay(2.0) == PROBE_SECONDS / 2


def test_a_host_that_answers_but_turns_us_away_backs_off_and_ends_the_probing() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    schedule.connected(0.0)
    now = 10.0
    for expected in (1, 2, 4):
        schedule.started(now)
        schedule.failed(now, reached=True)
        assert schedule.delay(now) == expected
        now += expected
    schedule.started(now)
    assert schedule.connect_patience(now, HANDSHAKE) == HANDSHAKE
    schedule.failed(now)  # then nobody answers: still the back-off, not a probe
    assert schedule.delay(now) == 8


def test_a_session_the_device_dialled_starts_the_probing_too() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    now = failing_for(schedule, 8)
    assert schedule.connect_patience(now, HANDSHAKE) == HANDSHAKE
    schedule.worked(now)  # its incoming session ended
    schedule.started(now)
    assert schedule.connect_patience(now, HANDSHAKE) == PROBE_CONNECT_SECONDS
    schedule.failed(now + PROBE_CONNECT_SECONDS)
    assert schedule.delay(now + PROBE_CONNECT_SECONDS) == PROBE_SECONDS


def test_a_device_never_reached_is_never_probed() -> None:
    schedule = Redial(CAP, rng=fixed(1.0))
    assert schedule.connect_patience(0.0, HANDSHAKE) == HANDSHAKE
    assert failing_for(schedule, 9) > 100.0
