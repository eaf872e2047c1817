import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync import entry, identity
from p2psync.history import compaction
from p2psync.history.stability import STABLE
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE as SHARE
from p2psync.vectors import device_of

_identities = [identity.DeviceIdentity.generate() for _ in range(4)]
KEYS = ["a", "b", "c", "d"]
FOREVER = 10**12


class Clock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


def household(count: int) -> tuple[list[Replica], Replica]:
    """`count` members, and an observer outside the household that is handed every entry as it
    is written and never compacts: the state every member must show."""
    members = [Replica.open(":memory:", _identities[i], Clock(1_000 + 7 * i)) for i in range(count)]
    for replica in members:
        others = [r for r in members if r is not replica]
        replica.commit(
            SHARE, [replica.device_op(r.identity.cert_pem, f"d{i}") for i, r in enumerate(others)]
        )
    observer = Replica.open(":memory:", _identities[3], Clock(0))
    # the observer knows the members' keys from its own records (members never hear of it)
    observer.commit(SHARE, [observer.device_op(r.identity.cert_pem, "m") for r in members])
    for replica in members:
        hand_over(replica, observer)
    return members, observer


def hand_over(source: Replica, target: Replica, rng: random.Random | None = None) -> None:
    """Everything `source`'s log holds that `target` lacks; with `rng`, a random part of it in a
    random order (duplicates included), as a partitioned, reordering network would."""
    items, _ = source.entries_after(SHARE, 0, target.summary_vector(SHARE), 1 << 30)
    if rng is not None:
        items = [item for item in items if rng.random() < 0.6] + rng.sample(
            items, min(2, len(items))
        )
        rng.shuffle(items)
    target.apply(SHARE, items)


def visible(replica: Replica) -> tuple[dict, list]:
    """What reads show (stability reports aside): live records with every sibling, conflicts."""
    records = {}
    after = None
    while page := replica.scan(SHARE, "notes", after=after, limit=50, deleted=True):
        for view in page:
            records[view.key] = (
                sorted((s.actor, s.seq, s.deleted, s.value) for s in view.siblings),
                view.winner.dot,
            )
        after = page[-1].key
    conflicts = [(v.key, v.winner.dot) for v in replica.conflicts(SHARE)]
    return records, conflicts


def logged(replica: Replica) -> list[entry.LogEntry]:
    rows = replica.store.entries_after(SHARE, 0, 1 << 20)
    return [entry.decode(raw) for _, _, _, raw, _ in rows]


def baseline_rows(replica: Replica) -> dict:
    rows = replica.store._db.execute("SELECT coll, key, siblings FROM baseline ORDER BY 1, 2")
    return {(c, k): sorted(replica.store._unpack_siblings(blob)) for c, k, blob in rows}


def compact(replica: Replica, stepwise: bool) -> compaction.Compacted:
    """`stepwise`: a fold of at most a couple of entries per call, as a backlog folds."""
    if not stepwise:
        return replica.compact(SHARE, FOREVER)
    limits = compaction.MAX_FOLD, compaction._PAGE
    compaction.MAX_FOLD, compaction._PAGE = 1, 2
    try:
        return replica.compact(SHARE, FOREVER)
    finally:
        compaction.MAX_FOLD, compaction._PAGE = limits


def converge(replicas: list[Replica]) -> None:
    for _ in range(len(replicas)):
        for source in replicas:
            for target in replicas:
                if source is not target:
                    hand_over(source, target)


write_step = st.tuples(
    st.just("write"),
    st.integers(0, 2),
    st.lists(
        st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 9))),
        min_size=1,
        max_size=3,
    ),
)
sync_step = st.tuples(
    st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.randoms(use_true_random=False)
)
report_step = st.tuples(st.just("report"), st.integers(0, 2))
compact_step = st.tuples(st.just("compact"), st.integers(0, 2))
# every member reports and hears every other: what a quiet minute of the daemons' timers does
round_step = st.tuples(st.just("round"))
# a restart: the device writes as a new epoch, whose first entry retires the last
epoch_step = st.tuples(st.just("epoch"), st.integers(0, 2))
script_step = st.one_of(write_step, sync_step, report_step, compact_step, round_step, epoch_step)


