"""The installed copy that user nobody runs (tests/installed.py): it is the package as built from
the checkout, imported from a world-readable place, never from the checkout itself."""

from pathlib import Path

from tests.installed import REPO, RunAsNobody


def test_nobody_imports_an_installed_copy_of_this_checkout(as_nobody: RunAsNobody) -> None:
    probe = "import os, p2psync, anyio, cryptography; print(p2psync.__file__, os.getuid())"
    result = as_nobody(probe)
    where, uid = result.stdout.split()
    assert uid == "65534", result.stderr
    assert Path(where).is_relative_to("/tmp") and not Path(where).is_relative_to(REPO)
    copied = Path(where).parent / "cli.py"
    assert copied.read_bytes() == (REPO / "p2psync" / "cli.py").read_bytes()
