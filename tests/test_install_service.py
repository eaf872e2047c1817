"""`p2psync install-service`: the shipped files equal the repository's, land where systemd and the
shells look (under a temporary --root, never this machine's /etc), a second run changes nothing,
a config file is never replaced, and the service's user is created by systemd-sysusers."""

import shutil
import subprocess
from pathlib import Path

import pytest

from p2psync import install_service
from p2psync.install_service import DROP_IN_MARKER, Installer, InstallError, Places, plan

REPO = Path(__file__).resolve().parent.parent
# The product card requires systemd/ and config.example.toml at the top of the repository; they
# are links to the package's files, so the two can never drift.
SHIPPED = (
    "systemd/p2psync.service",
    "systemd/user/p2psync.service",
    "systemd/p2psync.sysusers.conf",
    "config.example.toml",
)
SYSUSERS = shutil.which("systemd-sysusers")
PROGRAM = Path("/opt/p2psync/bin/p2psync")  # not where the units look: needs a drop-in
HOME = Path("/home/alice")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_repositorys_file_is_the_packaged_one(name: str) -> None:
    top = REPO / name
    assert top.is_symlink() and top.resolve() == (REPO / "p2psync" / "data" / name).resolve()
    assert install_service.shipped(name) == top.read_bytes()


def test_every_shipped_file_is_declared_as_package_data() -> None:
    declared = (REPO / "pyproject.toml").read_text()
    for name in SHIPPED:
        assert f'"data/{name}"' in declared, f"{name} would be missing from the wheel"


def system_items(program: Path | None = PROGRAM) -> list[install_service.Item]:
    return plan(user=False, places=Places.system(), home=HOME, program=program)


def installer(root: Path, lines: list[str], **options: object) -> Installer:
    return Installer(root=root, dry_run=False, say=lines.append, **options)  # type: ignore[arg-type]


def test_the_system_install_puts_each_file_where_systemd_looks(tmp_path: Path) -> None:
    lines: list[str] = []
    assert installer(tmp_path, lines).install(system_items())
    unit = tmp_path / "etc/systemd/system/p2psync.service"
    assert unit.read_bytes() == (REPO / "systemd/p2psync.service").read_bytes()
    assert (tmp_path / "etc/sysusers.d/p2psync.conf").read_bytes() == (
        REPO / "systemd/p2psync.sysusers.conf"
    ).read_bytes()
    config = tmp_path / "etc/p2psync/config.toml"
    assert config.read_bytes() == (REPO / "config.example.toml").read_bytes()
    assert all(path.stat().st_mode & 0o777 == 0o644 for path in (unit, config))
    drop_in = (tmp_path / "etc/systemd/system/p2psync.service.d/program.conf").read_text()
    assert f"ExecStart={PROGRAM} daemon\n" in drop_in
    assert f"ExecReload={PROGRAM} reload\n" in drop_in
    assert f"installed {unit} (the system unit)" in lines
    assert not any("daemon-reload" in line for line in lines), "an image's systemd reads at boot"
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file left behind"


@pytest.mark.skipif(SYSUSERS is None, reason="systemd-sysusers is not installed (apt: systemd)")
def test_the_service_user_is_created_once_by_systemd_sysusers(tmp_path: Path) -> None:
    lines: list[str] = []
    installer(tmp_path, lines).install(system_items())
    passwd = (tmp_path / "etc/passwd").read_text()
    assert passwd.startswith("p2psync:x:") and ":/var/lib/p2psync:" in passwd
    assert any(
        line.startswith("ran ") and "created user and group p2psync" in line for line in lines
    )
    again: list[str] = []
    assert not installer(tmp_path, again).install(system_items())
    assert "user p2psync exists" in again
    assert (tmp_path / "etc/passwd").read_text() == passwd


def test_a_second_run_changes_nothing_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("p2psync:x:999:999::/var/lib/p2psync:/bin/false\n")
    installer(tmp_path, []).install(system_items())
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    lines: list[str] = []
    assert not installer(tmp_path, lines).install(system_items())
    assert lines[-1] == "nothing changed: everything was already installed"
    said = ("unchanged ", "kept ", "user p2psync exists", "nothing changed")
    assert all(line.startswith(said) for line in lines), lines
    after = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before


def test_an_existing_config_file_is_never_replaced(tmp_path: Path) -> None:
    config = tmp_path / "etc/p2psync/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[device]\nname = "nas"\n')
    lines: list[str] = []
    installer(tmp_path, lines).install(system_items())
    assert config.read_text() == '[device]\nname = "nas"\n'
    assert f"kept {config}: it exists, and p2psync never replaces a config file" in lines


def test_a_changed_unit_is_updated(tmp_path: Path) -> None:
    unit = tmp_path / "etc/systemd/system/p2psync.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    lines: list[str] = []
    installer(tmp_path, lines).install(system_items())
    assert unit.read_bytes() == (REPO / "systemd/p2psync.service").read_bytes()
    assert f"updated {unit} (the system unit)" in lines


