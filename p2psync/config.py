"""Configuration model: defaults, the TOML file format, and validation with precise errors (pure).

Owns `Config`, every rule about what a valid setting is, and where each default comes from (the
environment, euid and host name are passed in). Error messages name the file, the line or the key,
what is wrong and what to write instead. Apart from `load_config_file` at the bottom, which reads
the one file it is given, this module never touches the filesystem, the environment or the clock;
it never checks that paths or groups exist: the daemon does that when it uses them.
"""

import difflib
import ipaddress
import json
import math
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .liveness import DEFAULT_LIMIT_SECONDS

ENV_CONFIG = "P2PSYNC_CONFIG"
ENV_STATE_DIR = "P2PSYNC_STATE_DIR"
ENV_LOG_LEVEL = "P2PSYNC_LOG_LEVEL"
ENV_CONTROL_SOCKET = "P2PSYNC_SOCKET"  # read by the daemon and the p2psync command alike
ENV_CONTROL_SOCKET_OLD = "P2PSYNC_CONTROL_SOCKET"  # the daemon's name for it before 0.3.0

DEFAULT_PORT = 47100
DEFAULT_LISTEN = (("0.0.0.0", DEFAULT_PORT), ("::", DEFAULT_PORT))
DEFAULT_UI_PORT = 47180  # the web UI's, on 127.0.0.1 and ::1 only
LOG_LEVELS = ("debug", "info", "warning", "error")
SYSTEM_CONFIG_FILE = Path("/etc/p2psync/config.toml")
SYSTEM_STATE_DIR = Path("/var/lib/p2psync")
SYSTEM_CONTROL_SOCKET = Path("/run/p2psync/control.sock")
CONTROL_SOCKET_NAME = "control.sock"
# A DNS-SD service instance name (how other devices see ours) is one DNS label: 63 bytes.
MAX_DEVICE_NAME_BYTES = 63
FALLBACK_DEVICE_NAME = "p2psync"
# Timeouts beyond a day are a unit mistake (milliseconds written as seconds), not a wish.
MAX_SECONDS = 86400
MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1
# With control.apps, every local user may connect: the kernel's word for each client's uid, and
# the grants of that uid, decide what it may do (docs/threat-model.md says why).
APPS_SOCKET_MODE = 0o666


class ConfigError(Exception):
    """An invalid or unreadable configuration; the message is meant for people, as is."""


@dataclass(frozen=True)
class Config:
    """Every setting, resolved; config.example.toml says what each one means."""

    device_name: str
    state_dir: Path
    control_socket: Path
    control_mode: int
    control_group: str | None  # None: leave the socket with the daemon's own group
    control_apps: bool  # other local users may connect, as apps limited to their grants
    listen: tuple[tuple[str, int], ...]  # (host, port); IPv6 hosts without brackets
    peers: tuple[tuple[str, int], ...]
    discovery_enabled: bool
    discovery_interfaces: tuple[str, ...]  # names or addresses; empty means every interface
    handshake_timeout: float
    idle_timeout: float
    reconnect_max: float
    log_level: str
    ui_enabled: bool = True
    ui_port: int = DEFAULT_UI_PORT  # 0: any free port (`p2psync ui` tells which)
    # the Prometheus endpoint: a loopback (host, port) or a Unix socket path; None: off
    metrics_listen: tuple[str, int] | Path | None = None
    # Folding the log and purging tombstones (issue 11); devices that join or return after a
    # compaction get a snapshot (see docs/architecture.md, "History and compaction").
    history_compaction: bool = True
    keep_for_absent_days: float = 30.0
    history_interval: float = 300.0  # seconds between a device's reports while data is unsettled
    max_snapshot_mb: int = 16384  # the largest snapshot (MiB of rows) taken from a member
    source: str = field(default="built-in defaults", compare=False)
    # True when control.socket was not set and defaulted to <state_dir>/control.sock, so that a
    # state directory given later (apply_overrides) takes the socket along.
    socket_in_state_dir: bool = field(default=False, compare=False)

    @property
    def control_socket_mode(self) -> int:
        """The socket's mode: open to every local user when apps may connect, else control.mode."""
        return APPS_SOCKET_MODE if self.control_apps else self.control_mode


