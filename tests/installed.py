"""The package as another user sees it: a wheel of the checkout, and an installed copy of it that
user nobody can import wherever the checkout is cloned.

Owns building the wheel (also what tests/containers.py installs in its containers), unpacking it
with the installed dependencies it needs into a world-readable directory under /tmp, and finding
an interpreter of this Python version that nobody may run. It must never let the unprivileged
side import from the checkout or the test's environment: a clone in a 0700 directory (or a venv
under /root) is unreadable to nobody, which is what the tests that use it are about.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_REQUIREMENT_NAME = re.compile(r"^[A-Za-z0-9._-]+")
RunAsNobody = Callable[[str], subprocess.CompletedProcess[str]]  # the `as_nobody` fixture


def project_wheel(work: Path) -> Path:
    """A wheel of the checkout as it is now (the package under test), built offline in `work`
    from a copy of the sources: a build writes build/ and *.egg-info beside them, which must not
    land in the checkout (nor old files of build/ in the wheel)."""
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "p2psync", source / "p2psync", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(
            f"building the wheel failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}"
        )
    (wheel,) = (work / "dist").glob("p2psync-*.whl")
    return wheel


def _installed_requirements(requirements: list[str]) -> set[str]:
    """Names of the installed distributions these requirements need at run time, recursively."""
    found: set[str] = set()
    pending = [requirements]
    while pending:
        for requirement in pending.pop():
            if "extra ==" in requirement:
                continue
            match = _REQUIREMENT_NAME.match(requirement)
            if match is None or match.group().lower() in found:
                continue
            try:
                metadata.distribution(match.group())
            except metadata.PackageNotFoundError:  # only for other Pythons (a marker)
                continue
            found.add(match.group().lower())
            pending.append(metadata.requires(match.group()) or [])
    return found


def _copy_distribution(name: str, site: Path) -> None:
    distribution = metadata.distribution(name)
    for file in distribution.files or []:
        source = Path(str(distribution.locate_file(file)))
        if ".." in file.parts or not source.is_file():  # scripts in bin/, not importable
            continue
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _runs_as_nobody(python: str, cwd: Path) -> bool:
    check = [*NOBODY, python, "-c", "import sys; print(sys.version_info[:2])"]
    done = subprocess.run(check, capture_output=True, text=True, cwd=cwd)
    return done.returncode == 0 and done.stdout.strip() == str(tuple(sys.version_info[:2]))


@dataclass
class InstalledCopy:
    """p2psync and its dependencies under `site`, run by `python` (both readable by nobody)."""

    root: Path
    site: Path
    python: str

    def run_as_nobody(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run a snippet of Python as uid/gid 65534 with no groups (needs root and setpriv)."""
        return subprocess.run(
            [*NOBODY, self.python, "-s", "-c", code],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=self.root,
            env={**os.environ, "PYTHONPATH": str(self.site)},
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def install_for_nobody() -> InstalledCopy:
    """Install the checkout's wheel and its dependencies into a new world-readable directory.

    Raises LookupError when no interpreter of this Python version can be run by nobody (the
    tests' own may sit under a private home directory): the caller skips with the reason.
    """
    root = Path(tempfile.mkdtemp(prefix="p2ps-installed-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        site = root / "site"
        with tempfile.TemporaryDirectory(prefix="p2ps-build-") as work:
            wheel = project_wheel(Path(work))
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        (own,) = metadata.distributions(path=[str(site)])
        for name in _installed_requirements(own.requires or []):
            _copy_distribution(name, site)
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [os.path.realpath(sys.executable), f"/usr/bin/{version}"]
        python = next((c for c in candidates if _runs_as_nobody(c, root)), None)
        if python is None:
            raise LookupError(f"user nobody can run none of {', '.join(candidates)}")
        return InstalledCopy(root, site, python)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
