"""The `p2psync` command line: parsing, human and --json output, exit codes, against a server."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2psync import cli, config
from p2psync.cli import default_socket_path, main, parse_value
from tests.test_control import Served, conflicting_write, start_served


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    return await start_served(nursery, tmp_path)


class Run:
    def __init__(self, served: Served, capsys: pytest.CaptureFixture[str]) -> None:
        self.served = served
        self.capsys = capsys

    async def __call__(self, *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run the CLI in a worker thread (it blocks); returns exit code, stdout, stderr."""
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        with trio.fail_after(10):
            code = await trio.to_thread.run_sync(main, ["--socket", str(self.served.path), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def ok(self, *argv: str, stdin: bytes | None = None) -> str:
        code, out, err = await self(*argv, stdin=stdin)
        assert code == 0, err
        return out


@pytest.fixture
def run(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(served, capsys)


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["frobnicate"],
        ["get", "notes"],
        ["ls", "c", "--limit", "0"],
        ["watch", "--since", "-1"],
        ["put", "c", "k", "v", "--schema-version", "x"],
    ):
        assert main(argv) == 2, argv
        assert "usage: p2psync" in capsys.readouterr().err
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "export-cert" in top and "exit codes" in top
    assert main(["put", "--help"]) == 0
    assert "'-' reads it from stdin" in " ".join(capsys.readouterr().out.split())
    assert main(["forget", "--help"]) == 0
    assert "household-wide" in " ".join(capsys.readouterr().out.split())


def test_no_daemon_exits_3_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PSYNC_SOCKET", str(tmp_path / "missing.sock"))
    for argv in (["status"], ["--json", "get", "c", "k"]):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "missing.sock" in err and "p2psync daemon" in err


def test_default_socket_path(tmp_path: Path) -> None:
    system = config.SYSTEM_CONTROL_SOCKET
    assert default_socket_path({"P2PSYNC_SOCKET": "/x/y.sock"}, 1000) == Path("/x/y.sock")
    user = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    own = tmp_path / "p2psync" / "control.sock"
    assert default_socket_path(user, 1000) == system  # no daemon of ours: the system's
    own.parent.mkdir()
    own.touch()
    assert default_socket_path(user, 1000) == own
    configured = tmp_path / "elsewhere.sock"
    configured.touch()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[control]\nsocket = "{configured}"\n')
    assert default_socket_path({**user, "P2PSYNC_CONFIG": str(config_file)}, 1000) == configured
    overridden = {**user, "P2PSYNC_CONTROL_SOCKET": str(configured)}
    assert default_socket_path(overridden, 1000) == configured
    broken = {**user, "P2PSYNC_CONFIG": str(tmp_path / "missing.toml")}
    assert default_socket_path(broken, 1000) == system


def test_values_are_json_or_else_text() -> None:
    assert parse_value("42") == 42
    assert parse_value('{"a": [1, null]}') == {"a": [1, None]}
    assert parse_value('"quoted"') == "quoted"
    assert parse_value("milk and eggs") == "milk and eggs"
    assert parse_value("NaN") == "NaN"
    assert parse_value("") == ""


async def test_put_get_rm_human_and_json(run: Run) -> None:
    assert "wrote notes/a (position" in await run.ok("put", "notes", "a", '{"qty": 2}')
    assert await run.ok("get", "notes", "a") == '{"qty":2}\n'
    record = json.loads(await run.ok("--json", "get", "notes", "a"))
    assert record["value"] == {"qty": 2} and record["conflict"] is False
    await run.ok("put", "notes", "s", "hello world", "--type", "note", "--schema-version", "2")
    record = json.loads(await run.ok("get", "notes", "s", "--json"))
    assert (record["value"], record["type"], record["schema_version"]) == ("hello world", "note", 2)
    await run.ok("put", "notes", "n", "42", "--string")
    assert await run.ok("get", "notes", "n") == '"42"\n'
    await run.ok("put", "notes", "stdin", "-", stdin=b"[1, 2]\n")
    assert await run.ok("get", "notes", "stdin") == "[1,2]\n"
    await run.ok("put", "notes", "text", "-", stdin=b"line one\nline two\n")
    assert json.loads(await run.ok("get", "notes", "text")) == "line one\nline two"
    assert "deleted notes/a" in await run.ok("rm", "notes", "a")
    code, out, err = await run("get", "notes", "a")
    assert (code, out) == (1, "") and "notes/a was deleted" in err
    code, _, err = await run("put", "_devices", "x", "1")
    assert code == 1 and "reserved" in err
    code, _, err = await run("put", "notes", "bad", "-", stdin=b"\xff\xfe")
    assert code == 2 and "not UTF-8" in err


async def test_ls_follows_pagination(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "LS_PAGE", 3)
    for i in range(10):
        await run.ok("put", "c", f"k{i}", json.dumps({"i": i}))
    await run.ok("put", "c", "other", "1")
    lines = (await run.ok("ls", "c", "k")).splitlines()
    assert lines[0].split() == ["KEY", "VALUE"]
    assert [line.split() for line in lines[1:]] == [[f"k{i}", f'{{"i":{i}}}'] for i in range(10)]
    items = [json.loads(line) for line in (await run.ok("ls", "c", "--json")).splitlines()]
    assert [item["key"] for item in items] == [*(f"k{i}" for i in range(10)), "other"]
    assert len((await run.ok("ls", "c", "--limit", "4")).splitlines()) == 1 + 4
    code, out, err = await run("ls", "empty")
    assert (code, out) == (0, "") and "no records in empty" in err


async def test_identity_and_membership_commands(run: Run, tmp_path: Path) -> None:
    shown = await run.ok("id")
    assert run.served.household.device_id in shown and "kitchen" in shown
    cert_file = tmp_path / "kitchen.pem"
    assert "p2psync trust kitchen.pem" in await run.ok("export-cert", "--out", str(cert_file))
    assert cert_file.read_text() == await run.ok("export-cert")
    assert cert_file.read_text().startswith("-----BEGIN")
    await run.ok("trust", str(cert_file), "--name", "attic", "--address", "10.0.0.2:4000")
    assert run.served.household.trusted[-1][1:] == ("attic", "10.0.0.2:4000")
    await run.ok("trust", "-", stdin=cert_file.read_bytes())
    code, _, err = await run("trust", str(tmp_path / "nope.pem"))
    assert code == 2 and "cannot read certificate" in err
    code, _, err = await run("revoke", "ABCDE")
    assert code == 1 and "no device ABCDE" in err
    code, _, err = await run("forget", "ABCDE")
    assert code == 1


async def test_status_and_peers(run: Run) -> None:
    assert run.served.household.device_id in await run.ok("status")
    assert json.loads(await run.ok("status", "--json"))["device"] == run.served.household.device_id
    table = (await run.ok("peers")).splitlines()
    assert table[0].split() == ["NAME", "DEVICE", "STATE", "ADDRESS", "SYNC"]
    assert "offline" in table[1]
    assert json.loads(await run.ok("peers", "--json")) == [{"device": "PEER", "connected": False}]


async def test_conflicts_and_resolve(run: Run, tmp_path: Path) -> None:
    assert await run.ok("conflicts") == "no conflicts\n"
    await conflicting_write(run.served, tmp_path)
    code, out, err = await run("get", "c", "x")
    assert code == 0 and json.loads(out) in ("ours", "theirs")
    assert "2 conflicting versions" in err and "p2psync resolve c x VALUE" in err
    versions = await run.ok("get", "c", "x", "--all")
    assert '"ours"' in versions and '"theirs"' in versions
    listed = await run.ok("conflicts")
    assert listed.startswith("c/x: 2 versions")
    assert len(json.loads(await run.ok("conflicts", "--json"))["items"]) == 1
    assert "resolved c/x" in await run.ok("resolve", "c", "x", '"both"')
    assert await run.ok("get", "c", "x") == '"both"\n'
    assert await run.ok("conflicts", "c") == "no conflicts\n"


async def test_watch_streams_changes_until_stopped(run: Run) -> None:
    await run.ok("put", "c", "a", "1")
    await run.ok("rm", "c", "a")
    command = [sys.executable, "-m", "p2psync", "--socket", str(run.served.path), "watch"]
    for extra, expected in ((["--json"], None), ([], ["put", "c/a", "1"])):
        process = await trio.lowlevel.open_process(
            [*command, "--since", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        try:
            with trio.fail_after(10):
                assert process.stdout is not None
                received = b""
                while received.count(b"\n") < 2:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "watch ended early"
                    received += chunk
        finally:
            process.kill()
            await process.wait()
        first, second = received.decode().splitlines()[:2]
        if expected is None:
            assert [c["op"] for c in json.loads(first)["changes"]] == ["put"]
            assert json.loads(second)["changes"][0]["deleted"] is True
        else:
            assert first.split()[1:] == expected
            assert second.split()[1:] == ["delete", "c/a"]


def test_main_is_the_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2psync", "--version-does-not-exist"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "P2PSYNC_SOCKET": "/nonexistent"},
    )
    assert result.returncode == 2 and "usage: p2psync" in result.stderr