def test_a_dry_run_writes_and_runs_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    ran: list[list[str]] = []
    dry = Installer(root=tmp_path, dry_run=True, say=lines.append, run=_record(ran))
    assert dry.install(system_items())
    assert list(tmp_path.iterdir()) == []
    assert ran == []
    assert f"would install {tmp_path}/etc/systemd/system/p2psync.service (the system unit)" in lines


def test_daemon_reload_runs_only_when_a_unit_changed(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    said: list[str] = []
    items = [item for item in system_items() if item.is_unit]
    live = Installer(
        root=tmp_path, dry_run=False, say=said.append, run=_record(ran), tell_systemd=True
    )
    live.install(items)
    assert ran == [["systemctl", "daemon-reload"]]
    live.install(items)
    assert ran == [["systemctl", "daemon-reload"]], "nothing changed: nothing to reread"


def test_systemd_is_never_told_about_units_installed_into_an_image(tmp_path: Path) -> None:
    assert not install_service.systemd_to_tell(tmp_path)


def test_the_drop_in_follows_the_program_and_goes_when_the_unit_finds_it(tmp_path: Path) -> None:
    installer(tmp_path, []).install(system_items(PROGRAM))
    drop_in = tmp_path / "etc/systemd/system/p2psync.service.d/program.conf"
    assert drop_in.read_bytes().startswith(DROP_IN_MARKER)
    lines: list[str] = []
    installer(tmp_path, lines).install(system_items(Path("/usr/local/bin/p2psync")))
    assert not drop_in.exists()
    assert any(line.startswith(f"removed {drop_in}") for line in lines)


def test_a_program_path_with_a_space_is_quoted_for_systemd(tmp_path: Path) -> None:
    installer(tmp_path, []).install(system_items(Path("/opt/p2p sync/bin/p2psync")))
    drop_in = (tmp_path / "etc/systemd/system/p2psync.service.d/program.conf").read_text()
    assert 'ExecStart="/opt/p2p sync/bin/p2psync" daemon\n' in drop_in


def test_someone_elses_drop_in_is_left_alone(tmp_path: Path) -> None:
    drop_in = tmp_path / "etc/systemd/system/p2psync.service.d/program.conf"
    drop_in.parent.mkdir(parents=True)
    drop_in.write_text("[Service]\nExecStart=\nExecStart=/srv/p2psync daemon\n")
    installer(tmp_path, []).install(system_items(Path("/usr/local/bin/p2psync")))
    assert drop_in.read_text().startswith("[Service]\nExecStart=\nExecStart=/srv/")


def test_the_user_install_goes_under_the_users_config_and_creates_no_user(tmp_path: Path) -> None:
    home = tmp_path / "home"
    items = plan(
        user=True,
        places=Places.user({}, home),
        home=home,
        program=home / ".local/bin/p2psync",  # where the user unit looks: no drop-in
    )
    lines: list[str] = []
    installer(Path("/"), lines, user=True).install(items)
    unit = home / ".config/systemd/user/p2psync.service"
    assert unit.read_bytes() == (REPO / "systemd/user/p2psync.service").read_bytes()
    assert (home / ".config/p2psync/config.toml").is_file()
    assert not (home / ".config/systemd/user/p2psync.service.d").exists()
    assert not any("sysusers" in line for line in lines)
    assert "then: systemctl --user daemon-reload" in lines


def test_completion_and_man_page_go_where_the_shells_and_man_look(tmp_path: Path) -> None:
    extras = [("bash", b"b"), ("zsh", b"z"), ("fish", b"f"), ("man", b"m")]
    items = plan(user=False, places=Places.system(), home=HOME, program=None, extras=extras)
    installer(tmp_path, []).install(items)
    share = tmp_path / "usr/local/share"
    assert (share / "bash-completion/completions/p2psync").read_bytes() == b"b"
    assert (share / "zsh/site-functions/_p2psync").read_bytes() == b"z"
    assert (share / "fish/vendor_completions.d/p2psync.fish").read_bytes() == b"f"
    assert (share / "man/man1/p2psync.1").read_bytes() == b"m"


def test_a_path_that_cannot_be_written_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("a file where a directory should be")
    with pytest.raises(InstallError, match=r"cannot write .*/etc/systemd/system/p2psync.service"):
        installer(tmp_path, []).install(system_items())


def test_the_program_is_the_script_run_or_the_one_beside_python(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "p2psync"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    python = tmp_path / "bin" / "python3"
    assert install_service.running_program(str(script), "/usr/bin/python3") == script
    assert install_service.running_program("/x/p2psync/__main__.py", str(python)) == script
    assert install_service.running_program("/x/__main__.py", "/nowhere/python3") is None


def test_warnings_name_what_would_keep_the_service_from_starting() -> None:
    unit_default = Path("/usr/local/bin/p2psync")
    hidden = install_service.warnings_about(Path("/home/a/venv/bin/p2psync"), unit_default, False)
    assert "ProtectHome" in hidden[0]
    assert (
        install_service.warnings_about(Path("/home/a/.local/bin/p2psync"), unit_default, True) == []
    )
    assert "cannot tell" in install_service.warnings_about(None, unit_default, False)[0]


def _record(ran: list[list[str]]) -> install_service.Runner:
    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run
