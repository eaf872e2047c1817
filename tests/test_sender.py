"""What a session's sender reads for its peer on the database thread (`sender._next_batch`),
and when it need not read at all (`sender._nothing_for`).

The rules tested here: once the peer is removed from a share, nothing of that share is read for
it any more, not even an entry committed a moment later while its session (which restarts
without the share) is still open; and a sender skips the read only when what was stored since
its cursor is known, and all of it is the peer's writers' to send or the peer's already.
"""

import msgpack

from p2psync import entry
from p2psync.replica import Replica
from p2psync.sender import _next_batch, _nothing_for
from tests.test_replica import household

SHARE = "family"


def put(replica: Replica, key: str) -> None:
    replica.commit(SHARE, [entry.put("notes", key, msgpack.packb(key))])


def keys_read_for(replica: Replica, peer: Replica) -> list[str] | None:
    """The keys of the entries the sender would send `peer` from the start; None: nothing,
    the peer is out of the share."""
    items, _, vector = _next_batch(replica, SHARE, 0, {}, frozenset(), peer.device_id)
    if vector is None:
        assert items == []
        return None
    return [op.key for raw, _ in items for op in entry.decode(raw).ops]


def test_nothing_of_a_share_is_read_for_a_peer_once_it_is_removed_from_it():
    a, b, c = household(3)
    a.commit(SHARE, a.share_create_ops(SHARE))
    for member in (b, c):
        a.commit(SHARE, a.share_add_ops(SHARE, member.device_id))
    put(a, "before")
    assert "before" in (keys_read_for(a, c) or [])

    a.commit(SHARE, a.share_remove_ops(SHARE, c.device_id))
    put(a, "after")  # at once: the session with c may still be open
    assert keys_read_for(a, c) is None
    assert "after" in (keys_read_for(a, b) or []), "the members left still get everything"
    assert a.was_removed_from(SHARE, c.device_id)
    assert not a.was_removed_from(SHARE, b.device_id)
    assert not a.was_removed_from("default", c.device_id)


def test_a_sender_skips_its_read_only_when_nothing_stored_since_is_for_its_peer():
    skip = frozenset({"X/1"})
    known = {"P/1": 4}
    assert not _nothing_for(None, SHARE, known, skip), "unknown: read"
    assert _nothing_for({}, SHARE, known, skip)
    assert _nothing_for({SHARE: {"X/1": 9}}, SHARE, known, skip), "its writer sends it"
    assert _nothing_for({SHARE: {"P/1": 4, "X/1": 9}}, SHARE, known, skip), "the peer holds it"
    assert not _nothing_for({SHARE: {"P/1": 5}}, SHARE, known, skip), "the peer lacks P/1 5"
    assert not _nothing_for({SHARE: {"Y/1": 1, "X/1": 2}}, SHARE, known, skip)
    assert _nothing_for({"other": {"Y/1": 1}}, SHARE, known, skip), "another share's"
