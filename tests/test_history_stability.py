from dataclasses import replace

import msgpack

from p2psync.history.stability import (
    Away,
    HistoryPolicy,
    Report,
    away_members,
    frontiers,
    pointwise_min,
    read_report,
    report_value,
    should_report,
)
from p2psync.merge import Sibling

A, B, C = "AAAAA", "BBBBB", "CCCCC"
DAY = 86_400_000


def report(device, seq, vector, at_ms=0, previous=None):
    return Report(device, (f"{device}/e", seq), vector, at_ms, previous)


def sibling(device, seq, value, deleted=False):
    return Sibling(f"{device}/e", seq, seq, deleted, value, None)


def test_a_report_reads_back_with_the_report_it_replaces():
    first = read_report(A, [sibling(A, 3, report_value({"x/1": 2}, 5, None))])
    assert first == replace(report(A, 3, {"x/1": 2}, 5), reads_implied=True)
    second = read_report(A, [sibling(A, 9, report_value({"x/1": 4}, 8, first))])
    assert second is not None and second.previous == report(A, 3, {"x/1": 2}, 0)


def test_a_report_without_key_i_comes_from_a_release_that_reads_vectors_as_written():
    """0.4.0 wrote {"v", "t", "p", "b"}: its reader takes a vector as written, so the members
    reading its reports leave no retired epoch out of theirs (history/compaction.py)."""
    written_by_0_4 = msgpack.packb({"v": {"x/1": 2}, "t": 5})
    found = read_report(A, [sibling(A, 3, written_by_0_4)])
    assert found is not None and not found.reads_implied
    assert msgpack.unpackb(report_value({"x/1": 2}, 5, None))["i"] == 1


def test_junk_and_reports_written_by_another_device_say_nothing():
    assert read_report(A, [sibling(B, 3, report_value({"x/1": 2}, 5, None))]) is None
    assert read_report(A, [sibling(A, 3, b"\xc1")]) is None
    assert read_report(A, [sibling(A, 3, msgpack.packb({"v": {"x": -1}, "t": 1}))]) is None
    assert read_report(A, [sibling(A, 3, msgpack.packb([1]))]) is None
    assert read_report(A, [sibling(A, 3, None, deleted=True)]) is None
    # of concurrent reports (a device started twice), the newest counts
    two = [
        sibling(A, 3, report_value({"x": 1}, 5, None)),
        sibling(A, 4, report_value({"x": 2}, 9, None)),
    ]
    assert read_report(A, two).vector == {"x": 2}


def test_pointwise_min_is_what_every_vector_holds():
    assert pointwise_min([{"x": 3, "y": 1}, {"x": 2, "z": 5}]) == {"x": 2}
    assert pointwise_min([]) == {}


def test_nothing_is_stable_until_every_member_reported():
    reports = {A: report(A, 2, {"x": 5})}
    assert frontiers([A, B], reports, 0, DAY).stable == {}


def test_the_stable_frontier_is_the_minimum_and_the_purge_frontier_waits_for_stable_reports():
    reports = {A: report(A, 2, {"x": 5, f"{A}/e": 1}), B: report(B, 4, {"x": 3, f"{A}/e": 2})}
    found = frontiers([A, B], reports, 0, DAY)
    assert found.stable == {"x": 3, f"{A}/e": 1}
    # A's report (seq 2) is not held by B: not yet a report everyone holds
    assert found.purge == {}
    # the next round: each holds the other's earlier report; those are what purge goes by
    reports = {
        A: report(A, 5, {"x": 5, f"{A}/e": 4, f"{B}/e": 4}, previous=reports[A]),
        B: report(B, 6, {"x": 5, f"{A}/e": 2, f"{B}/e": 5}, previous=reports[B]),
    }
    found = frontiers([A, B], reports, 0, DAY)
    assert found.stable == {"x": 5, f"{A}/e": 2, f"{B}/e": 4}
    assert found.purge == found.settled == {"x": 3, f"{A}/e": 1}


