import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync import entry, identity
from p2psync.history.bootstrap import ALL_HELD
from p2psync.history.compaction import BaselineHolds
from p2psync.history.snapshot import (
    FREE_DISK_MARGIN,
    Room,
    SnapshotError,
    SnapshotRefused,
    baseline_digest,
    decode_row,
    disk_needed,
)
from p2psync.history.stability import STABLE, report_value
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE as SHARE
from tests.test_history_compaction import (
    FOREVER,
    Clock,
    converge,
    hand_over,
    household,
    report_round,
    restart_and_write,
    settle,
    value_of,
    visible,
)


def compacted_household(deletes: bool = True) -> tuple[list[Replica], Replica]:
    """Three members that folded 30 writes (and purged 10 deletes), whose newest reports name
    the baseline they folded to; and an observer that holds the whole log."""
    members, observer = household(3)
    a, b, c = members
    for i in range(30):
        writer = members[i % 3]
        writer.commit(SHARE, [entry.put("notes", f"k{i:02}", msgpack.packb(i))])
    converge(members)
    if deletes:
        for i in range(0, 30, 3):
            a.commit(SHARE, [entry.delete("notes", f"k{i:02}")])
    c.commit(SHARE, [entry.put("notes", "k01", msgpack.packb("concurrent"))])
    b.commit(SHARE, [entry.put("notes", "k01", msgpack.packb("other"))])
    converge(members)
    for replica in members:
        hand_over(replica, observer)
    settle(members, observer)
    settle(members, observer)
    report_round(members, observer)  # reports naming the baseline each folded to
    for replica in members:
        hand_over(replica, observer)
    assert a.store.baseline_frontier(SHARE) == b.store.baseline_frontier(SHARE) != {}
    assert a.baseline_claim(SHARE) == b.baseline_claim(SHARE) == c.baseline_claim(SHARE)
    return members, observer


def newcomer(path, members: list[Replica]) -> Replica:
    """A device paired into the household: it knows the keys of `members`, holds no entry of
    theirs."""
    new = Replica.open(path, identity.DeviceIdentity.generate(), Clock(5_000))
    if members:
        ops = [new.device_op(r.identity.cert_pem, f"m{i}") for i, r in enumerate(members)]
        new.commit(SHARE, ops)
    return new


def key_of(replicas: list[Replica]):
    keys = {r.device_id: r.identity.public_key for r in replicas}
    return keys.get


def transfer(sender: Replica, receiver: Replica, max_bytes: int = 1 << 20, stop_after=None):
    """Offer, stream (stopping after `stop_after` chunks: a cut connection) and install."""
    offer = sender.snapshot_offer(SHARE, receiver.summary_vector(SHARE))
    assert offer is not None
    after = receiver.snapshot_started(SHARE, offer)
    sent = 0
    while chunk := sender.snapshot_rows(SHARE, after, max_bytes):
        if stop_after is not None and sent == stop_after:
            return None
        staged = receiver.snapshot_chunk(SHARE, chunk)
        after, sent = staged.last, sent + 1
    return receiver.install_snapshot(SHARE, sender.device_id, key_of([sender]))


def counted_right(replica: Replica) -> bool:
    """The share's counts (what `status` shows) are those of its records, counted again."""
    recount = replica.store._db.execute(
        "SELECT coalesce(sum(NOT deleted), 0), coalesce(sum(conflict), 0) FROM records"
        " WHERE coll NOT LIKE '\\_%' ESCAPE '\\'"
    ).fetchone()
    counts = (replica.store.count_records(SHARE), replica.store.count_conflicts(SHARE))
    return counts == tuple(recount)


