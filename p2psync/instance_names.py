"""DNS-SD instance names of p2psync devices (pure): the label a device name becomes, the name a
label gives back, and packets that carry labels with dots in them as one label each.

RFC 6763 §4.1.1 lets an instance label hold any text, dots included (its presentation form
escapes them, "living room\\.tv"). python-zeroconf has no escaping (its issue #146, still so in
0.154): it names a record by one string, joins received labels with "." (so a received
"living room.tv" label reaches its cache as "living room.tv._p2psync._tcp.local.", which is fine),
but splits that string at every "." when it writes a packet, so the label would go out as the two
labels "living room" and "tv", a name no browser takes for an instance of our service.
`DottedLabels` undoes that split in each packet it is shown, in place: the split form of a label
takes exactly as many bytes as the label itself, so no offset (name compression) moves.

This module never does I/O and never decides which device is which: the device id comes from TXT
and certificates, never from a label.
"""

from __future__ import annotations

import re
import unicodedata

SERVICE_TYPE = "_p2psync._tcp.local."
MAX_LABEL_BYTES = 63
# What 0.3.0 put in place of each "." (ONE DOT LEADER); read back as "." from older peers.
LEGACY_DOT_STAND_IN = "\u2024"
# After an instance label zeroconf writes our service type (whose tail may be a pointer to a
# "_tcp.local" or "local" written before), or a pointer to where it wrote the whole type.
_SERVICE_TYPE_FOLLOWS = rb"(?=[\xc0-\xff]|\x08_p2psync)"


def short_device_id(device_id: str) -> str:
    return "".join(ch for ch in device_id if ch.isalnum())[:8]


def instance_label(device_name: str, device_id: str) -> str:
    """The DNS-SD instance label for a human device name: at most 63 bytes, unique per device,
    dots kept."""
    suffix = f" ({short_device_id(device_id)})"
    # Control characters are forbidden in instance names; lone surrogates cannot be UTF-8.
    visible = "".join(ch for ch in device_name if unicodedata.category(ch) not in ("Cc", "Cs"))
    visible = visible.strip() or "p2psync"
    budget = MAX_LABEL_BYTES - len(suffix.encode())
    truncated = visible.encode()[:budget].decode("utf-8", "ignore").rstrip()
    return truncated + suffix


def device_name_from_label(label: str, device_id: str) -> str:
    """Best-effort inverse of `instance_label` (a truncated name stays truncated); also reads the
    labels of 0.3.0 peers, whose dots were stand-ins."""
    suffix = f" ({short_device_id(device_id)})"
    if label.endswith(suffix):
        label = label[: -len(suffix)]
    return label.replace(LEGACY_DOT_STAND_IN, ".")


def service_name_for(label: str) -> str:
    return f"{label}.{SERVICE_TYPE}"


def label_from_service_name(name: str) -> str:
    """Everything before our service type is one label, dots and all (DNS-SD has no deeper
    instance names under a service type)."""
    return name[: -len(SERVICE_TYPE) - 1]


def _encoded_label(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


class DottedLabels:
    """The instance labels with dots that our packets may carry (ours, and those of the services
    we browse), and the packets rewritten to carry each as one label."""

    def __init__(self) -> None:
        self._patterns: dict[str, tuple[re.Pattern[bytes], bytes]] = {}

    def remember(self, name: str) -> None:
        """Note a service name of ours (`<label>._p2psync._tcp.local.`); plain labels need
        nothing."""
        if not name.lower().endswith("." + SERVICE_TYPE):
            return
        label = label_from_service_name(name)
        if "." not in label or label in self._patterns or len(label.encode()) > MAX_LABEL_BYTES:
            return
        split = b"".join(_encoded_label(part) for part in label.split("."))
        pattern = re.compile(re.escape(split) + _SERVICE_TYPE_FOLLOWS, re.IGNORECASE)
        # a backslash in a replacement template starts an escape
        self._patterns[label] = (pattern, _encoded_label(label).replace(b"\\", b"\\\\"))

    def forget(self, name: str) -> None:
        self._patterns.pop(label_from_service_name(name), None)

    def join(self, packet: bytes) -> bytes:
        """`packet` with each remembered label that zeroconf split at its dots made whole."""
        for pattern, whole in self._patterns.values():
            packet = pattern.sub(whole, packet)
        return packet
