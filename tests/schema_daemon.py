"""`python -m tests.schema_daemon ARGS...` is `p2psync ARGS...` with every control line checked
against docs/control-protocol.schema.json (see tests/schema_check.py); tests/daemons.py starts
daemons this way when P2PSYNC_SCHEMA_CHECK=1. Violations are appended to the file named by
P2PSYNC_SCHEMA_VIOLATIONS, which the test that started the daemon reads.
"""

import os
import sys

from p2psync.cli import main
from tests.schema_check import install


def _append(line: str) -> None:
    with open(os.environ["P2PSYNC_SCHEMA_VIOLATIONS"], "a", encoding="utf-8") as out:
        out.write(line + "\n")


if __name__ == "__main__":
    install(_append)
    sys.exit(main(sys.argv[1:]))
