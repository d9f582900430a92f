#!/usr/bin/env python
"""Export a trained model to a framework's serving format or to ONNX (docs/export.md).

    python scripts/export.py runs/<run> model.onnx                     # ONNX, the run's backend's exporter
    python scripts/export.py runs/<run> model.onnx --backend paddle    # ... or another backend's
    python scripts/export.py runs/<run> model.pt2                      # torch.export (also: .pt TorchScript, .tflite)
    python scripts/export.py runs/<run> --format savedmodel OUT        # savedmodel, paddle, mxnet: folders
    python scripts/export.py runs/<run> --all exported/                # every format, four ONNX files

Any run exports to any format: the weights are framework-neutral and load into the
backend whose exporter writes the artifact.  Each artifact gets its metadata beside it
(``model.onnx.json``, or ``googlenet.json`` inside a folder): classes, normalisation,
input shape, source run; ``scripts/predict.py`` reads it.
"""
import _path  # noqa: F401
from cli.errors import run
from cli.export import main

if __name__ == "__main__":
    run(main)
