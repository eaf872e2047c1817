"""What a session's sender reads for its peer on the database thread (`sender._next_batch`).

The rule tested here: once the peer is removed from a share, nothing of that share is read for
it any more, not even an entry committed a moment later while its session (which restarts
without the share) is still open.
"""

import msgpack

from p2psync import entry
from p2psync.replica import Replica
from p2psync.sender import _next_batch
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
