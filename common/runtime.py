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


def cpu_vendor() -> str:
    """The CPU vendor string of /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``), or ''."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set:
    """The CPU's instruction-set flags (``avx2``, ``avx512f``, ``avx512_bf16``, ...), or an empty set."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def framework_env(backend: str) -> Dict[str, str]:
    """The variables a backend sets before its framework loads, on this machine.

    Paddle: its MKL takes a slow generic code path on AMD CPUs; ``MKL_DEBUG_CPU_TYPE=5``
    selects the AVX2 kernels (MKL reads it once, when it loads).  Intel CPUs are left alone:
    there MKL picks its best path itself.
    """
    if backend == "paddle" and cpu_vendor() == "AuthenticAMD":
        return {"MKL_DEBUG_CPU_TYPE": "5"}
    return {}


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def set_default_env(values: Mapping[str, str]) -> Dict[str, str]:
    """Set each variable the user has not set (unless switched off); returns those set."""
    if not enabled():
        return {}
    applied = {k: str(v) for k, v in values.items() if k not in os.environ}
    os.environ.update(applied)
    return applied