def report_round(members: list[Replica], observer: Replica) -> None:
    for replica in members:
        replica.commit(SHARE, [replica.stability_op(SHARE)])
        hand_over(replica, observer)
    converge(members)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(script_step, max_size=40))
def test_compaction_at_any_point_changes_no_visible_state_and_replicas_converge(script):
    members, observer = household(3)
    folded = purged = 0
    for step in script:
        if step[0] == "write":
            _, who, writes = step
            ops = [
                entry.put("notes", k, msgpack.packb(v))
                if v is not None
                else entry.delete("notes", k)
                for k, v in writes
            ]
            members[who].commit(SHARE, ops)
            hand_over(members[who], observer)
        elif step[0] == "sync":
            _, source, target, rng = step
            if source != target:
                hand_over(members[source], members[target], rng)
        elif step[0] == "epoch":
            members[step[1]].start_new_epoch()
        elif step[0] == "round":
            report_round(members, observer)
        elif step[0] == "report":
            members[step[1]].commit(SHARE, [members[step[1]].stability_op(SHARE)])
            hand_over(members[step[1]], observer)
        else:
            replica = members[step[1]]
            before = visible(replica)
            done = compact(replica, stepwise=step[1] == 0)
            folded, purged = folded + done.folded, purged + done.purged
            assert visible(replica) == before
    # reports settle everything once data stops: a few rounds of report and exchange
    for _ in range(4):
        report_round(members, observer)
        for index, replica in enumerate(members):
            while compact(replica, stepwise=index == 0).folded:
                pass
    converge(members)
    expected = visible(observer)
    for replica in members:
        assert visible(replica) == expected
        # history followed the data down: every write is folded, every lone tombstone purged
        assert not any(
            len(view.siblings) == 1 and view.deleted
            for key in KEYS
            if (view := replica.get(SHARE, "notes", key)) is not None
        )
        written = [e for e in logged(replica) if any(op.collection != STABLE for op in e.ops)]
        assert all(e.seq == 1 for e in written)
        assert replica.store.count_records(SHARE) == observer.store.count_records(SHARE)
        assert replica.store.count_conflicts(SHARE) == observer.store.count_conflicts(SHARE)
        # retired epochs whose heads went are still held, through the epochs that retired them
        assert replica.held_vector(SHARE) == members_held(observer, members)
    # devices holding the same reports fold to the same frontier and hold the same baseline,
    # whatever order their entries came in (what a snapshot's digest will rest on)
    baselines = [(r.store.baseline_frontier(SHARE), baseline_rows(r)) for r in members]
    assert all(found == baselines[0] for found in baselines)


def test_concurrent_deletes_folded_in_another_order_than_applied_are_purged_everywhere():
    members, observer = household(3)
    a, b, c = members
    a.commit(SHARE, [entry.delete("notes", "k")])
    hand_over(a, b)
    c.commit(SHARE, [entry.delete("notes", "k")])
    hand_over(a, c)  # c applies its own delete, then a's
    # a's delete settles a round before c's: every baseline takes a's first, so c's baseline
    # row lists the two deletes in the other order than its live record does
    for _ in range(4):
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    converge(members)
    assert [value_of(replica, "k") for replica in members] == [[], [], []]
    assert baseline_rows(c) == baseline_rows(a)


def value_of(replica: Replica, key: str) -> list:
    view = replica.get(SHARE, "notes", key)
    if view is None:
        return []
    return sorted(
        ["deleted" if s.deleted else msgpack.unpackb(s.value) for s in view.siblings], key=str
    )


def settle(members: list[Replica], observer: Replica, keep_for_absent_ms: int = FOREVER) -> None:
    for _ in range(3):
        report_round(members, observer)
    for replica in members:
        replica.compact(SHARE, keep_for_absent_ms)


