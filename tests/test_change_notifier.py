"""The change notifier (`change_notifier.py`): a position that only grows, waiters and followers
woken when it passes theirs (followers only for what they want), and what the latest writes
stored, kept for senders and watchers only when it accounts for every position without a gap."""

import trio
import trio.testing

from p2psync.change_notifier import (
    STORED_KEPT,
    ChangeNotifier,
    KeptEntry,
    Stored,
    StoredSince,
    kept_commits,
)
from p2psync.replica import SEND_BATCH_BYTES, Commit

TIMEOUT = 10


async def test_notifier_only_grows() -> None:
    notifier = ChangeNotifier(5)
    notifier.advance(3)
    assert notifier.position == 5
    notifier.advance(8)
    assert notifier.position == 8


async def test_wait_beyond_returns_at_once_when_already_past() -> None:
    notifier = ChangeNotifier(5)
    with trio.fail_after(TIMEOUT):
        assert await notifier.wait_beyond(4) == 5


async def test_waiters_wake_only_when_the_position_passes_theirs() -> None:
    notifier = ChangeNotifier(0)
    woke: list[tuple[str, int]] = []

    async def waiter(name: str, beyond: int) -> None:
        woke.append((name, await notifier.wait_beyond(beyond)))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, "first", 0)
            nursery.start_soon(waiter, "second", 0)
            nursery.start_soon(waiter, "later", 2)
            await trio.testing.wait_all_tasks_blocked()
            notifier.advance(0)  # not beyond anyone
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
            notifier.advance(2)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(woke) == [("first", 2), ("second", 2)]
            notifier.advance(3)
    assert sorted(woke) == [("first", 2), ("later", 3), ("second", 2)]


async def test_what_was_stored_after_a_position_is_known_only_without_gaps() -> None:
    notifier = ChangeNotifier(10)
    assert notifier.stored_after(10) == StoredSince({}, [])  # nothing after it
    notifier.advance(12, Stored(10, 12, {"s": {"A": 3}}))
    # another apply's advance can come in before the one of an apply before it
    notifier.advance(15, Stored(13, 15, {"s": {"A": 5, "B": 1}, "t": {"C": 2}}))
    assert notifier.stored_after(13) == StoredSince({"s": {"A": 5, "B": 1}, "t": {"C": 2}}, [])
    assert notifier.stored_after(12) is None, "position 13 was stored by no apply told yet"
    notifier.advance(13, Stored(12, 13, {"s": {"B": 4}}))
    assert notifier.position == 15
    assert notifier.stored_after(10) == StoredSince({"s": {"A": 5, "B": 4}, "t": {"C": 2}}, [])
    assert notifier.stored_after(9) is None, "position 10 is before every span"
    notifier.advance(16)  # a snapshot, a large commit: it says nothing of what it stored
    assert notifier.stored_after(12) is None
    assert notifier.stored_after(16) == StoredSince({}, [])


async def test_a_local_commits_entries_come_after_a_position_whole_or_not_at_all() -> None:
    notifier = ChangeNotifier(10)
    first, second, third = (
        KeptEntry("s", "Me/1", seq, b"entry %d" % seq, None) for seq in (7, 8, 9)
    )
    notifier.advance(12, Stored(10, 12, {}, (first, second)))
    notifier.advance(13, Stored(12, 13, {"s": {"B": 4}}))
    notifier.advance(14, Stored(13, 14, {}, (third,)))
    assert notifier.stored_after(10) == StoredSince({"s": {"B": 4}}, [first, second, third])
    assert notifier.stored_after(12) == StoredSince({"s": {"B": 4}}, [third])
    assert notifier.stored_after(11) is None, "which of the first commit's entries are beyond 11?"


def test_commits_are_kept_only_whole_and_within_one_batch() -> None:
    def commit(lseq: int, size: int = 10) -> Commit:
        return Commit("s", "Me/1", lseq, 0, lseq, b"x" * size, None)

    kept = kept_commits([commit(6), commit(5)])
    assert kept is not None and (kept.after, kept.last) == (4, 6)
    assert [e.seq for e in kept.entries] == [5, 6], "in position order"
    assert kept_commits([commit(5), commit(7)]) is None, "position 6 is something else"
    assert kept_commits([commit(5, SEND_BATCH_BYTES), commit(6)]) is None


async def test_only_the_latest_applies_are_known() -> None:
    notifier = ChangeNotifier(0)
    for position in range(1, STORED_KEPT + 2):
        notifier.advance(position, Stored(position - 1, position, {"s": {"A": position}}))
    assert notifier.stored_after(0) is None
    assert notifier.stored_after(1) == StoredSince({"s": {"A": STORED_KEPT + 1}}, [])


async def test_wake_all_wakes_followers_without_a_change() -> None:
    notifier = ChangeNotifier(4)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            woken = trio.Event()

            async def follower() -> None:
                await notifier.follow(4, lambda stored: False)
                woken.set()

            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            notifier.wake_all()
            await woken.wait()
    assert notifier.position == 4


async def test_a_follower_sleeps_through_what_it_does_not_want_and_its_cursor_moves_on() -> None:
    notifier = ChangeNotifier(10)
    cursors: list[int] = []

    def wants(stored: Stored) -> bool:
        return "Me/1" in stored.seqs.get("s", {})

    async def follower() -> None:
        cursors.append(await notifier.follow(10, wants))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            notifier.advance(12, Stored(10, 12, {"s": {"X/1": 3}}))
            notifier.advance(13, Stored(12, 13, {"s": {"Y/1": 1}}))
            await trio.testing.wait_all_tasks_blocked()
            assert cursors == [], "nothing it wants: not woken"
            notifier.advance(14, Stored(13, 14, {"s": {"Me/1": 4}}))
        assert cursors == [13], "woken by what it wants; moved past the spans before it"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            notifier.advance(16)  # says nothing of what it stored: it may hold anything
        assert cursors == [13, 10]


async def test_a_span_after_positions_nobody_accounted_for_wakes_a_follower() -> None:
    """A fork's values restated after a group commit are stored with no advance of their own:
    the next span starts after them, and the follower must look (it reads the log)."""
    notifier = ChangeNotifier(10)
    cursors: list[int] = []

    async def follower() -> None:
        cursors.append(await notifier.follow(10, lambda stored: False))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            notifier.advance(15, Stored(13, 15, {"s": {"Y/1": 1}}))
    assert cursors == [10]
