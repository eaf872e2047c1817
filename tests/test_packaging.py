"""The wheel built from this checkout: its version is the package's one source, it carries the
license, the units, the sysusers file and the config example, and an installed copy (not this
checkout) runs `p2psync --version` and installs the service from its own files."""

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from p2psync import __version__
from tests.installed import project_wheel

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (
    "systemd/p2psync.service",
    "systemd/user/p2psync.service",
    "systemd/p2psync.sysusers.conf",
    "config.example.toml",
)


def setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built offline from a copy of the sources (tests/installed.py)."""
    if setuptools_major() < 77:
        pytest.skip("needs setuptools >= 77 in this environment (pip install -e '.[test]')")
    return project_wheel(tmp_path_factory.mktemp("build"))


@pytest.mark.slow
def test_the_wheel_carries_the_version_license_and_service_files(wheel: Path) -> None:
    assert wheel.name == f"p2psync-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"p2psync-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        for name in SHIPPED:
            assert archive.read(f"p2psync/data/{name}") == (REPO / name).read_bytes(), name
        assert archive.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    assert f"Version: {__version__}\n" in metadata
    assert "License-Expression: MIT\n" in metadata
    assert "Requires-Dist: zeroconf<1,>=0.150\n" in metadata
    assert "p2psync = p2psync.cli:main" in entry_points
    assert "p2psync/py.typed" in names
    web = REPO / "p2psync" / "webui"
    for asset in [*web.glob("templates/*.html"), *web.glob("static/*")]:  # the UI fetches nothing
        assert f"p2psync/webui/{asset.parent.name}/{asset.name}" in names, asset.name


@pytest.mark.slow
def test_an_installed_wheel_runs_and_installs_the_service_from_its_own_files(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)

    def p2psync(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "p2psync", *argv],
            cwd=tmp_path,  # not the checkout, whose p2psync would be imported first
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import p2psync; print(p2psync.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    version = p2psync("--version")
    assert version.stdout == f"p2psync {__version__}\n", version.stderr
    installed = p2psync("-q", "install-service", "--root", str(tmp_path / "image"))
    assert installed.returncode == 0, installed.stderr
    unit = tmp_path / "image/etc/systemd/system/p2psync.service"
    assert unit.read_bytes() == (REPO / "systemd/p2psync.service").read_bytes()
