"""Where the daemon's control socket is (`default_socket_path`), as the CLI finds it."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from .. import config

ENV_SOCKET: Final = "P2PSYNC_SOCKET"


def default_socket_path(env: Mapping[str, str] = os.environ, euid: int | None = None) -> Path:
    """The control socket to use when none is named: `$P2PSYNC_SOCKET`; else the socket a
    daemon run by this user in this environment would use (its config file,
    `$P2PSYNC_CONTROL_SOCKET`...) when that socket exists; else the system daemon's
    (/run/p2psync/control.sock). Never raises: a broken config file falls back to the system's
    socket (the daemon reports what is wrong with the file)."""
    if env.get(ENV_SOCKET):
        return Path(env[ENV_SOCKET])
    euid = os.geteuid() if euid is None else euid
    try:
        found = config.load_config_file(
            config.find_config_path(env, euid), env=env, euid=euid, hostname=""
        )
        own = config.apply_overrides(
            found,
            state_dir=env.get(config.ENV_STATE_DIR),
            control_socket=env.get(config.ENV_CONTROL_SOCKET),
        ).control_socket
    except config.ConfigError:
        return config.SYSTEM_CONTROL_SOCKET
    try:
        return own if own.exists() else config.SYSTEM_CONTROL_SOCKET
    except OSError:  # its directory is not ours to look into: not our daemon's
        return config.SYSTEM_CONTROL_SOCKET
