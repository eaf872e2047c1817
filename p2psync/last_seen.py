"""When each device was last heard from, in wall-clock time, and the p2psync version it last
said it runs, kept across restarts (trio).

Sessions know when their peer last spoke in trio's clock, which means nothing after a restart;
`LastSeen` turns that into wall-clock milliseconds and keeps them in the replica's meta table
(key `last_seen/<device id>`, value the milliseconds as ASCII digits), so `devices` can say
"last seen 3 h ago" about a peer that went away before this daemon started. A device's time is
written when its session begins or ends, at most every `SAVE_INTERVAL_SECONDS` while it stays
connected (one small unsynced write per peer and minute), and for the connected ones at shutdown.
A peer's version (key `peer_version/<device id>`, from its hello) is written with its time when a
session begins and says another one than the one kept. It never decides who is online: that is
the sessions' (`peers.py`, `liveness.py`).
"""

import contextlib
import logging
import sqlite3
import time

import trio

from .node import Node
from .peers import PeerManager
from .store import Store

log = logging.getLogger("p2psync")
META_PREFIX = "last_seen/"
VERSION_PREFIX = "peer_version/"
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


def _store(store: Store, times: dict[str, int], versions: dict[str, str]) -> None:
    # unsynced: a last-seen time lost to a power cut is only a little older after it
    with store.transaction(fsync=False):
        for device_id, wall_ms in times.items():
            store.set_meta(META_PREFIX + device_id, str(wall_ms).encode("ascii"))
        for device_id, version in versions.items():
            store.set_meta(VERSION_PREFIX + device_id, version.encode())


class LastSeen:
    """Device id -> wall-clock ms of the last time it was heard from (this run or an earlier)."""

    def __init__(self, node: Node, peers: PeerManager) -> None:
        self.node = node
        self.peers = peers
        self.times: dict[str, int] = {}
        self.versions: dict[str, str] = {}
        self._new_versions: dict[str, str] = {}  # said by sessions since the last save
        self._saved_at: dict[str, float] = {}  # trio time of each device's last write
        self._unsaved: set[str] = set()  # devices whose session began or ended since
        self._news = trio.Event()

    async def load(self) -> None:
        store = self.node.replica.store
        self.times = decode(await self.node.call(store.meta_with_prefix, META_PREFIX))
        versions = await self.node.call(store.meta_with_prefix, VERSION_PREFIX)
        self.versions = {
            key.removeprefix(VERSION_PREFIX): bytes(value).decode(errors="replace")
            for key, value in versions.items()
        }

    def of(self, device_id: str, now: float) -> int | None:
        """When the device was last heard from: from its session if it is connected."""
        session = self.peers.sessions.get(device_id)
        if session is not None and session.state.last_seen:
            return self._note(device_id, session.state.last_seen, now)
        return self.times.get(device_id)

    def version_of(self, device_id: str) -> str | None:
        """The p2psync version the device said it runs, in this session or an earlier one."""
        return self.versions.get(device_id)

    def session_changed(self, device_id: str, connected: bool) -> None:
        """A device's first session began, or its last one ended: worth writing at once."""
        now = trio.current_time()
        session = self.peers.sessions.get(device_id) if connected else None
        said = session.state.software if session is not None else None
        if said and said != self.versions.get(device_id):
            self.versions[device_id] = self._new_versions[device_id] = said
        state = None if connected else self.peers.offline.get(device_id)
        self._note(device_id, state.last_seen if state and state.last_seen else now, now)
        self._unsaved.add(device_id)
        self._news.set()

    async def run(self) -> None:
        try:
            while True:
                with trio.move_on_after(SAVE_INTERVAL_SECONDS):
                    await self._news.wait()
                await self.save(every_connected=False)
        finally:
            # at shutdown the database thread may be gone already: then these are lost
            with trio.CancelScope(shield=True), contextlib.suppress(RuntimeError):
                await self.save(every_connected=True)

    async def flush(self) -> None:
        """Write what sessions that began or ended left unwritten, so what `devices` shows of
        the past is what a restart keeps."""
        if self._unsaved:
            await self.save(every_connected=False)

    async def save(self, *, every_connected: bool) -> None:
        """The devices whose session began or ended since the last save, and the connected ones
        not written for a minute (or all of them)."""
        self._news = trio.Event()
        now = trio.current_time()
        connected = [
            device_id
            for device_id in self.peers.sessions
            if every_connected
            or now - self._saved_at.get(device_id, -SAVE_INTERVAL_SECONDS) >= SAVE_INTERVAL_SECONDS
        ]
        for device_id in connected:
            self.of(device_id, now)
        wanted, self._unsaved = self._unsaved | set(connected), set()
        times = {d: self.times[d] for d in sorted(wanted) if d in self.times}
        versions, self._new_versions = self._new_versions, {}
        if not times and not versions:
            return
        for device_id in times:
            self._saved_at[device_id] = now
        try:
            await self.node.call(_store, self.node.replica.store, times, versions)
        except sqlite3.Error as exc:  # a full disk must not end the daemon over a display detail
            log.warning("could not record when peers were last seen: %s", exc)

    def _note(self, device_id: str, heard: float, now: float) -> int:
        wall_ms = wall_ms_of(heard, now, int(time.time() * 1000))
        self.times[device_id] = max(wall_ms, self.times.get(device_id, 0))
        return self.times[device_id]
