"""shared_entries: which transactions of a group commit share a log entry (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from p2psync import entry
from p2psync.entry import Op
from p2psync.shared_entries import SHARED_ENTRY_BYTES, SHARED_ENTRY_OPS, op_bytes, shared_entries


def put(key: str, value: bytes = b"\x01", collection: str = "c") -> list[Op]:
    return [entry.put(collection, key, value)]


def test_transactions_on_different_records_share_one_entry_in_order() -> None:
    transactions = [put("a"), put("b") + put("c"), put("d")]
    entries, owners = shared_entries(transactions)
    assert entries == [put("a") + put("b") + put("c") + put("d")]
    assert owners == [0, 0, 0]


def test_a_record_written_again_starts_a_new_entry() -> None:
    entries, owners = shared_entries([put("a"), put("b"), put("a"), put("c")])
    assert entries == [put("a") + put("b"), put("a") + put("c")]
    assert owners == [0, 0, 1, 1]


def test_reserved_collections_and_empty_transactions_keep_an_entry_of_their_own() -> None:
    member = put("device", collection="_members")
    entries, owners = shared_entries([put("a"), member, put("b"), [], put("c")])
    assert entries == [put("a"), member, put("b"), [], put("c")]
    assert owners == [0, 1, 2, 3, 4]


def test_an_entry_stays_within_its_ops_and_bytes() -> None:
    many = [put(f"k{n}") for n in range(SHARED_ENTRY_OPS + 1)]
    entries, owners = shared_entries(many)
    assert [len(e) for e in entries] == [SHARED_ENTRY_OPS, 1]
    assert owners[-2:] == [0, 1]
    half = SHARED_ENTRY_BYTES // 2
    large = [put(f"k{n}", b"x" * half) for n in range(3)]
    assert [len(e) for e in shared_entries(large)[0]] == [1, 1, 1]


def test_a_transaction_beyond_the_limits_stays_whole_and_alone() -> None:
    big = [op for n in range(SHARED_ENTRY_OPS + 5) for op in put(f"big{n}")]
    entries, owners = shared_entries([put("a"), big, put("b")])
    assert entries == [put("a"), big, put("b")]
    assert owners == [0, 1, 2]


keys = st.sampled_from("abcdefgh")
ops = st.builds(
    lambda collection, key, size: put(key, b"v" * size, collection)[0],
    st.sampled_from(["c", "notes", "_members"]),
    keys,
    st.integers(0, SHARED_ENTRY_BYTES // 3),
)


@given(st.lists(st.lists(ops, max_size=5), max_size=40))
def test_every_op_is_written_once_in_order_and_no_entry_mixes_what_it_must_not(
    transactions: list[list[Op]],
) -> None:
    entries, owners = shared_entries(transactions)
    assert [op for e in entries for op in e] == [op for t in transactions for op in t]
    assert owners == sorted(owners) and len(owners) == len(transactions)
    assert set(owners) == set(range(len(entries)))
    for index, written in enumerate(entries):
        members = [t for t, owner in zip(transactions, owners, strict=True) if owner == index]
        assert [op for t in members for op in t] == written
        if len(members) == 1:
            continue  # a transaction alone is written as it came
        assert all(t and not any(op.collection.startswith("_") for op in t) for t in members)
        assert len(written) <= SHARED_ENTRY_OPS
        assert sum(map(op_bytes, written)) <= SHARED_ENTRY_BYTES
        touched = [{(op.collection, op.key) for op in t} for t in members]
        assert sum(map(len, touched)) == len(set().union(*touched)), "a record in two of them"