def test_a_new_device_bootstraps_from_a_snapshot_then_the_log_and_converges(tmp_path):
    members, observer = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    new.commit(SHARE, [entry.put("notes", "mine", msgpack.packb("offline"))])
    assert a.folded_beyond(SHARE, new.summary_vector(SHARE))
    verdict = transfer(a, new, max_bytes=200)
    assert verdict.accept and len(verdict.vouchers) == 3, verdict
    assert counted_right(new)
    assert new.store.take_conflict_flips() == [(SHARE, "notes", "k01", True)]
    # another member's offer of the same baseline, made before the first one ended (two
    # sessions): nothing is sent again
    again = members[1].snapshot_offer(SHARE, {})
    assert new.snapshot_started(SHARE, again) == ALL_HELD
    assert members[1].snapshot_rows(SHARE, ALL_HELD) == []
    assert new.install_snapshot(SHARE, members[1].device_id, key_of(members)) is None
    hand_over(a, new)  # the log after B, as today
    assert not a.folded_beyond(SHARE, new.summary_vector(SHARE))
    observer.commit(SHARE, [observer.device_op(new.identity.cert_pem, "new")])
    hand_over(new, observer)
    assert visible(new) == visible(observer)
    assert value_of(new, "mine") == ["offline"] and value_of(new, "k00") == []
    assert value_of(new, "k01") == ["concurrent", "other"], "a conflict stays a conflict"
    # it writes on from there, and the members that know it take its writes
    a.commit(SHARE, [a.device_op(new.identity.cert_pem, "new")])
    new.commit(SHARE, [entry.put("notes", "k02", msgpack.packb("after"))])
    hand_over(new, a)
    hand_over(new, observer)
    assert value_of(a, "k02") == value_of(observer, "k02") == ["after"]


def test_an_interrupted_transfer_resumes_after_a_restart_and_loses_nothing(tmp_path):
    members, observer = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    assert transfer(a, new, max_bytes=150, stop_after=3) is None
    kept = new.staged_snapshot(SHARE)
    new.close()  # what a kill -9 leaves: the staged rows were committed chunk by chunk
    again = Replica.open(tmp_path / "new.db", new.identity, Clock(9_000))
    offer = members[1].snapshot_offer(SHARE, again.summary_vector(SHARE))  # another sender
    assert kept.last is not None and again.snapshot_started(SHARE, offer) == kept.last
    after = kept.last
    while chunk := members[1].snapshot_rows(SHARE, after, 150):
        after = again.snapshot_chunk(SHARE, chunk).last
    assert again.install_snapshot(SHARE, members[1].device_id, key_of(members)).accept
    hand_over(members[1], again)
    assert visible(again) == visible(observer)
    assert again.staged_snapshot(SHARE) is None


def test_a_forged_row_is_refused_and_nothing_changes(tmp_path):
    members, _ = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    before = visible(new)
    new.snapshot_started(SHARE, a.snapshot_offer(SHARE, {}))
    rows = a.snapshot_rows(SHARE, None)
    at = next(i for i, raw in enumerate(rows) if b"other" in raw)
    rows[at] = rows[at].replace(b"other", b"OTHER")  # same size: the counts cannot tell
    assert new.snapshot_chunk(SHARE, rows).complete
    with pytest.raises(SnapshotError, match="digest"):
        new.install_snapshot(SHARE, a.device_id, key_of(members))
    assert visible(new) == before and new.store.baseline_frontier(SHARE) == {}
    assert new.staged_snapshot(SHARE) is None, "dropped: the next offer starts again"
    # what the install read before the digest failed (rolled back) is not taken for the truth
    assert transfer(a, new).accept and counted_right(new)
    hand_over(a, new)
    assert not a.folded_beyond(SHARE, new.summary_vector(SHARE))
    assert value_of(new, "k01") == ["concurrent", "other"]


def more_to_fold(members: list[Replica], observer: Replica) -> None:
    """New writes every member holds and reports: the next compaction folds them."""
    for i in range(30, 40):
        members[i % 3].commit(SHARE, [entry.put("notes", f"k{i:02}", msgpack.packb(i))])
    converge(members)
    for replica in members:
        hand_over(replica, observer)
    for _ in range(3):
        report_round(members, observer)


def stream(sender: Replica, receiver: Replica, after, chunks: int, max_bytes: int = 150):
    """Up to `chunks` chunks from the sender to the receiver; the key to go on after."""
    for _ in range(chunks):
        chunk = sender.snapshot_rows(SHARE, after, max_bytes)
        if not chunk:
            break
        after = receiver.snapshot_chunk(SHARE, chunk).last
    return after


def test_a_sender_folding_between_chunks_waits_while_it_sends_and_the_first_transfer_installs(
    tmp_path,
):
    members, observer = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    a.baseline_holds.take(SHARE)  # what the sender does before it reads the offer
    offer = a.snapshot_offer(SHARE, new.summary_vector(SHARE))
    after = stream(a, new, new.snapshot_started(SHARE, offer), 2)
    more_to_fold(members, observer)
    frontier = a.store.baseline_frontier(SHARE)
    held = a.compact(SHARE, FOREVER)
    assert (held.folded, held.purged) == (0, 0) and a.store.baseline_frontier(SHARE) == frontier
    stream(a, new, after, 10_000)
    assert new.install_snapshot(SHARE, a.device_id, key_of(members)).accept
    hand_over(a, new)  # the log after B, before the session's end releases the hold
    assert visible(new) == visible(a)
    a.baseline_holds.release(SHARE)
    assert a.compact(SHARE, FOREVER).folded > 0, "the fold it waited for"


