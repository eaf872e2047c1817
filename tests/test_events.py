"""The daemon's event bus (p2psync/events.py): broadcast, bounded per subscriber."""

import trio
import trio.testing

from p2psync.events import EventBus

TIMEOUT = 10


async def test_every_subscriber_gets_what_was_published_while_it_listened() -> None:
    bus = EventBus()
    bus.publish({"n": 0})  # nobody listens: gone
    with bus.subscribe(10) as first, bus.subscribe(10) as second:
        assert bus.subscribers == 2
        bus.publish({"n": 1})
        bus.publish({"n": 2})
        assert first.take() == [{"n": 1}, {"n": 2}]
        assert first.take() == []
        bus.publish({"n": 3})
        assert second.take() == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert bus.subscribers == 0


async def test_a_waiting_subscriber_wakes_on_the_next_event() -> None:
    bus = EventBus()
    woke: list[object] = []
    with bus.subscribe(10) as subscription:
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                await subscription.wait()
                woke.extend(subscription.take())

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
            bus.publish({"n": 1})
    assert woke == [{"n": 1}]


async def test_a_subscriber_that_falls_behind_is_marked_and_holds_nothing() -> None:
    bus = EventBus()
    with bus.subscribe(3) as slow, bus.subscribe(100) as fast:
        for n in range(5):
            bus.publish({"n": n})
        assert slow.overflowed and slow.take() == []  # its memory is bounded: nothing kept
        with trio.fail_after(TIMEOUT):
            await slow.wait()  # and it is woken, to notice and go away
        assert not fast.overflowed and len(fast.take()) == 5