def test_a_write_after_its_writer_purged_a_tombstone_replaces_it_where_it_is_still_held():
    members, observer = household(3)
    a, b, _ = members
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(1))])
    converge(members)
    b.commit(SHARE, [entry.delete("notes", "k")])
    converge(members)
    for _ in range(3):
        report_round(members, observer)
    assert a.compact(SHARE, FOREVER).purged == 1 and a.get(SHARE, "notes", "k") is None
    # b still holds the tombstone; a's new write names nothing of it, yet a had it when
    # writing its last report, which comes before the write in a's chain
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(2))])
    assert value_of(b, "k") == ["deleted"]
    hand_over(a, b)
    hand_over(a, observer)
    assert value_of(b, "k") == value_of(observer, "k") == [2]


def test_a_member_away_holds_back_no_folding_keeps_its_tombstones_and_its_offline_write_conflicts():
    members, observer = household(3)
    a, b, away = members
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(1))])
    settle(members, observer)
    # `away` goes offline; its clock, like everyone's, moves on by a day
    for replica in members:
        replica.now_ms.now += 86_400_000  # type: ignore[attr-defined]
    b.commit(SHARE, [entry.delete("notes", "k")])
    away.commit(SHARE, [entry.put("notes", "k", msgpack.packb(3))])  # written while away
    converge([a, b])
    settle([a, b], observer, keep_for_absent_ms=3_600_000)
    found = a.history_frontiers(SHARE, 3_600_000)
    assert list(found.away) == [away.device_id]
    assert found.stable.get(b.actor, 0) >= b.summary_vector(SHARE)[b.actor] - 1, "not held back"
    done = a.compact(SHARE, 3_600_000)
    assert done.purged == 0 and value_of(a, "k") == ["deleted"], "kept for the member away"
    assert a.store.baseline_tombstones(SHARE), "the delete is folded, kept in the baseline"
    # back: its offline write meets the delete as a conflict, not as a live record
    hand_over(away, a)
    hand_over(away, observer)
    assert value_of(a, "k") == value_of(observer, "k") == [3, "deleted"]


def test_a_revocation_after_compaction_rebuilds_records_from_the_baseline():
    members, observer = household(3)
    a, b, revoked = members
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(1))])
    settle(members, observer)
    assert a.store.baseline_frontier(SHARE) and b.store.baseline_frontier(SHARE)
    revoked.commit(SHARE, [entry.put("notes", "k", msgpack.packb(2))])
    hand_over(revoked, b)
    assert value_of(b, "k") == [2]
    device = next(d for d in a.devices() if d.device_id == revoked.device_id)
    a.commit(SHARE, [a.revocation_op(device)])  # a never saw the write: it is beyond the cut
    hand_over(a, b)
    assert value_of(b, "k") == [1], "taken back to what the baseline holds"


def test_a_compaction_that_fails_half_way_changes_nothing(monkeypatch):
    members, observer = household(3)
    a = members[0]
    for n in range(5):
        a.commit(SHARE, [entry.put("notes", KEYS[n % 4], msgpack.packb(n))])
        a.commit(SHARE, [entry.delete("notes", KEYS[(n + 1) % 4])])
    converge(members)
    for _ in range(3):
        report_round(members, observer)
    before = (visible(a), len(logged(a)), a.store.baseline_frontier(SHARE))

    def fail(share, keys):
        raise OSError("disk gone")

    monkeypatch.setattr(a.store, "remove_baseline", fail)
    with pytest.raises(OSError):
        a.compact(SHARE, FOREVER)
    assert (visible(a), len(logged(a)), a.store.baseline_frontier(SHARE)) == before
    monkeypatch.undo()
    assert a.compact(SHARE, FOREVER).folded > 0 and visible(a) == before[0]


