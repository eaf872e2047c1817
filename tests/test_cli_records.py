"""`p2psync put`, `resolve`, `rm`, `get`, `ls`, `watch` and `conflicts` (p2psync/cli_records.py),
against a real control socket over a real replica (tests/control_harness.py); how a VALUE argument
is read."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2psync import cli_records
from p2psync.cli import main
from p2psync.cli_commands import UsageError
from p2psync.cli_records import parse_value
from tests.control_harness import Served, conflicting_write, start_served
from tests.test_cli import Run


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    return await start_served(nursery, tmp_path)


@pytest.fixture
def run(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(served, capsys)


def test_values_are_json_or_else_text() -> None:
    assert parse_value("42") == 42
    assert parse_value('{"a": [1, null]}') == {"a": [1, None]}
    assert parse_value('"quoted"') == "quoted"
    assert parse_value("milk and eggs") == "milk and eggs"
    assert parse_value("NaN") == "NaN"
    assert parse_value("") == ""


def test_text_that_starts_like_json_must_be_json() -> None:
    for broken in ('{"a":', "[1, 2", '"unterminated', '  {"a": 1,}', "[NaN]"):
        with pytest.raises(UsageError, match="--string"):
            parse_value(broken)
    assert parse_value("milk {and} eggs") == "milk {and} eggs"  # only the first character counts
    assert parse_value("  [1]") == [1]


async def test_put_refuses_broken_json_unless_string(run: Run) -> None:
    for argv, stdin in (
        (["put", "notes", "k", '{"a":'], None),
        (["put", "notes", "k", "-"], b"[1, 2\n"),
        (["resolve", "notes", "k", '"oops'], None),
    ):
        code, out, err = await run(*argv, stdin=stdin)
        assert (code, out) == (2, ""), (argv, err)
        assert "looks like JSON but is not valid JSON" in err and "--string" in err, err
    code, _, err = await run("--json", "put", "notes", "k", "[1,")
    assert code == 2 and json.loads(err)["error"]["code"] == "usage"
    code, _, err = await run("get", "notes", "k")
    assert code == 4, "nothing was written"
    await run.ok("put", "notes", "k", '{"a":', "--string")
    assert json.loads(await run.ok("get", "notes", "k")) == '{"a":'
    await run.ok("put", "notes", "k", "-", "--string", stdin=b"[draft\n")
    assert json.loads(await run.ok("get", "notes", "k")) == "[draft"
    assert main(["put", "--help"]) == 0


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
    assert (code, out) == (4, "") and "notes/a was deleted" in err
    code, _, err = await run("put", "_devices", "x", "1")
    assert code == 1 and "reserved" in err
    code, _, err = await run("put", "notes", "bad", "-", stdin=b"\xff\xfe")
    assert code == 2 and "not UTF-8" in err


async def test_ls_follows_pagination(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_records, "LS_PAGE", 3)
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


async def test_conflicts_and_resolve(run: Run, tmp_path: Path) -> None:
    assert await run.ok("conflicts") == "no conflicts\n"
    await conflicting_write(run.served, tmp_path)
    code, out, err = await run("get", "c", "x")
    assert code == 0 and json.loads(out) in ("ours", "theirs")
    assert "2 conflicting versions" in err and "p2psync resolve c x VALUE" in err
    versions = await run.ok("get", "c", "x", "--all")
    assert '"ours"' in versions and '"theirs"' in versions
    winner = json.loads(await run.ok("get", "c", "x"))
    *rows, note = versions.splitlines()
    assert note.startswith("* the version every device shows")
    marked = [row for row in rows if row.startswith("*")]
    assert len(marked) == 1 and f'"{winner}"' in marked[0]  # the winner, and only it
    (theirs,) = [row for row in rows if '"theirs"' in row]
    assert "attic" in theirs  # the writing device by name, not only by id
    listed = await run.ok("conflicts")
    assert listed.startswith("c/x: 2 versions")
    marked = [line for line in listed.splitlines() if line.startswith("  *")]
    assert len(marked) == 1 and f'"{winner}"' in marked[0]
    assert any("attic" in line for line in listed.splitlines())
    assert len(json.loads(await run.ok("conflicts", "--json"))["items"]) == 1
    assert "resolved c/x" in await run.ok("resolve", "c", "x", '"both"')
    assert await run.ok("get", "c", "x") == '"both"\n'
    assert await run.ok("conflicts", "c") == "no conflicts\n"


async def test_resolve_refuses_a_record_without_a_conflict_unless_force(run: Run) -> None:
    code, out, err = await run("resolve", "notes", "missing", "1")
    assert (code, out) == (4, "") and "notes/missing" in err and "nothing to resolve" in err
    code, out, err = await run("resolve", "notes", "missing", "1", "--json")
    assert (code, out) == (4, "") and json.loads(err)["error"]["code"] == "not_found"
    await run.ok("put", "notes", "a", "1")
    code, out, err = await run("resolve", "notes", "a", "2")
    assert (code, out) == (1, "") and "notes/a has no conflict" in err and "--force" in err
    code, out, err = await run("--json", "resolve", "notes", "a", "--pick", "anything")
    assert (code, out) == (1, "") and json.loads(err)["error"]["code"] == "no_conflict"
    assert await run.ok("get", "notes", "a") == "1\n", "nothing was written"
    await run.ok("rm", "notes", "a")
    code, _, err = await run("resolve", "notes", "a", "2")
    assert code == 1 and "notes/a was deleted and has no conflict" in err
    assert "resolved notes/a" in await run.ok("resolve", "notes", "a", "2", "--force")
    assert await run.ok("get", "notes", "a") == "2\n"
    assert "resolved notes/new" in await run.ok("resolve", "notes", "new", "3", "--force")
    for argv in (
        ["resolve", "notes", "a"],  # neither VALUE nor --pick
        ["resolve", "notes", "a", "2", "--pick", "v"],
        ["resolve", "notes", "a", "--pick", "v", "--type", "t"],
    ):
        code, out, err = await run(*argv)
        assert (code, out) == (2, "") and "--pick" in err, (argv, err)
    assert main(["resolve", "--help"]) == 0
    shown = " ".join(run.capsys.readouterr().out.split())
    assert "--pick VERSION" in shown and "--force" in shown and "no conflict" in shown


async def test_resolve_pick_keeps_a_version_shown_by_get_all_and_conflicts(
    run: Run, tmp_path: Path
) -> None:
    await conflicting_write(run.served, tmp_path)
    record = json.loads(await run.ok("--json", "get", "c", "x", "--all"))
    versions = {s["value"]: s["version"] for s in record["siblings"]}
    assert set(versions) == {"ours", "theirs"} and all(versions.values())
    table = (await run.ok("get", "c", "x", "--all")).splitlines()
    assert "VERSION" in table[0].split()
    for value, version in versions.items():
        (row,) = [line for line in table if f'"{value}"' in line]
        assert version in row.split(), (version, row)  # shown whole
    assert table[-1].startswith("* the version every device shows")
    assert "--pick VERSION" in table[-1]
    listed = await run.ok("conflicts")
    assert all(version in listed for version in versions.values())
    code, _, err = await run("get", "c", "x")
    assert code == 0 and "--pick VERSION" in err

    code, out, err = await run("resolve", "c", "x", "--pick", "nosuchversion")
    assert (code, out) == (1, "") and "c/x has no version nosuchversion" in err
    assert all(version in err for version in versions.values()), "it lists the versions"
    code, out, err = await run("resolve", "c", "x", "--pick", "nosuchversion", "--json")
    assert (code, out) == (1, "") and json.loads(err)["error"]["code"] == "conflict"

    theirs = versions["theirs"]
    # the start is enough, and a version may start with "-" (base64url)
    done = await run.ok("resolve", "c", "x", "--pick", theirs[:6])
    assert f"resolved c/x: kept version {theirs} (position" in done
    assert await run.ok("get", "c", "x") == '"theirs"\n'
    assert await run.ok("conflicts") == "no conflicts\n"
    code, _, err = await run("resolve", "c", "x", "--pick", theirs)
    assert code == 1 and "c/x has no conflict" in err


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
