"""The device's key and certificate on disk: `device.key` (mode 0600) and `device.crt`.

Owns reading, validating and atomically writing those two files in the state directory. It must
never replace an existing key: the key is the device's identity, and losing it means pairing again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import suppress
from pathlib import Path

from .identity import DeviceIdentity, InvalidCertificate, InvalidPrivateKey

log = logging.getLogger(__name__)

KEY_FILE = "device.key"
CERT_FILE = "device.crt"


class KeystoreError(Exception):
    """The key or certificate on disk cannot be used; the message names the file and the fix."""


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILE


def cert_path(state_dir: Path) -> Path:
    return Path(state_dir) / CERT_FILE


def load_or_create_identity(state_dir: Path) -> DeviceIdentity:
    """This device's identity from `state_dir`, created on first use."""
    state_dir = Path(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file, cert_file = key_path(state_dir), cert_path(state_dir)
    key_pem, cert_pem = _read_if_present(key_file), _read_if_present(cert_file)
    start_over = (
        f"to start over as a new device (which must then be paired again), "
        f"move both {key_file} and {cert_file} out of the way"
    )
    if key_pem is None:
        if cert_pem is not None:
            raise KeystoreError(
                f"{cert_file} exists but {key_file} is missing: restore {KEY_FILE} from a backup "
                f"of this device; or, {start_over}"
            )
        device = DeviceIdentity.generate()
        _write_atomically(key_file, device.key_pem(), mode=0o600)
        _write_atomically(cert_file, device.cert_pem, mode=0o644)
        log.info("created device identity %s in %s", device.device_id, state_dir)
        return device
    try:
        if cert_pem is None:
            device = DeviceIdentity.reissue(key_pem)
            _write_atomically(cert_file, device.cert_pem, mode=0o644)
            log.warning(
                "%s was missing: issued a new certificate for device %s; devices paired with the "
                "old certificate must be paired again",
                cert_file,
                device.device_id,
            )
            return device
        return DeviceIdentity.from_pem(key_pem, cert_pem)
    except InvalidPrivateKey as exc:
        raise KeystoreError(
            f"{key_file} is not a usable device key ({exc}): restore it from a backup of this "
            f"device; or, {start_over}"
        ) from None
    except InvalidCertificate as exc:
        raise KeystoreError(
            f"{cert_file} is not the certificate of {key_file} ({exc}): restore it from a "
            f"backup of this device; or delete it and start again to issue a new one for the "
            f"same device id (devices paired with the old certificate must then pair again)"
        ) from None


def put_back_identity(state_dir: Path, key_pem: bytes, cert_pem: bytes) -> None:
    """Write a device's key and certificate from a backup into a state dir that has no key: a
    key already there is never replaced (restoring over another device is the caller's refusal
    to make)."""
    if key_path(state_dir).exists():
        raise KeystoreError(f"{key_path(state_dir)} exists: it is never replaced")
    _write_atomically(key_path(state_dir), key_pem, mode=0o600)
    _write_atomically(cert_path(state_dir), cert_pem, mode=0o644)


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one whole."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # makes the rename itself durable
    finally:
        os.close(directory)
