"""Who may hold a connection that has not proved itself yet, and how floods are reported (pure).

Owns two bits of counting for the sync port: `Admission`, the cap on unauthenticated connections
(TLS handshake not done, or a pairing attempt) in total and per source, and `FailureLog`, which
turns many similar failures into one log line with a count per interval. Strangers can open
connections for free, so both must stay small and bounded whatever they send. This module never
touches sockets, clocks, resource limits or loggers: callers pass addresses, times and limits in
and log the lines it hands back.
"""

import ipaddress
from dataclasses import dataclass, field

MAX_UNAUTHENTICATED = 64
MAX_UNAUTHENTICATED_PER_SOURCE = 8
# Strangers get at most this share of the file-descriptor limit, so members, the database and the
# control socket always find descriptors free (LimitNOFILE=8192 in the units leaves the caps far
# inside it; a limit of 128 still leaves 96 for everything else).
FD_SHARE_DIVISOR = 4
FAILURE_INTERVAL_SECONDS = 60.0
MAX_SOURCES_TRACKED = 256  # per summary; further sources are counted, not named


def total_cap(fd_limit: int | None, wanted: int = MAX_UNAUTHENTICATED) -> int:
    """Unauthenticated connections allowed when the process may open `fd_limit` descriptors
    (None or negative: unlimited): `wanted`, but never more than a quarter of the limit."""
    if fd_limit is None or fd_limit < 0:
        return wanted
    return max(1, min(wanted, fd_limit // FD_SHARE_DIVISOR))


def source_of(host: str) -> str:
    """What the per-source cap counts: the IPv4 address, or the /64 of an IPv6 address (one
    host usually owns a whole /64, and picking new addresses from it costs nothing)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Admission:
    """Counts unauthenticated connections by source; `admit` says whether one more may stay."""

    def __init__(
        self, total: int = MAX_UNAUTHENTICATED, per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE
    ) -> None:
        if total < 1 or per_source < 1:
            raise ValueError("the caps must be at least 1")
        self.total = total
        self.per_source = per_source
        self.held = 0
        self._by_source: dict[str, int] = {}

    def admit(self, source: str) -> bool:
        """Count one more connection from `source` if both caps allow it; False: close it."""
        count = self._by_source.get(source, 0)
        if self.held >= self.total or count >= self.per_source:
            return False
        self._by_source[source] = count + 1
        self.held += 1
        return True

    def release(self, source: str) -> None:
        """The connection authenticated or closed; releasing more than was admitted is a bug."""
        count = self._by_source.get(source, 0)
        if count <= 0:
            raise ValueError(f"{source} holds no admitted connection")
        if count == 1:
            del self._by_source[source]  # the map holds only sources with connections open
        else:
            self._by_source[source] = count - 1
        self.held -= 1

    def holding(self, source: str) -> int:
        return self._by_source.get(source, 0)

    def refusal(self, source: str) -> str:
        """Why `admit(source)` said no, for the log."""
        if self.holding(source) >= self.per_source:
            return f"{self.per_source} unauthenticated connections from there already open"
        return f"{self.total} unauthenticated connections already open (the limit)"


@dataclass
class _Window:
    started: float
    more: int = 0  # failures since the line that opened the window
    sources: dict[str, int] = field(default_factory=dict)
    unnamed: int = 0
    last: str = ""

    def count(self, source: str, reason: str) -> None:
        self.more += 1
        self.last = reason
        if not source:
            return
        if source in self.sources or len(self.sources) < MAX_SOURCES_TRACKED:
            self.sources[source] = self.sources.get(source, 0) + 1
        else:
            self.unnamed += 1


class FailureLog:
    """Failures of one kind ("dropped connection", "accept failed") are logged at once the
    first time, then counted: one summary line per kind and interval while they keep coming.

    `record` and `flush` return the lines to log; the caller calls `flush` now and then so a
    count does not wait for the next failure to be reported."""

    def __init__(self, interval: float = FAILURE_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._windows: dict[str, _Window] = {}

    def record(
        self, kind: str, address: str, reason: str, now: float, source: str | None = None
    ) -> str | None:
        """Note one failure of `kind` from `address` (summaries group them by `source`, by
        default the address itself); returns the line to log now, if any."""
        window = self._windows.get(kind)
        if window is None:
            self._windows[kind] = _Window(started=now)
            return single_line(kind, address, reason)
        window.count(address if source is None else source, reason)
        if now - window.started < self.interval:
            return None
        self._windows[kind] = _Window(started=now)
        return _summary(kind, window, now)

    def flush(self, now: float) -> list[tuple[str, str]]:
        """(kind, summary) for the intervals that ended by `now`; a kind that stayed quiet for a
        whole interval is forgotten, so its next failure is logged at once again."""
        lines = []
        for kind, window in list(self._windows.items()):
            if now - window.started < self.interval:
                continue
            if window.more:
                lines.append((kind, _summary(kind, window, now)))
                self._windows[kind] = _Window(started=now)
            else:
                del self._windows[kind]
        return lines


def single_line(kind: str, source: str, reason: str) -> str:
    """The line of one failure: what the first of a flood logs, and each one at debug level."""
    return f"{kind} from {source}: {reason}" if source else f"{kind}: {reason}"


def _summary(kind: str, window: _Window, now: float) -> str:
    named = sorted(window.sources.items(), key=lambda item: (-item[1], item[0]))
    where = ""
    if named:
        top, top_count = named[0]
        others = f"{len(named) - 1}{'+' if window.unnamed else ''}"
        where = f" from {top} ({top_count})"
        if others != "0":
            where += f", {others} other sources"
    seconds = max(0, round(now - window.started))
    return f"{kind}: {window.more} more in the last {seconds} s{where}; last: {window.last}"
