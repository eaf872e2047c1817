"""`p2psync restore` (backup/restore.py) with real daemons: a backup taken while the daemon runs,
restored after the device wrote more, converges without forks or lost writes; and the refusals
(a running daemon, another device's state dir, a data-only backup where no key is)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from p2psync.cli import main
from tests.daemons import DaemonProcess, introduce, running, wait_for, wait_for_value


def _notes(daemon: DaemonProcess) -> dict[str, Any]:
    items = daemon.call("scan", collection="notes", limit=1000)["items"]
    return {item["key"]: item["value"] for item in items}


def _restore(
    backup: Path, daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    code = main(["restore", str(backup), "--config", str(daemon.config_path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_old_backup_restored_on_a_new_machine_converges_without_forks_or_lost_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        b_id = b.device_id
        b.call("put", collection="notes", key="before", value="b")
        b.call("put", collection="notes", key="doomed", value="b")
        wait_for_value(a, "notes", "doomed", "b")
        with_key, data_only, of_a = tmp_path / "b.tar", tmp_path / "b-data.tar", tmp_path / "a.tar"
        for daemon, target, flags in (
            (b, with_key, ["--with-key"]),
            (b, data_only, []),
            (a, of_a, []),
        ):
            assert main(["--socket", str(daemon.socket_path), "backup", str(target), *flags]) == 0
        capsys.readouterr()
        # what b does after the backup reaches a, and must survive the restore
        b.call("put", collection="notes", key="before", value="changed after the backup")
        b.call("put", collection="notes", key="after the backup", value="b")
        b.call("delete", collection="notes", key="doomed")
        wait_for(
            lambda: "doomed" not in _notes(a) and len(_notes(a)) == 2,
            "a to hold b's later writes",
            a,
            b,
        )

        code, said = _restore(with_key, b, capsys)
        assert code == 1 and f"a running daemon is using {b.state_dir}: stop it first" in said
        assert b.stop() == 0
        shutil.rmtree(b.state_dir)  # a new machine: nothing but the backup
        code, said = _restore(data_only, b, capsys)
        assert code == 1 and "without the device key" in said and "holds no key" in said
        code, said = _restore(with_key, b, capsys)
        assert code == 0 and "with its device key" in said, said
        code, said = _restore(of_a, b, capsys)
        assert code == 1 and "belongs to another device" in said
        code = main(["restore", str(data_only), "--config", str(b.config_path), "--json"])
        done = json.loads(capsys.readouterr().out)  # where the key is, data only will do
        assert code == 0 and (done["device"], done["key_written"]) == (b_id, False), done
        assert Path(done["kept"]).name.startswith("replica.db.before-restore-")
        assert len(list(b.state_dir.glob("replica.db.before-restore-*"))) == 1

        # a is away while b comes back and writes: otherwise b may first fetch its own later
        # entries from a, and then (rightly) nothing was forked and there is no restore to report
        assert a.stop() == 0
        b.start()
        assert b.device_id == b_id
        b.call("put", collection="notes", key="after the restore", value="b")
        a.start()
        expected = {
            "before": "changed after the backup",
            "after the backup": "b",
            "after the restore": "b",
        }
        for daemon in (a, b):
            wait_for(lambda d=daemon: _notes(d) == expected, f"{daemon.name} to converge", a, b)
        wait_for(
            lambda: [n for n in a.call("status")["notices"] if n["device"] == b_id],
            "a to report b's restore",
            a,
            b,
        )
        restored = [n for n in a.call("status")["notices"] if n["device"] == b_id]
        assert [n["kind"] for n in restored] == ["restored"], restored
        for daemon in (a, b):  # no epoch was forked: nobody saw one seq with two entries
            assert daemon.call("scan", collection="_forks")["items"] == []
            assert daemon.call("get", collection="notes", key="before")["conflict"] is False


def test_restore_refuses_what_is_not_a_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = DaemonProcess(tmp_path, "solo")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    code, said = _restore(junk, daemon, capsys)
    assert code == 1 and "is it a p2psync backup?" in said
    missing = tmp_path / "missing.tar"
    code, said = _restore(missing, daemon, capsys)
    assert code == 1 and "cannot read" in said
    assert not daemon.state_dir.exists() or not any(daemon.state_dir.iterdir())
