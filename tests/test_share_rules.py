"""The share rules a replica enforces (shares/rules.py with the replica): members, cuts,
unknown shares, and entries that arrive before the record that made their writer a member."""

import msgpack
import pytest

from p2psync import entry
from p2psync.shares.members import MEMBERS
from p2psync.shares.rules import ShareError
from tests.test_replica import household
from tests.test_upgrade import EXPECTED_0_2, FIXTURE_0_2, open_copy

FAMILY = "family"


def sync(source, target, share=FAMILY):
    """Everything `source` holds of `share` that `target` lacks; returns the apply results."""
    results = []
    cursor = source.cursor_for(share, target.summary_vector(share) if target.holds(share) else {})
    while True:
        known = target.summary_vector(share) if target.holds(share) else {}
        items, cursor = source.entries_after(share, cursor, known)
        if not items:
            return results
        results.append(target.apply(share, items))


def put(replica, key, value, share=FAMILY):
    return replica.commit(share, [entry.put("list", key, msgpack.packb(value))])


def value_on(replica, key, share=FAMILY):
    view = replica.get(share, "list", key)
    return None if view is None or view.deleted else msgpack.unpackb(view.winner.value)


def family_of(a, *others):
    a.commit(FAMILY, a.share_create_ops(FAMILY))
    for other in others:
        a.commit(FAMILY, a.share_add_ops(FAMILY, other.device_id))


def test_a_share_goes_to_its_members_only_and_a_new_member_takes_it_whole():
    a, b, c = household(3)
    family_of(a, b)
    put(a, "milk", "2 l")
    assert a.shares_for(b.device_id) == ["default", FAMILY]
    assert a.shares_for(c.device_id) == ["default"], "c is not told the share exists"
    sync(a, b)
    assert value_on(b, "milk") == "2 l"
    assert b.shares_for(a.device_id) == ["default", FAMILY] and b.shares() == ["default", FAMILY]
    put(b, "eggs", 6)
    sync(b, a)
    assert value_on(a, "eggs") == 6


def test_an_unknown_share_is_not_found_and_asking_leaves_no_trace():
    (a,) = household(1)
    for read in (
        lambda: a.get("nope", "c", "k"),
        lambda: a.scan("nope", "c"),
        lambda: a.conflicts("nope"),
        lambda: put(a, "k", 1, share="nope"),
    ):
        with pytest.raises(ShareError) as refused:
            read()
        assert refused.value.code == "not_found"
    assert "nope" not in a.shares() and not a.holds("nope")
    with pytest.raises(ShareError, match="exists already"):
        a.share_create_ops("default")


def test_a_removed_member_keeps_its_copy_and_its_later_writes_are_refused_everywhere():
    a, b, c = household(3)
    family_of(a, b, c)
    put(a, "milk", "2 l")
    for other in (b, c):
        sync(a, other)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    sync(a, b)
    assert a.shares_for(c.device_id) == b.shares_for(c.device_id) == ["default"]
    put(c, "cake", "yes")  # c does not know it was removed
    assert value_on(c, "milk") == "2 l" and value_on(c, "cake") == "yes"
    [result] = sync(c, b)
    assert result.applied == 0 and result.refused == 1
    assert value_on(b, "cake") is None


def test_a_removed_device_cannot_add_itself_back():
    a, b, c = household(3)
    family_of(a, b, c)
    sync(a, b), sync(a, c)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    sync(a, b)
    # c, unaware, "adds" itself (and b) again: members refuse what it wrote after the cut
    c.commit(FAMILY, [entry.put(MEMBERS, c.device_id, b"\x81\xa7removed\xc2")])
    sync(c, b)
    assert not b.is_share_member(FAMILY, c.device_id)


def test_writes_applied_before_the_removal_arrived_are_taken_back_out():
    a, b, c = household(3)
    family_of(a, b, c)
    sync(a, b), sync(a, c)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    put(c, "cake", "yes")  # concurrent with its removal
    sync(c, b)
    assert value_on(b, "cake") == "yes", "b has not heard of the removal yet"
    sync(a, b)
    assert value_on(b, "cake") is None, "the removal's cut takes c's later write back out"


