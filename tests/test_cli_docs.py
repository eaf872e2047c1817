"""The walk of the parser and the man page made from it: every command is there, with its
options, and the page is roff that groff reads without a warning."""

import argparse
import shutil
import subprocess

import pytest

from p2psync import __version__
from p2psync.cli import build_parser
from p2psync.cli_docs import CommandDoc, _roff, document, man_page

GROFF = shutil.which("groff")


@pytest.fixture(scope="module")
def root() -> CommandDoc:
    return document(build_parser())


def every_command_path(parser_root: CommandDoc) -> set[tuple[str, ...]]:
    return {command.path for command in parser_root.walk()}


def test_the_walk_finds_every_command_and_subcommand(root: CommandDoc) -> None:
    paths = every_command_path(root)
    for expected in [("daemon",), ("put",), ("share",), ("share", "add"), ("install-service",)]:
        assert expected in paths
    # the same as argparse itself knows, at both levels
    (commands,) = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    assert {path[0] for path in paths if path} == set(commands.choices)


def test_options_arguments_and_what_their_values_are(root: CommandDoc) -> None:
    commands = {command.path: command for command in root.walk()}
    put = commands[("put",)]
    assert [argument.metavar for argument in put.arguments] == ["COLLECTION", "KEY", "VALUE"]
    flags = {flag: option for option in put.options for flag in option.flags}
    assert flags["--string"].metavar is None and flags["--string"].value_kind == ""
    assert flags["--share"].metavar == "NAME" and flags["--share"].value_kind == "text"
    assert flags["--socket"].value_kind == "file"
    daemon = {f: o for o in commands[("daemon",)].options for f in o.flags}
    assert daemon["--state-dir"].value_kind == "directory"
    assert commands[("completion",)].arguments[0].choices == ("bash", "zsh", "fish")
    assert commands[("share", "add")].summary == "add a device of the household to a share"
    assert commands[("ls",)].arguments[1].optional


def test_the_man_page_mentions_every_subcommand(root: CommandDoc) -> None:
    page = man_page(root, __version__)
    for command in root.walk():
        if command.path:
            assert f'.SS "{_roff(command.name)} [OPTIONS]' in page, command.name
    assert f'"p2psync {__version__}"' in page.splitlines()[0]
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT"):
        assert f".SH {section}\n" in page


def test_roff_shows_dashes_backslashes_and_leading_dots_literally() -> None:
    assert _roff("--json") == "\\-\\-json"
    assert _roff("a\\b") == "a\\eb"
    assert _roff(".not a request\n'nor this") == "\\&.not a request\n\\&'nor this"


@pytest.mark.skipif(GROFF is None, reason="groff is not installed (apt-get install groff-base)")
def test_groff_reads_the_man_page_without_a_warning(root: CommandDoc) -> None:
    assert GROFF is not None
    checked = subprocess.run(
        [GROFF, "-man", "-Tutf8", "-ww", "-z"],
        input=man_page(root, __version__),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    shown = subprocess.run(
        [GROFF, "-man", "-Tutf8", "-P-cbou"],
        input=man_page(root, __version__),
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "p2psync share add [OPTIONS] NAME DEVICE" in shown
    assert "install-service" in shown
