"""Membership rules and device epochs: what a hostile member or a copied state dir can and cannot
do, through real replicas (SQLite in memory) and entries built with the package's own entry code
and a member's own signing key, as a compromised device would build them."""

import msgpack
import pytest

from p2psync import entry, identity, membership, merge
from p2psync.entry import IntegrityError
from p2psync.membership import EpochBook
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE as SHARE
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


def signed(author: identity.DeviceIdentity, made: entry.LogEntry) -> tuple[bytes, bytes]:
    message = entry.head_message(made.share, made.actor, made.seq, made.hash)
    return made.raw, author.sign(message)


def chain_after(replica: Replica) -> tuple[int, bytes]:
    return replica.store.heads(SHARE).get(replica.actor, (0, entry.GENESIS_HASH))


def test_the_size_of_an_entry_follows_its_own_ops_not_the_writers_the_household_had():
    a, mallory = household(2)
    converge([a, mallory])
    put(a, "k", "before")
    before = len(all_items(a)[-1][0])
    # Mallory writes from 300 epochs, each continuing the last: every one is a new vector slot.
    prev_actor = mallory.actor
    prev_head = chain_after(mallory)
    items = []
    for n in range(300):
        actor = f"{mallory.device_id}/{n:08x}"
        made = entry.encode(
            SHARE,
            actor,
            1,
            entry.GENESIS_HASH,
            10**6 + n,
            {},
            [entry.put("notes", f"m{n}", b"\x01")],
            [(prev_actor, *prev_head)],
        )
        items.append(signed(mallory.identity, made))
        prev_actor, prev_head = actor, (1, made.hash)
    sync(mallory, a)
    assert a.apply(SHARE, items, "mallory").applied == 300
    mallory.apply(SHARE, items, "itself")
    assert len(a.summary_vector(SHARE)) >= 302
    put(a, "k", "after")
    after = len(all_items(a)[-1][0])
    assert abs(after - before) <= 2, "a one-op entry costs the same however many actors are known"
    # The vector exchanged with peers holds the open epochs only: retired ones held to their end
    # are implied, and a peer that holds them too puts them back.
    assert len([x for x in a.wire_vector(SHARE) if x.startswith(mallory.device_id)]) == 1
    assert a.expand_vector(SHARE, mallory.wire_vector(SHARE)) == mallory.summary_vector(SHARE)
    # A peer that holds none of those epochs implies none of them, and is sent them all.
    newcomer = {a.actor: 1}
    assert a.expand_vector(SHARE, newcomer) == newcomer


def test_a_device_cannot_hold_more_than_the_bound_of_open_epochs():
    a, mallory = household(2)
    converge([a, mallory])
    items = [
        signed(
            mallory.identity,
            entry.encode(
                SHARE,
                f"{mallory.device_id}/{n:08x}",
                1,
                entry.GENESIS_HASH,
                10**6,
                {},
                [entry.put("notes", f"m{n}", b"\x01")],
            ),
        )
        for n in range(membership.MAX_OPEN_EPOCHS + 5)
    ]
    result = a.apply(SHARE, items, "mallory")
    open_epochs = [x for x in a.summary_vector(SHARE) if x.startswith(mallory.device_id)]
    assert len(open_epochs) == membership.MAX_OPEN_EPOCHS
    assert result.refused == 6, "the mallory epoch in the household plus 5 more are refused"


def test_an_actor_that_is_not_of_the_one_form_is_refused():
    a, mallory = household(2)
    huge = entry.encode(
        SHARE, mallory.device_id + "/" + "f" * 4_000_000, 1, b"", 1, {}, [entry.put("c", "k", b"")]
    )
    with pytest.raises(IntegrityError, match="actor must be"):
        a.apply(SHARE, [signed(mallory.identity, huge)], "mallory")


def test_a_pre_signed_un_revocation_does_not_undo_the_revocation():
    a, b, mallory = household(3)
    converge([a, b, mallory])
    record = next(d for d in a.devices() if d.device_id == mallory.device_id)
    # While still a member, Mallory signs a record of itself as not revoked whose context claims
    # A's next write, which is going to be the revocation.
    seq, head = chain_after(mallory)
    a_next = a.summary_vector(SHARE)[a.actor] + 1
    unrevoke = entry.encode(
        SHARE,
        mallory.actor,
        seq + 1,
        head,
        10**15,
        {a.actor: a_next},
        [mallory.device_op(mallory.identity.cert_pem, "still here")],
    )
    b.apply(SHARE, [signed(mallory.identity, unrevoke)], "mallory")
    a.commit(SHARE, [a.revocation_op(record)])
    assert a.summary_vector(SHARE)[a.actor] == a_next
    converge([a, b])
    for replica in (a, b):
        device = next(d for d in replica.devices() if d.device_id == mallory.device_id)
        assert device.revoked and device.revoked_by == a.device_id
    assert state(a) == state(b)