def test_compaction_survives_a_restart_and_the_baseline_keeps_each_epochs_first_entry(tmp_path):
    paths = [tmp_path / f"r{i}.db" for i in range(3)]
    members = [Replica.open(p, _identities[i], Clock(1_000 + i)) for i, p in enumerate(paths)]
    for replica in members:
        others = [r for r in members if r is not replica]
        replica.commit(SHARE, [replica.device_op(r.identity.cert_pem, "d") for r in others])
    observer = Replica.open(":memory:", _identities[3], Clock(0))
    observer.commit(SHARE, [observer.device_op(r.identity.cert_pem, "m") for r in members])
    members[0].commit(SHARE, [entry.put("notes", "a", msgpack.packb(1))])
    converge(members)
    settle(members, observer)
    folded = members[0].store.baseline_frontier(SHARE)
    assert folded and all(e.seq == 1 for e in logged(members[0]) if e.seq <= folded.get(e.actor, 0))
    members[0].close()
    again = Replica.open(paths[0], _identities[0], Clock(10_000))
    assert again.store.baseline_frontier(SHARE) == folded
    assert value_of(again, "a") == [1]
    again.commit(SHARE, [entry.put("notes", "a", msgpack.packb(2))])
    hand_over(again, members[1])
    assert value_of(members[1], "a") == [2]


def test_a_peer_lacking_folded_entries_is_recognised():
    members, observer = household(3)
    a = members[0]
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(1))])
    converge(members)
    settle(members, observer)
    assert not a.folded_beyond(SHARE, members[1].summary_vector(SHARE))
    # a device that joins now holds nothing: the folded entries cannot reach it from the log
    assert a.folded_beyond(SHARE, {})
    # holding up to the frontier is enough
    assert not a.folded_beyond(SHARE, a.store.baseline_frontier(SHARE))


def test_a_new_epochs_first_write_after_a_purge_replaces_the_tombstone_too():
    members, observer = household(3)
    a, b, _ = members
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(1))])
    converge(members)
    b.commit(SHARE, [entry.delete("notes", "k")])
    converge(members)
    for _ in range(3):
        report_round(members, observer)
    assert a.compact(SHARE, FOREVER).purged == 1
    # a restarts: its new epoch's first entry writes k; the report that says a had the delete
    # is its last epoch's, which the new epoch takes over in that very entry
    a.start_new_epoch()
    a.commit(SHARE, [entry.put("notes", "k", msgpack.packb(2))])
    hand_over(a, b)
    hand_over(a, observer)
    assert value_of(b, "k") == value_of(observer, "k") == [2]


def test_a_backlog_folds_in_bounded_steps_to_the_same_baseline(monkeypatch):
    members, observer = household(3)
    a, b, _ = members
    for n in range(30):
        members[n % 3].commit(SHARE, [entry.put("notes", KEYS[n % 4], msgpack.packb(n))])
        if n % 7 == 0:
            hand_over(members[n % 3], members[(n + 1) % 3])
    a.commit(SHARE, [entry.delete("notes", "d")])
    converge(members)
    for _ in range(3):
        report_round(members, observer)
    b.compact(SHARE, FOREVER)  # in one go
    before = visible(a)
    monkeypatch.setattr(compaction, "MAX_FOLD", 3)
    monkeypatch.setattr(compaction, "_PAGE", 4)
    steps = [a.compact(SHARE, FOREVER) for _ in range(40)]
    assert sum(1 for step in steps if step.folded) > 5, "in steps"
    assert all(step.folded < 3 + 4 for step in steps), "MAX_FOLD and a page at most"
    assert visible(a) == before
    assert a.store.baseline_frontier(SHARE) == b.store.baseline_frontier(SHARE)
    assert baseline_rows(a) == baseline_rows(b)


def members_held(observer: Replica, members: list[Replica]) -> dict[str, int]:
    devices = {replica.device_id for replica in members}
    return {a: s for a, s in observer.summary_vector(SHARE).items() if device_of(a) in devices}


def restart_and_write(replica: Replica, key: str) -> None:
    replica.start_new_epoch()
    replica.commit(SHARE, [entry.put("notes", key, msgpack.packb(key))])


