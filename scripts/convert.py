#!/usr/bin/env python
"""Convert GoogLeNet weights between the four frameworks' formats and the neutral one.

    python scripts/convert.py runs/<run>/checkpoint model.pt            # -> PyTorch state_dict
    python scripts/convert.py model.pt model.weights.h5 --preset d2l    # PyTorch -> Keras
    python scripts/convert.py model.params weights.npz                  # MXNet -> neutral

The format follows the file name: ``.npz`` framework-neutral (canonical names and
layouts, what checkpoints hold), ``.pt`` PyTorch, ``.weights.h5`` Keras, ``.params``
Gluon, ``.pdparams`` Paddle.  The network comes from the run's ``run.json`` for a run or
checkpoint, else from the model options.  After writing, the result is loaded back and
its logits on a random batch are compared with the source's.
"""
import _path  # noqa: F401
import importlib.util

if importlib.util.find_spec("torch"):
    import torch  # noqa: F401  (before TensorFlow, should both be used)
from cli.convert import main
from cli.errors import run

if __name__ == "__main__":
    run(main)