def test_a_member_added_by_a_write_that_is_taken_back_is_no_member_any_more():
    a, b, c, d = household(4)
    family_of(a, b, c)
    sync(a, b), sync(a, c)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    c.commit(FAMILY, c.share_add_ops(FAMILY, d.device_id))  # concurrent with its removal
    sync(c, b)
    assert b.is_share_member(FAMILY, d.device_id), "b has not heard of the removal yet"
    sync(a, b)
    assert not b.is_share_member(FAMILY, d.device_id), "c's add is taken back out"
    assert b.shares_for(d.device_id) == ["default"]


def test_a_new_members_writes_wait_for_the_record_that_added_it():
    a, b, d = household(3)
    family_of(a, b)
    sync(a, b)
    a.commit(FAMILY, a.share_add_ops(FAMILY, d.device_id))
    sync(a, d)
    put(d, "bread", "rye")
    # d's write reaches b before a's record adding d does: b holds it instead of refusing it
    items, _ = d.entries_after(FAMILY, 0, b.summary_vector(FAMILY))
    mine = [item for item in items if entry.decode(item[0]).actor == d.actor]
    held = b.apply(FAMILY, mine)
    assert held.applied == 0 and held.refused == 0 and held.waiting == 1
    sync(a, b)
    assert value_on(b, "bread") == "rye"


def test_leaving_a_share_stops_our_writes_and_its_members_stop_offering_it():
    a, b = household(2)
    family_of(a, b)
    sync(a, b)
    b.commit(FAMILY, b.share_remove_ops(FAMILY, b.device_id))
    with pytest.raises(ShareError) as refused:
        put(b, "x", 1)
    assert refused.value.code == "forbidden"
    assert b.shares_for(a.device_id) == ["default", FAMILY], "so that a hears b left"
    sync(b, a)
    assert a.shares_for(b.device_id) == ["default"]
    put(a, "later", 1)
    assert a.share_summary(FAMILY)["members"] == 1


def test_a_re_added_device_writes_on_a_new_epoch_that_members_accept():
    a, b, c = household(3)
    family_of(a, b, c)
    sync(a, c)
    put(c, "before", 1)
    sync(c, a)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    put(c, "while-removed", 2)  # c does not know yet
    a.commit(FAMILY, a.share_add_ops(FAMILY, c.device_id))
    old_actor = c.actor
    sync(a, c)
    assert c.actor != old_actor, "the cut froze the epoch c wrote as"
    put(c, "back", True)
    sync(c, a)
    assert value_on(a, "back") is True and value_on(a, "before") == 1
    assert value_on(a, "while-removed") is None, "what it wrote past the cut stays out"


def test_adding_to_a_share_from_before_members_makes_it_members_only(tmp_path):
    a = open_copy(tmp_path, "device-a", FIXTURE_0_2)  # `recipes`: every device held it in 0.2
    outsider = EXPECTED_0_2["device_ids"]["device-b"]
    assert a.share_members("recipes").open and a.shares_for(outsider) == ["default", "recipes"]
    (newcomer,) = household(1)
    a.commit("recipes", a.share_add_ops("recipes", newcomer.device_id))
    members = a.share_members("recipes")
    assert not members.open and members.current() == sorted([a.device_id, newcomer.device_id])
    assert a.shares_for(outsider) == ["default"]


def test_a_removed_device_told_by_a_member_stops_writing_and_offering_until_added_back():
    a, b, c = household(3)
    family_of(a, b, c)
    sync(a, b), sync(a, c)
    a.commit(FAMILY, a.share_remove_ops(FAMILY, c.device_id))
    reason = a.removal_reason(FAMILY, c.device_id)
    assert a.device_id in reason and b.removal_reason(FAMILY, c.device_id) == ""
    assert not c.note_removal(FAMILY, "SOMEONE-ELSE", reason), "only a member's word counts"
    assert c.note_removal(FAMILY, a.device_id, reason)
    assert c.shares_for(a.device_id) == c.shares_for(b.device_id) == ["default"]
    assert c.share_summary(FAMILY)["removal"] == reason and not c.share_summary(FAMILY)["member"]
    with pytest.raises(ShareError) as refused:
        put(c, "x", 1)
    assert refused.value.code == "forbidden"
    sync(b, c)  # a member that has not heard of the removal changes nothing of it
    assert c.removal_notice(FAMILY) == reason
    a.commit(FAMILY, a.share_add_ops(FAMILY, c.device_id))
    sync(a, c)
    assert c.removal_notice(FAMILY) == "" and c.shares_for(a.device_id) == ["default", FAMILY]
    put(c, "back", True)
