"""Where the daemon's control socket is (`default_socket_path`), as the CLI finds it."""

import grp
import os
import pwd
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .. import config

ENV_SOCKET: Final = config.ENV_CONTROL_SOCKET  # the daemon reads the same variable


def default_socket_path(env: Mapping[str, str] = os.environ, euid: int | None = None) -> Path:
    """The control socket to use when none is named: `$P2PSYNC_SOCKET` (or the daemon's
    deprecated `$P2PSYNC_CONTROL_SOCKET`); else the socket a daemon run by this user in this
    environment would use (its config file...) when that socket exists; else the system
    daemon's (/run/p2psync/control.sock). Never raises: a broken config file means where the
    defaults put the socket (a daemon refuses a broken file on reload and keeps running there,
    where `systemctl reload` must reach it to be told)."""
    named = config.control_socket_from_env(env)[0]
    if named:
        return Path(named)
    euid = os.geteuid() if euid is None else euid
    try:
        try:
            found = config.load_config_file(
                config.find_config_path(env, euid), env=env, euid=euid, hostname=""
            )
        except config.ConfigError:
            found = config.default_config(env, euid, hostname="")
        own = config.apply_overrides(found, state_dir=env.get(config.ENV_STATE_DIR)).control_socket
    except config.ConfigError:  # not even the defaults resolve (no HOME): the system's, then
        return config.SYSTEM_CONTROL_SOCKET
    try:
        return own if own.exists() else config.SYSTEM_CONTROL_SOCKET
    except OSError:  # its directory is not ours to look into: not our daemon's
        return config.SYSTEM_CONTROL_SOCKET


def permission_advice(path: Path) -> str:
    """What keeps us out of the socket at `path` and how to get in: the group of the socket,
    or of the directory on its way that we may not enter (whatever group that is)."""
    for where in (path, *path.parents):
        try:
            found = os.stat(where)
        except OSError:
            continue  # we may not look in the directory holding it: that one keeps us out
        break
    else:
        return "ask whoever runs the daemon for access"
    # a socket is used by writing to it; a directory is passed through by searching it
    needed = stat.S_IWGRP if where == path else stat.S_IXGRP
    thing = "the socket" if where == path else f"the directory {where}"
    group = _name(grp.getgrgid, found.st_gid)
    if not found.st_mode & needed:
        owner = _name(pwd.getpwuid, found.st_uid)
        return (
            f"{thing} is open to its owner {owner} only (mode {stat.S_IMODE(found.st_mode):04o}); "
            f'run as {owner}, or have the daemon share it with a group (control.mode = "0660" '
            "and control.group in its config file)"
        )
    if found.st_gid not in os.getgroups() and _listed_in(found.st_gid):
        return f"you are in group {group} since your last login: log in again (or `newgrp {group}`)"
    return (
        f"{thing} belongs to group {group}: add yourself to it "
        f"(`sudo usermod -aG {group} $USER`, then log in again)"
    )


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _listed_in(gid: int) -> bool:
    """Whether this user is a member of `gid` in the group database (not necessarily yet in
    this login's groups)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False
