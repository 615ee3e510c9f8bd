#!/usr/bin/env python
"""Reference-compatible entry point for the pseudo-validation split.

Accepts the reference script's flags and forwards to ``cwdm dropout``::

    python scripts/dropout_modality.py --input_dir SRC --output_dir DST [--seed 123456] [--overwrite]
    python scripts/dropout_modality.py SRC DST
    python scripts/dropout_modality.py      # the reference's folders (REFERENCE_SRC -> REFERENCE_DST)

Other flags (``--modalities ...``) are passed through unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cwdm.cli import main as cwdm_main  # noqa: E402

# the folders the reference script uses (relative to the working directory)
REFERENCE_SRC = "./datasets/BRATS2023/validation"
REFERENCE_DST = "./datasets/BRATS2023/pseudo_validation"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dropout_modality.py", allow_abbrev=False,
        description="drop one modality per case (reference pseudo-validation split); "
                    "see `cwdm dropout --help` for the other flags")
    parser.add_argument("src", nargs="?", help="input folder (same as --input_dir)")
    parser.add_argument("dst", nargs="?", help="output folder (same as --output_dir)")
    parser.add_argument("--input_dir", "--input-dir", dest="input_dir")
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    src = args.input_dir or args.src
    dst = args.output_dir or args.dst
    if (args.input_dir and args.src) or (args.output_dir and args.dst):
        parser.error("give the folders either as positional arguments or as --input_dir/--output_dir")
    if not src and not dst:
        src, dst = REFERENCE_SRC, REFERENCE_DST
        print(f"dropout_modality.py: no folders given; using the reference's {src} -> {dst}", file=sys.stderr)
    if not src or not dst:
        parser.error("both an input folder and an output folder are required")
    return cwdm_main(["dropout", src, dst, *rest])


if __name__ == "__main__":
    sys.exit(main())