def test_writes_after_a_revocation_are_taken_back_by_a_member_that_relayed_them():
    a, b, c, mallory = household(4)
    converge([a, b, c, mallory])
    put(mallory, "shared", "before the revocation")
    converge([a, b, c, mallory])
    record = next(d for d in a.devices() if d.device_id == mallory.device_id)
    a.commit(SHARE, [a.revocation_op(record)])
    put(mallory, "shared", "after the revocation")
    put(mallory, "own", "after the revocation")
    sync(mallory, b)  # B has not heard of the revocation yet: it applies Mallory's new writes
    assert msgpack.unpackb(b.get(SHARE, "notes", "own").winner.value) == "after the revocation"
    put(b, "shared", "b saw mallory's write")  # an honest write made after seeing it
    sync(b, c)  # C gets them through B, also before the revocation
    for source, target in [(a, b), (a, c), (b, a), (c, a), (b, c), (c, b)]:
        sync(source, target)
    for replica in (a, b, c):
        assert replica.get(SHARE, "notes", "own") is None, "the post-revocation write is gone"
        view = replica.get(SHARE, "notes", "shared")
        assert view is not None and not view.conflict
        assert msgpack.unpackb(view.winner.value) == "b saw mallory's write"
    assert state(a) == state(b) == state(c)
    assert a.summary_vector(SHARE) == b.summary_vector(SHARE) == c.summary_vector(SHARE)
    sync(mallory, a)
    assert a.get(SHARE, "notes", "own") is None, "nor does it come back from Mallory"


def test_a_forgery_waits_apart_while_the_honest_relay_goes_through_and_the_forger_is_named():
    a, b, c, mallory = household(4)
    converge([a, b, c, mallory])
    put(b, "k", "genuine")
    genuine = [i for i in all_items(b) if entry.decode(i[0]).actor == b.actor][-1]
    real = entry.decode(genuine[0])
    forged = entry.encode(
        SHARE, real.actor, real.seq, real.prev_hash, real.hlc, {}, [entry.put("notes", "k", b"x")]
    )
    for _ in range(3):
        a.apply(SHARE, [(forged.raw, None)], "mallory")  # unsigned: it waits
    sync(b, c)
    result = a.apply(SHARE, all_items(c), "carol")
    assert result.applied >= 1 and result.offenders.keys() == {"mallory"}
    assert "forged" in result.offenders["mallory"]
    assert msgpack.unpackb(a.get(SHARE, "notes", "k").winner.value) == "genuine"


def test_a_peer_that_sends_more_unsigned_bytes_than_its_allowance_is_refused_and_freed():
    a, mallory = household(2)
    converge([a, mallory])
    seq, head = chain_after(mallory)
    big = b"\x00" * (3_900_000)
    items = []
    for n in range(1, 10):  # 35 MB of entries that never reach a signature
        made = entry.encode(
            SHARE, mallory.actor, seq + n, head, 1, {}, [entry.put("blobs", str(n), big)]
        )
        items.append((made.raw, None))
        head = made.hash
    with pytest.raises(IntegrityError, match="bytes of entries"):
        a.apply(SHARE, items, "mallory")
    intake = a._intakes[SHARE]
    assert intake.pending_bytes("mallory") == 0, "what it sent is freed"
    assert len(intake) == 0