def test_without_the_hold_a_fold_between_chunks_breaks_the_transfer(tmp_path):
    """What the hold above prevents: the rows change under the transfer and the digest fails."""
    members, observer = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    offer = a.snapshot_offer(SHARE, new.summary_vector(SHARE))
    after = stream(a, new, new.snapshot_started(SHARE, offer), 2)
    more_to_fold(members, observer)
    assert a.compact(SHARE, FOREVER).folded > 0
    with pytest.raises(SnapshotError):
        stream(a, new, after, 10_000)
        new.install_snapshot(SHARE, a.device_id, key_of(members))


def test_holds_count_per_share_and_end_with_the_last_one():
    holds = BaselineHolds()
    holds.take(SHARE)
    holds.take(SHARE)
    holds.release(SHARE)
    assert SHARE in holds and "other" not in holds
    holds.release(SHARE)
    assert SHARE not in holds


def test_an_offer_too_large_for_the_room_is_refused_and_what_was_staged_stays(tmp_path):
    members, _ = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    offer = a.snapshot_offer(SHARE, {})
    plenty = Room(free_bytes=1 << 40, max_bytes=1 << 30)
    after = stream(a, new, new.snapshot_started(SHARE, offer, plenty), 1)
    with pytest.raises(SnapshotRefused, match="max_snapshot_mb"):
        new.snapshot_started(SHARE, offer, Room(1 << 40, offer.size - 1))
    # resuming needs room for the rest only: the staged rows are on the disk already
    tight = Room(FREE_DISK_MARGIN + disk_needed(offer, new.staged_snapshot(SHARE).size), 1 << 30)
    assert new.snapshot_started(SHARE, offer, tight) == after
    with pytest.raises(SnapshotRefused, match="needs about"):
        new.snapshot_started(SHARE, offer, dataclasses.replace(tight, reserved_bytes=1))
    assert new.staged_snapshot(SHARE).last == after


def test_rows_beyond_what_the_start_announced_are_refused_and_stage_nothing(tmp_path):
    members, _ = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    offer = a.snapshot_offer(SHARE, {})
    rows = a.snapshot_rows(SHARE, None)
    small = dataclasses.replace(offer, size=sum(map(len, rows[:3])))
    new.snapshot_started(SHARE, small)
    new.snapshot_chunk(SHARE, rows[:3])
    with pytest.raises(SnapshotError, match="more rows than its start announced"):
        new.snapshot_chunk(SHARE, rows[3:4])
    assert new.staged_snapshot(SHARE).rows == 3, "nothing of the chunk that went beyond"
    new.discard_staged(SHARE)  # what the session does before it drops that sender
    assert new.staged_snapshot(SHARE) is None and list(new.store.staged_fields(SHARE)) == []


def test_an_offer_of_the_same_baseline_with_other_tombstones_starts_over(tmp_path):
    """Members purge at their own pace: same B and digest, other rows; resuming one's rows
    with the other's would never add up."""
    members, _ = compacted_household()
    a = members[0]
    new = newcomer(tmp_path / "new.db", members)
    offer = a.snapshot_offer(SHARE, {})
    stream(a, new, new.snapshot_started(SHARE, offer), 2)
    purged_more = dataclasses.replace(offer, rows=offer.rows - 1, size=offer.size - 10)
    assert new.snapshot_started(SHARE, purged_more) is None
    assert new.staged_snapshot(SHARE).rows == 0


def test_a_snapshot_only_its_sender_vouches_for_is_taken_and_named_so(tmp_path):
    members, _ = compacted_household()
    a = members[0]
    # the new device cannot check the other members' signatures (it does not know their keys)
    new = newcomer(tmp_path / "new.db", [])
    offer = a.snapshot_offer(SHARE, {})
    new.snapshot_started(SHARE, offer)
    after = None
    while chunk := a.snapshot_rows(SHARE, after):
        after = new.snapshot_chunk(SHARE, chunk).last
    verdict = new.install_snapshot(SHARE, a.device_id, lambda device: None)
    assert not verdict.accept, "no signature checks out: not even the sender's"
    new.snapshot_started(SHARE, offer)
    after = None
    while chunk := a.snapshot_rows(SHARE, after):
        after = new.snapshot_chunk(SHARE, chunk).last
    verdict = new.install_snapshot(SHARE, a.device_id, key_of([a]))
    assert verdict.accept and verdict.sender_only


