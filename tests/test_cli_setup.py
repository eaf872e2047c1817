"""The commands that need no daemon (install-service, completion, man) run from the command line,
and -q/-v: what they print, and the daemon's log level they choose."""

from pathlib import Path

import pytest

from p2psync import __version__
from p2psync.cli import build_parser, main
from p2psync.cli_setup import daemon_log_level
from tests.daemons import DaemonProcess


def test_install_service_prints_what_it_did_then_that_nothing_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("p2psync:x:999:999::/var/lib/p2psync:/bin/false\n")
    argv = ["install-service", "--root", str(tmp_path), "--completion", "--man"]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()
    assert f"installed {tmp_path}/etc/systemd/system/p2psync.service (the system unit)" in first
    assert f"installed {tmp_path}/usr/local/share/man/man1/p2psync.1 (the man page)" in first
    assert first[-1].startswith("next: systemctl enable --now p2psync")
    page = (tmp_path / "usr/local/share/man/man1/p2psync.1").read_text()
    assert page.startswith(".TH P2PSYNC 1")
    bash = (tmp_path / "usr/local/share/bash-completion/completions/p2psync").read_text()
    assert "complete -F _p2psync p2psync" in bash
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "nothing changed: everything was already installed"
    )


def test_install_service_quiet_and_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["install-service", "--root", str(tmp_path), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "would install" in said and "next:" not in said
    assert list(tmp_path.iterdir()) == []
    assert main(["-q", "install-service", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "etc/systemd/system/p2psync.service").is_file()


def test_install_service_user_goes_to_the_home_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert main(["install-service", "--user", "--completion"]) == 0
    said = capsys.readouterr().out
    assert (tmp_path / ".config/systemd/user/p2psync.service").is_file()
    assert (tmp_path / ".config/fish/completions/p2psync.fish").is_file()
    assert "next: systemctl --user enable --now p2psync" in said
    assert f"fpath+=({tmp_path}/.local/share/zsh/site-functions)" in said


def test_install_service_explains_a_failure_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "etc").write_text("not a directory")
    assert main(["install-service", "--root", str(tmp_path)]) == 1
    assert "p2psync: cannot write" in capsys.readouterr().err


def test_completion_and_man_print_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "fish"]) == 0
    assert "complete -c p2psync" in capsys.readouterr().out
    assert main(["man"]) == 0
    assert f'"p2psync {__version__}"' in capsys.readouterr().out
    assert main(["completion", "tcsh"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["daemon"], None),
        (["daemon", "-v"], "debug"),
        (["daemon", "--quiet"], "warning"),
        (["-q", "daemon"], "warning"),
        (["-v", "daemon"], "debug"),
        (["-v", "daemon", "--log-level", "error"], "error"),  # the daemon's own option wins
        (["daemon", "--log-level", "error", "-v"], "debug"),  # of its own, the last one
    ],
)
def test_the_daemons_q_and_v_are_log_levels(argv: list[str], level: str | None) -> None:
    assert daemon_log_level(build_parser().parse_args(argv)) == level


class QuietDaemon(DaemonProcess):
    def command(self) -> list[str]:
        return [*super().command(), "-q"]


def test_a_quiet_daemon_logs_no_info_lines(tmp_path: Path) -> None:
    daemon = QuietDaemon(tmp_path, "quiet")  # its config file asks for debug: -q wins
    daemon.start()
    try:
        assert daemon.call("status")["device"]
        daemon.call("put", collection="notes", key="k", value=1)
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert " INFO " not in log and " DEBUG " not in log, log
