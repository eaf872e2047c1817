"""What a session's sender reads for its peer on the database thread (`sender._next_batch`),
and when it need not read at all (`sender._unsent`).

The rules tested here: once the peer is removed from a share, nothing of that share is read for
it any more, not even an entry committed a moment later while its session (which restarts
without the share) is still open; and a sender skips the read only when what was stored since
its cursor is known, and all of it is the peer's writers' to send, the peer's already, or our
own commits kept whole (then it sends those the peer lacks).
"""

import msgpack

from p2psync import entry
from p2psync.change_notifier import KeptEntry, StoredSince
from p2psync.replica import SEND_BATCH_BYTES, Replica
from p2psync.sender import _next_batch, _unsent
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

    def nothing_for(seqs: dict[str, dict[str, int]] | None) -> bool:
        return _unsent(None if seqs is None else StoredSince(seqs, []), SHARE, known, skip) == []

    assert _unsent(None, SHARE, known, skip) is None, "unknown: read"
    assert nothing_for({})
    assert nothing_for({SHARE: {"X/1": 9}}), "its writer sends it"
    assert nothing_for({SHARE: {"P/1": 4, "X/1": 9}}), "the peer holds it"
    assert not nothing_for({SHARE: {"P/1": 5}}), "the peer lacks P/1 5"
    assert not nothing_for({SHARE: {"Y/1": 1, "X/1": 2}})
    assert nothing_for({"other": {"Y/1": 1}}), "another share's"


def test_a_sender_sends_our_kept_commits_the_peer_lacks_without_a_read():
    known = {"Me/1": 2, "P/1": 4}
    ours = [KeptEntry(SHARE, "Me/1", seq, b"entry %d" % seq, None) for seq in (2, 3, 4)]
    elsewhere = KeptEntry("other", "Me/1", 5, b"entry 5", b"signature")
    since = StoredSince({SHARE: {"X/1": 7}}, [*ours, elsewhere])
    assert _unsent(since, SHARE, known, frozenset({"X/1"})) == ours[1:], "it holds seq 2"
    lacking = StoredSince({SHARE: {"P/1": 5}}, ours)
    assert _unsent(lacking, SHARE, known, frozenset()) is None, "P/1 5 is in the log alone"
    big = [KeptEntry(SHARE, "Me/1", seq, b"x" * (SEND_BATCH_BYTES // 2), None) for seq in (3, 4, 5)]
    assert _unsent(StoredSince({}, big), SHARE, known, frozenset()) is None, "more than a batch"
