"""What p2psync changes in how zeroconf behaves (runs on zeroconf's thread and loop).

Owns the three places where zeroconf's own behaviour does not fit DNS-SD as p2psync needs it:
packets carrying dotted instance labels whole (`EscapingZeroconf`, with `instance_names`), a TXT
record that flips back to a cached value (`ReturningTxtRecords`), and news that a device spoke at
all (`HeardServices`). They touch zeroconf's cache and `async_send`, which are not its documented
API (pyproject.toml bounds the version; tests/test_discovery.py exercises each). This module never
talks to trio: its callbacks are handed over by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from zeroconf import (
    DNSCache,
    DNSOutgoing,
    DNSPointer,
    DNSText,
    RecordUpdate,
    RecordUpdateListener,
    Zeroconf,
)

from .instance_names import SERVICE_TYPE, DottedLabels


class EscapingZeroconf(Zeroconf):
    """zeroconf whose packets carry each instance label with dots as one label (`DottedLabels`
    says why). Every packet zeroconf sends, answers, probes, queries and goodbyes alike, goes
    through `async_send`; `dotted_labels` is touched only on zeroconf's thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dotted_labels = DottedLabels()
        super().__init__(*args, **kwargs)

    def async_send(self, out: DNSOutgoing, *args: Any, **kwargs: Any) -> None:
        joined = _JoinedPackets(out, self.dotted_labels)
        super().async_send(cast(DNSOutgoing, joined), *args, **kwargs)


class _JoinedPackets:
    """All that `Zeroconf.async_send` reads of a DNSOutgoing: its packets (and repr, to log)."""

    def __init__(self, out: DNSOutgoing, labels: DottedLabels) -> None:
        self._out = out
        self._labels = labels

    def packets(self) -> list[bytes]:
        return [self._labels.join(packet) for packet in self._out.packets()]

    def __repr__(self) -> str:
        return repr(self._out)


class ReturningTxtRecords(RecordUpdateListener):
    """Makes a TXT record that changes back to a value still cached replace the newer one.

    DNS-SD gives a service exactly one TXT record (RFC 6763 §6), but zeroconf keeps a replaced one
    valid for a second after the replacement arrives, or longer when it was itself received less
    than a second earlier (RFC 6762 §10.2), and reports a TXT change only when the new record is
    not cached yet. So a quick flip back (a pairing nameplate set and withdrawn) would go
    unreported, and resolving would read the replaced value. This drops the other TXT records of
    the service and reports its name. Runs on zeroconf's thread.
    """

    def __init__(self, cache: DNSCache, on_change: Callable[[str], None]) -> None:
        self._cache = cache
        self._on_change = on_change
        self._arrived: dict[str, DNSText] = {}

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            if (
                isinstance(update.new, DNSText)
                and update.new.unique
                and update.old is not None
                and not update.new.is_expired(now)
                and update.new.name.lower().endswith("." + SERVICE_TYPE)
            ):
                self._arrived[update.new.name] = update.new

    def async_update_records_complete(self) -> None:
        for service_name, current in self._arrived.items():
            cached = self._cache.async_all_by_details(service_name, current.type, current.class_)
            replaced = [record for record in cached if record != current]
            if replaced:
                self._cache.async_remove_records(replaced)
                self._on_change(service_name)
        self._arrived.clear()


class HeardServices(RecordUpdateListener):
    """Reports every service of ours that any packet just spoke for (an announcement, a
    re-announcement, an answer), changed or not: a device speaking on the LAN is reachable now,
    which is news for a dialer backing off. Runs on zeroconf's thread; one report per service
    per packet."""

    def __init__(self, on_heard: Callable[[str], None]) -> None:
        self._on_heard = on_heard
        self._heard: set[str] = set()

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.is_expired(now):
                continue  # a goodbye
            name = record.alias if isinstance(record, DNSPointer) else record.name
            if name.lower().endswith("." + SERVICE_TYPE):
                self._heard.add(name)

    def async_update_records_complete(self) -> None:
        for service_name in self._heard:
            self._on_heard(service_name)
        self._heard.clear()
