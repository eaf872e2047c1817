"""The apply path (replica_apply.py): received entries verified, held for their causes, stored
through the same path as local commits; and how a batch is cut at membership changes."""

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync import entry, identity, merge
from p2psync.entry import IntegrityError
from p2psync.membership import DEVICES
from p2psync.replica import Replica
from p2psync.replica_apply import _membership_runs
from p2psync.shares import DEFAULT_SHARE as SHARE
from p2psync.shares.members import MEMBERS
from tests.test_replica import (
    FakeClock,
    _identities,
    all_items,
    converge,
    household,
    put,
    state,
    sync,
)


def test_a_batch_is_cut_after_each_entry_that_changes_membership():
    writes = [("notes", "a"), (MEMBERS, "x"), ("notes", "b"), (DEVICES, "d"), ("notes", "c")]
    ready = [
        (
            entry.encode("s", "w/1", seq, entry.GENESIS_HASH, seq, {}, [entry.put(c, k, b"")]),
            None,
            "",
        )
        for seq, (c, k) in enumerate(writes, 1)
    ]

    def cut(share: str) -> list[list[int]]:
        return [[held[0].seq for held in run] for run in _membership_runs(share, ready)]

    assert cut(SHARE) == [[1, 2], [3, 4], [5]], "devices are membership in the system share"
    assert cut("photos") == [[1, 2], [3, 4, 5]], "and only records there"
    assert list(_membership_runs("photos", [])) == []


def test_forget_peer_frees_what_it_sent_that_still_waits():
    a, b = household(2)
    converge([a, b])
    put(a, "k", 1)
    put(a, "k", 2)
    early = [item for item in all_items(a) if entry.decode(item[0]).seq == 3]
    assert not b.waits(SHARE)
    assert b.apply(SHARE, early, peer="carol").waiting == 1
    assert b.waits(SHARE) and not b.waits("photos")
    b.forget_peer("carol")
    assert b.apply(SHARE, [], peer="carol").waiting == 0
    assert not b.waits(SHARE)
    converge([a, b])
    assert msgpack.unpackb(b.get(SHARE, "notes", "k").winner.value) == 2


def test_a_delete_received_from_a_peer_tells_the_value_it_replaced_here():
    left, right = household(2)
    put(left, "a", "first")
    put(left, "a", "second")
    converge([left, right])
    start = right.last_position()
    left.commit(SHARE, [entry.delete("notes", "a"), entry.delete("notes", "never there")])
    converge([left, right])
    deletes = [(c.op.key, c.previous) for c in right.changes(start)]
    assert deletes == [("a", msgpack.packb("second")), ("never there", None)]
    # on the writer too
    assert [(c.op.key, c.previous) for c in left.changes(start - 1)][-2:] == deletes


def test_a_batch_of_new_existing_and_rewritten_keys_ends_as_the_merge_rule_says():
    a, b = household(2)
    converge([a, b])
    b.commit(SHARE, [entry.put("notes", f"k{i:03}", msgpack.packb("b")) for i in range(0, 600, 7)])
    a.commit_many(
        SHARE,
        [
            [entry.put("notes", f"k{i:03}", msgpack.packb(i)) for i in range(600)],
            [entry.put("notes", f"k{i:03}", msgpack.packb(-i)) for i in range(0, 600, 5)],
            [entry.delete("notes", f"k{i:03}") for i in range(0, 600, 11)],
        ],
    )
    keys = [("notes", f"k{i:03}") for i in range(600)]
    seen = b.summary_vector(SHARE).get(a.actor, 0)
    items = [
        (raw, signature)
        for raw, signature in all_items(a)
        if entry.decode(raw).actor == a.actor and entry.decode(raw).seq > seen
    ]
    expected = {key: b.store.record(SHARE, *key) or [] for key in keys}
    for raw, _ in items:
        logged = entry.decode(raw)
        for op in logged.ops:
            key = (op.collection, op.key)
            expected[key] = merge.apply_op(expected[key], logged, op)
    assert b.apply(SHARE, items).applied == 3
    assert {key: b.store.record(SHARE, *key) for key in keys} == expected
    assert b.get(SHARE, "notes", "k007").conflict, "b's concurrent write stays as a sibling"
    assert b.get(SHARE, "notes", "k011").deleted


def test_take_stored_names_the_newest_seq_of_each_writer_stored_since_the_last_take():
    a, b = household(2)
    converge([a, b])
    b.take_stored()
    put(b, "own", 0)
    b.take_stored()  # the apply below starts from here, as a session's does
    for number in range(3):
        put(a, f"k{number}", number)
    items = all_items(a)
    result = b.apply(SHARE, items[:-1])
    assert b.take_stored() == {SHARE: {a.actor: a.summary_vector(SHARE)[a.actor] - 1}}
    assert result.applied > 0
    assert b.take_stored() == {}
    b.apply(SHARE, items)  # all but the last are duplicates: nothing of them is stored again
    assert b.take_stored() == {SHARE: {a.actor: a.summary_vector(SHARE)[a.actor]}}
    put(b, "own", 1)
    assert b.take_stored() == {SHARE: {b.actor: b.summary_vector(SHARE)[b.actor]}}


def tampered(raw: bytes) -> bytes:
    fields = msgpack.unpackb(raw)
    fields["o"][0]["v"] = msgpack.packb("evil")
    return msgpack.packb(fields)


