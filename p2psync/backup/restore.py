"""`p2psync restore`: a backup file put back into the state dir of a stopped daemon (I/O).

Safe whatever the backup's age: the restored daemon starts as a new epoch, like every start, so
it never writes an (actor, seq) the device wrote after the backup; its peers send back whatever
reached them since, and report the restore (membership.py's copy/restore notices). It checks
the whole archive before it changes anything, takes the daemon's state lock (so no daemon runs
on the directory meanwhile), never replaces a device key, and keeps the database it replaces
beside the new one. It never talks to the daemon or the network.
"""

import os
import shutil
import sqlite3
import tarfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from .. import keystore
from ..daemon_setup import StartupError, state_lock
from ..identity import DeviceIdentity, InvalidCertificate, InvalidPrivateKey
from ..store import SCHEMA_VERSION
from . import archive

DATABASE = "replica.db"
SQLITE_COMPANIONS = ("", "-wal", "-shm")  # the files SQLite keeps for one database


class RestoreError(Exception):
    """The backup cannot be restored here; the message says why and what to do instead."""


@dataclass(frozen=True)
class Restored:
    manifest: archive.Manifest
    key_written: bool  # the backup's key went into a state dir that had none
    kept: Path | None  # the database it replaced, moved aside


@dataclass(frozen=True)
class _Backup:
    manifest: archive.Manifest
    cert: bytes
    key: bytes | None


def restore(backup: Path, state_dir: Path) -> Restored:
    with _open(backup) as tar:
        found = _read_backup(tar, backup)
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with state_lock(state_dir):
                return _restore_locked(tar, found, state_dir)
        except StartupError:  # a daemon holds the directory
            raise RestoreError(
                f"a running daemon is using {state_dir}: stop it first (systemctl stop p2psync), "
                "restore, then start it again"
            ) from None
        except OSError as exc:
            raise RestoreError(f"cannot restore into {state_dir}: {exc}") from None