def test_after_200_restarts_vectors_heads_and_reports_follow_the_epochs_still_writing():
    members, observer = household(2)
    a, b = members
    for round_ in range(200):
        restart_and_write(a, f"k{round_ % 7}")
        if round_ % 3 == 0:
            restart_and_write(b, f"b{round_ % 5}")
        hand_over(a, observer)
        hand_over(b, observer)
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    settle(members, observer)
    assert len(observer.summary_vector(SHARE)) > 200 + 60, "the observer never compacts"
    for replica in members:
        # the open epochs, and the ones retired since the last folds
        assert len(replica.summary_vector(SHARE)) <= 6
        assert len(replica.store.heads(SHARE)) <= 6
        assert len(replica.wire_vector(SHARE)) <= 6
        assert len(replica.store.baseline_frontier(SHARE)) <= 6
        assert len(replica.store.folded_writes(SHARE)) <= 6
        report = replica.own_report(SHARE)
        assert report is not None and all(len(r.vector) <= 6 for r in (report, *report.earlier))
        assert len(replica.stability_op(SHARE).value or b"") < 1_200  # 270 epochs: ~15 KB
        # what they hold, implied epochs put back, is everything the observer holds of them
        assert replica.held_vector(SHARE) == members_held(observer, members)
        assert visible(replica) == visible(observer)
    # a late copy of an entry of a dropped epoch is held already: not applied, not kept waiting
    late, _ = observer.entries_after(SHARE, 0, {}, 1 << 30)
    dropped = members_held(observer, members).keys() - b.summary_vector(SHARE).keys()
    old = [item for item in late if entry.decode(item[0]).actor in dropped]
    assert len(old) > 200
    done = b.apply(SHARE, old, peer="late")
    assert (done.applied, done.waiting, done.refused) == (0, 0, 0)
    assert visible(b) == visible(observer)
    # a peer holding nothing lacks folded entries (a snapshot's); one holding what b holds
    # says so with its few epochs
    assert b.folded_beyond(SHARE, {}) and not b.folded_beyond(SHARE, a.wire_vector(SHARE))
    assert b.expand_vector(SHARE, a.wire_vector(SHARE)).keys() <= b.summary_vector(SHARE).keys()
    # a's next restart still continues only its open epoch, and b takes it
    restart_and_write(a, "after")
    hand_over(a, b)
    assert value_of(b, "after") == ["after"]


def test_a_revocation_cut_names_the_retired_epochs_its_writer_dropped():
    members, observer = household(3)
    a, _, revoked = members
    for round_ in range(4):
        restart_and_write(revoked, f"r{round_}")
        converge(members)
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    settle(members, observer)
    dropped = observer.summary_vector(SHARE).keys() - a.summary_vector(SHARE).keys()
    assert any(actor.startswith(revoked.device_id) for actor in dropped)
    device = next(d for d in a.devices() if d.device_id == revoked.device_id)
    a.commit(SHARE, [a.revocation_op(device)])
    hand_over(a, observer)  # the observer still keeps a head of every epoch: it takes back none
    assert visible(observer) == visible(a)
    assert [value_of(observer, f"r{i}") for i in range(4)] == [[f"r{i}"] for i in range(4)]


def test_while_a_member_reads_vectors_as_written_reports_name_the_dropped_epochs_in_full():
    """0.4.0 writes its reports without key "i" and takes every vector as written: its frontiers
    would lack the retired epochs a report leaves out, so it would take what they wrote for
    unsettled forever (reporting on, folding nothing). While such a report is a member's newest,
    the others report every epoch in full; once it reports as a current release, compressed."""
    members, observer = household(2)
    a, b = members
    for round_ in range(5):
        restart_and_write(a, f"k{round_}")
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    settle(members, observer)
    held = a.held_vector(SHARE)
    assert len(a.summary_vector(SHARE)) < len(held), "a dropped heads of retired epochs"

    def reported(replica: Replica) -> dict[str, int]:
        return msgpack.unpackb(replica.stability_op(SHARE).value or b"")["v"]

    assert len(reported(a)) < len(held), "compressed among current members"
    as_0_4 = msgpack.packb({"v": b.summary_vector(SHARE), "t": b.now_ms()})
    b.commit(SHARE, [entry.put(STABLE, b.device_id, as_0_4)])
    converge(members)
    assert reported(a) == a.held_vector(SHARE), "every epoch, as 0.4.0 kept them"
    report_round(members, observer)
    assert len(reported(a)) < len(held), "b reports as a current release again"
