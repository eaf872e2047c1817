"""Configuration model: defaults, the TOML file format, and validation with precise errors (pure).

Owns `Config`, where each default comes from (the environment, euid and host name are passed in),
the file's TOML syntax and sections, and the errors that name the file: the line or the key, what
is wrong and what to write instead. What each key accepts (its converter and reason) is
config_values.py's. Apart from `load_config_file` at the bottom, which reads the one file it is
given, this module never touches the filesystem, the environment or the clock; it never checks
that paths or groups exist: the daemon does that when it uses them.
"""

import difflib
import json
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config_values import (
    DEFAULT_PORT,
    DEFAULT_UI_PORT,
    KEYS,
    MAX_DEVICE_NAME_BYTES,
    SECTIONS,
    Invalid,
    check_log_level,
)
from .liveness import DEFAULT_LIMIT_SECONDS

ENV_CONFIG = "P2PSYNC_CONFIG"
ENV_STATE_DIR = "P2PSYNC_STATE_DIR"
ENV_LOG_LEVEL = "P2PSYNC_LOG_LEVEL"
ENV_CONTROL_SOCKET = "P2PSYNC_SOCKET"  # read by the daemon and the p2psync command alike
ENV_CONTROL_SOCKET_OLD = "P2PSYNC_CONTROL_SOCKET"  # the daemon's name for it before 0.3.0

DEFAULT_LISTEN = (("0.0.0.0", DEFAULT_PORT), ("::", DEFAULT_PORT))
SYSTEM_CONFIG_FILE = Path("/etc/p2psync/config.toml")
SYSTEM_STATE_DIR = Path("/var/lib/p2psync")
SYSTEM_CONTROL_SOCKET = Path("/run/p2psync/control.sock")
CONTROL_SOCKET_NAME = "control.sock"
FALLBACK_DEVICE_NAME = "p2psync"
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
    control_front_end: bool  # a process of its own reads and answers writes (control/front_end.py)
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
    one_cpu: bool = True  # keep the daemon's threads on one processor (p2psync/one_cpu.py)
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
        control_front_end=settings.get("control_front_end", True),
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
        one_cpu=settings.get("one_cpu", True),
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
        name, convert = KEYS[key]
        try:
            settings[name] = convert(raw)
        except Invalid as exc:
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
        if section not in SECTIONS:
            kind = "section" if isinstance(table, dict) else "key"
            raise ConfigError(f"{source}: unknown {kind} {_unknown(section, SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(
                f'{source}: "{section}" must be a table: write [{section}] on a line '
                f"of its own and its settings below it"
            )
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in KEYS:
                raise ConfigError(f"{source}: unknown key {_unknown(key, list(KEYS))}")
            found[key] = value
    return found


def _unknown(name: str, known: list[str]) -> str:
    leaf = name.rpartition(".")[2]
    elsewhere = [key for key in KEYS if key.rpartition(".")[2] == leaf]
    close = elsewhere or difflib.get_close_matches(name, known, n=1)
    return f'"{name}"' + (f' (did you mean "{close[0]}"?)' if close else "")


def _value_message(source: str, key: str, raw: Any, exc: Invalid) -> str:
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
            changes["log_level"] = check_log_level(log_level)
        except Invalid as exc:
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
