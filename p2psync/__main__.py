"""`python -m p2psync` is the `p2psync` command."""

import sys

from .cli import main

sys.exit(main())
