"""Shared fixtures: the installed backends, small inputs, generated IDX data."""
import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# PyTorch and TensorFlow in one process: torch must be imported first.
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401

from backends.config import BACKENDS, FRAMEWORK_MODULE  # noqa: E402


def backend_or_skip(name):
    pytest.importorskip(FRAMEWORK_MODULE[name])
    from backends import get_backend
    return get_backend(name)


@pytest.fixture(params=BACKENDS)
def bk(request):
    """Each installed backend module in turn (skipped where its framework is missing)."""
    return backend_or_skip(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_report_header(config):
    """The CPU and its instruction-set flags (and any caps): numbers depend on them."""
    from common.runtime import cpu_summary
    return f"cpu: {cpu_summary()}"
