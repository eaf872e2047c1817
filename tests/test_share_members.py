"""The pure share membership rules: names, member records, who may write up to where."""

import msgpack
import pytest

from p2psync import entry
from p2psync.merge import Sibling
from p2psync.shares.members import (
    MEMBERS,
    ShareMembers,
    ShareNameError,
    check_share_name,
    member_record,
    member_value,
    removal_cut,
)

A, B, C = "AAAAA-1", "BBBBB-2", "CCCCC-3"


def actor(device: str, epoch: int = 1) -> str:
    return f"{device}/{epoch:08x}"


def sibling(value: bytes, writer: str = A, seq: int = 1, hlc: int = 1) -> Sibling:
    return Sibling(actor(writer), seq, hlc, False, value, None)


def written(device: str, seq: int, epoch: int = 1) -> entry.LogEntry:
    return entry.encode(
        "family", actor(device, epoch), seq, entry.GENESIS_HASH, seq, {}, [entry.put("c", "k", b"")]
    )


@pytest.mark.parametrize("name", ["family", "a", "parents-7f3a", "x.y_z", "0" * 64])
def test_good_share_names_pass(name):
    assert check_share_name(name) == name


@pytest.mark.parametrize("name", ["", "Family", "-lead", ".hidden", "a b", "a/b", "x" * 65, "ü"])
def test_bad_share_names_say_what_a_name_may_be(name):
    with pytest.raises(ShareNameError, match="1 to 64"):
        check_share_name(name)


def test_a_removal_wins_over_a_concurrent_re_add_and_cuts_only_ever_go_down():
    added = sibling(member_value(A), A, 5, 10)
    removed = sibling(
        member_value(A, removed=True, cut={actor(C): 7, actor(A): 99}, removed_by=B), B, 3, 9
    )
    re_added = sibling(member_value(A, cut={actor(C): 9}), A, 6, 11)
    record = member_record(C, [added, removed, re_added])
    assert record.removed and record.removed_by == B
    assert record.cut == {actor(C): 7}, "the lowest cut, and only the removed device's epochs"


def test_a_record_nobody_can_read_vouches_for_nothing():
    assert member_record(C, [sibling(b"\xc1junk")]).added_by == ""
    assert member_record(C, []).removed


def test_an_open_share_from_before_members_takes_every_device():
    members = ShareMembers({})
    assert members.open and members.is_member(C) and members.accepts(written(C, 40))


def test_writers_must_be_members_and_removed_ones_stop_at_their_cut():
    members = ShareMembers(
        {
            A: member_record(A, [sibling(member_value(A))]),
            C: member_record(
                C, [sibling(member_value(A, removed=True, cut={actor(C): 3}, removed_by=A))]
            ),
        }
    )
    assert members.current() == [A]
    assert members.accepts(written(A, 100))
    assert not members.accepts(written(B, 1)), "never a member"
    assert members.accepts(written(C, 3)) and not members.accepts(written(C, 4))
    assert not members.accepts(written(C, 1, epoch=2)), "an epoch started after the removal"
    assert members.cap(actor(C)) == 3 and members.cap(actor(C, 2)) == 0
    assert members.cap(actor(B)) is None, "an unknown writer's entries wait for their causes"


def test_a_re_added_device_keeps_its_cut_for_old_epochs_and_writes_on_new_ones():
    members = ShareMembers({C: member_record(C, [sibling(member_value(A, cut={actor(C): 3}))])})
    assert members.is_member(C)
    assert not members.accepts(written(C, 4)) and members.accepts(written(C, 4, epoch=2))


def test_the_removal_cut_names_only_the_removed_devices_epochs():
    vector = {actor(A): 4, actor(C): 2, actor(C, 2): 9}
    assert removal_cut(C, vector) == {actor(C): 2, actor(C, 2): 9}


def test_member_values_are_msgpack_maps_other_releases_can_read():
    fields = msgpack.unpackb(member_value(A, removed=True, cut={actor(C): 1}, removed_by=A))
    assert fields["removed"] is True and fields["cut"] == {actor(C): 1}
    assert MEMBERS.startswith("_"), "a system collection: apps cannot write it"
