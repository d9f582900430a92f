#!/usr/bin/env python
"""Execute notebooks/googlenet.ipynb headless (nbclient) for one backend, as the tests and CI do.

    GOOGLENET_BACKEND=mxnet python scripts/run_notebook.py --smoke
    python scripts/run_notebook.py --backend paddle --out runs/googlenet-paddle.ipynb
"""
import _path  # noqa: F401
from cli.errors import run
from cli.notebook import main

if __name__ == "__main__":
    run(main)
