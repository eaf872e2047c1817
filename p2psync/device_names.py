"""Which device a person means (pure): a name, the short id `peers` shows, any unambiguous
prefix of an id, or a whole id in any spelling.

Commands that take a device (`revoke`, `share add`, ...) call `find_device` with what was typed
and the household's devices; it answers with one device id, or says which devices it could mean.
It never talks to the daemon or reads membership itself.
"""

from collections.abc import Mapping

from .identity import ALPHABET, InvalidDeviceId, compact_id, parse_device_id, short_id

MIN_PREFIX = 3  # shorter prefixes match too often to be what anyone meant


class DeviceNotFound(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


class AmbiguousDevice(LookupError):
    """`candidates`: the device ids the text could mean."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates

    def __str__(self) -> str:
        return str(self.args[0])


def find_device(text: str, devices: Mapping[str, str]) -> str:
    """The id of the device `text` names among `devices` (id -> name)."""
    wanted = text.strip()
    if not wanted:
        raise DeviceNotFound("no device given")
    for same in (lambda name: name == wanted, lambda name: name.casefold() == wanted.casefold()):
        named = sorted(d for d, name in devices.items() if name and same(name))
        if len(named) == 1:
            return named[0]
        if named:
            raise _ambiguous(wanted, named, devices)
    try:
        whole = parse_device_id(wanted)
    except InvalidDeviceId:
        whole = None
    if whole is not None:
        if whole in devices:
            return whole
        raise DeviceNotFound(f"no device {whole} in this household{_known(devices)}")
    prefix = compact_id(wanted)
    if len(prefix) >= MIN_PREFIX and all(c in ALPHABET for c in prefix):
        matching = sorted(d for d in devices if d.replace("-", "").startswith(prefix))
        if len(matching) == 1:
            return matching[0]
        if matching:
            raise _ambiguous(wanted, matching, devices)
    raise DeviceNotFound(f"no device named or starting with {wanted!r}{_known(devices)}")


def describe(device_id: str, devices: Mapping[str, str]) -> str:
    name = devices.get(device_id) or "unnamed"
    return f"{name} ({short_id(device_id)})"


def _ambiguous(text: str, candidates: list[str], devices: Mapping[str, str]) -> AmbiguousDevice:
    listed = ", ".join(f"{describe(d, devices)} {d}" for d in candidates)
    return AmbiguousDevice(f"{text!r} could be any of: {listed}; give more of the id", candidates)


def _known(devices: Mapping[str, str]) -> str:
    if not devices:
        return ""
    listed = sorted(devices, key=lambda d: (devices[d].casefold(), d))
    return "; the devices are: " + ", ".join(describe(d, devices) for d in listed)
