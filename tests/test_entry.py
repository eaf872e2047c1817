import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync import entry
from p2psync.entry import IntegrityError

ACTOR = "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG/0000abcd"
OTHER = "HHHHH-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG/00001234"


def make(seq=1, prev=entry.GENESIS_HASH, ops=None, context=None):
    ops = ops or [entry.put("notes", "a", msgpack.packb("hello"), type="note", schema_version=2)]
    return entry.encode("default", ACTOR, seq, prev, 77 << 16, context or {}, ops)


def test_encode_decode_round_trip_keeps_every_field():
    first = make(context={OTHER: 4, ACTOR: 9})
    decoded = entry.decode(first.raw)
    assert decoded == first
    assert decoded.context == {OTHER: 4}, "the writer's own actor is implied, not stored"
    assert msgpack.unpackb(decoded.ops[0].meta) == {"schema_version": 2, "type": "note"}
    assert decoded.origin == ACTOR.split("/")[0]


def test_unknown_fields_survive_in_the_raw_bytes_and_in_op_meta():
    fields = msgpack.unpackb(make().raw)
    fields["future"] = {"x": [1, 2]}
    fields["o"][0]["z-new"] = b"kept"
    raw = msgpack.packb(fields)
    decoded = entry.decode(raw)
    assert decoded.raw == raw
    assert msgpack.unpackb(decoded.ops[0].meta)["z-new"] == b"kept"


def test_the_chain_links_each_entry_to_its_predecessor():
    first = make()
    second = make(seq=2, prev=first.hash)
    entry.check_chain(entry.GENESIS_HASH, [first, second])
    with pytest.raises(IntegrityError, match="does not follow"):
        entry.check_chain(entry.GENESIS_HASH, [second])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.update(n=0), "seq"),
        (lambda f: f.update(s=""), "share"),
        (lambda f: f.update(a="no-epoch"), "actor"),
        (lambda f: f.update(p=b"short"), "prev_hash"),
        (lambda f: f.update(o=[]), "ops"),
        (lambda f: f.update(o=[{"o": "x", "c": "c", "k": "k"}]), "op kind"),
        (lambda f: f.update(o=[{"o": "p", "c": "c", "k": "k"}]), "value as bytes"),
        (lambda f: f.update(c={ACTOR: 1}), "context"),
        (lambda f: f.update(n=2), "first entry"),
    ],
)
def test_malformed_entries_are_rejected_with_a_reason(change, message):
    fields = msgpack.unpackb(make().raw)
    change(fields)
    with pytest.raises(IntegrityError, match=message):
        entry.decode(msgpack.packb(fields))


# each field: a valid value, or a value of the right type at its edge, or of another type
field_values = {
    "s": st.sampled_from(["default", "", 3, None]),
    "a": st.sampled_from([ACTOR, OTHER, "no-epoch", b"bytes"]),
    "n": st.sampled_from([1, 2, 0, -1, True, 1.0]),
    "p": st.sampled_from([entry.GENESIS_HASH, b"h" * 32, b"short", "text"]),
    "h": st.sampled_from([0, 77 << 16, -1, False, 1.5]),
    "c": st.sampled_from([{}, {OTHER: 1}, {ACTOR: 1}, {OTHER: 0}, {"x": 1}, [], None]),
}


@given(st.fixed_dictionaries(field_values))
def test_decode_accepts_exactly_the_entries_the_named_checks_accept(fields):
    ops = [{"o": "p", "c": "notes", "k": "a", "v": b"\x01"}]
    raw = msgpack.packb({**fields, "o": ops})
    valid = (
        fields["s"] in ("default",)
        and fields["a"] in (ACTOR, OTHER)
        and type(fields["n"]) is int
        and fields["n"] >= 1
        and (fields["p"] == entry.GENESIS_HASH) == (fields["n"] == 1)
        and fields["p"] in (entry.GENESIS_HASH, b"h" * 32)
        and type(fields["h"]) is int
        and fields["h"] >= 0
        and isinstance(fields["c"], dict)
        and all(entry.is_actor(a) and a != fields["a"] and n > 0 for a, n in fields["c"].items())
    )
    if not valid:
        with pytest.raises(IntegrityError):
            entry.decode(raw)
        return
    decoded = entry.decode(raw)
    assert (decoded.share, decoded.actor, decoded.seq, decoded.prev_hash, decoded.hlc) == (
        fields["s"],
        fields["a"],
        fields["n"],
        fields["p"],
        fields["h"],
    )
    assert decoded.context == fields["c"] and decoded.raw == raw
    assert decoded.ops == (entry.put("notes", "a", b"\x01"),)


@given(st.binary(max_size=300))
def test_garbage_only_ever_raises_integrity_error(garbage):
    try:
        decoded = entry.decode(garbage)
    except IntegrityError:
        return
    assert decoded.raw == garbage


@given(st.data())
def test_any_flipped_byte_changes_the_hash_or_fails_to_decode(data):
    original = make()
    position = data.draw(st.integers(0, len(original.raw) - 1))
    flipped = bytearray(original.raw)
    flipped[position] ^= data.draw(st.integers(1, 255))
    try:
        decoded = entry.decode(bytes(flipped))
    except IntegrityError:
        return
    assert decoded.hash != original.hash


wire_ops = st.lists(
    st.one_of(
        st.builds(
            entry.put,
            st.text(min_size=1, max_size=5),
            st.text(max_size=5),
            st.binary(max_size=8),
            type=st.none() | st.text(max_size=3),
        ),
        st.builds(
            entry.delete,
            st.text(min_size=1, max_size=5),
            st.text(max_size=5),
            schema_version=st.none() | st.integers(0, 9),
        ),
    ),
    min_size=1,
    max_size=6,
)


@given(wire_ops)
def test_ops_round_trip_and_encode_in_the_canonical_form(ops):
    made = entry.encode("default", ACTOR, 1, entry.GENESIS_HASH, 5, {OTHER: 2}, ops)
    canonical = {
        "s": "default",
        "a": ACTOR,
        "n": 1,
        "p": entry.GENESIS_HASH,
        "h": 5,
        "c": {OTHER: 2},
        "o": [op.to_wire() for op in ops],
    }
    assert made.raw == msgpack.packb(canonical), "the bytes every earlier version wrote"
    decoded = entry.decode(made.raw)
    assert decoded.ops == tuple(ops)
    assert all(type(op) is entry.Op for op in decoded.ops)


def test_an_op_with_four_fields_that_are_not_a_plain_put_is_checked_in_full():
    fields = msgpack.unpackb(make().raw)
    fields["o"] = [{"o": "p", "c": "notes", "k": "a", "x": b"no value"}]
    with pytest.raises(IntegrityError, match="value as bytes"):
        entry.decode(msgpack.packb(fields))
    fields["o"] = [{"o": "p", "c": "", "k": "a", "v": b"1"}]
    with pytest.raises(IntegrityError, match="collection"):
        entry.decode(msgpack.packb(fields))


def test_an_op_field_name_that_is_not_a_string_is_rejected_not_a_crash():
    fields = msgpack.unpackb(make().raw)
    fields["o"][0][7] = "seven"
    with pytest.raises(IntegrityError, match="field names must be strings"):
        entry.decode(msgpack.packb(fields))
