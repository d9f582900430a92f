#!/usr/bin/env python
"""Train the family's members on one backend with one recipe and compare them.

    python scripts/family.py --backend tensorflow --recipe fast --epochs 2 --data-dir DIR
    python scripts/family.py --from-runs reports/family-<time>        # the report again

See docs/family.md.
"""
import _path  # noqa: F401
from cli.errors import run
from cli.family import main

if __name__ == "__main__":
    run(main)