def test_a_member_away_longer_than_the_bound_does_not_hold_back_the_stable_frontier():
    reports = {
        A: report(A, 2, {"x": 9}, at_ms=40 * DAY),
        B: report(B, 2, {"x": 9}, at_ms=40 * DAY),
        C: report(C, 1, {"x": 1}, at_ms=1 * DAY),
    }
    found = frontiers([A, B, C], reports, 41 * DAY, 30 * DAY)
    assert found.away == {C: DAY}
    assert found.stable == {"x": 9}
    # but its tombstones are kept for it: its report is not held by the others' reports
    assert found.purge == {}


def test_reports_go_on_while_data_is_unsettled_and_stop_once_it_is():
    last = report(A, 2, {"x": 3}, at_ms=1000)
    timers = dict(interval_ms=100, refresh_ms=DAY)
    assert should_report(None, {"x": 1}, False, 0, **timers), "the first report"
    assert not should_report(None, {}, False, 0, **timers), "nothing held, nothing to say"
    assert not should_report(last, {"x": 4}, True, 1050, **timers), "too soon"
    assert should_report(last, {"x": 4}, True, 1100, **timers)
    assert not should_report(last, {"x": 3}, True, 1100, **timers), "nothing new to say"
    assert not should_report(last, {"x": 4}, False, 5000, **timers), "settled: quiet"
    assert should_report(last, {"x": 3}, False, 1000 + DAY, **timers), "still here"


def test_a_member_not_heard_from_for_two_refreshes_is_away_until_the_bound():
    policy = HistoryPolicy.of(300, 30)
    assert policy.refresh_ms == DAY and policy.interval_ms == 300_000
    assert HistoryPolicy.of(1, 0.1).refresh_ms == DAY // 40, "short bounds refresh sooner"
    heard = {A: 50 * DAY, B: 10 * DAY}
    found = away_members(heard, [A, B, C], policy, 51 * DAY)
    assert found == [Away(B, 10 * DAY, 40 * DAY)], "C never reported: new, not away"


def test_small_folds_wait_for_the_frontier_to_stop_moving():
    from p2psync.history.stability import FOLD_AT_LEAST, worth_folding

    assert not worth_folding({"x": 5}, {"x": 9}, last={"x": 7}), "still moving: later"
    assert worth_folding({"x": 5}, {"x": 9}, last={"x": 9}), "stopped: fold"
    assert not worth_folding({"x": 9}, {"x": 9}, last={"x": 9}), "nothing to fold"
    assert worth_folding({}, {"x": FOLD_AT_LEAST}, last={}), "enough to be worth it"


def storm_reports(rounds, lag):
    """Two members reporting every round through a write storm, each report holding the other's
    writes of `lag` rounds before; each names the reports it replaced, as written."""
    newest = {}
    for k in range(1, rounds + 1):
        for me, other in ((A, B), (B, A)):
            vector = {f"{me}/e": 10 * k, f"{other}/e": max(0, 10 * (k - lag))}
            wire = report_value(vector, k, newest.get(me))
            newest[me] = read_report(me, [sibling(me, 10 * k, wire)])
    return newest


def test_a_report_names_a_few_earlier_reports_and_old_readers_see_the_one_it_replaced():
    newest = storm_reports(6, 2)[A]
    assert [r.dot[1] for r in newest.earlier] == [50, 40, 30, 20]
    fields = msgpack.unpackb(report_value({"x": 1}, 7, newest), raw=False)
    assert fields["p"] == [f"{A}/e", 60, {f"{A}/e": 60, f"{B}/e": 40}], "0.4.0's key, unchanged"
    assert [o[1] for o in fields["o"]] == [50, 40, 30]


def test_a_write_storm_lagging_two_rounds_settles_with_older_reports():
    reports = storm_reports(6, 2)
    found = frontiers([A, B], reports, 6, DAY)
    assert found.stable == {f"{A}/e": 40, f"{B}/e": 40}
    # newest (60) and replaced (50) reports are beyond S: naming only those, nothing settled
    only_previous = {m: replace(r, older=()) for m, r in reports.items()}
    assert frontiers([A, B], only_previous, 6, DAY).settled == {}
    # the reports of round 4 are within S, and they settle what they held
    assert found.settled == found.purge == {f"{A}/e": 20, f"{B}/e": 20}
