"""Entry point: ``ctictl`` (installed script) or ``python -m ctictl``."""

from __future__ import annotations

import sys

from ctictl.cli import main

if __name__ == "__main__":
    sys.exit(main())
