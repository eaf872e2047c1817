"""When each device was last heard from, in wall-clock time, kept across restarts (trio).

Sessions know when their peer last spoke in trio's clock, which means nothing after a restart;
`LastSeen` turns that into wall-clock milliseconds and keeps them in the replica's meta table
(key `last_seen/<device id>`, value the milliseconds as ASCII digits), so `devices` can say
"last seen 3 h ago" about a peer that went away before this daemon started. It is written when a
session ends and at most every `SAVE_INTERVAL_SECONDS` while a peer stays connected: one small,
unsynced write per peer and minute. It never decides who is online.
"""

import logging
import time

from .node import Node
from .store import Store

log = logging.getLogger("p2psync")
META_PREFIX = "last_seen/"
SAVE_INTERVAL_SECONDS = 60.0


def wall_ms_of(monotonic_then: float, monotonic_now: float, wall_now_ms: int) -> int:
    """The wall-clock time of a moment in the monotonic clock (that clock has no epoch)."""
    return wall_now_ms - max(0, round((monotonic_now - monotonic_then) * 1000))


def decode(stored: dict[str, bytes]) -> dict[str, int]:
    """The meta table's entries as device id -> wall ms; unreadable ones are left out."""
    found = {}
    for key, value in stored.items():
        text = bytes(value).decode("ascii", errors="replace")
        if text.isdigit():
            found[key.removeprefix(META_PREFIX)] = int(text)
    return found


def _save(store: Store, times: dict[str, int]) -> None:
    # unsynced: a last-seen time lost to a power cut is only a little older after it
    with store.transaction(fsync=False):
        for device_id, wall_ms in times.items():
            store.set_meta(META_PREFIX + device_id, str(wall_ms).encode("ascii"))


class LastSeen:
    """Device id -> wall-clock ms of the last time it was heard from (this run or an earlier)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.times: dict[str, int] = {}
        self._saved_at: dict[str, float] = {}  # monotonic time of each device's last write

    async def load(self) -> None:
        stored = await self.node.call(self.node.replica.store.meta_with_prefix, META_PREFIX)
        self.times = decode(stored)

    def note(self, device_id: str, monotonic_then: float, monotonic_now: float) -> int:
        """Remember a moment the device was heard from; the wall ms it stands for."""
        wall_ms = wall_ms_of(monotonic_then, monotonic_now, int(time.time() * 1000))
        self.times[device_id] = max(wall_ms, self.times.get(device_id, 0))
        return self.times[device_id]

    def due(self, device_id: str, monotonic_now: float) -> bool:
        """Whether a connected device's time is worth writing again."""
        saved = self._saved_at.get(device_id)
        return saved is None or monotonic_now - saved >= SAVE_INTERVAL_SECONDS

    async def save(self, device_ids: list[str], monotonic_now: float) -> None:
        times = {d: self.times[d] for d in device_ids if d in self.times}
        if not times:
            return
        for device_id in times:
            self._saved_at[device_id] = monotonic_now
        try:
            await self.node.call(_save, self.node.replica.store, times)
        except Exception as exc:  # a full disk must not end the daemon over a display detail
            log.warning("could not record when peers were last seen: %s", exc)
