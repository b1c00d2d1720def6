"""What a number was measured on: CPU model, cores, the kernels torch dispatches to, versions.

Run reports and benchmark reports record it, so that a result that does not reproduce can be
checked against the machine and library that produced it.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str:
    """The vector ISA torch's CPU kernels use here (e.g. ``AVX512``), or ``unknown``."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX): only then does bf16
    autocast speed training up; elsewhere it is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def describe_machine() -> dict:
    """A JSON-ready description of this machine and of the libraries that compute on it."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cpu_capability": cpu_capability(),
        "gpus": gpus,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }


def format_machine(m: dict) -> str:
    """A :func:`describe_machine` dict as one line: ``AMD EPYC (2 cores, torch kernels AVX512), no GPU``."""
    gpu = ", ".join(m.get("gpus") or []) or "no GPU"
    return f"{m['cpu']} ({m['cores']} cores, torch kernels {m['cpu_capability']}), {gpu}"


def machine_line() -> str:
    """This machine as one line (:func:`format_machine`)."""
    return format_machine(describe_machine())


__all__ = ["cpu_name", "cpu_capability", "describe_machine", "format_machine", "machine_line", "native_bf16"]
