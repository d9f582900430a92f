"""Process settings a backend applies before its framework loads: environment variables that
a library reads once, when it starts (MKL's CPU dispatch, thread pools).

A backend calls :func:`set_default_env` before importing its framework: a variable is set
only where the user has not set it, and what was set is returned for the run record
(``bk.settings()``).  ``GOOGLENET_FRAMEWORK_DEFAULTS=0`` switches them all off (to
measure a framework as it ships).
"""
from __future__ import annotations

import os
from typing import Dict, Mapping

SWITCH = "GOOGLENET_FRAMEWORK_DEFAULTS"


def _cpuinfo(field: str) -> str:
    """The first value of ``field`` in /proc/cpuinfo, or ''."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The CPU vendor string (``GenuineIntel``, ``AuthenticAMD``), or ''."""
    return _cpuinfo("vendor_id")


def cpu_model() -> str:
    """The CPU's model name, or ''."""
    return _cpuinfo("model name")


#: the flags that decide which kernels the frameworks' CPU libraries run (and so their
#: speed and their float32 rounding): named beside every figure the project publishes
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8")


def cpu_summary() -> str:
    """One line for run records and reports: the CPU, its instruction-set flags that matter
    here (:data:`ISA_FLAGS`), and any caps in effect, e.g. ``'AMD EPYC 9B14; avx2 fma
    avx512f avx512_bf16; caps ONEDNN_MAX_CPU_ISA=AVX2 ...'``."""
    flags = cpu_flags()
    line = f"{cpu_model() or 'unknown CPU'}; " + (" ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2")
    caps = isa_caps_in_effect()
    return line + (f"; caps {caps}" if caps else "")


def cpu_flags() -> set:
    """The CPU's instruction-set flags (``avx2``, ``avx512f``, ``avx512_bf16``, ...), or an empty set."""
    return set(_cpuinfo("flags").split())


#: Variables that cap the instruction set the frameworks' CPU libraries pick at run time, at
#: AVX2 (e.g. to test an AVX-512 machine's numbers as an AVX2 machine computes them;
#: ``make test-avx2``).  Checked against the installed versions by tests/test_isa.py:
#: oneDNN 3.x (PyTorch 2.13, TensorFlow 2.15) reads ONEDNN_MAX_CPU_ISA, MXNet 1.9.1's
#: oneDNN 2.4 reads DNNL_MAX_CPU_ISA; MKL (PyTorch, Paddle) MKL_ENABLE_INSTRUCTIONS;
#: PyTorch's own vectorised kernels ATEN_CPU_CAPABILITY; OpenBLAS (MXNet, NumPy)
#: OPENBLAS_CORETYPE.  Code compiled for one instruction set (TensorFlow's Eigen kernels,
#: Paddle's own JIT kernels) has no such switch.
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "ATEN_CPU_CAPABILITY": "avx2", "OPENBLAS_CORETYPE": "Haswell"}


def isa_caps_in_effect() -> str:
    """The instruction-set caps of :data:`AVX2_CAPS` set in this process, as ``NAME=value``."""
    return " ".join(f"{k}={os.environ[k]}" for k in AVX2_CAPS if os.environ.get(k))


def bf16_hardware(flags=None) -> str:
    """The CPU's bfloat16 arithmetic (``'AMX-BF16'``, ``'AVX512-BF16'``), or '' where bf16
    is converted to float32 and back around float32 arithmetic (emulated: slower)."""
    flags = cpu_flags() if flags is None else flags
    return "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""


def card_env(card) -> Dict[str, str]:
    """The variables a backend's card (``backends/<framework>/card.py``) asks for on this
    machine's CPU (its ``env``), before its framework loads."""
    return card.env(cpu_vendor())


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def set_default_env(values: Mapping[str, str]) -> Dict[str, str]:
    """Set each variable the user has not set (unless switched off); returns those set."""
    if not enabled():
        return {}
    applied = {k: str(v) for k, v in values.items() if k not in os.environ}
    os.environ.update(applied)
    return applied
