"""Getting the daemon ready to run: settings, logging, the state directory, its lock, the replica.

Everything `daemon.main` does before the nursery starts, and `load_settings` again on reload. It
owns the state directory's permissions (0700, private files 0600, or a refusal to start naming the
fix) and the one-daemon-per-state-directory lock. It must never start tasks, open sockets or
touch the network, and every failure it reports is a `StartupError` whose message says what to do.
"""

import argparse
import fcntl
import logging
import os
import socket
import stat
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from . import config, identity, journal, keystore
from .config import Config
from .journal_handler import JOURNAL_SOCKET, JournalHandler, journal_reachable, stderr_is_journal
from .replica import Replica, ReplicaError
from .store import StoreError

log = logging.getLogger("p2psync")


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def startup_failure(group: BaseExceptionGroup) -> Exception | None:
    """The one startup failure (a `StartupError` or an `OSError`, whose message says what to
    do) that a task in the daemon's nursery raised, wrapped in `group`; None when the group
    holds anything else, which is a bug to show whole."""
    found = list(_leaves(group))
    if len(found) == 1 and isinstance(found[0], StartupError | OSError):
        return found[0]
    return None


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One daemon per state directory: a second one fails at once with the holder's pid."""
    path = state_dir / "daemon.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StartupError(
            f"another p2psync daemon (pid {holder}) is already using {state_dir}; stop it first "
            f"or give this one its own --state-dir"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def load_settings(args: argparse.Namespace) -> Config:
    env = os.environ
    path = config.find_config_path(env, os.geteuid(), explicit=getattr(args, "config", None))
    settings = config.load_config_file(
        path, env=env, euid=os.geteuid(), hostname=socket.gethostname()
    )
    return config.apply_overrides(
        settings,
        state_dir=getattr(args, "state_dir", None) or env.get(config.ENV_STATE_DIR),
        log_level=getattr(args, "log_level", None) or env.get(config.ENV_LOG_LEVEL),
        control_socket=config.control_socket_from_env(env)[0],
    )


def warn_about_environment() -> None:
    """Once logging is set up: say what in the environment is deprecated or ignored."""
    warning = config.control_socket_from_env(os.environ)[1]
    if warning is not None:
        log.warning("%s", warning)


def setup_logging(
    level: str, environ: Mapping[str, str] = os.environ, journal_socket: str = JOURNAL_SOCKET
) -> None:
    """Plain lines on stderr. When stderr is the journal, records go to journald with their
    fields (journal.py); should journald not answer, as lines on stderr where the journal adds
    time and host and reads the `<N>` priority prefix, so we leave those out and put that in."""
    stderr = logging.StreamHandler(sys.stderr)
    handler: logging.Handler = stderr
    if environ.get("JOURNAL_STREAM"):
        stderr.setFormatter(_PriorityPrefix("%(name)s: %(message)s"))
        if stderr_is_journal(environ) and journal_reachable(journal_socket):
            handler = JournalHandler(stderr, journal_socket)
    else:
        stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _PriorityPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{journal.priority(record.levelno)}>{super().format(record)}"


# What must stay private to the daemon's user: the database holds every record of the household,
# the key is the device's identity. (device.crt is public, and the lock holds a pid.)
PRIVATE_FILES = ("replica.db", "replica.db-wal", "replica.db-shm", keystore.KEY_FILE)


def prepare_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = state_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"state directory {state_dir} is not usable ({exc.strerror}); set paths.state_dir "
            f"or --state-dir to a directory this user can write"
        ) from None
    # mkdir's mode does nothing to a directory that already exists, and files from an older
    # version, a restored backup or a copy keep whatever mode they came with
    _make_private(state_dir)
    for name in PRIVATE_FILES:
        _make_private(state_dir / name)


def _make_private(path: Path) -> None:
    """Take away every permission of group and others (0700 for the directory, 0600 for files),
    or refuse to start: a database readable by every local user must not go unnoticed."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(found.st_mode)
    if not mode & 0o077:
        return
    private = mode & 0o700
    try:
        os.chmod(path, private)
    except OSError as exc:
        raise StartupError(
            f"{path} is open to other local users (mode {mode:04o}) and this user cannot make it "
            f"private ({exc.strerror}; it belongs to uid {found.st_uid}); as its owner or root, "
            f"run `chmod {private:04o} {path}`, or give it to this user with `chown "
            f"{os.geteuid()} {path}`"
        ) from None
    log.warning("made %s private (mode %04o, was %04o)", path, private, mode)


def open_state(settings: Config) -> tuple[identity.DeviceIdentity, Replica]:
    state_dir = settings.state_dir
    # SQLite creates the database with the umask's mode, and its -wal and -shm files later with
    # the database's: a private umask here keeps all three 0600 from their first byte.
    umask = os.umask(0o077)
    try:
        device = keystore.load_or_create_identity(state_dir)
        try:
            replica = Replica.open(state_dir / "replica.db", device)
        except (StoreError, ReplicaError) as exc:
            raise StartupError(str(exc)) from None
    finally:
        os.umask(umask)
    return device, replica
