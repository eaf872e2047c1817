"""The replica as seen from trio: one database thread, group commit, and change notification.

Every replica call runs on one worker thread at a time, so trio never blocks on SQLite. Local
transactions from any number of clients queue up and commit together (one fsync, one signature).
Whoever waits for "something new was applied" — peer sessions, watchers — waits on the change
notifier here instead of polling. This module holds no protocol logic.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from .entry import Op
from .replica import DEVICES, Commit, Replica, ReplicaError

T = TypeVar("T")
MAX_GROUP_TRANSACTIONS = 512
MAX_GROUP_OPS = 20_000


class ChangeNotifier:
    """A position that only grows, and a way to wait until it passes a point."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._changed = trio.Event()

    def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self._changed.set()
            self._changed = trio.Event()

    async def wait_beyond(self, position: int) -> int:
        while self.position <= position:
            await self._changed.wait()
        return self.position


class Node:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.changes = ChangeNotifier(replica.last_position())
        self.membership_changed = ChangeNotifier(0)
        self._db_lock = trio.CapacityLimiter(1)
        self._queue_send, self._queue_receive = trio.open_memory_channel[
            tuple[str, Sequence[Op], "_Reply"]
        ](math.inf)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a replica method on the database thread."""
        return await trio.to_thread.run_sync(function, *args, limiter=self._db_lock)

    async def commit(self, share: str, ops: Sequence[Op]) -> Commit:
        """One local transaction, durable when this returns."""
        reply = _Reply()
        self._queue_send.send_nowait((share, ops, reply))
        return await reply.wait()

    async def applied(self, last_position: int, touched_devices: bool) -> None:
        """Tell waiters that entries up to `last_position` are in the store."""
        self.changes.advance(last_position)
        if touched_devices:
            self.membership_changed.advance(self.membership_changed.position + 1)

    async def run_group_commit(self) -> None:
        """Drain queued transactions and commit them in batches, forever."""
        async for first in self._queue_receive:
            batch = [first]
            ops_count = len(first[1])
            while len(batch) < MAX_GROUP_TRANSACTIONS and ops_count < MAX_GROUP_OPS:
                try:
                    queued = self._queue_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(queued)
                ops_count += len(queued[1])
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[tuple[str, Sequence[Op], "_Reply"]]) -> None:
        by_share: dict[str, list[tuple[Sequence[Op], _Reply]]] = {}
        for share, ops, reply in batch:
            by_share.setdefault(share, []).append((ops, reply))
        for share, queued in by_share.items():
            try:
                committed = await self.call(
                    self.replica.commit_many, share, [ops for ops, _ in queued]
                )
            except ReplicaError:
                # one bad transaction must not fail the others batched with it
                outcomes = [await self._commit_alone(share, ops, reply) for ops, reply in queued]
                done = [commit for commit in outcomes if commit is not None]
            else:
                for commit, (_, reply) in zip(committed, queued, strict=True):
                    reply.set(commit)
                done = committed
            if done:
                touched = any(op.collection == DEVICES for ops, _ in queued for op in ops)
                await self.applied(max(c.lseq for c in done), touched)

    async def _commit_alone(self, share: str, ops: Sequence[Op], reply: "_Reply") -> Commit | None:
        try:
            commit = await self.call(self.replica.commit, share, ops)
        except ReplicaError as exc:
            reply.fail(exc)
            return None
        reply.set(commit)
        return commit


class _Reply:
    def __init__(self) -> None:
        self._done = trio.Event()
        self._commit: Commit | None = None
        self._error: Exception | None = None

    def set(self, commit: Commit) -> None:
        self._commit = commit
        self._done.set()

    def fail(self, error: Exception) -> None:
        self._error = error
        self._done.set()

    async def wait(self) -> Commit:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._commit is not None
        return self._commit