def test_a_device_back_after_compaction_passed_it_converges_without_resurrecting_deletes(
    tmp_path,
):
    members, observer = household(3)
    a, b, away = members
    for i in range(6):
        a.commit(SHARE, [entry.put("notes", f"k{i}", msgpack.packb(i))])
    converge(members)
    settle(members, observer)
    for replica in members:
        replica.now_ms.now += 86_400_000  # type: ignore[attr-defined]
    away.commit(SHARE, [entry.put("notes", "k1", msgpack.packb("offline"))])
    for i in range(6, 12):
        a.commit(SHARE, [entry.put("notes", f"k{i}", msgpack.packb(i))])
    converge([a, b])
    b.commit(SHARE, [entry.delete("notes", "k0"), entry.delete("notes", "k6")])
    converge([a, b])
    for replica in (a, b):
        hand_over(replica, observer)
    for _ in range(2):
        settle([a, b], observer, keep_for_absent_ms=3_600_000)
    report_round([a, b], observer)
    assert a.folded_beyond(SHARE, away.summary_vector(SHARE))
    verdict = transfer(a, away)
    assert verdict.accept and verdict.vouchers == {a.device_id, b.device_id}
    assert counted_right(away)
    hand_over(a, away)
    hand_over(away, a)
    hand_over(away, observer)
    assert visible(away) == visible(a) == visible(observer)
    # kept as tombstones for it while it was away (history/stability.py, P), never live
    assert value_of(away, "k0") == value_of(away, "k6") == ["deleted"], "deletes stay deleted"
    assert value_of(away, "k1") == ["offline"], "its causally later write wins"
    assert away.compact(SHARE, FOREVER) is not None


def test_a_forged_snapshot_taken_on_its_senders_word_is_named_when_another_report_arrives(
    tmp_path,
):
    members, _ = compacted_household()
    a, b, _ = members
    new = newcomer(tmp_path / "new.db", [])  # it knows no member's key: only the sender's word
    honest = a.snapshot_offer(SHARE, {})
    rows = a.snapshot_rows(SHARE, None)
    at = next(i for i, raw in enumerate(rows) if b"other" in raw)
    rows[at] = rows[at].replace(b"other", b"OTHER")
    # reports are out of the digest: the forger drops them (they name the honest digest)
    rows = [r for r in rows if decode_row(r)[0][0] != STABLE]
    forged_digest = baseline_digest(honest.firsts_in_digest, [decode_row(r) for r in rows])
    # the sender signs a report naming its forged baseline
    claim = (honest.written, forged_digest)
    value = report_value(a.summary_vector(SHARE), a.now_ms(), a.own_report(SHARE), claim)
    a.commit(SHARE, [entry.put(STABLE, a.device_id, value)])
    report = a.own_report(SHARE)
    signed = tuple(a.store.signed_run(SHARE, report.dot[0], report.dot[1], report.dot[1]))
    forged = dataclasses.replace(
        honest,
        digest=forged_digest,
        rows=len(rows),
        size=sum(map(len, rows)),
        evidence=(signed,),
    )
    new.snapshot_started(SHARE, forged)
    assert new.snapshot_chunk(SHARE, rows).complete
    verdict = new.install_snapshot(SHARE, a.device_id, key_of([a]))
    assert verdict.accept and verdict.sender_only
    assert new.contradicted_baseline(SHARE) == []
    # the log after B brings b's report, which names the honest digest for the same writes
    new.commit(SHARE, [new.device_op(b.identity.cert_pem, "b")])
    hand_over(b, new)
    assert b.device_id in new.contradicted_baseline(SHARE)
    assert (b.device_id, "baseline") in new.notices
    assert new.contradicted_baseline(SHARE) == [], "said once"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2), st.sampled_from("abcdef"), st.one_of(st.none(), st.integers(0, 99))
        ),
        min_size=1,
        max_size=25,
    ),
    st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 99)), max_size=3),
    st.integers(1, 400),
)
def test_any_compacted_household_bootstraps_a_newcomer_that_converges(writes, own, chunk):
    """Random writes and deletes, folded; a newcomer with writes of its own takes a snapshot
    in chunks of any size, then the log, and ends where the member it took it from does once
    that member has its writes. (Not where an observer that never compacts is: a delete the
    members purged before the newcomer was one of them is gone for its concurrent writes too,
    as for any device that joins later; test_history_compaction.py checks members against the
    observer.)"""
    members, observer = household(3)
    for writer, key, value in writes:
        replica = members[writer]
        op = (
            entry.delete("notes", key)
            if value is None
            else entry.put("notes", key, msgpack.packb(value))
        )
        replica.commit(SHARE, [op])
        hand_over(replica, observer)
    converge(members)
    settle(members, observer)
    settle(members, observer)
    report_round(members, observer)
    for replica in members:
        hand_over(replica, observer)
    new = newcomer(":memory:", members)
    for key, value in own:
        new.commit(SHARE, [entry.put("notes", key, msgpack.packb(value))])
    a = members[0]
    a.commit(SHARE, [a.device_op(new.identity.cert_pem, "new")])
    if a.folded_beyond(SHARE, new.summary_vector(SHARE)):
        assert transfer(a, new, max_bytes=chunk).accept
        assert counted_right(new)
    hand_over(a, new)
    hand_over(new, a)
    assert visible(new) == visible(a)