@dataclass(frozen=True)
class ConfigLocation:
    """Where the config file is looked for; `required` when someone named it explicitly."""

    path: Path | None
    required: bool
    named_by: str  # for messages, e.g. "named by --config"


class _Invalid(ValueError):
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


# value converters: raw TOML value -> model value, or _Invalid(reason) ---------------------------


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected {what} in double quotes")
    return value


def check_device_name(value: Any) -> str:
    """A device name as `device.name` takes it (trimmed), or ValueError saying what is wrong."""
    return _device_name(value)


def _device_name(value: Any) -> str:
    name = _string(value, 'a name, e.g. "Kitchen laptop"').strip()
    if not name:
        raise _Invalid('expected a name, e.g. "Kitchen laptop"')
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise _Invalid("a name cannot contain control characters (tabs, newlines)")
    if len(name.encode()) > MAX_DEVICE_NAME_BYTES:
        raise _Invalid(f"a name can be at most {MAX_DEVICE_NAME_BYTES} bytes of UTF-8; shorten it")
    return name


def _absolute_path(value: Any) -> Path:
    text = _string(value, 'an absolute path, e.g. "/var/lib/p2psync"')
    if not text.startswith("/"):
        raise _Invalid(
            "expected an absolute path starting with / (~ and relative paths are not expanded)"
        )
    return Path(text)


def _file_mode(value: Any) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise _Invalid('expected an octal mode in quotes, e.g. "0660"')
    mode = int(value, 8)
    if mode & 0o600 != 0o600:
        raise _Invalid('the owner needs read and write permission (6 as first digit, e.g. "0660")')
    return mode


def _group(value: Any) -> str | None:
    name = _string(value, 'a group name, e.g. "p2psync" (or "" for none)')
    if name == "":
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", name):
        raise _Invalid('expected a group name, e.g. "p2psync" (a name, not a number)')
    return name


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("expected true or false (no quotes)")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("expected a number of seconds without quotes, e.g. 30")
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise _Invalid(f"expected a number of seconds above 0 and at most {MAX_SECONDS} (a day)")
    return float(value)


