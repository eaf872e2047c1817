"""Tests for p2psync.zeroconf_hooks, fed records as zeroconf's RecordManager feeds them (the
packets of EscapingZeroconf cross real mDNS in tests/test_discovery.py, to avahi)."""

from __future__ import annotations

from typing import Any

import pytest
from zeroconf import DNSCache, DNSPointer, DNSText, RecordUpdate
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _TYPE_PTR, _TYPE_TXT

from p2psync.instance_names import SERVICE_TYPE
from p2psync.zeroconf_hooks import HeardServices, ReturningTxtRecords


def test_every_packet_speaking_for_a_service_is_heard_changed_or_not() -> None:
    """A re-announcement of unchanged records is news for a dialer backing off (see redial.py),
    though it is no Found event; goodbyes are not heard, and each service once per packet."""
    heard: list[str] = []  # records created at 1 s, received at 2 s (zeroconf's ms clock)
    listener = HeardServices(heard.append)
    service_b = f"Laptop (NBSWY3DP).{SERVICE_TYPE}"
    txt = DNSText(service_b, _TYPE_TXT, _CLASS_IN | _CLASS_UNIQUE, 4500, b"\x06pv=1-1", 1000)
    ptr = DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 4500, service_b, 1000)
    goodbye = DNSText(service_b, _TYPE_TXT, _CLASS_IN | _CLASS_UNIQUE, 0, b"\x06pv=1-1", 1000)
    printer = DNSText("Printer._ipp._tcp.local.", _TYPE_TXT, _CLASS_IN, 4500, b"", 1000)

    def receive(*records: Any) -> None:
        listener.async_update_records(None, 2000.0, [RecordUpdate(r, r) for r in records])  # type: ignore[arg-type]
        listener.async_update_records_complete()

    receive(txt, ptr)  # one packet: heard once
    receive(ptr)
    receive(goodbye)
    receive(printer)  # not our service type
    assert heard == [service_b, service_b]


@pytest.mark.parametrize("seconds_between_changes", [2.0, 0.5])
def test_a_txt_value_flipping_back_replaces_the_newer_one(seconds_between_changes: float) -> None:
    service_name = f"Laptop (NBSWY3DP).{SERVICE_TYPE}"
    cache = DNSCache()
    reported: list[str] = []
    listener = ReturningTxtRecords(cache, reported.append)

    def receive(data: bytes, at_seconds: float) -> DNSText:
        """The steps of zeroconf's RecordManager for one TXT record with the cache-flush bit."""
        now = at_seconds * 1000
        record = DNSText(service_name, _TYPE_TXT, _CLASS_IN | _CLASS_UNIQUE, 4500, data, now)
        update = RecordUpdate(record, cache.async_get_unique(record))
        key = (service_name, _TYPE_TXT, _CLASS_IN)
        cache.async_mark_unique_records_older_than_1s_to_expire({key}, [record], now)
        listener.async_update_records(None, now, [update])  # type: ignore[arg-type]
        cache.async_add_records([record])
        listener.async_update_records_complete()
        return record

    receive(b"\x06pv=1-1", 100)
    receive(b"\x06pv=1-1", 101)  # a refresh of the same value changes nothing
    receive(b"\x07pair=42", 101 + seconds_between_changes)
    assert reported == []  # a new value: zeroconf's browser reports that one itself
    returned = receive(b"\x06pv=1-1", 101 + 2 * seconds_between_changes)

    assert reported == [service_name]
    assert cache.async_all_by_details(service_name, _TYPE_TXT, _CLASS_IN) == [returned]
