import msgpack

from p2psync import entry, merge
from p2psync.merge import Sibling, dot_version

A = "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA-AAAAA/0000000a"
B = "BBBBB-BBBBB-BBBBB-BBBBB-BBBBB-BBBBB-BBBBB/0000000b"


def write(actor, seq, value, context=None, hlc=None, delete=False):
    op = entry.delete("c", "k") if delete else entry.put("c", "k", msgpack.packb(value))
    prev = entry.GENESIS_HASH if seq == 1 else b"\0" * 32
    return entry.encode("s", actor, seq, prev, hlc or seq, context or {}, [op])


def apply(siblings, logged):
    return merge.apply_op(siblings, logged, logged.ops[0])


def values(siblings):
    return sorted(msgpack.unpackb(s.value) for s in siblings if s.value is not None)


def test_a_write_replaces_what_its_writer_had_seen():
    siblings = apply([], write(A, 1, "one"))
    siblings = apply(siblings, write(B, 1, "two", context={A: 1}))
    assert values(siblings) == ["two"]


def test_concurrent_writes_stay_as_siblings_with_a_deterministic_winner():
    left = apply(apply([], write(A, 1, "a", hlc=5)), write(B, 1, "b", hlc=5))
    right = apply(apply([], write(B, 1, "b", hlc=5)), write(A, 1, "a", hlc=5))
    assert values(left) == values(right) == ["a", "b"]
    assert merge.winner(left) == merge.winner(right)
    assert merge.winner(left).actor == B, "equal clocks: the larger actor wins"
    assert merge.is_conflict(left)


def test_a_write_after_seeing_both_siblings_resolves_them():
    siblings = apply(apply([], write(A, 1, "a")), write(B, 1, "b"))
    resolved = apply(siblings, write(A, 2, "merged", context={B: 1}))
    assert values(resolved) == ["merged"]


def test_byte_identical_concurrent_values_are_not_a_conflict():
    siblings = apply(apply([], write(A, 1, "same")), write(B, 1, "same"))
    assert len(siblings) == 2 and not merge.is_conflict(siblings)
    assert len(merge.distinct_values(siblings)) == 1


def test_a_delete_is_a_tombstone_sibling_that_can_lose_to_a_concurrent_put():
    siblings = apply(apply([], write(A, 1, None, delete=True, hlc=1)), write(B, 1, "kept", hlc=2))
    assert merge.is_conflict(siblings)
    assert not merge.winner(siblings).deleted


def test_applying_an_entry_twice_changes_nothing():
    logged = write(A, 1, "x")
    once = apply([], logged)
    assert apply(once, logged) == once


def test_a_transaction_keeps_only_its_last_op_per_key():
    ops = [entry.put("c", "k", b"1"), entry.put("c", "j", b"2"), entry.delete("c", "k")]
    assert [(op.key, op.kind) for op in merge.dedupe_ops(ops)] == [("j", "p"), ("k", "d")]


def test_early_entries_wait_for_their_causes_then_apply_in_causal_order():
    held = merge.CausalBuffer()
    second = write(A, 2, "2")
    from_b = write(B, 1, "b", context={A: 2})
    assert held.hold(from_b, None) and held.hold(second, b"sig")
    assert held.pop_ready({}) == []
    vector: dict[str, int] = {}
    assert held.pop_ready(vector) == []
    assert held.hold(write(A, 1, "1"), None)
    order = [(e.actor, e.seq) for e, _, _ in held.pop_ready(vector)]
    assert order == [(A, 1), (A, 2), (B, 1)]
    assert vector == {A: 2, B: 1} and len(held) == 0


def test_the_buffer_bounds_bytes_per_peer_and_frees_a_peer_that_leaves():
    first, second = write(A, 2, "x"), write(A, 3, "y")
    held = merge.CausalBuffer(max_bytes_per_peer=len(first.raw) + len(second.raw) - 1)
    assert held.hold(first, None, "mallory")
    assert not held.hold(second, None, "mallory"), "mallory's allowance is used up"
    assert held.hold(second, None, "bob"), "another peer's allowance is its own"
    held.forget_peer("mallory")
    assert len(held) == 1
    assert held.hold(first, None, "mallory"), "what a peer held is freed when it leaves"


def test_a_context_naming_dots_beyond_a_revocation_cut_waits_only_up_to_the_cut():
    after_cut = write(B, 1, "b", context={A: 9})
    held = merge.CausalBuffer()
    held.hold(after_cut, None)
    assert held.pop_ready({A: 4}) == []
    ready = held.pop_ready({A: 4}, lambda actor: 4 if actor == A else None)
    assert [(e.actor, e.seq) for e, _, _ in ready] == [(B, 1)]


def test_writes_list_every_op_as_the_sibling_the_merge_rule_adds():
    first = entry.encode(
        "s", A, 1, entry.GENESIS_HASH, 7, {}, [entry.put("c", "k", b"1"), entry.delete("c", "j")]
    )
    second = entry.encode("s", A, 2, first.hash, 8, {}, [entry.put("c", "k", b"2")])
    assert list(merge.writes([first, second])) == [
        (("c", "k"), (A, 1, 7, False, b"1", None)),
        (("c", "j"), (A, 1, 7, True, None, None)),
        (("c", "k"), (A, 2, 8, False, b"2", None)),
    ]
    assert [merge.Sibling(*fields) for _, fields in merge.writes([first])] == [
        merge.sibling_for(first, op) for op in first.ops
    ]


def test_a_transaction_without_repeated_keys_keeps_its_order():
    ops = [entry.put("c", key, b"1") for key in "zyx"]
    assert merge.dedupe_ops(ops) == ops


def test_a_new_epoch_waits_for_the_epochs_it_continues_up_to_where_it_continued_them():
    successor = A.replace("/0000000a", "/0000000c")
    op = entry.put("c", "k", b"1")
    first = entry.encode("s", successor, 1, entry.GENESIS_HASH, 9, {}, [op], [(A, 3, b"h" * 32)])
    assert not merge.is_ready(first, {A: 2})
    assert merge.is_ready(first, {A: 3})
    assert merge.is_ready(first, {A: 1}, lambda actor: 1 if actor == A else None), "cut at 1"


def test_a_version_names_one_write_the_same_way_everywhere_and_fits_json():
    first = Sibling("DEV/00000001", 1, 5, False, b"a", None)
    assert first.version == dot_version("DEV/00000001", 1)  # the same on every device
    others = {
        dot_version(actor, seq) for actor in ("DEV/00000001", "DEV/00000002") for seq in (1, 2, 10)
    }
    assert len(others) == 6  # distinct per write
    assert all(isinstance(v, str) and len(v) == 16 and v.isascii() for v in others)
