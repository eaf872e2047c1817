from dataclasses import replace

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.history.snapshot import (
    DISK_PER_ROW_BYTE,
    FREE_DISK_MARGIN,
    HOLD_SECONDS,
    Offer,
    Room,
    SnapshotError,
    SnapshotRefused,
    Staged,
    baseline_digest,
    check_complete,
    check_room,
    chunks,
    contradicted,
    decode_row,
    encode_row,
    hold_seconds,
    pack_offer,
    take_chunk,
    unpack_offer,
    vouch,
)
from p2psync.history.stability import Report, read_report, report_value
from p2psync.merge import Sibling

A, B, C = "AAAAA", "BBBBB", "CCCCC"
FRONTIER = {f"{A}/e": 7, f"{B}/e": 3}


def sib(actor, seq, value=b"v", deleted=False):
    return Sibling(f"{actor}/e", seq, seq * 10, deleted, None if deleted else value, None)


def rows(n, size=10):
    return [(("c", f"k{i:05}"), [sib(A, i + 1, b"x" * size)]) for i in range(n)]


HEADS = {f"{A}/e": (7, b"a" * 32, b"1" * 32), f"{B}/e": (3, b"b" * 32, b"2" * 32)}


FIRSTS = {actor: head[2] for actor, head in HEADS.items()}


def offer_of(listed, share="s"):
    raws = [encode_row(k, s) for k, s in listed]
    digest = baseline_digest(FIRSTS, listed)
    size = sum(map(len, raws))
    return Offer(share, dict(FRONTIER), dict(HEADS), dict(FRONTIER), digest, len(raws), size)


def report(device, baseline, previous=None):
    return Report(device, (f"{device}/e", 9), {}, 1, previous, baseline)


def test_the_digest_depends_on_rows_not_on_their_order_nor_on_sibling_order():
    one = [(("c", "a"), [sib(A, 1), sib(B, 2)]), (("c", "b"), [sib(B, 3, deleted=True)])]
    two = [(("c", "b"), [sib(B, 3, deleted=True)]), (("c", "a"), [sib(B, 2), sib(A, 1)])]
    assert baseline_digest(FIRSTS, one) == baseline_digest(FIRSTS, two)
    forged = [(("c", "a"), [sib(A, 1, b"w"), sib(B, 2)]), one[1]]
    assert baseline_digest(FIRSTS, forged) != baseline_digest(FIRSTS, one)
    other_firsts = {**FIRSTS, f"{B}/e": b"3" * 32}
    assert baseline_digest(other_firsts, one) != baseline_digest(FIRSTS, one)


def test_an_offer_packs_and_unpacks_and_junk_starts_are_refused():
    offer = offer_of(rows(3))
    full = Offer(
        **{
            **{f: getattr(offer, f) for f in offer.__slots__},
            "firsts": ((b"e", None),),
            "evidence": (((b"r", b"sig"),),),
        }
    )
    assert unpack_offer(pack_offer(full)) == full
    for junk in (
        b"\xc1",
        msgpack.packb([1]),
        msgpack.packb(["s", {}, {}, b"", -1, 0, [], []]),
        msgpack.packb(["s", {"a": 1}, {}, b"", 0, 0, [], []]),
    ):
        with pytest.raises(SnapshotError):
            unpack_offer(junk)


def test_tombstones_and_reports_devices_hold_at_their_own_pace_stay_out_of_the_digest():
    live = [(("c", "a"), [sib(A, 1)])]
    tombstone = (("c", "b"), [sib(B, 3, deleted=True)])
    assert baseline_digest(FIRSTS, [*live, tombstone]) == baseline_digest(FIRSTS, live)
    # reports too: devices fold them at their own pace
    report_row = (("_stable", A), [sib(A, 9, b"report")])
    assert baseline_digest(FIRSTS, [*live, report_row]) == baseline_digest(FIRSTS, live)
    # a delete beside a live sibling is part of the record, and of the digest
    both = [(("c", "a"), [sib(A, 1), sib(B, 3, deleted=True)])]
    assert baseline_digest(FIRSTS, both) != baseline_digest(FIRSTS, live)


def test_rows_round_trip_and_junk_or_non_canonical_rows_are_refused():
    key, siblings = ("c", "k"), [sib(B, 2), sib(A, 1, deleted=True)]
    assert decode_row(encode_row(key, siblings)) == (key, sorted(siblings))
    for junk in (
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb(["c", "k", []]),
        msgpack.packb(["c", "k", [["a", 1, 1, "no", None, None]]]),
        msgpack.packb(
            ["c", "k", [[s.actor, s.seq, s.hlc, s.deleted, s.value, s.meta] for s in siblings]]
        ),  # sibling order not canonical
    ):
        with pytest.raises(SnapshotError):
            decode_row(junk)


def test_chunks_stay_under_the_bound_and_keep_every_row_in_order():
    listed = rows(100, size=100)
    got = list(chunks(listed, max_bytes=1000))
    assert len(got) > 10 and all(sum(map(len, c)) <= 1000 for c in got)
    assert [decode_row(r) for c in got for r in c] == listed
    big = [(("c", "big"), [sib(A, 1, b"x" * 5000)])]
    assert [len(c) for c in chunks(big, max_bytes=1000)] == [1]


