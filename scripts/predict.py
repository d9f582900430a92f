#!/usr/bin/env python
"""Print the most probable classes of pictures with a trained model or an exported artifact.

    python scripts/predict.py runs/<run> shirt.png boot.jpg --top 3       # the run's eager model
    python scripts/predict.py runs/<run> shirt.png --backend mxnet        # ... in another framework
    python scripts/predict.py exported/pytorch/model.onnx shirt.png       # ONNX Runtime
    python scripts/predict.py exported/tensorflow/saved_model shirt.png   # TensorFlow's runtime

Each picture is read as the training data were: decoded with Pillow, converted to the
model's channels, resized to its input size with the project's resize, scaled to [0, 1]
and normalised when the run was.  Fashion-MNIST pictures are light clothes on black.
"""
import _path  # noqa: F401
from cli.errors import run
from cli.predict import main

if __name__ == "__main__":
    run(main)
