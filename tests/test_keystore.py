import logging
import os
import stat

import pytest

from p2psync import keystore
from p2psync.identity import DeviceIdentity
from p2psync.keystore import KeystoreError, cert_path, key_path, load_or_create_identity


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_directory_key_and_certificate(tmp_path):
    state_dir = tmp_path / "deep" / "state"
    device = load_or_create_identity(state_dir)
    assert mode(state_dir) == 0o700
    assert mode(key_path(state_dir)) == 0o600
    assert key_path(state_dir) == state_dir / "device.key"
    assert cert_path(state_dir) == state_dir / "device.crt"
    assert cert_path(state_dir).read_bytes() == device.cert_pem
    assert key_path(state_dir).read_bytes() == device.key_pem()
    assert sorted(p.name for p in state_dir.iterdir()) == ["device.crt", "device.key"]


def test_later_starts_load_the_same_identity_without_rewriting(tmp_path):
    first = load_or_create_identity(tmp_path)
    key_inode = key_path(tmp_path).stat().st_ino
    again = load_or_create_identity(tmp_path)
    assert again.device_id == first.device_id
    assert again.cert_pem == first.cert_pem
    assert key_path(tmp_path).stat().st_ino == key_inode


def test_missing_certificate_is_reissued_for_the_same_key(tmp_path, caplog):
    first = load_or_create_identity(tmp_path)
    cert_path(tmp_path).unlink()
    with caplog.at_level(logging.WARNING, logger="p2psync.keystore"):
        again = load_or_create_identity(tmp_path)
    assert again.device_id == first.device_id
    assert cert_path(tmp_path).read_bytes() == again.cert_pem
    assert "must be paired again" in caplog.text


def test_certificate_without_key_is_an_error_and_nothing_is_created(tmp_path):
    load_or_create_identity(tmp_path)
    key_path(tmp_path).unlink()
    cert_before = cert_path(tmp_path).read_bytes()
    with pytest.raises(KeystoreError, match=r"device\.key is missing: restore"):
        load_or_create_identity(tmp_path)
    assert not key_path(tmp_path).exists()
    assert cert_path(tmp_path).read_bytes() == cert_before


def test_corrupt_key_is_reported_and_never_replaced(tmp_path):
    load_or_create_identity(tmp_path)
    key_path(tmp_path).write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n")
    with pytest.raises(KeystoreError) as failure:
        load_or_create_identity(tmp_path)
    assert str(key_path(tmp_path)) in str(failure.value)
    assert "not a usable device key" in str(failure.value)
    assert "move both" in str(failure.value)
    assert key_path(tmp_path).read_bytes() == b"-----BEGIN PRIVATE KEY-----\nbroken\n"


def test_certificate_of_another_device_is_reported(tmp_path):
    load_or_create_identity(tmp_path)
    cert_path(tmp_path).write_bytes(DeviceIdentity.generate().cert_pem)
    with pytest.raises(KeystoreError, match=r"device\.crt is not the certificate of .*device\.key"):
        load_or_create_identity(tmp_path)


def test_garbage_certificate_is_reported(tmp_path):
    load_or_create_identity(tmp_path)
    cert_path(tmp_path).write_bytes(b"not a certificate")
    with pytest.raises(KeystoreError, match=r"device\.crt is not the certificate"):
        load_or_create_identity(tmp_path)


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keystore.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        load_or_create_identity(tmp_path)
    assert os.listdir(tmp_path) == []
