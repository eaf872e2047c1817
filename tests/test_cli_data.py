"""`p2psync backup`, `export`, `import`, `history` and `ls` without a collection, against a real
control socket over a real replica (tests/control_harness.py). Restoring with real daemons is
tests/test_backup_restore.py's."""

import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pytest
import trio

from p2psync.backup import archive
from p2psync.identity import short_id
from tests.control_harness import Served, conflicting_write, start_served
from tests.daemons import REPO, DaemonProcess, running
from tests.test_cli import Run


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    (tmp_path / "here").mkdir()
    return await start_served(nursery, tmp_path / "here")


@pytest.fixture
def run(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(served, capsys)


def _records_in(database: Path) -> set[tuple[str, str]]:
    with closing(sqlite3.connect(database)) as db:
        return set(
            db.execute("SELECT coll, key FROM records WHERE coll NOT LIKE '\\_%' ESCAPE '\\'")
        )


def _unpack_database(tar: tarfile.TarFile, where: Path) -> None:
    where.mkdir()
    (where / "replica.db").write_bytes(tar.extractfile("replica.db").read())  # type: ignore[union-attr]


async def test_backup_is_a_private_tar_of_the_database_that_says_whether_the_key_is_in(
    run: Run, served: Served, tmp_path: Path
) -> None:
    for key in ("a", "b"):
        await run.ok("put", "notes", key, '"x"')
    target = tmp_path / "backup.tar"
    said = await run.ok("backup", str(target))
    assert "without the device key" in said and str(target) in said
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with tarfile.open(target) as tar:
        assert tar.getnames() == ["backup.json", "replica.db", "device.crt"]
        manifest = archive.check_manifest(tar.extractfile("backup.json").read())  # type: ignore[union-attr]
        _unpack_database(tar, tmp_path / "unpacked")
    assert manifest.device == served.household.device_id and not manifest.with_key
    assert manifest.name == "kitchen"
    assert _records_in(tmp_path / "unpacked" / "replica.db") == {("notes", "a"), ("notes", "b")}
    # nothing is left behind: not the daemon's copy, not the CLI's partial file
    leftovers = [p.name for p in (tmp_path / "here").iterdir() if p.name.startswith(".backup")]
    assert leftovers == []
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []

    code, _, err = await run("backup", str(target))
    assert code == 2 and "exists: pass --force" in err
    said = await run.ok("backup", str(target), "--with-key", "--force", "--json")
    assert json.loads(said)["with_key"] is True
    with tarfile.open(target) as tar:
        assert tar.getnames() == ["backup.json", "replica.db", "device.crt", "device.key"]
        key = tar.extractfile("device.key").read()  # type: ignore[union-attr]
    assert key == served.household.node.replica.identity.key_pem()
    assert "holds the device key" in await run.ok("backup", str(target), "--with-key", "--force")


async def test_backup_streams_a_database_larger_than_one_line(run: Run, tmp_path: Path) -> None:
    """Several data lines (192 KiB each) arrive whole and in order."""
    big = "y" * 100_000
    for n in range(8):
        await run.ok("put", "blobs", f"k{n}", json.dumps(big))
    target = tmp_path / "big.tar"
    await run.ok("backup", str(target))
    with tarfile.open(target) as tar:
        _unpack_database(tar, tmp_path / "unpacked")
        assert tar.getmember("replica.db").size > 400_000
    assert len(_records_in(tmp_path / "unpacked" / "replica.db")) == 8


async def test_ls_without_a_collection_lists_collections_with_their_counts(run: Run) -> None:
    for key in ("a", "b", "c"):
        await run.ok("put", "notes", key, "1")
    await run.ok("put", "todo", "x", "1")
    await run.ok("put", "gone", "x", "1")
    await run.ok("rm", "gone", "x")
    lines = (await run.ok("ls")).splitlines()
    assert [line.split() for line in lines] == [
        ["COLLECTION", "RECORDS"],
        ["notes", "3"],
        ["todo", "1"],
    ]
    listed = [json.loads(line) for line in (await run.ok("ls", "--json")).splitlines()]
    assert listed == [{"collection": "notes", "records": 3}, {"collection": "todo", "records": 1}]
    assert (await run.ok("ls", "notes", "b")).split()[2:] == ["b", "1"]  # with one: its records
    code, out, _ = await run("ls", "--share", "nowhere")
    assert code == 4 and out == ""


async def test_export_then_import_into_another_daemon_gives_equal_data(
    run: Run,
    served: Served,
    nursery: trio.Nursery,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run.ok("put", "notes", "plain", '{"a": [1, 2.5, null], "ü": "ß"}')
    await run.ok("put", "notes", "typed", "7", "--type", "count", "--schema-version", "3")
    await run.ok("put", "notes", "gone", "1")
    await run.ok("rm", "notes", "gone")
    client = await served.connect()
    await client.result("put", collection="files", key="raw", value={"$base64": "AAEC/w=="})
    await conflicting_write(served, tmp_path)  # c/x: ours and theirs
    exported = await run.ok("export")
    lines = [json.loads(line) for line in exported.splitlines()]
    assert [(line["collection"], line["key"]) for line in lines] == [
        ("c", "x"),
        ("files", "raw"),
        ("notes", "plain"),
        ("notes", "typed"),
    ]
    conflict = lines[0]
    assert conflict["conflict"] is True
    assert sorted(s["value"] for s in conflict["siblings"]) == ["ours", "theirs"]
    assert lines[1]["value"] == {"$base64": "AAEC/w=="}
    assert (lines[3]["type"], lines[3]["schema_version"]) == ("count", 3)
    assert json.loads(await run.ok("export", "--collection", "files"))["key"] == "raw"

    (tmp_path / "there").mkdir()
    other = await start_served(nursery, tmp_path / "there")
    into_other = Run(other, capsys)
    export_file = tmp_path / "records.jsonl"
    export_file.write_text(exported)
    assert "imported 4 records" in await into_other.ok("import", str(export_file))
    assert await into_other.ok("export") == exported.replace(
        exported.splitlines()[0],
        json.dumps(
            {k: v for k, v in conflict.items() if k not in ("conflict", "siblings")},
            ensure_ascii=False,
            separators=(",", ":"),
        ),
    )


def test_export_piped_into_import_of_another_real_daemon_copies_every_record(
    tmp_path: Path,
) -> None:
    """`p2psync export | p2psync import -` between two daemon processes, as a person would."""

    def cli(daemon: DaemonProcess, *argv: str, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "p2psync", "--socket", str(daemon.socket_path), *argv],
            input=stdin,
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    source, target = DaemonProcess(tmp_path, "source"), DaemonProcess(tmp_path, "target")
    with running(source, target):
        with source.client() as client:
            client.put_many(
                ("many", f"k{n:04}", {"n": n, "text": "é" * (n % 7)}) for n in range(2500)
            )
            client.put("blobs", "b", b"\x00\xff")
            client.put("typed", "t", [1, None], type="pair", schema_version=2)
            client.put_many(("many", f"k{n:04}", None) for n in range(3))  # null is a value
        exported = cli(source, "export")
        assert len(exported.splitlines()) == 2502
        cli(target, "import", "-", "--share", "default", stdin=exported)
        assert cli(target, "export") == exported
        assert cli(target, "ls", "--json") == cli(source, "ls", "--json")


async def test_import_checks_every_line_before_writing_anything(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"collection": "notes", "key": "a", "value": 1})
    for broken, message in (
        ("{not json", "line 2 is not JSON"),
        (json.dumps({"collection": "notes", "key": "b"}), "line 2 has no 'value'"),
        (json.dumps({"collection": "_devices", "key": "b", "value": 1}), "p2psync's own"),
        (json.dumps([1]), "line 2 is not an object"),
    ):
        bad.write_text(f"{good}\n{broken}\n")
        code, _, err = await run("import", str(bad))
        assert code == 2 and message in err and "nothing was imported" in err, err
    _, _, err = await run("ls")
    assert "no records" in err
    assert "imported 1 records" in await run.ok("import", "-", stdin=f"\n{good}\n".encode())
    code, _, err = await run("import", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read" in err


async def test_history_shows_each_write_newest_first_and_marks_the_current_ones(
    run: Run, served: Served, tmp_path: Path
) -> None:
    for value in ("1", "2", "3"):
        await run.ok("put", "c", "x", value)
    await run.ok("rm", "c", "x")
    await run.ok("put", "c", "other", "9")
    found = json.loads(await run.ok("history", "c", "x", "--json"))
    shown = [(v["deleted"], v["value"], v["winner"], v["current"]) for v in found["versions"]]
    assert shown == [
        (True, None, True, True),
        (False, 3, False, False),
        (False, 2, False, False),
        (False, 1, False, False),
    ]
    assert found["more"] is False
    versions = json.loads(await run.ok("history", "c", "x", "--json", "--limit", "2"))
    assert len(versions["versions"]) == 2 and versions["more"] is True

    await conflicting_write(served, tmp_path)  # c/x again: ours and theirs
    lines = (await run.ok("history", "c", "x")).splitlines()
    assert lines[0].split() == ["DEVICE", "ID", "TIME", "VERSION", "VALUE"]
    marks = [line[0] for line in lines[1:-1]]
    assert sorted(marks[:2]) == ["*", "+"] and set(marks[2:]) == {" "}
    # who wrote each: by name where `devices` knows it, else by id (this harness names only attic)
    own = short_id(served.household.device_id)
    assert "attic" in lines[1] + lines[2] and own in lines[1] + lines[2]
    assert "+ another current version" in lines[-1]
    code, _, err = await run("history", "c", "never")
    assert code == 4 and "no record c/never" in err
