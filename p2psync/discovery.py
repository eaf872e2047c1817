"""LAN discovery: announce this device and browse for others over mDNS, bridged into trio.

Owns the `_p2psync._tcp.local.` announcement (TXT `id`, `pv`, optional `pair` and `ended`: the
numbers of the pairing code on offer and of the last one that ended), browsing for other
devices, turning zeroconf's callbacks into `Found`/`Lost` events in trio, following interface
address changes, a new name (goodbye for the old instance name, then the new one), and the
goodbye on close. Instance names keep their dots (`instance_names.py`, `zeroconf_hooks.py`).
zeroconf runs on its own thread and asyncio loop; this module never blocks trio on it and never
drops a removal on the way across. Discovery is only a hint: it must never be trusted for
identity (that comes from TLS), and it must never announce on every interface unless the caller
asked for that with `interfaces=[]`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import ifaddr
import trio
from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from .config_values import ip_of
from .instance_names import (
    SERVICE_TYPE,
    device_name_from_label,
    instance_label,
    label_from_service_name,
    service_name_for,
    short_device_id,
)
from .zeroconf_hooks import EscapingZeroconf, HeardServices, ReturningTxtRecords

INTERFACE_POLL_SECONDS = 10.0
RESOLVE_TIMEOUT_MS = 3000
RESOLVE_RETRY_MAX_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 5.0
# Peers take a unique record received less than a second after its predecessor for part of the
# same set (RFC 6762 §10.2), so versions of our records (announced over 0.45 s) go out 2 s apart.
RECORD_CHANGE_SPACING_SECONDS = 2.0

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Found:
    """A device announcing p2psync nearby; sent again whenever its addresses or TXT change."""

    device_id: str
    name: str
    addresses: list[tuple[str, int]]
    txt: dict[str, str]


@dataclass(frozen=True)
class Lost:
    device_id: str


DiscoveryEvent = Found | Lost


@dataclass(frozen=True)
class Binding:
    """What zeroconf listens on and which addresses we publish, derived from interface specs."""

    zeroconf_interfaces: tuple[str | int, ...]  # IPv4 addresses, IPv6 interface indexes
    published_addresses: tuple[str, ...]
    ip_version: IPVersion


def resolve_interfaces(specs: Sequence[str], adapters: Iterable[ifaddr.Adapter]) -> Binding:
    """Map interface names or IP addresses (empty: every non-loopback interface) to a Binding."""
    wanted_ips = {ip_of(spec) for spec in specs} - {None}
    zeroconf_interfaces: list[str | int] = []
    published: list[str] = []
    for adapter in adapters:
        whole = not specs or adapter.nice_name in specs or adapter.name in specs
        for adapter_ip in adapter.ips:
            address = ipaddress.ip_address(
                adapter_ip.ip[0] if isinstance(adapter_ip.ip, tuple) else adapter_ip.ip
            )
            if address.is_loopback or not (whole or address in wanted_ips):
                continue
            if address.version == 4:
                zeroconf_interfaces.append(str(address))
            elif adapter.index is None:
                continue  # IPv6 multicast needs the interface index
            elif adapter.index not in zeroconf_interfaces:
                zeroconf_interfaces.append(adapter.index)
            published.append(str(address))
    versions = {ipaddress.ip_address(address).version for address in published}
    ip_version = {
        frozenset({4, 6}): IPVersion.All,
        frozenset({6}): IPVersion.V6Only,
    }.get(frozenset(versions), IPVersion.V4Only)
    return Binding(tuple(zeroconf_interfaces), tuple(published), ip_version)


def interfaces_looked_at(specs: Sequence[str], adapters: Iterable[ifaddr.Adapter]) -> str:
    """For people: the interfaces discovery looked at for an address, and why each gave none."""
    found = list(adapters)
    if not specs:
        names = [a.nice_name for a in found if not _loopback_only(a)]
        return f"any interface but loopback ({', '.join(names) or 'there is none'})"
    shown = []
    for spec in specs:
        if ip_of(spec) is not None:
            shown.append(f"{spec} (no interface has it)")
        elif any(spec in (a.nice_name, a.name) for a in found):
            shown.append(spec)
        else:
            shown.append(f"{spec} (no such interface)")
    return f"discovery.interfaces {', '.join(shown)}"


def _loopback_only(adapter: ifaddr.Adapter) -> bool:
    ips = [ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip for ip in adapter.ips]
    return bool(ips) and all(ipaddress.ip_address(ip).is_loopback for ip in ips)


def _address_order(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, bool, str]:
    return (address.version, address.is_link_local, str(address))


class TrioHandoff:
    """Thread-safe, non-blocking handoff of callbacks from a foreign thread into one trio run.

    Each call is queued (FIFO, unbounded) by `TrioToken.run_sync_soon`, so nothing is dropped or
    reordered however busy trio is; after the trio run has ended, calls are discarded.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()

    def call(self, function: Callable[..., object], *args: Any) -> None:
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(function, *args)

    async def run_coroutine(
        self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]
    ) -> T:
        """Run `coroutine` on a foreign asyncio loop; wait in trio without holding a thread."""
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        done = trio.Event()
        future.add_done_callback(lambda _: self.call(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()


class NearbyDevices:
    """The view of announcing devices, kept on the trio side: service names in, events out.

    Fed through a TrioHandoff in the order zeroconf's thread saw things; a device is Lost when
    the last service naming it goes away.
    """

    def __init__(
        self,
        emit: Callable[[DiscoveryEvent], None],
        on_heard: Callable[[str], None] = lambda device_id: None,
    ) -> None:
        self._emit = emit
        self._on_heard = on_heard
        self._by_service_name: dict[str, Found] = {}

    def by_device_id(self) -> dict[str, Found]:
        return {found.device_id: found for found in self._by_service_name.values()}

    def resolved(self, service_name: str, found: Found) -> None:
        previous = self._by_service_name.get(service_name)
        self._by_service_name[service_name] = found
        if previous is not None and previous.device_id != found.device_id:
            self._forget(previous.device_id)
        if found != previous:
            self._emit(found)

    def heard(self, service_name: str) -> None:
        """A packet spoke for a service: its device (once resolved) is there right now."""
        found = self._by_service_name.get(service_name)
        if found is not None:
            self._on_heard(found.device_id)

    def removed(self, service_name: str) -> None:
        previous = self._by_service_name.pop(service_name, None)
        if previous is not None:
            self._forget(previous.device_id)

    def _forget(self, device_id: str) -> None:
        if device_id not in self.by_device_id():
            self._emit(Lost(device_id))


class Discovery:
    """Announce this device and report others as `Found`/`Lost` events.

    `interfaces` holds interface names or IP addresses; [] means every non-loopback interface.
    """

    _handoff: TrioHandoff
    _binding: Binding
    _zeroconf: EscapingZeroconf

    def __init__(
        self,
        device_id: str,
        name: str,
        port: int,
        *,
        interfaces: Sequence[str],
        protocol_versions: tuple[int, int] = (1, 1),
        interface_poll_seconds: float = INTERFACE_POLL_SECONDS,
        on_heard: Callable[[str], None] = lambda device_id: None,
    ) -> None:
        self.device_id = device_id
        self.name = name
        self.port = port
        self._interface_specs = list(interfaces)
        self._protocol_versions = protocol_versions
        self._interface_poll_seconds = interface_poll_seconds
        self._pairing: int | None = None
        self._ended_pairing: int | None = None
        self._no_address_on: str | None = None  # what the last "no usable address" named
        self._announced_name = name
        self._instance_name = service_name_for(instance_label(name, device_id))
        self._events_send, self._events_receive = trio.open_memory_channel[DiscoveryEvent](math.inf)
        self._nearby = NearbyDevices(self._emit, on_heard)
        self._republish = trio.Event()
        self._links_changed = trio.Event()
        self._context: AbstractAsyncContextManager[None] | None = None
        # Touched only on zeroconf's thread:
        self._resolvers: dict[str, asyncio.Task[None]] = {}
        self._broadcasts: set[asyncio.Future[Any]] = set()
        self._browser: AsyncServiceBrowser | None = None
        self._returning_txt: ReturningTxtRecords | None = None
        self._heard_services: HeardServices | None = None
        self._registered = False

    async def __aenter__(self) -> Discovery:
        self._context = self._running()
        await self._context.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._context is not None
        return await self._context.__aexit__(exc_type, exc, traceback)

    def events(self) -> trio.MemoryReceiveChannel[DiscoveryEvent]:
        """The event stream (one consumer); it ends when discovery closes."""
        return self._events_receive

    def nearby(self) -> dict[str, Found]:
        """The devices announcing right now, by device id."""
        return self._nearby.by_device_id()

    def set_pairing(self, nameplate: int | None, ended: int | None = None) -> None:
        """Advertise (or stop advertising) the nameplate of an active pairing code, and of the
        last one that ended (until the next code), for late joiners to be told why.

        Published in the background; changes less than RECORD_CHANGE_SPACING_SECONDS apart merge.
        """
        self._pairing = nameplate
        self._ended_pairing = ended
        self._republish.set()

    def rename(self, name: str) -> None:
        """Announce this device under a new name: a goodbye for the old instance name, then the
        new one (in the background, like `set_pairing`)."""
        self.name = name
        self._republish.set()

    def links_changed(self) -> None:
        """A link came up or an address appeared: look at the interfaces now rather than at the
        next poll, and announce again (devices that missed us meanwhile hear that we are back,
        and dial us at once)."""
        self._links_changed.set()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        self._handoff = TrioHandoff()
        self._binding = await trio.to_thread.run_sync(self._current_binding)
        self._zeroconf = await trio.to_thread.run_sync(
            partial(
                EscapingZeroconf,
                interfaces=list(self._binding.zeroconf_interfaces),
                ip_version=self._binding.ip_version,
            )
        )
        try:
            async with trio.open_nursery() as nursery:
                await self._in_zeroconf(self._async_start(self._service_info()))
                nursery.start_soon(self._follow_interfaces)
                nursery.start_soon(self._publish_changes)
                yield
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                await self._shut_down()
            self._events_send.close()

    async def _shut_down(self) -> None:
        try:
            await self._in_zeroconf(self._async_stop())
        finally:
            await trio.to_thread.run_sync(self._zeroconf.close, abandon_on_cancel=True)

    def _current_binding(self) -> Binding:
        adapters = ifaddr.get_adapters()
        binding = resolve_interfaces(self._interface_specs, adapters)
        looked_at = None
        if not binding.published_addresses:
            looked_at = interfaces_looked_at(self._interface_specs, adapters)
            # polled every few seconds: said once, and again only when the picture changes
            if looked_at != self._no_address_on:
                log.warning("no usable address yet on %s; announcing once there is one", looked_at)
        self._no_address_on = looked_at
        return binding

    def _service_info(self) -> ServiceInfo:
        low, high = self._protocol_versions
        txt = {"id": self.device_id, "pv": f"{low}-{high}"}
        # the keys a joiner looks for (pairing_service.PAIRING_TXT and ENDED_PAIRING_TXT)
        if self._pairing is not None:
            txt["pair"] = str(self._pairing)
        if self._ended_pairing is not None:
            txt["ended"] = str(self._ended_pairing)
        return ServiceInfo(
            SERVICE_TYPE,
            self._instance_name,
            server=f"p2psync-{short_device_id(self.device_id).lower()}.local.",
            port=self.port,
            properties=txt,
            parsed_addresses=list(self._binding.published_addresses),
        )

    async def _in_zeroconf(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._zeroconf.loop is not None
        return await self._handoff.run_coroutine(self._zeroconf.loop, coroutine)

    async def _follow_interfaces(self) -> None:
        while True:
            with trio.move_on_after(self._interface_poll_seconds):
                await self._links_changed.wait()
            links_changed = self._links_changed.is_set()
            self._links_changed = trio.Event()
            binding = await trio.to_thread.run_sync(self._current_binding)
            if binding != self._binding:
                log.info("interface addresses changed: %s", binding.published_addresses)
                self._binding = binding
                self._republish.set()
            elif links_changed:
                self._republish.set()  # publishing binds again too
            else:
                # Retries sockets that could not be bound before (an IPv6 address still in
                # duplicate address detection at boot); a no-op when all are in place.
                await self._in_zeroconf(self._async_bind(binding))

    async def _publish_changes(self) -> None:
        while True:
            await trio.sleep(RECORD_CHANGE_SPACING_SECONDS)
            await self._republish.wait()
            self._republish = trio.Event()
            if self.name != self._announced_name:
                previous = self._service_info()
                self._announced_name = self.name
                self._instance_name = service_name_for(instance_label(self.name, self.device_id))
                await self._in_zeroconf(
                    self._async_rename(self._binding, previous, self._service_info())
                )
            else:
                await self._in_zeroconf(self._async_publish(self._binding, self._service_info()))

    def _emit(self, event: DiscoveryEvent) -> None:
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._events_send.send_nowait(event)

    # --- zeroconf's thread ---

    async def _async_start(self, info: ServiceInfo) -> None:
        self._returning_txt = ReturningTxtRecords(self._zeroconf.cache, self._service_changed)
        self._zeroconf.async_add_listener(self._returning_txt, None)
        self._heard_services = HeardServices(partial(self._handoff.call, self._nearby.heard))
        self._zeroconf.async_add_listener(self._heard_services, None)
        self._browser = AsyncServiceBrowser(
            self._zeroconf, [SERVICE_TYPE], handlers=[self._on_service_state_change]
        )
        await self._async_register(info)
        self._registered = True

    async def _async_register(self, info: ServiceInfo) -> None:
        self._zeroconf.dotted_labels.remember(info.name)  # its probes carry it already
        self._track(await self._zeroconf.async_register_service(info, allow_name_change=True))
        if info.name != self._instance_name:  # another responder already held the name
            self._zeroconf.dotted_labels.remember(info.name)
            self._instance_name = info.name

    async def _async_stop(self) -> None:
        if self._returning_txt is not None:
            self._zeroconf.async_remove_listener(self._returning_txt)
        if self._heard_services is not None:
            self._zeroconf.async_remove_listener(self._heard_services)
        if self._browser is not None:
            await self._browser.async_cancel()
        for pending in [*self._resolvers.values(), *self._broadcasts]:
            pending.cancel()
        if self._registered:
            goodbye = await self._zeroconf.async_unregister_service(self._service_info())
            await goodbye

    async def _async_publish(self, binding: Binding, info: ServiceInfo) -> None:
        for outdated in self._broadcasts:
            outdated.cancel()
        # Registered first, so that the re-announcement on new interfaces is of the new version.
        self._zeroconf.registry.async_update(info)
        await self._async_bind(binding)
        self._track(await self._zeroconf.async_update_service(info))

    async def _async_rename(
        self, binding: Binding, previous: ServiceInfo, info: ServiceInfo
    ) -> None:
        for outdated in self._broadcasts:
            outdated.cancel()
        goodbye = await self._zeroconf.async_unregister_service(previous)
        await goodbye
        self._zeroconf.dotted_labels.forget(previous.name)
        await self._async_bind(binding)  # the interfaces may have changed too
        await self._async_register(info)

    async def _async_bind(self, binding: Binding) -> None:
        await self._zeroconf.async_update_interfaces(
            list(binding.zeroconf_interfaces), binding.ip_version
        )

    def _track(self, broadcast: Any) -> None:
        # A repeat of an outdated version, or one still running after the goodbye, would undo
        # the newer state on the peers.
        future = asyncio.ensure_future(broadcast)
        self._broadcasts.add(future)
        future.add_done_callback(self._broadcasts.discard)

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        self._service_changed(name, removed=state_change is ServiceStateChange.Removed)

    def _service_changed(self, service_name: str, removed: bool = False) -> None:
        self._zeroconf.dotted_labels.remember(service_name)  # our queries about it name it
        pending = self._resolvers.pop(service_name, None)
        if pending is not None:
            pending.cancel()
        if removed:
            self._handoff.call(self._nearby.removed, service_name)
        else:
            self._resolvers[service_name] = asyncio.ensure_future(self._resolve(service_name))

    async def _resolve(self, service_name: str) -> None:
        retry_after = 1.0
        try:
            while True:
                info = AsyncServiceInfo(SERVICE_TYPE, service_name)
                if await info.async_request(self._zeroconf, RESOLVE_TIMEOUT_MS):
                    found = self._found_from(info)
                    if found is not None:
                        # Handed over from inside the task, so a later removal cancelling this
                        # task can never be overtaken by a stale Found.
                        self._handoff.call(self._nearby.resolved, service_name, found)
                    return
                await asyncio.sleep(retry_after)
                retry_after = min(retry_after * 2, RESOLVE_RETRY_MAX_SECONDS)
        finally:
            if self._resolvers.get(service_name) is asyncio.current_task():
                del self._resolvers[service_name]

    def _found_from(self, info: AsyncServiceInfo) -> Found | None:
        txt = {key: value or "" for key, value in info.decoded_properties.items()}
        device_id = txt.get("id")
        if not device_id or device_id == self.device_id or info.port is None:
            return None
        ips = sorted(info.ip_addresses_by_version(IPVersion.All), key=_address_order)
        hosts = [host for host in map(self._dialable, ips) if host is not None]
        label = label_from_service_name(info.name)
        return Found(
            device_id=device_id,
            name=device_name_from_label(label, device_id),
            addresses=[(host, info.port) for host in hosts],
            txt=txt,
        )

    def _dialable(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The address as a host to connect to; a link-local one needs its interface."""
        if not isinstance(ip, ipaddress.IPv6Address) or not ip.is_link_local or ip.scope_id:
            return str(ip)
        ipv6_interfaces = [i for i in self._binding.zeroconf_interfaces if isinstance(i, int)]
        return f"{ip}%{ipv6_interfaces[0]}" if len(ipv6_interfaces) == 1 else None
