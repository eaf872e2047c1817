"""The completion scripts, run by the real shells: bash's function called as bash calls it,
fish's through `complete -C`, zsh's with its completion builtins replaced by printers."""

import shutil
import subprocess
from pathlib import Path

import pytest

from p2psync.cli import build_parser
from p2psync.cli_completion import SHELLS, completion_script
from p2psync.cli_docs import CommandDoc, document

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")
FISH = shutil.which("fish")
TOP_LEVEL = {"status", "put", "share", "daemon", "install-service", "completion", "man"}


@pytest.fixture(scope="module")
def root() -> CommandDoc:
    return document(build_parser())


def run_shell(command: list[str], script: str, timeout: float = 30) -> str:
    done = subprocess.run(
        command, input=script, capture_output=True, text=True, timeout=timeout, env={"HOME": "/"}
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


# bash -----------------------------------------------------------------------------------------

needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def bash_complete(root: CommandDoc, tmp_path: Path, *words: str) -> list[str]:
    """What bash offers for the last of `words` (the word being typed; "" for a new one)."""
    assert BASH is not None
    script = tmp_path / "p2psync.bash"
    script.write_text(completion_script("bash", root))
    quoted = " ".join(f"'{word}'" for word in words)
    out = run_shell(
        [BASH, "--norc", "--noprofile"],
        f"source {script}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n"
        '_p2psync\nprintf "%s\\n" "${COMPREPLY[@]}"\n',
    )
    return [line for line in out.splitlines() if line]


@needs_bash
def test_the_bash_script_is_valid_bash(root: CommandDoc, tmp_path: Path) -> None:
    assert BASH is not None
    script = tmp_path / "p2psync.bash"
    script.write_text(completion_script("bash", root))
    checked = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    registered = run_shell([BASH, "--norc"], f"source {script}\ncomplete -p p2psync\n")
    assert registered.strip() == "complete -F _p2psync p2psync"


@needs_bash
def test_bash_completes_commands_subcommands_and_options(root: CommandDoc, tmp_path: Path) -> None:
    assert set(bash_complete(root, tmp_path, "p2psync", "")) >= TOP_LEVEL
    assert bash_complete(root, tmp_path, "p2psync", "sta") == ["status"]
    assert bash_complete(root, tmp_path, "p2psync", "share", "") == [
        "create", "add", "remove", "leave", "list", "show",
    ]  # fmt: skip
    # options and their values are skipped on the way: --socket takes one
    assert bash_complete(root, tmp_path, "p2psync", "--socket", "/s", "share", "a") == ["add"]
    assert bash_complete(root, tmp_path, "p2psync", "put", "--sh") == ["--share"]
    assert bash_complete(root, tmp_path, "p2psync", "share", "add", "--js") == ["--json"]
    assert bash_complete(root, tmp_path, "p2psync", "completion", "") == ["bash", "zsh", "fish"]
    # a collection that happens to be named like a command is just a collection
    assert bash_complete(root, tmp_path, "p2psync", "put", "share", "") == []


@needs_bash
def test_bash_completes_files_where_a_file_is_expected(root: CommandDoc, tmp_path: Path) -> None:
    (tmp_path / "kitchen.pem").write_text("")
    prefix = str(tmp_path / "kit")
    assert bash_complete(root, tmp_path, "p2psync", "trust", prefix) == [
        str(tmp_path / "kitchen.pem")
    ]
    assert bash_complete(root, tmp_path, "p2psync", "daemon", "--config", prefix) == [
        str(tmp_path / "kitchen.pem")
    ]
    assert bash_complete(root, tmp_path, "p2psync", "daemon", "--state-dir", prefix) == []


# zsh ------------------------------------------------------------------------------------------

needs_zsh = pytest.mark.skipif(ZSH is None, reason="zsh is not installed (apt-get install zsh)")

# zsh's completion widgets only run inside the line editor; in their place, print what the
# script hands them.
ZSH_PRINTERS = r"""
_describe() { print -l -- "${(@P)${@[-1]}}" }
compadd() { print -l -- "${(@P)${@[-1]}}" }
_files() { print -- "(files $*)" }
_message() { print -- "(message $*)" }
compdef() { print -- "(compdef $*)" }
"""


def zsh_complete(root: CommandDoc, tmp_path: Path, *words: str) -> list[str]:
    assert ZSH is not None
    script = tmp_path / "_p2psync"
    script.write_text(completion_script("zsh", root))
    quoted = " ".join(f"'{word}'" for word in words)
    out = run_shell(
        [ZSH, "-f"],
        f"{ZSH_PRINTERS}\nsource {script} >/dev/null\n"
        f"words=({quoted})\nCURRENT={len(words)}\n_p2psync\n",
    )
    return out.splitlines()


@needs_zsh
def test_the_zsh_script_parses_and_registers_itself(root: CommandDoc, tmp_path: Path) -> None:
    assert ZSH is not None
    script = tmp_path / "_p2psync"
    script.write_text(completion_script("zsh", root))
    checked = subprocess.run([ZSH, "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert script.read_text().startswith("#compdef p2psync\n")
    assert (
        run_shell([ZSH, "-f"], f"{ZSH_PRINTERS}\nsource {script}\n")
        == "(compdef _p2psync p2psync)\n"
    )


@needs_zsh
def test_zsh_completes_commands_with_their_help_and_options(
    root: CommandDoc, tmp_path: Path
) -> None:
    offered = zsh_complete(root, tmp_path, "p2psync", "")
    assert "status:show this device, its peers and how far behind they are" in offered
    assert {line.split(":")[0] for line in offered} >= TOP_LEVEL
    shares = zsh_complete(root, tmp_path, "p2psync", "--socket", "/s", "share", "")
    assert [line.split(":")[0] for line in shares] == [
        "create", "add", "remove", "leave", "list", "show",
    ]  # fmt: skip
    options = zsh_complete(root, tmp_path, "p2psync", "put", "--")
    assert any(line.startswith("--share:the share whose records to use") for line in options)
    assert zsh_complete(root, tmp_path, "p2psync", "completion", "") == ["bash", "zsh", "fish"]
    assert zsh_complete(root, tmp_path, "p2psync", "trust", "") == ["(files )"]
    assert zsh_complete(root, tmp_path, "p2psync", "daemon", "--state-dir", "") == ["(files -/)"]


# fish -----------------------------------------------------------------------------------------

needs_fish = pytest.mark.skipif(FISH is None, reason="fish is not installed (apt-get install fish)")


def fish_complete(root: CommandDoc, tmp_path: Path, line: str) -> list[str]:
    """What fish offers at the end of `line`, without descriptions."""
    assert FISH is not None
    script = tmp_path / "p2psync.fish"
    script.write_text(completion_script("fish", root))
    out = run_shell([FISH, "--no-config"], f"source {script}\ncomplete -C '{line}'\n")
    return [entry.split("\t")[0] for entry in out.splitlines()]


@needs_fish
def test_the_fish_script_parses(root: CommandDoc, tmp_path: Path) -> None:
    assert FISH is not None
    script = tmp_path / "p2psync.fish"
    script.write_text(completion_script("fish", root))
    checked = subprocess.run([FISH, "--no-execute", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@needs_fish
def test_fish_completes_commands_subcommands_options_and_files(
    root: CommandDoc, tmp_path: Path
) -> None:
    assert set(fish_complete(root, tmp_path, "p2psync ")) >= TOP_LEVEL
    assert fish_complete(root, tmp_path, "p2psync --socket /s sh") == ["share"]
    assert set(fish_complete(root, tmp_path, "p2psync share ")) == {
        "create", "add", "remove", "leave", "list", "show",
    }  # fmt: skip
    assert fish_complete(root, tmp_path, "p2psync share add --js") == ["--json"]
    assert sorted(fish_complete(root, tmp_path, "p2psync completion ")) == ["bash", "fish", "zsh"]
    (tmp_path / "kitchen.pem").write_text("")
    assert fish_complete(root, tmp_path, f"p2psync trust {tmp_path}/kit") == [
        f"{tmp_path}/kitchen.pem"
    ]


def test_every_shell_has_a_script_and_others_are_refused(root: CommandDoc) -> None:
    for shell in SHELLS:
        assert "p2psync" in completion_script(shell, root)
    with pytest.raises(ValueError, match="one of bash, zsh, fish"):
        completion_script("tcsh", root)