def test_a_transfer_cut_anywhere_resumes_after_the_last_key_and_verifies():
    listed = rows(50)
    offer = offer_of(listed)
    staged, kept = Staged(offer), []
    parts = list(chunks(listed, max_bytes=120))
    for part in parts[:3]:
        staged, got = take_chunk(staged, part)
        kept += got
    assert not staged.complete and staged.last == kept[-1][0]
    # a restart: the sender resumes after `staged.last`, the rows after it in the same chunking
    rest = [row for row in listed if row[0] > staged.last]
    for part in chunks(rest, max_bytes=120):
        staged, got = take_chunk(staged, part)
        kept += got
    assert staged.complete and kept == listed
    check_complete(offer, kept)


def test_replayed_extra_or_forged_rows_are_refused():
    listed = rows(5)
    offer = offer_of(listed)
    staged, _ = take_chunk(Staged(offer), [encode_row(*listed[2])])
    with pytest.raises(SnapshotError, match="order"):
        take_chunk(staged, [encode_row(*listed[1])])
    full, _ = take_chunk(Staged(offer), [encode_row(*r) for r in listed])
    with pytest.raises(SnapshotError, match="more rows"):
        take_chunk(full, [encode_row(("c", "zzz"), [sib(A, 1)])])
    forged = [*listed[:4], (listed[4][0], [sib(A, 5, b"y" * 10)])]  # same size, other value
    with pytest.raises(SnapshotError, match="digest"):
        check_complete(offer, forged)
    with pytest.raises(SnapshotError, match="rows"):
        check_complete(offer, listed[:4])


def test_a_snapshot_needs_the_senders_report_and_is_sure_with_another_members():
    listed = rows(3)
    offer = offer_of(listed)
    pair = (dict(FRONTIER), offer.digest)
    both = {A: report(A, pair), B: report(B, pair), C: None}
    verdict = vouch(offer, A, both)
    assert verdict.accept and not verdict.sender_only and verdict.vouchers == {A, B}


def test_wrong_digest_or_an_unreported_frontier_is_refused():
    offer = offer_of(rows(3))
    wrong = (dict(FRONTIER), b"\x00" * 32)
    assert not vouch(offer, A, {A: report(A, wrong), B: None}).accept
    assert not vouch(offer, A, {A: None, B: report(B, (dict(FRONTIER), offer.digest))}).accept
    # the sender's report names it, another member names another digest at that frontier
    pair = (dict(FRONTIER), offer.digest)
    verdict = vouch(offer, A, {A: report(A, pair), B: report(B, wrong)})
    assert not verdict.accept and B in verdict.reason


def test_only_the_sender_vouching_is_accepted_then_a_later_contradiction_is_named():
    offer = offer_of(rows(3))
    pair = (dict(FRONTIER), offer.digest)
    verdict = vouch(offer, A, {A: report(A, pair), B: None})
    assert verdict.accept and verdict.sender_only
    assert contradicted(pair, {A: report(A, pair), B: report(B, pair)}) == []
    later = {A: report(A, pair), B: report(B, (dict(FRONTIER), b"\x01" * 32))}
    assert contradicted(pair, later) == [B]


def test_reports_carry_their_baseline_and_old_readers_values_still_read():
    pair = (dict(FRONTIER), b"d" * 32)
    value = report_value({"x/1": 2}, 5, None, pair)
    got = read_report(A, [Sibling(f"{A}/e", 3, 3, False, value, None)])
    assert got is not None and got.baseline == pair
    plain = report_value({"x/1": 2}, 5, None)
    assert "b" not in msgpack.unpackb(plain)
    assert read_report(A, [Sibling(f"{A}/e", 3, 3, False, plain, None)]).baseline is None


@given(
    st.dictionaries(st.text(max_size=4), st.binary(max_size=40), max_size=30),
    st.integers(min_value=30, max_value=400),
)
def test_any_baseline_chunked_and_reassembled_has_the_same_digest(values, bound):
    listed = sorted((("c", k), [sib(A, i + 1, v)]) for i, (k, v) in enumerate(values.items()))
    staged, kept = Staged(offer_of(listed)), []
    for part in chunks(listed, max_bytes=bound):
        staged, got = take_chunk(staged, part)
        kept += got
    assert staged.complete or not listed
    check_complete(staged.offer, kept)


def test_an_offer_is_refused_up_front_beyond_the_limit_or_the_spare_disk():
    offer = offer_of(rows(100))
    needed = DISK_PER_ROW_BYTE * offer.size
    check_room(offer, Room(FREE_DISK_MARGIN + needed, offer.size))
    with pytest.raises(SnapshotRefused, match="max_snapshot_mb"):
        check_room(offer, Room(1 << 40, offer.size - 1))
    with pytest.raises(SnapshotRefused, match="needs about"):
        check_room(offer, Room(FREE_DISK_MARGIN + needed - 1, offer.size))
    # the disk the other transfers under way still need is not spare
    with pytest.raises(SnapshotRefused, match="for other transfers 1"):
        check_room(offer, Room(FREE_DISK_MARGIN + needed, offer.size, reserved_bytes=1))
    # rows staged already are on the disk: resuming needs room for the rest
    check_room(offer, Room(FREE_DISK_MARGIN + needed - 500, offer.size), staged_bytes=500)


def test_a_transfer_resumes_only_an_offer_of_the_same_rows():
    offer = offer_of(rows(4))
    assert Staged(offer).offer.ident == offer_of(rows(4)).ident
    for other in (replace(offer, size=offer.size - 1), replace(offer, rows=3)):
        assert other.ident != offer.ident, "another member's tombstones: start over"


def test_a_sender_holds_its_baseline_long_enough_for_a_slow_link_and_no_longer():
    assert hold_seconds(offer_of([])) == HOLD_SECONDS
    assert HOLD_SECONDS < hold_seconds(offer_of(rows(1000, 1000))) < HOLD_SECONDS + 10