def _days(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("expected a number of days without quotes, e.g. 30")
    if not (math.isfinite(value) and 0 < value <= 3650):
        raise _Invalid("expected a number of days above 0 and at most 3650 (ten years)")
    return float(value)


def _mebibytes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024**2:
        raise _Invalid("expected a whole number of MiB without quotes, 1 to 1048576, e.g. 16384")
    return value


def _ui_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise _Invalid(
            f"expected a port number without quotes from 0 to 65535, e.g. {DEFAULT_UI_PORT} "
            "(0 picks any free port)"
        )
    return value


def _log_level(value: Any) -> str:
    level = _string(value, 'one of "debug", "info", "warning", "error"').lower()
    if level not in LOG_LEVELS:
        close = difflib.get_close_matches(level, LOG_LEVELS, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise _Invalid(f"expected one of {', '.join(LOG_LEVELS)}{hint}")
    return level


def _list_of(convert: Callable[[Any], Any], example: str, *, allow_empty: bool = True):
    def convert_list(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list in square brackets, e.g. {example}")
        if not value and not allow_empty:
            raise _Invalid(f"expected at least one entry, e.g. {example}")
        converted: list[Any] = []
        for index, element in enumerate(value):
            try:
                item = convert(element)
            except ValueError as exc:
                raise _Invalid(str(exc), index, element) from None
            if item in converted:
                raise _Invalid(f"listed twice (also at [{converted.index(item)}])", index, element)
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
        raise _Invalid(f"expected {example}") from None
    if not loopback:
        raise _Invalid(
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


_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "device.name": ("device_name", _device_name),
    "paths.state_dir": ("state_dir", _absolute_path),
    "control.socket": ("control_socket", _absolute_path),
    "control.mode": ("control_mode", _file_mode),
    "control.group": ("control_group", _group),
    "control.apps": ("control_apps", _boolean),
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
    "log.level": ("log_level", _log_level),
    "ui.enabled": ("ui_enabled", _boolean),
    "ui.port": ("ui_port", _ui_port),
    "metrics.listen": ("metrics_listen", _metrics_listen),
    "history.compaction": ("history_compaction", _boolean),
    "history.keep_for_absent_days": ("keep_for_absent_days", _days),
    "history.interval": ("history_interval", _seconds),
    "history.max_snapshot_mb": ("max_snapshot_mb", _mebibytes),
}
_SECTIONS = sorted({key.partition(".")[0] for key in _KEYS})


# defaults -------------------------------------------------------------------------------------


def default_config(env: Mapping[str, str], euid: int, hostname: str) -> Config:
    """The configuration with no config file: every default, resolved for this user."""
    return _resolve({}, env, euid, hostname, "built-in defaults")


def _resolve(
    settings: dict[str, Any], env: Mapping[str, str], euid: int, hostname: str, source: str
) -> Config:
    state_dir = settings.get("state_dir") or _default_state_dir(env, euid, source)
    control_socket = settings.get("control_socket") or _default_control_socket(env, euid)
    return Config(
        device_name=settings.get("device_name") or _default_device_name(hostname),
        state_dir=state_dir,
        control_socket=control_socket or state_dir / CONTROL_SOCKET_NAME,
        control_mode=settings.get("control_mode", 0o660),
        control_group=settings.get("control_group", "p2psync"),
        control_apps=settings.get("control_apps", False),
        listen=settings.get("listen", DEFAULT_LISTEN),
        peers=settings.get("peers", ()),
        discovery_enabled=settings.get("discovery_enabled", True),
        discovery_interfaces=settings.get("discovery_interfaces", ()),
        handshake_timeout=settings.get("handshake_timeout", 10.0),
        idle_timeout=settings.get("idle_timeout", DEFAULT_LIMIT_SECONDS),
        reconnect_max=settings.get("reconnect_max", 60.0),
        log_level=settings.get("log_level", "info"),
        ui_enabled=settings.get("ui_enabled", True),
        ui_port=settings.get("ui_port", DEFAULT_UI_PORT),
        metrics_listen=settings.get("metrics_listen"),
        history_compaction=settings.get("history_compaction", True),
        keep_for_absent_days=settings.get("keep_for_absent_days", 30.0),
        history_interval=settings.get("history_interval", 300.0),
        max_snapshot_mb=settings.get("max_snapshot_mb", 16384),
        source=source,
        socket_in_state_dir=control_socket is None,
    )


def _default_device_name(hostname: str) -> str:
    name = "".join(char for char in hostname.strip() if unicodedata.category(char) != "Cc")
    clipped = name.encode()[:MAX_DEVICE_NAME_BYTES].decode(errors="ignore")
    return clipped or FALLBACK_DEVICE_NAME


def _systemd_directory(env: Mapping[str, str], name: str) -> Path | None:
    """systemd's $STATE_DIRECTORY etc.: colon-separated when a unit lists several."""
    first = env.get(name, "").split(":")[0]
    return Path(first) if first.startswith("/") else None


def _xdg_directory(env: Mapping[str, str], name: str, under_home: str) -> Path | None:
    """$XDG_DATA_HOME and friends, or their default under $HOME; None without either.
    (The XDG spec says relative values are invalid and must be ignored.)"""
    for value, suffix in ((env.get(name, ""), ""), (env.get("HOME", ""), under_home)):
        if value.startswith("/"):
            return Path(value) / suffix
    return None


def _default_state_dir(env: Mapping[str, str], euid: int, source: str) -> Path:
    from_systemd = _systemd_directory(env, "STATE_DIRECTORY")
    if from_systemd:
        return from_systemd
    if euid == 0:
        return SYSTEM_STATE_DIR
    data_home = _xdg_directory(env, "XDG_DATA_HOME", ".local/share")
    if data_home is None:
        raise ConfigError(
            f"{source}: neither XDG_DATA_HOME nor HOME is set, so there is no default state "
            f"directory; set HOME, or paths.state_dir in the config file"
        )
    return data_home / "p2psync"


def _default_control_socket(env: Mapping[str, str], euid: int) -> Path | None:
    """None means: inside the state directory (no runtime directory to put it in)."""
    from_systemd = _systemd_directory(env, "RUNTIME_DIRECTORY")
    if from_systemd:
        return from_systemd / CONTROL_SOCKET_NAME
    if euid == 0:
        return SYSTEM_CONTROL_SOCKET
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return Path(runtime) / "p2psync" / CONTROL_SOCKET_NAME
    return None


# the file -------------------------------------------------------------------------------------


def parse_config(
    text: str, source: str, *, env: Mapping[str, str], euid: int, hostname: str
) -> Config:
    """The configuration a TOML text describes, defaults filled in; `source` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_message(source, exc)) from None
    settings: dict[str, Any] = {}
    for key, raw in _flatten(document, source).items():
        name, convert = _KEYS[key]
        try:
            settings[name] = convert(raw)
        except _Invalid as exc:
            raise ConfigError(_value_message(source, key, raw, exc)) from None
    return _resolve(settings, env, euid, hostname, source)


_SYNTAX_HINTS = {
    "invalid value": 'strings need double quotes, e.g. name = "Kitchen laptop"',
    "cannot declare": "each [section] may appear only once",
    "cannot overwrite a value": "each key may appear only once",
}


def _syntax_message(source: str, exc: tomllib.TOMLDecodeError) -> str:
    reason, _, where = str(exc).partition(" (at ")
    position = re.fullmatch(r"line (\d+), column (\d+)\)", where)
    if position:
        place = f"{source}, line {position[1]}, column {position[2]}"
    elif where == "end of document)":
        place = f"{source}, at the last line (something opened there is never closed)"
    else:
        place = source
    reason = reason[:1].lower() + reason[1:]
    hint = next(
        (hint for start, hint in _SYNTAX_HINTS.items() if reason.startswith(start)),
        "compare with config.example.toml",
    )
    return f"{place}: not valid TOML: {reason}; {hint}"


def _flatten(document: dict[str, Any], source: str) -> dict[str, Any]:
    found = {}
    for section, table in document.items():
        if section not in _SECTIONS:
            kind = "section" if isinstance(table, dict) else "key"
            raise ConfigError(f"{source}: unknown {kind} {_unknown(section, _SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(
                f'{source}: "{section}" must be a table: write [{section}] on a line '
                f"of its own and its settings below it"
            )
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in _KEYS:
                raise ConfigError(f"{source}: unknown key {_unknown(key, list(_KEYS))}")
            found[key] = value
    return found


def _unknown(name: str, known: list[str]) -> str:
    leaf = name.rpartition(".")[2]
    elsewhere = [key for key in _KEYS if key.rpartition(".")[2] == leaf]
    close = elsewhere or difflib.get_close_matches(name, known, n=1)
    return f'"{name}"' + (f' (did you mean "{close[0]}"?)' if close else "")


def _value_message(source: str, key: str, raw: Any, exc: _Invalid) -> str:
    if exc.index is None:
        return f'{source}: "{key}" = {_show(raw)}: {exc.reason}'
    return f'{source}: "{key}"[{exc.index}] = {_show(exc.element)}: {exc.reason}'


def _show(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return shown if len(shown) <= 60 else shown[:57] + "..."


# overrides and file location ------------------------------------------------------------------


def apply_overrides(
    config: Config,
    *,
    state_dir: str | Path | None = None,
    log_level: str | None = None,
    control_socket: str | Path | None = None,
) -> Config:
    """Settings from flags or the environment, which beat the file. Empty strings count as unset;
    paths are kept as given (a relative one is relative to the daemon's working directory)."""
    changes: dict[str, Any] = {}
    if state_dir:
        changes["state_dir"] = Path(state_dir)
        if config.socket_in_state_dir and not control_socket:
            changes["control_socket"] = Path(state_dir) / CONTROL_SOCKET_NAME
    if control_socket:
        changes["control_socket"] = Path(control_socket)
        changes["socket_in_state_dir"] = False
    if log_level:
        try:
            changes["log_level"] = _log_level(log_level)
        except _Invalid as exc:
            raise ConfigError(
                f'log level "{log_level}" (from --log-level or {ENV_LOG_LEVEL}): {exc.reason}'
            ) from None
    return replace(config, **changes)


def control_socket_from_env(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The control socket the environment names, and a warning for the daemon's log when the
    deprecated $P2PSYNC_CONTROL_SOCKET had a say (it still works, unless $P2PSYNC_SOCKET is set
    too). Empty values count as unset."""
    current, old = env.get(ENV_CONTROL_SOCKET) or None, env.get(ENV_CONTROL_SOCKET_OLD) or None
    if old is None:
        return current, None
    if current is None:
        return old, (
            f"{ENV_CONTROL_SOCKET_OLD} is deprecated: set {ENV_CONTROL_SOCKET}={old} instead "
            "(the p2psync command reads it too)"
        )
    if current != old:
        return current, (
            f"{ENV_CONTROL_SOCKET_OLD}={old} is ignored: {ENV_CONTROL_SOCKET}={current} is set "
            f"too; remove {ENV_CONTROL_SOCKET_OLD}"
        )
    return current, f"{ENV_CONTROL_SOCKET_OLD} is deprecated; {ENV_CONTROL_SOCKET} alone will do"


def find_config_path(
    env: Mapping[str, str], euid: int, explicit: str | Path | None = None
) -> ConfigLocation:
    """The config file to read: --config, then $P2PSYNC_CONFIG (both must exist), then the
    systemd, system or per-user default (which may be absent: built-in defaults apply)."""
    if explicit:
        return ConfigLocation(Path(explicit), required=True, named_by="named by --config")
    if env.get(ENV_CONFIG):
        return ConfigLocation(Path(env[ENV_CONFIG]), True, named_by=f"named by {ENV_CONFIG}")
    from_systemd = _systemd_directory(env, "CONFIGURATION_DIRECTORY")
    config_home = _xdg_directory(env, "XDG_CONFIG_HOME", ".config")
    if from_systemd:
        path: Path | None = from_systemd / "config.toml"
    elif euid == 0:
        path = SYSTEM_CONFIG_FILE
    else:
        path = config_home / "p2psync" / "config.toml" if config_home else None
    return ConfigLocation(path, required=False, named_by="default location")


def load_config_file(
    location: ConfigLocation | str | Path,
    *,
    env: Mapping[str, str],
    euid: int,
    hostname: str,
) -> Config:
    """Read and parse the config file; the only function here that touches the filesystem.

    A plain path counts as explicitly named, so it must exist."""
    if not isinstance(location, ConfigLocation):
        location = ConfigLocation(Path(location), required=True, named_by="named explicitly")
    path = location.path
    if path is None:
        return default_config(env, euid, hostname)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not location.required:
            return replace(default_config(env, euid, hostname), source=f"{path} (absent: defaults)")
        raise ConfigError(
            f"{path}: no such config file ({location.named_by}); create it (see "
            f"config.example.toml) or name an existing file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_config(text, str(path), env=env, euid=euid, hostname=hostname)
