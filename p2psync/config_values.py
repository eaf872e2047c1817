"""What each key of the config file accepts: its value converter, the errors it gives (pure).

Owns the table of keys (`KEYS`: TOML key -> `Config` attribute and converter), each converter from
a raw TOML value to the model's value, `Invalid` (one bad value, pointing into a list when one
element is at fault), and the `HOST:PORT` address syntax (`parse_address`, `format_address`) that
settings, the control methods and the logs share. It never reads files, the environment or the
clock, and never checks that a path, group or interface exists: the daemon does that when it uses
them. Where the file is, its TOML syntax, defaults and messages naming the file are config.py's.
"""

import difflib
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_PORT = 47100
DEFAULT_UI_PORT = 47180  # the web UI's, on 127.0.0.1 and ::1 only
LOG_LEVELS = ("debug", "info", "warning", "error")
# A DNS-SD service instance name (how other devices see ours) is one DNS label: 63 bytes.
MAX_DEVICE_NAME_BYTES = 63
# Timeouts beyond a day are a unit mistake (milliseconds written as seconds), not a wish.
MAX_SECONDS = 86400
MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1


class Invalid(ValueError):
    """One bad value; `index` points into a list when the fault is in one element."""

    def __init__(self, reason: str, index: int | None = None, element: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.index = index
        self.element = element


# addresses ------------------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")


def parse_address(text: str, *, listening: bool = False) -> tuple[str, int]:
    """`"HOST:PORT"` or `"[IPV6]:PORT"` -> `(host, port)`; ValueError says what is wrong.

    Port 0 ("any free port") is only meaningful for `listening` addresses."""
    example = "0.0.0.0:47100" if listening else "192.168.1.20:47100"
    expected = f'expected "HOST:PORT", e.g. "{example}"'
    if not isinstance(text, str):
        raise ValueError(f"{expected} (a string)")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise ValueError(f'expected "[IPV6]:PORT", e.g. "[::]:{DEFAULT_PORT}"')
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'"{host}" in brackets is not an IPv6 address') from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(expected)
        if ":" in host:
            raise ValueError(f'an IPv6 address goes in brackets, e.g. "[{host}]:{port_text}"')
        _check_host(host, expected, listening)
    return host, _port(port_text, listening)


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `text` spells (an IPv6 zone such as `%eth0` left out), or None: a name."""
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_host(host: str, expected: str, listening: bool) -> None:
    if host in ("", "*"):
        every = ' (use "0.0.0.0" or "[::]" for every address)' if listening else ""
        raise ValueError(f"no host: {expected}{every}")
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f'"{host}" is not an IPv4 address') from None
        return
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f'"{host}" is neither an IP address nor a host name: {expected}')


def _port(text: str, listening: bool) -> int:
    lowest = 0 if listening else 1
    if not text.isascii() or not text.isdigit() or not lowest <= int(text) <= 65535:
        zero = " (0 picks any free port)" if listening else ""
        raise ValueError(f'port "{text}" is not a number from {lowest} to 65535{zero}')
    return int(text)


# value converters: raw TOML value -> model value, or Invalid(reason) ----------------------------


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected {what} in double quotes")
    return value


def check_device_name(value: Any) -> str:
    """A device name as `device.name` takes it (trimmed), or ValueError saying what is wrong."""
    return _device_name(value)


def _device_name(value: Any) -> str:
    name = _string(value, 'a name, e.g. "Kitchen laptop"').strip()
    if not name:
        raise Invalid('expected a name, e.g. "Kitchen laptop"')
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise Invalid("a name cannot contain control characters (tabs, newlines)")
    if len(name.encode()) > MAX_DEVICE_NAME_BYTES:
        raise Invalid(f"a name can be at most {MAX_DEVICE_NAME_BYTES} bytes of UTF-8; shorten it")
    return name


def _absolute_path(value: Any) -> Path:
    text = _string(value, 'an absolute path, e.g. "/var/lib/p2psync"')
    if not text.startswith("/"):
        raise Invalid(
            "expected an absolute path starting with / (~ and relative paths are not expanded)"
        )
    return Path(text)


def _file_mode(value: Any) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise Invalid('expected an octal mode in quotes, e.g. "0660"')
    mode = int(value, 8)
    if mode & 0o600 != 0o600:
        raise Invalid('the owner needs read and write permission (6 as first digit, e.g. "0660")')
    return mode


def _group(value: Any) -> str | None:
    name = _string(value, 'a group name, e.g. "p2psync" (or "" for none)')
    if name == "":
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", name):
        raise Invalid('expected a group name, e.g. "p2psync" (a name, not a number)')
    return name


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("expected true or false (no quotes)")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("expected a number of seconds without quotes, e.g. 30")
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise Invalid(f"expected a number of seconds above 0 and at most {MAX_SECONDS} (a day)")
    return float(value)


def _days(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("expected a number of days without quotes, e.g. 30")
    if not (math.isfinite(value) and 0 < value <= 3650):
        raise Invalid("expected a number of days above 0 and at most 3650 (ten years)")
    return float(value)


def _mebibytes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024**2:
        raise Invalid("expected a whole number of MiB without quotes, 1 to 1048576, e.g. 16384")
    return value


def _ui_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise Invalid(
            f"expected a port number without quotes from 0 to 65535, e.g. {DEFAULT_UI_PORT} "
            "(0 picks any free port)"
        )
    return value


def check_log_level(value: Any) -> str:
    level = _string(value, 'one of "debug", "info", "warning", "error"').lower()
    if level not in LOG_LEVELS:
        close = difflib.get_close_matches(level, LOG_LEVELS, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise Invalid(f"expected one of {', '.join(LOG_LEVELS)}{hint}")
    return level


def _list_of(convert: Callable[[Any], Any], example: str, *, allow_empty: bool = True):
    def convert_list(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Invalid(f"expected a list in square brackets, e.g. {example}")
        if not value and not allow_empty:
            raise Invalid(f"expected at least one entry, e.g. {example}")
        converted: list[Any] = []
        for index, element in enumerate(value):
            try:
                item = convert(element)
            except ValueError as exc:
                raise Invalid(str(exc), index, element) from None
            if item in converted:
                raise Invalid(f"listed twice (also at [{converted.index(item)}])", index, element)
            converted.append(item)
        return tuple(converted)

    return convert_list


def _metrics_listen(value: Any) -> tuple[str, int] | Path | None:
    example = '"127.0.0.1:9473", "[::1]:9473" or "/run/p2psync/metrics.sock" ("" turns it off)'
    text = _string(value, example)
    if not text:
        return None
    if text.startswith("/"):
        return Path(text)
    try:
        host, port = parse_address(text, listening=True)
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise Invalid(f"expected {example}") from None
    if not loopback:
        raise Invalid(
            f"metrics are served on loopback or a Unix socket only, e.g. {example}; a scraper on "
            "another machine can reach them through an SSH tunnel or a local proxy"
        )
    return host, port


def _interface(value: Any) -> str:
    text = _string(value, 'an interface name or address, e.g. "eth0" or "192.168.1.20"')
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    # The kernel's own rule for device names (dev_valid_name).
    if (
        not 0 < len(text) <= MAX_INTERFACE_NAME
        or text in (".", "..")
        or any(char in "/:" or char.isspace() for char in text)
    ):
        raise ValueError(
            f"expected an interface name (at most {MAX_INTERFACE_NAME} characters, "
            f'e.g. "eth0") or an IP address'
        )
    return text


KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "device.name": ("device_name", _device_name),
    "paths.state_dir": ("state_dir", _absolute_path),
    "control.socket": ("control_socket", _absolute_path),
    "control.mode": ("control_mode", _file_mode),
    "control.group": ("control_group", _group),
    "control.apps": ("control_apps", _boolean),
    "control.front_end": ("control_front_end", _boolean),
    "network.listen": (
        "listen",
        _list_of(
            lambda text: parse_address(text, listening=True), '["0.0.0.0:47100"]', allow_empty=False
        ),
    ),
    "network.peers": ("peers", _list_of(parse_address, '["192.168.1.20:47100"]')),
    "discovery.enabled": ("discovery_enabled", _boolean),
    "discovery.interfaces": ("discovery_interfaces", _list_of(_interface, '["eth0", "wlan0"]')),
    "sync.handshake_timeout": ("handshake_timeout", _seconds),
    "sync.idle_timeout": ("idle_timeout", _seconds),
    "sync.reconnect_max": ("reconnect_max", _seconds),
    "log.level": ("log_level", check_log_level),
    "ui.enabled": ("ui_enabled", _boolean),
    "ui.port": ("ui_port", _ui_port),
    "metrics.listen": ("metrics_listen", _metrics_listen),
    "history.compaction": ("history_compaction", _boolean),
    "history.keep_for_absent_days": ("keep_for_absent_days", _days),
    "history.interval": ("history_interval", _seconds),
    "history.max_snapshot_mb": ("max_snapshot_mb", _mebibytes),
    "process.one_cpu": ("one_cpu", _boolean),
}
SECTIONS = sorted({key.partition(".")[0] for key in KEYS})