@pytest.mark.parametrize(
    "attack", ["changed byte", "wrong signature", "forged origin", "gap", "replay"]
)
def test_bad_relayed_entries_are_rejected_and_change_nothing(attack):
    a, b = household(2)
    converge([a, b])
    put(a, "k", "genuine")
    ((raw, signature),) = [item for item in all_items(a) if entry.decode(item[0]).seq == 2]
    before = state(b), b.summary_vector(SHARE)
    if attack == "changed byte":
        items = [(tampered(raw), signature)]
    elif attack == "wrong signature":
        items = [(raw, _identities[1].sign(b"something else"))]
    elif attack == "forged origin":
        logged = entry.decode(raw)
        forged = entry.encode(
            SHARE,
            logged.actor,
            2,
            logged.prev_hash,
            logged.hlc,
            logged.context,
            [entry.put("notes", "k", msgpack.packb("evil"))],
        )
        items = [
            (
                forged.raw,
                _identities[1].sign(entry.head_message(SHARE, logged.actor, 2, forged.hash)),
            )
        ]
    elif attack == "gap":
        put(a, "k", "third")
        items = [item for item in all_items(a) if entry.decode(item[0]).seq == 3]
    else:
        b.apply(SHARE, [(raw, signature)])
        before = state(b), b.summary_vector(SHARE)
        items = [(raw, signature)]
    if attack in ("gap", "replay"):
        result = b.apply(SHARE, items)
        assert result.applied == 0
        assert result.waiting == (1 if attack == "gap" else 0), (
            "an early entry is held, not applied"
        )
    else:
        with pytest.raises(IntegrityError):
            b.apply(SHARE, items)
    assert (state(b), b.summary_vector(SHARE)) == before
    converge([a, b])
    assert state(a) == state(b), "the genuine history still goes through afterwards"


def test_entries_from_an_unknown_device_wait_for_its_membership_record():
    a, _, c = household(3)
    stranger = Replica.open(":memory:", identity.DeviceIdentity.generate(), FakeClock(5))
    put(stranger, "s", "hello")
    result = a.apply(SHARE, all_items(stranger))
    assert result.applied == 0 and result.waiting == 1
    c.commit(SHARE, [c.device_op(stranger.identity.cert_pem, "stranger")])
    sync(c, a)
    assert a.get(SHARE, "notes", "s") is not None, "applied once a member introduced the device"


def test_an_entry_sent_before_its_cause_waits_for_it_in_the_same_batch_or_a_later_one():
    a, b, c = household(3)
    put(a, "k", "first")
    sync(a, b)
    put(b, "k", "second")  # replaces a's write: a's entry is in its causal past

    def own(replica):
        return [item for item in all_items(replica) if entry.decode(item[0]).actor == replica.actor]

    effects, causes = own(b), own(a)
    in_one_batch = c.apply(SHARE, effects + causes)
    assert in_one_batch.applied == len(effects) + len(causes) and in_one_batch.waiting == 0
    later = household(3)[2]
    alone = later.apply(SHARE, effects)
    assert alone.applied == len(effects) - 1 and alone.waiting == 1
    assert later.apply(SHARE, causes).applied == len(causes) + 1
    for replica in (c, later):
        view = replica.get(SHARE, "notes", "k")
        assert view is not None and not view.conflict
        assert msgpack.unpackb(view.winner.value) == "second"


KEYS = ["a", "b", "c"]
script_step = st.one_of(
    st.tuples(
        st.just("write"),
        st.integers(0, 4),
        st.lists(
            st.tuples(st.sampled_from(KEYS), st.integers(0, 3) | st.none()), min_size=1, max_size=3
        ),
    ),
    st.tuples(
        st.just("deliver"), st.integers(0, 4), st.integers(0, 4), st.randoms(use_true_random=False)
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 5), st.lists(script_step, max_size=25))
def test_any_delivery_order_duplication_or_partition_converges(count, script):
    replicas = household(count)
    # Two writes made before any exchange are concurrent: they must end as siblings everywhere.
    replicas[0].commit(SHARE, [entry.put("conflict", "k", msgpack.packb("zero"))])
    replicas[1].commit(SHARE, [entry.put("conflict", "k", msgpack.packb("one"))])
    for step in script:
        if step[0] == "write":
            _, who, writes = step
            ops = [
                entry.put("notes", k, msgpack.packb(v))
                if v is not None
                else entry.delete("notes", k)
                for k, v in writes
            ]
            replicas[who % count].commit(SHARE, ops)
        else:
            _, source, target, rng = step
            source, target = replicas[source % count], replicas[target % count]
            items = all_items(source)
            chosen = [item for item in items if rng.random() < 0.7]
            chosen += rng.sample(items, k=min(len(items), 3))
            rng.shuffle(chosen)
            target.apply(SHARE, chosen)
    converge(replicas)
    states = [state(r) for r in replicas]
    assert all(s == states[0] for s in states)
    # the counts `status` shows, kept as records are written, agree with what reads find
    records, conflicts = states[0]
    live = len([c for c, _ in records if not c.startswith("_")])
    for replica in replicas:
        assert replica.store.count_records(SHARE) == live
        assert replica.store.count_conflicts(SHARE) == len(conflicts) > 0
    siblings = replicas[0].get(SHARE, "conflict", "k").siblings
    assert sorted(msgpack.unpackb(s.value) for s in siblings) == ["one", "zero"]
    vectors_ = [r.summary_vector(SHARE) for r in replicas]
    assert all(v == vectors_[0] for v in vectors_)