def test_a_clone_running_beside_the_original_keeps_both_writes_and_is_reported(tmp_path):
    import shutil

    original_path, clone_path = tmp_path / "original.db", tmp_path / "clone.db"
    device = Replica.open(original_path, _identities[0], FakeClock(10))
    peer = Replica.open(":memory:", _identities[1], FakeClock(20))
    device.commit(SHARE, [device.device_op(peer.identity.cert_pem, "peer")])
    peer.commit(SHARE, [peer.device_op(device.identity.cert_pem, "device")])
    converge([device, peer])
    device.close()
    shutil.copy(original_path, clone_path)
    original = Replica.open(original_path, _identities[0], FakeClock(30))
    clone = Replica.open(clone_path, _identities[0], FakeClock(40))
    assert original.actor != clone.actor
    put(original, "k", "from the original")
    put(clone, "j", "from the clone")
    converge([original, peer, clone])
    for replica in (original, peer, clone):
        assert replica.get(SHARE, "notes", "k") and replica.get(SHARE, "notes", "j")
    assert state(original) == state(peer) == state(clone)
    kinds = {(n.device_id, n.kind) for n in peer.notices.values()}
    assert (device.device_id, "running_twice") in kinds


def test_taking_back_writes_after_a_cut_keeps_the_status_counts_exact():
    a, b, mallory = household(3)
    converge([a, b, mallory])
    record = next(d for d in a.devices() if d.device_id == mallory.device_id)
    a.commit(SHARE, [a.revocation_op(record)])
    put(mallory, "x", "after the revocation")
    put(mallory, "y", "after the revocation")
    sync(mallory, b)
    assert b.store.count_records(SHARE) == 2
    sync(a, b)
    assert b.store.count_records(SHARE) == 0 == len(b.scan(SHARE, "notes"))


def test_a_readmitted_device_writes_again_on_a_new_epoch_and_its_old_one_stays_cut():
    a, mallory = household(2)
    converge([a, mallory])
    record = next(d for d in a.devices() if d.device_id == mallory.device_id)
    a.commit(SHARE, [a.revocation_op(record)])
    put(mallory, "while-revoked", "on the old epoch")
    a.commit(SHARE, [a.device_op(mallory.identity.cert_pem, "back again")])
    readmitted = next(d for d in a.devices() if d.device_id == mallory.device_id)
    assert not readmitted.revoked and readmitted.cut, "re-admission keeps the old cut"
    old_actor = mallory.actor
    sync(a, mallory)  # it learns, from the signed revocation, that its epoch is frozen
    assert mallory.actor != old_actor
    put(mallory, "after", "on the new epoch")
    converge([a, mallory])
    assert a.get(SHARE, "notes", "while-revoked") is None
    assert msgpack.unpackb(a.get(SHARE, "notes", "after").winner.value) == "on the new epoch"


def test_two_signed_histories_of_one_epoch_end_the_same_on_every_device_and_lose_nothing():
    a, b, c, old = household(4)
    converge([a, b, c, old])
    # Two copies of a 0.1.0 device wrote different entries under one (actor, seq).
    seq, head = chain_after(old)
    branches = [
        entry.encode(SHARE, old.actor, seq + 1, head, 5, {}, [entry.put("notes", "k", value)])
        for value in (msgpack.packb("first copy"), msgpack.packb("second copy"))
    ]
    a.apply(SHARE, [signed(old.identity, branches[0])], "old")
    b.apply(SHARE, [signed(old.identity, branches[1])], "copy-of-old")
    # Equal lengths: only the heads that sessions exchange when their digests differ show it.
    b.apply(SHARE, a.equal_heads(SHARE, b.summary_vector(SHARE)), "a")
    for _ in range(3):
        converge([a, b, c])
    for replica in (a, b, c):
        view = replica.get(SHARE, "notes", "k")
        assert view is not None and view.conflict, "both histories' values are kept"
        assert {msgpack.unpackb(s.value) for s in view.siblings} == {"first copy", "second copy"}
        assert old.actor not in replica.summary_vector(SHARE), "the forked epoch is set aside"
        forks = [n for n in replica.notices.values() if n.kind == "fork"]
        assert len(forks) == 1 and forks[0].device_id == old.device_id, "said once"
    assert state(a) == state(b) == state(c)
    put(b, "still", "syncing")
    converge([a, b, c])
    assert a.get(SHARE, "notes", "still") is not None, "sync goes on"


def test_a_member_cannot_set_an_honest_epoch_aside_with_a_claim_of_a_fork():
    a, b, mallory = household(3)
    converge([a, b, mallory])
    put(b, "k", "honest")
    converge([a, b, mallory])
    [run] = [i for i in all_items(b) if entry.decode(i[0]).actor == b.actor][-1:]
    claim = membership.fork_value(SHARE, [run], [run])  # the same run twice proves nothing
    mallory.commit(SHARE, [entry.put(membership.FORKS, b.actor, claim)])
    converge([a, b, mallory])
    assert b.actor in a.summary_vector(SHARE)
    put(b, "k", "still honest")
    converge([a, b, mallory])
    assert msgpack.unpackb(a.get(SHARE, "notes", "k").winner.value) == "still honest"


