"""How a benchmark that starts daemons ends: its figures as one `RESULT {json}` line, also when
a step failed (the error goes into the JSON and the exit status is 1), so runs stay comparable."""

import json
import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemons import LOG_LEVEL_ENV


def as_shipped() -> None:
    """Daemons started from now on log at the daemon's default level, not the tests' debug."""
    os.environ.setdefault(LOG_LEVEL_ENV, "info")


def run_and_report(
    prefix: str, where: Path | None, run: Callable[[Path], None], result: dict[str, Any]
) -> int:
    """Run `run` in a temporary directory, print `result` as the RESULT line; the exit status."""
    as_shipped()
    failed = False
    try:
        with tempfile.TemporaryDirectory(prefix=prefix, dir=where) as tmp:
            run(Path(tmp))
    except Exception as exc:
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        failed = True
    print("RESULT " + json.dumps(result))
    return 1 if failed else 0