def _open(backup: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(backup, "r:")
    except (OSError, tarfile.TarError) as exc:
        raise RestoreError(f"cannot read {backup}: {exc}; is it a p2psync backup?") from None


def _member(tar: tarfile.TarFile, name: str, backup: Path) -> bytes | None:
    try:
        info = tar.getmember(name)
    except KeyError:
        return None
    if not info.isfile():
        raise RestoreError(f"{backup}: {name} in it is not a file")
    extracted = tar.extractfile(info)
    assert extracted is not None
    return extracted.read()


def _read_backup(tar: tarfile.TarFile, backup: Path) -> _Backup:
    raw = _member(tar, archive.MANIFEST, backup)
    if raw is None:
        raise RestoreError(f"{backup} has no {archive.MANIFEST}: it is not a p2psync backup")
    try:
        manifest = archive.check_manifest(raw)
    except archive.BackupFormatError as exc:
        raise RestoreError(f"{backup} cannot be restored: {exc}") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise RestoreError(
            f"{backup} holds a database of schema {manifest.schema_version}, written by p2psync "
            f"{manifest.software}; this p2psync knows schema {SCHEMA_VERSION}: upgrade it first"
        )
    cert = _member(tar, archive.CERT, backup)
    key = _member(tar, archive.KEY, backup)
    if cert is None or (manifest.with_key and key is None):
        raise RestoreError(f"{backup} is incomplete (its key or certificate is missing)")
    if key is not None:
        try:
            device = DeviceIdentity.from_pem(key, cert).device_id
        except (InvalidPrivateKey, InvalidCertificate) as exc:
            raise RestoreError(f"{backup}: its key and certificate do not match: {exc}") from None
        if device != manifest.device:
            raise RestoreError(f"{backup}: its key is not the key of device {manifest.device}")
    try:
        tar.getmember(archive.DATABASE)
    except KeyError:
        raise RestoreError(f"{backup} holds no {archive.DATABASE}") from None
    return _Backup(manifest, cert, key)


def _device_here(state_dir: Path) -> str | None:
    key_file = keystore.key_path(state_dir)
    if not key_file.exists():
        return None
    try:
        return DeviceIdentity.reissue(key_file.read_bytes()).device_id
    except InvalidPrivateKey as exc:
        raise RestoreError(f"{key_file} is not a usable device key ({exc})") from None


def _restore_locked(tar: tarfile.TarFile, found: _Backup, state_dir: Path) -> Restored:
    manifest = found.manifest
    here = _device_here(state_dir)
    what = f"this backup is of {manifest.name} ({manifest.device})"
    if here is not None and here != manifest.device:
        raise RestoreError(
            f"{state_dir} belongs to another device ({here}) and {what}: a state dir holds one "
            f"device. To become {manifest.name} again, move {state_dir} away (or restore into "
            "an empty state dir with --state-dir)"
        )
    if here is None and found.key is None:
        raise RestoreError(
            f"{what}, taken without the device key, and {state_dir} holds no key: put back "
            f"device.key (and device.crt) of {manifest.device} first, or restore a backup taken "
            "--with-key. Without the key, this device can only start as a new device and be "
            "paired again: it then gets every record back from the household by sync"
        )
    restoring = state_dir / f".{DATABASE}.restoring"
    _extract_database(tar, restoring)
    _check_database(restoring, manifest.device)
    key_written = here is None and found.key is not None
    if key_written:
        assert found.key is not None
        keystore.put_back_identity(state_dir, found.key, found.cert)
    kept = _move_aside(state_dir)
    os.replace(restoring, state_dir / DATABASE)
    _sync_directory(state_dir)
    _same_owner_as(state_dir, [state_dir / DATABASE, *_identity_files(state_dir, key_written)])
    return Restored(manifest, key_written, kept)


def _extract_database(tar: tarfile.TarFile, target: Path) -> None:
    source = tar.extractfile(archive.DATABASE)
    assert source is not None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        shutil.copyfileobj(source, file, 1024 * 1024)
        file.flush()
        os.fsync(file.fileno())


def _check_database(path: Path, device: str) -> None:
    """The extracted file is a whole SQLite database of that device (else it is removed)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            owner = db.execute("SELECT value FROM meta WHERE key='device_id'").fetchone()
    except sqlite3.Error as exc:
        path.unlink(missing_ok=True)
        raise RestoreError(f"the database in the backup cannot be read: {exc}") from None
    problem = None
    if verdict != "ok":
        problem = f"the database in the backup is damaged ({verdict})"
    elif owner is None or bytes(owner[0]).decode() != device:
        problem = f"the database in the backup is not the database of device {device}"
    if problem is not None:
        path.unlink(missing_ok=True)
        raise RestoreError(problem)


def _move_aside(state_dir: Path) -> Path | None:
    """Move the database being replaced (with its -wal and -shm, which hold part of it) to
    `replica.db.before-restore-<time>`; None when there was none."""
    current = state_dir / DATABASE
    if not current.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = state_dir / f"{DATABASE}.before-restore-{stamp}"
    attempt = 1
    while any(Path(f"{kept}{suffix}").exists() for suffix in SQLITE_COMPANIONS):
        attempt += 1  # two restores within a second: keep both databases they replaced
        kept = state_dir / f"{DATABASE}.before-restore-{stamp}-{attempt}"
    for suffix in SQLITE_COMPANIONS:
        companion = state_dir / f"{DATABASE}{suffix}"
        if companion.exists():
            os.replace(companion, Path(f"{kept}{suffix}"))
    return kept


def _identity_files(state_dir: Path, written: bool) -> list[Path]:
    return [keystore.key_path(state_dir), keystore.cert_path(state_dir)] if written else []


def _same_owner_as(state_dir: Path, paths: list[Path]) -> None:
    """Run as root for the service, the files go to the service's user, who owns the dir."""
    if os.geteuid() != 0:
        return
    owner = state_dir.stat()
    for path in paths:
        os.chown(path, owner.st_uid, owner.st_gid)


def _sync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