def test_a_member_cannot_take_another_devices_key_away_by_writing_junk_into_its_record():
    a, b, mallory = household(3)
    converge([a, b, mallory])
    junk = membership.device_value(b"not a certificate", "gone", mallory.device_id)
    mallory.commit(SHARE, [entry.Op(entry.PUT, membership.DEVICES, b.device_id, junk)])
    converge([a, b, mallory])
    record = next(d for d in a.devices() if d.device_id == b.device_id)
    assert record.name == "gone" and record.cert_pem == b.identity.cert_pem
    put(b, "still", "b")
    sync(b, a)
    assert msgpack.unpackb(a.get(SHARE, "notes", "still").winner.value) == "b"


def test_a_peer_that_sends_garbage_loses_only_its_own_queue_not_what_honest_peers_sent():
    a, b = household(2)
    converge([a, b])
    put(b, "one", 1)
    put(b, "two", 2)
    first, last = [i for i in all_items(b) if entry.decode(i[0]).actor == b.actor][-2:]
    a.apply(SHARE, [(first[0], None)], "bob")  # waits for the signature that follows
    with pytest.raises(IntegrityError):
        a.apply(SHARE, [(b"garbage", None)], "mallory")
    assert a.apply(SHARE, [last], "bob").applied == 2, "bob's first entry was still waiting"


def test_invented_epochs_cannot_pile_siblings_on_a_key():
    a, b, mallory = household(3)
    converge([a, b, mallory])
    put(b, "k", "honest")
    converge([a, b, mallory])
    # More epochs than an entry's context may name, each retiring the one before (so the
    # open-epoch bound does not stop them), each writing k as if it had seen nothing.
    piled, retires = [], []
    for n in range(entry.MAX_CONTEXT_ACTORS + 20):
        actor = f"{mallory.device_id}/{n:08x}"
        op = entry.put("notes", "k", msgpack.packb(f"pile {n}"))
        made = entry.encode(SHARE, actor, 1, entry.GENESIS_HASH, 10**6, {}, [op], retires)
        piled.append(signed(mallory.identity, made))
        retires = [(actor, 1, made.hash)]
    a.apply(SHARE, piled, "mallory")
    # each epoch took over the one before, so its write replaced that epoch's: no pile
    assert len(a.get(SHARE, "notes", "k").siblings) == 2
    put(a, "k", "settled by a")
    sync(a, b)
    for replica in (a, b):
        values = {msgpack.unpackb(s.value) for s in replica.get(SHARE, "notes", "k").siblings}
        assert "settled by a" in values and "honest" not in values


def test_a_write_naming_more_writers_than_an_entry_may_leaves_out_the_most_prolific_device():
    context = {f"{'A' * 5}-{'B' * 5}-{'C' * 5}-{'D' * 5}-{'E' * 5}-{'F' * 5}-{'G' * 5}/{n:08x}": 1
               for n in range(entry.MAX_CONTEXT_ACTORS + 5)}
    honest = "HHHHH-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG/00000001"
    trimmed = merge.context_within_limit({**context, honest: 3})
    assert len(trimmed) == entry.MAX_CONTEXT_ACTORS and trimmed[honest] == 3


def test_the_book_knows_where_each_epoch_was_retired_and_what_each_retiring_one_continued():
    device = identity.DeviceIdentity.generate().device_id
    e1, e2, e3 = (f"{device}/0000000{n}" for n in (1, 2, 3))
    h5, h3 = b"5" * 32, b"3" * 32
    op = [entry.put("notes", "k", b"v")]
    book = EpochBook()
    book.learn(entry.encode(SHARE, e2, 1, entry.GENESIS_HASH, 1, {}, op, [(e1, 5, h5)]), {})
    # a restore from an older copy retires e1 again, lower: said though e1 keeps no head any more
    again = entry.encode(SHARE, e3, 1, entry.GENESIS_HASH, 1, {}, op, [(e1, 3, h3)])
    assert [n.kind for n in book.learn(again, {})] == ["restored"]
    assert book.retired_head(e1) == (5, h5), "the higher head is what was held"
    assert book.retired_head(e2) is None
    assert book.continued() == {e2: {e1: 5}, e3: {e1: 3}}
