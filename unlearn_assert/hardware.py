"""What the CPU really computes with: the kernel level torch dispatches to and whether bf16 is native.

Why it exists: on a CPU without native bf16 (AVX512-BF16 or AMX on x86, the bf16 extension on ARM)
torch emulates every bf16 matmul, 10-30x slower than float32 (measured on an AVX2-only EPYC:
11.5x for one matmul, 28x for a training step). ``--unlearn-dtype auto`` and the demo's training
therefore ask this module, not ``/proc/cpuinfo``: what counts is what torch and oneDNN will use,
and both can be limited below the hardware (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``), which
is exactly how an AVX512 machine is made to behave like an AVX2-only one.

The check is three queries, all cheap and none timed: the hardware (cpuinfo through
``torch.cpu``), oneDNN's own bf16 query (which honours ``ONEDNN_MAX_CPU_ISA``), and the ISA cap
itself (oneDNN also reports bf16 "supported" on plain AVX512, where it is emulated). Torch is
imported inside the functions, so importing this module stays free.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

__all__ = ["MACHINE_KEY", "compute_info", "machine_facts", "native_bf16", "onednn_isa_cap"]

#: oneDNN ISA names (``ONEDNN_MAX_CPU_ISA`` values) at which bf16 dot products run in hardware.
_NATIVE_BF16_ISAS = frozenset(
    {
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX10_1_512",
        "AVX512_CORE_AMX",
        "AVX10_1_512_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
        "ALL",
        "DEFAULT",
    }
)
_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def onednn_isa_cap() -> str | None:
    """The ISA cap set for oneDNN (upper case), or None when none is set."""
    for name in _ISA_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value.upper()
    return None


def _hardware_bf16() -> bool:
    import torch

    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        cpu: Any = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
    # ARM (and anything else): oneDNN's query is cpuinfo's bf16 flag there.
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@lru_cache(maxsize=1)
def _info() -> tuple[tuple[str, Any], ...]:
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability())
    hardware = _hardware_bf16()
    onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    cap = onednn_isa_cap()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    native = hardware and onednn and (cap is None or cap in _NATIVE_BF16_ISAS)
    if x86:  # torch's own kernels (elementwise, reductions) must also run at the AVX512 level
        native = native and capability.startswith("AVX512")
    return (
        ("cpu_capability", capability),
        ("native_bf16", native),
        ("hardware_bf16", hardware),
        ("onednn_bf16", onednn),
        ("onednn_max_cpu_isa", cap),
        ("machine", platform.machine()),
        ("threads", torch.get_num_threads()),
    )


#: the key of :func:`machine_facts` in a process's execution record (taken out before the report is written)
MACHINE_KEY = "machine"


def machine_facts() -> dict[str, Any]:
    """What the provenance records of the process that computed the rows: its GPU (None on CPU) and
    :func:`compute_info`. Imports torch; a process that never imported it (an xdist controller) takes these facts
    from its workers' execution records instead (:func:`unlearn_assert.engine.report.provenance`)."""
    import torch

    return {"cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "cpu": compute_info()}


def native_bf16() -> bool:
    """True when bf16 matmuls run in hardware here, as torch is configured in this process."""
    return bool(dict(_info())["native_bf16"])


def compute_info() -> dict[str, Any]:
    """The CPU facts that decide the compute dtype, as plain JSON data for provenance.

    ``{"cpu_capability": "AVX512", "native_bf16": True, "hardware_bf16": True, "onednn_bf16": True,
    "onednn_max_cpu_isa": None, "machine": "x86_64", "threads": 2}``. ``cpu_capability`` is what
    ``torch.backends.cpu.get_cpu_capability()`` reports (after ``ATEN_CPU_CAPABILITY``)."""
    info = dict(_info())
    import torch

    info["threads"] = torch.get_num_threads()  # may change after the first call
    return info
