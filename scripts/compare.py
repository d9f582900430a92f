#!/usr/bin/env python
"""Compare the backends side by side: one command, one report.

    python scripts/compare.py --data-dir DIR --epochs 5                    # every installed backend
    python scripts/compare.py --backends pytorch,paddle --from-runs runs/  # re-use run records

See docs/compare.md.
"""
import _path  # noqa: F401
from cli.compare import main
from cli.errors import run

if __name__ == "__main__":
    run(main)