def test_a_snapshot_of_a_baseline_whose_retired_epochs_left_it_brings_them_all(tmp_path):
    members, observer = household(2)
    a, b = members
    for round_ in range(12):
        restart_and_write(a, f"k{round_ % 4}")
        converge(members)
        hand_over(a, observer)
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    settle(members, observer)
    report_round(members, observer)
    assert len(a.store.heads(SHARE)) < 5 < len(a.held_vector(SHARE))
    new = newcomer(tmp_path / "new.db", members)
    offer = a.snapshot_offer(SHARE, new.summary_vector(SHARE))
    assert offer is not None and len(offer.frontier) > 12, "whole, as 0.4.0 receivers expect"
    assert transfer(a, new).accept
    hand_over(a, new)
    assert not a.folded_beyond(SHARE, new.summary_vector(SHARE))
    assert new.held_vector(SHARE) == a.held_vector(SHARE) | new.summary_vector(SHARE)
    observer.commit(SHARE, [observer.device_op(new.identity.cert_pem, "new")])
    hand_over(new, observer)
    assert visible(new) == visible(observer)
    # its own next fold leaves the retired epochs out of its heads too
    a.commit(SHARE, [a.device_op(new.identity.cert_pem, "new")])
    b.commit(SHARE, [b.device_op(new.identity.cert_pem, "new")])
    everyone = [a, b, new]
    converge(everyone)
    settle(everyone, observer)
    settle(everyone, observer)
    assert len(new.store.heads(SHARE)) < 8 < len(new.held_vector(SHARE))
    assert visible(new) == visible(a)


def test_a_forged_first_entry_retiring_an_epoch_beyond_the_baseline_is_refused(tmp_path):
    members, observer = household(2)
    a, _ = members
    for round_ in range(4):
        restart_and_write(a, f"k{round_}")
        converge(members)
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    settle(members, observer)
    honest = a.snapshot_offer(SHARE, {})
    outside_w = sorted(a.held_vector(SHARE).keys() - honest.written.keys() - {a.actor})
    dropped = next(actor for actor in outside_w if actor.startswith(a.device_id))
    # a first entry of a dropped epoch that would have the receiver hold a's epoch far beyond
    # anything written, so that it ignores what a writes next
    forged = entry.encode(
        SHARE, dropped, 1, entry.GENESIS_HASH, 1, {}, [entry.put("notes", "x", b"x")],
        [(a.actor, 10**6, b"f" * 32)],
    )
    seq, at, _ = honest.heads[dropped]
    offer = dataclasses.replace(
        honest,
        heads={**honest.heads, dropped: (seq, at, forged.hash)},
        firsts=tuple(
            (forged.raw, None) if entry.decode(raw).actor == dropped else (raw, sig)
            for raw, sig in honest.firsts
        ),
    )
    new = newcomer(tmp_path / "new.db", members)
    new.snapshot_started(SHARE, offer)
    assert new.snapshot_chunk(SHARE, a.snapshot_rows(SHARE, None, 1 << 30)).complete
    with pytest.raises(SnapshotError, match="retires beyond B"):
        new.install_snapshot(SHARE, a.device_id, key_of(members))
    assert new.store.baseline_frontier(SHARE) == {}
