import msgpack

from p2psync import entry
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE as SHARE
from tests.test_history_compaction import (
    FOREVER,
    Clock,
    _identities,
    converge,
    hand_over,
    report_round,
    restart_and_write,
    settle,
    value_of,
    visible,
)


def file_household(tmp_path) -> tuple[list[Replica], Replica]:
    """Two members on files, and an observer (in memory) that keeps every epoch's head."""
    members = [
        Replica.open(tmp_path / f"{i}.db", _identities[i], Clock(1_000 + 7 * i)) for i in range(2)
    ]
    for replica in members:
        other = next(r for r in members if r is not replica)
        replica.commit(SHARE, [replica.device_op(other.identity.cert_pem, "other")])
    observer = Replica.open(":memory:", _identities[3], Clock(0))
    observer.commit(SHARE, [observer.device_op(r.identity.cert_pem, "m") for r in members])
    converge(members)
    return members, observer


def restarts_folded(members: list[Replica], observer: Replica, count: int) -> None:
    for round_ in range(count):
        restart_and_write(members[0], f"k{round_ % 3}")
        converge(members)
        for replica in members:
            hand_over(replica, observer)
        report_round(members, observer)
        for replica in members:
            replica.compact(SHARE, FOREVER)
    settle(members, observer)


def test_reopened_a_replica_still_holds_the_epochs_whose_heads_it_dropped(tmp_path):
    members, observer = file_household(tmp_path)
    restarts_folded(members, observer, 10)
    a, b = members
    held, heads = b.held_vector(SHARE), b.summary_vector(SHARE)
    assert len(heads) <= 3 < 10 < len(held)
    b.close()
    b = Replica.open(tmp_path / "1.db", _identities[1], Clock(90_000))
    # the book is rebuilt down each chain of retirements from the epochs with a head
    assert b.held_vector(SHARE) == held and b.summary_vector(SHARE) == heads
    assert not b.notices, "relearning the book tells nothing new"
    assert b.actor not in held, "a new epoch, never one used before"
    restart_and_write(a, "after")
    converge([a, b])
    assert value_of(b, "after") == ["after"] and visible(a) == visible(b)


def test_a_late_entry_of_a_dropped_epoch_is_held_and_a_peer_is_told_only_epochs_with_a_head(
    tmp_path,
):
    members, observer = file_household(tmp_path)
    restarts_folded(members, observer, 6)
    a, b = members
    dropped = observer.summary_vector(SHARE).keys() - b.summary_vector(SHARE).keys() - {
        observer.actor
    }
    assert len(dropped) >= 5
    late, _ = observer.entries_after(SHARE, 0, {}, 1 << 30)
    old = [item for item in late if entry.decode(item[0]).actor in dropped]
    for actor in dropped:  # held to the head at which it was retired
        assert b._held_head(SHARE, actor) == observer.chain_heads(SHARE)[actor]
    done = b.apply(SHARE, old, peer="late")
    assert (done.applied, done.waiting, done.refused) == (0, 0, 0)
    # what b tells a sender it holds names only epochs b keeps a head of, and the sender
    # sends none of the first entries a dropped epoch left in its log
    known = b.expand_vector(SHARE, a.wire_vector(SHARE))
    assert known.keys() <= b.summary_vector(SHARE).keys()
    items, _ = b.entries_after(SHARE, 0, known, 1 << 30)
    assert not [item for item in items if entry.decode(item[0]).actor in dropped]
    # a write that replaces a value a dropped epoch wrote names its dot, and is ready at once
    a.commit(SHARE, [entry.put("notes", "k0", msgpack.packb("replaced"))])
    converge([a, b])
    assert value_of(b, "k0") == ["replaced"]


def test_a_peer_lacking_only_epochs_the_baseline_implies_still_lacks_folded_entries(tmp_path):
    members, observer = file_household(tmp_path)
    restarts_folded(members, observer, 4)
    a, b = members
    a_now, b_now = a.actor, b.actor
    assert {a_now, b_now} <= b.store.baseline_frontier(SHARE).keys()
    # B as it is when a's newest epoch has only its first entry folded (which stays in the log)
    frontier = {a_now: 1, b_now: b.store.baseline_frontier(SHARE)[b_now]}
    with b.store.transaction():
        b.store.set_baseline_frontier(SHARE, frontier, {})
    peer = {b_now: frontier[b_now]}  # a's first entry it can get from the log; the rest it cannot
    assert b.folded_beyond(SHARE, peer), "the epochs a's first entry retired are folded away"
    assert not b.folded_beyond(SHARE, b.held_vector(SHARE))
