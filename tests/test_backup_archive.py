"""The backup file's format (backup/archive.py): what the daemon streams piece by piece is a tar
archive that Python's tarfile and tar(1) read, and manifests are judged with clear reasons."""

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from p2psync.backup import archive


def _manifest(**changes: object) -> archive.Manifest:
    fields: dict[str, object] = {
        "device": "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG-H",
        "name": "Küche",
        "created": "2026-12-02T10:00:00+00:00",
        "with_key": False,
        "schema_version": 3,
        "software": "0.4.0",
    }
    fields.update(changes)
    return archive.Manifest(**fields)  # type: ignore[arg-type]


def _build(contents: dict[str, bytes]) -> bytes:
    """An archive as the daemon sends it: header, data, padding per member, then the end."""
    out = bytearray()
    for name, data in contents.items():
        out += (
            archive.tar_header(name, len(data), 1_700_000_000)
            + data
            + archive.tar_padding(len(data))
        )
    out += archive.tar_end(len(out))
    return bytes(out)


def test_pieces_make_an_archive_of_the_announced_length_that_tarfile_reads() -> None:
    contents = {
        archive.MANIFEST: _manifest(with_key=True).to_json(),
        archive.DATABASE: bytes(range(256)) * 41 + b"x",  # not a whole block
        archive.CERT: b"-----BEGIN CERTIFICATE-----\n",
        archive.KEY: b"-----BEGIN PRIVATE KEY-----\n",
    }
    built = _build(contents)
    assert len(built) == archive.tar_size([len(data) for data in contents.values()])
    assert len(built) % archive.RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(built)) as tar:
        assert tar.getnames() == list(archive.members(with_key=True))
        for name, data in contents.items():
            member = tar.getmember(name)
            assert tar.extractfile(member).read() == data  # type: ignore[union-attr]
            assert member.mode == (0o600 if name in (archive.DATABASE, archive.KEY) else 0o644)
    assert archive.check_manifest(contents[archive.MANIFEST]) == _manifest(with_key=True)


def test_tar_itself_unpacks_a_backup_as_the_manual_restore_says(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("tar is not installed")
    contents = {
        archive.MANIFEST: _manifest().to_json(),
        archive.DATABASE: b"db",
        archive.CERT: b"c",
    }
    backup = tmp_path / "backup.tar"
    backup.write_bytes(_build(contents))
    unpacked = tmp_path / "state"
    unpacked.mkdir()
    subprocess.run(
        ["tar", "-xf", str(backup), "-C", str(unpacked), "replica.db", "device.crt"], check=True
    )
    assert sorted(p.name for p in unpacked.iterdir()) == ["device.crt", "replica.db"]
    assert (unpacked / "replica.db").stat().st_mode & 0o777 == 0o600


def test_a_manifest_that_cannot_be_restored_says_why() -> None:
    good = json.loads(_manifest().to_json())
    cases = [
        (b"\xff not json", "is not JSON"),
        (json.dumps({"format": "other"}).encode(), "does not describe a p2psync backup"),
        (
            json.dumps({**good, "format_version": 2}).encode(),
            "this p2psync reads format 1: upgrade",
        ),
        (json.dumps({**good, "with_key": "yes"}).encode(), "lacks a valid 'with_key'"),
        (json.dumps({k: v for k, v in good.items() if k != "device"}).encode(), "'device'"),
    ]
    for raw, reason in cases:
        with pytest.raises(archive.BackupFormatError, match=reason):
            archive.check_manifest(raw)
