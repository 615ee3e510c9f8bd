#!/usr/bin/env python
"""Reference-compatible entry point: `python scripts/train.py [reference flags]` runs `cwdm train`.

Flags are translated by :mod:`cwdm.commands.compat` (see its docstring); `cwdm train --help` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cwdm.commands.compat import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("train"))
