"""The daemon's in-process event bus: news that is not data, from where it happens to whoever
watches (trio).

Peers connecting and leaving, catching up with a peer, conflicts appearing and going, membership
changing: the parts of the daemon that see these publish them here; each `watch` with `events`
subscribes. Publishing never blocks and never waits for a subscriber. Each subscriber has a
bounded buffer: one that falls that far behind is marked `overflowed`, gets nothing more, and is
expected to go away (its watch ends; the client reconnects), so a slow watcher costs a bounded
amount of memory and never slows the daemon. Events are plain JSON-ready dicts; this module never
looks inside them.
"""

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

Event = dict[str, Any]


class Subscription:
    """What one subscriber has not taken yet."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.waiting: deque[Event] = deque()
        self.overflowed = False
        self._arrived = trio.Event()

    def deliver(self, event: Event) -> None:
        if self.overflowed:
            return
        if len(self.waiting) >= self.capacity:
            self.overflowed = True
            self.waiting.clear()  # it will not be sent: the subscriber is going away
        else:
            self.waiting.append(event)
        self._arrived.set()

    def take(self) -> list[Event]:
        """Everything waiting, oldest first."""
        taken = list(self.waiting)
        self.waiting.clear()
        if not self.overflowed:
            self._arrived = trio.Event()
        return taken

    async def wait(self) -> None:
        """Until something is waiting (or the subscriber overflowed)."""
        await self._arrived.wait()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber.deliver(event)

    @contextmanager
    def subscribe(self, capacity: int) -> Iterator[Subscription]:
        """Events published from now until the block ends, up to `capacity` untaken."""
        subscription = Subscription(capacity)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
