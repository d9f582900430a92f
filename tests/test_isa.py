"""The instruction-set caps (common.runtime.AVX2_CAPS) are the names the installed
frameworks read: with them set, every oneDNN and MKL that a backend loads reports AVX2
(ONEDNN_VERBOSE / DNNL_VERBOSE / MKL_VERBOSE), whatever the machine.  Without this, a
"capped" run on an AVX-512 machine would silently test AVX-512 again."""
import os
import re
import subprocess
import sys

import pytest

from common.runtime import AVX2_CAPS, bf16_hardware
from backends.config import BACKENDS, FRAMEWORK_MODULE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = """
import sys, numpy as np
import torch
sys.path.insert(0, {root!r})
from backends import get_backend
from common.net import spec as S
bk = get_backend({name!r})
spec = S.Spec("isa", 1, 16, (S.stage("s1", S.Conv(8, 3, 1, 1), S.MaxPool(3, 2, 1)),
                             S.stage("s2", S.GlobalAvgPool(), S.Flatten(), S.Dense(10))))
net = bk.build(spec, seed=0)
X = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32)
bk.Trainer(net, lr=0.1).train_step(bk.to_tensor(X), bk.to_tensor(np.array([1, 2])))
"""
VERBOSE = {"ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1", "MKL_VERBOSE": "1"}


@pytest.mark.parametrize("name", BACKENDS)
def test_caps_reach_every_cpu_library(name):
    pytest.importorskip(FRAMEWORK_MODULE[name])
    env = {**os.environ, **AVX2_CAPS, **VERBOSE, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", STEP.format(root=ROOT, name=name)], env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    isas = set(re.findall(r"isa:([^,\n]*)", text))                     # oneDNN's info line
    mkl = set(re.findall(r"MKL_VERBOSE .*? architecture (.*?), Lnx", text))   # MKL's first line
    assert isas or mkl, f"{name}: no oneDNN or MKL reported itself"
    for isa in isas:
        assert "AVX2" in isa and "512" not in isa, f"{name}: oneDNN runs {isa!r} under the caps"
    for isa in mkl:
        assert "AVX2" in isa and "512" not in isa, f"{name}: MKL runs {isa!r} under the caps"


def test_bf16_hardware_reads_the_flags():
    assert bf16_hardware({"avx2", "fma"}) == ""
    assert bf16_hardware({"avx512f", "avx512_bf16"}) == "AVX512-BF16"
    assert bf16_hardware({"avx512_bf16", "amx_bf16", "amx_tile"}) == "AMX-BF16"


def test_the_makefile_caps_are_the_runtime_caps():
    """``make test-avx2`` sets exactly common.runtime.AVX2_CAPS (one list, checked above)."""
    text = open(os.path.join(ROOT, "Makefile")).read()
    line = re.search(r"^AVX2_CAPS := (.*)$", text, re.M).group(1)
    assert dict(kv.split("=") for kv in line.split()) == AVX2_CAPS


def test_bf16_advice_follows_the_cpu():
    """``--amp bf16`` on a CPU says what bf16 is there: the CPU's own arithmetic, or emulation."""
    from cli.train import bf16_advice
    assert "AMX-BF16" in bf16_advice({"avx512f", "avx512_bf16", "amx_bf16"})
    assert "AVX512-BF16" in bf16_advice({"avx512f", "avx512_bf16"})
    slow = bf16_advice({"avx2", "fma"})
    assert slow.startswith("warning: ") and "emulated" in slow and "8 to 16 times slower than float32" in slow
    assert not bf16_advice({"avx512f", "avx512_bf16"}).startswith("warning")     # no warning with bf16 arithmetic
