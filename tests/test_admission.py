"""The unauthenticated-connection caps and the failure throttle (pure: no sockets, no clock)."""

import pytest

from p2psync.admission import (
    MAX_UNAUTHENTICATED,
    Admission,
    FailureLog,
    single_line,
    source_of,
    total_cap,
)


def test_the_total_cap_stays_inside_the_descriptor_limit() -> None:
    assert total_cap(8192) == MAX_UNAUTHENTICATED
    assert total_cap(None) == MAX_UNAUTHENTICATED
    assert total_cap(-1) == MAX_UNAUTHENTICATED  # RLIM_INFINITY
    assert total_cap(128) == 32
    assert total_cap(2) == 1


def test_admission_caps_each_source_and_the_total_and_frees_on_release() -> None:
    gate = Admission(total=4, per_source=2)
    assert [gate.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert "2 unauthenticated connections from there" in gate.refusal("10.0.0.1")
    assert gate.admit("10.0.0.2") and gate.admit("10.0.0.3") and gate.admit("10.0.0.4") is False
    assert gate.held == 4 and "4 unauthenticated connections already open" in gate.refusal("x")
    gate.release("10.0.0.1")
    assert gate.holding("10.0.0.1") == 1 and gate.admit("10.0.0.4")
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        gate.release(source)
    assert gate.held == 0 and gate.holding("10.0.0.1") == 0
    with pytest.raises(ValueError):
        gate.release("10.0.0.1")  # more releases than admissions is a bug, not a count


def test_sources_group_ipv6_by_64_and_unmap_ipv4() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9")
    assert source_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("fe80::1%eth0") == "fe80::/64"


def test_a_flood_is_one_line_then_one_summary_per_interval() -> None:
    log = FailureLog(interval=60.0)
    first = log.record("dropped connection", "10.0.0.1:5000", "timed out", now=0.0)
    assert first == single_line("dropped connection", "10.0.0.1:5000", "timed out")
    assert first == "dropped connection from 10.0.0.1:5000: timed out"
    lines = [
        log.record(
            "dropped connection", f"10.0.0.{i % 3}:{i}", "timed out", i / 10, f"10.0.0.{i % 3}"
        )
        for i in range(1, 400)
    ]
    assert lines == [None] * 399
    assert log.flush(now=59.0) == []
    [(kind, summary)] = log.flush(now=61.0)
    assert kind == "dropped connection"
    assert summary.startswith("dropped connection: 399 more in the last 61 s from 10.0.0.0 (133)")
    assert "2 other sources" in summary and summary.endswith("last: timed out")
    # the flood goes on: counted again, summed up after the next interval, not logged singly
    assert log.record("dropped connection", "10.0.0.9:1", "reset", now=70.0) is None
    [(_, later)] = log.flush(now=122.0)
    assert "1 more" in later and "last: reset" in later


def test_kinds_are_counted_apart_and_a_quiet_kind_is_forgotten() -> None:
    log = FailureLog(interval=10.0)
    assert log.record("accept failed", "", "EMFILE", now=0.0) == "accept failed: EMFILE"
    assert log.record("turned away connection", "a:1", "cap", now=1.0) is not None
    assert log.record("accept failed", "", "EMFILE", now=2.0) is None
    flushed = dict(log.flush(now=11.0))
    assert list(flushed) == ["accept failed"]
    assert flushed["accept failed"] == "accept failed: 1 more in the last 11 s; last: EMFILE"
    assert log.flush(now=30.0) == []  # both kinds quiet for a whole interval
    assert log.record("turned away connection", "a:1", "cap", now=31.0) is not None


def test_a_failure_after_the_interval_without_a_flush_brings_the_summary() -> None:
    log = FailureLog(interval=10.0)
    log.record("refused connection", "a:1", "TLS failed", now=0.0)
    assert log.record("refused connection", "a:2", "TLS failed", now=5.0) is None
    summary = log.record("refused connection", "b:3", "timed out", now=12.0)
    assert summary is not None and "2 more in the last 12 s" in summary
