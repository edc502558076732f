"""How one process of a parallel run uses the machine: its torch thread budget and its device.

Why: ``pytest -n N`` (pytest-xdist) starts N worker processes, and each one would run torch with as
many threads as the machine has cores; N x cores threads on the cores collapse (measured on 2 cores:
``-n 2`` took 153 s against 17 s serially). And on a machine with N GPUs every worker would load
its models on ``cuda:0``. So a worker takes ``max(1, cores // workers)`` intra-op threads and one
inter-op thread, unless the user set ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``), and worker i
takes GPU i. Serial runs are left as they are. pytest-xdist itself does the parallelism; this
module only divides the machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..hardware import MACHINE_KEY, machine_facts

__all__ = [
    "apply_thread_budget",
    "divide_machine",
    "set_torch_threads",
    "thread_budget",
    "torch_threads",
    "worker_device",
    "worker_index",
]

#: Environment variables with which a user fixes the thread count themselves.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_budget(workers: int, available: int | None = None) -> int:
    """Intra-op threads per worker: the cores divided among the workers, at least one."""
    return max(1, (available if available is not None else cores()) // max(1, workers))


def worker_index(worker_id: str | None) -> int | None:
    """``gw3`` -> 3 (xdist's worker ids); None outside a worker."""
    match = re.fullmatch(r"gw(\d+)", worker_id or "")
    return int(match[1]) if match else None


def worker_device(device: str, devices: tuple[int, ...], index: int | None, device_count: int) -> str:
    """The device a worker loads its models on: GPU ``devices[i % len]`` when ``--unlearn-devices``
    names them, else with ``--unlearn-device=auto`` and several visible GPUs GPU ``i % count``;
    otherwise ``device`` unchanged (an explicit device wins, and a serial run has no index)."""
    if index is None:
        return device
    if devices:
        return f"cuda:{devices[index % len(devices)]}"
    if device == "auto" and device_count > 1:
        return f"cuda:{index % device_count}"
    return device


def apply_thread_budget(workers: int) -> dict[str, Any]:
    """Set this worker's torch threads to its share of the cores (see the module docstring) and
    say what was chosen, for the report's provenance."""
    import torch

    user = next((var for var in THREAD_VARS if os.environ.get(var)), None)
    if workers <= 1 or user is not None:
        return {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
            "set_by": f"{user}={os.environ[user]}" if user else "torch's default",
        }
    set_torch_threads(thread_budget(workers), inter_op=1)
    return {
        "intra_op": torch.get_num_threads(),
        "inter_op": torch.get_num_interop_threads(),
        "set_by": f"unlearn-assert: {cores()} cores // {workers} workers",
    }


def set_torch_threads(intra_op: int, inter_op: int | None = None) -> int:
    """Set this process's torch threads (the one place that does); return the intra-op count it had. The
    inter-op count can change only before inter-op work starts, so a late request leaves it as it is."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(intra_op)
    if inter_op is not None:
        try:
            torch.set_num_interop_threads(inter_op)
        except RuntimeError:  # inter-op work already started in this process: it can no longer change
            pass
    return before


@contextmanager
def torch_threads(intra_op: int | None = None) -> Iterator[None]:
    """``intra_op`` torch threads for the block (None: as they are), and the count found before it afterwards,
    whatever the block set."""
    import torch

    before = torch.get_num_threads()
    if intra_op is not None:
        set_torch_threads(intra_op)
    try:
        yield
    finally:
        set_torch_threads(before)


def divide_machine(
    device: str,
    devices: tuple[int, ...],
    workerinput: Mapping[str, Any] | None,
    placement: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """This process's device and threads in a run (``workerinput``: pytest-xdist's, None when serial),
    and the record of both for the report's provenance. ``placement``: the run's
    :class:`~.placement.Placement` as a dict: the cores are divided among the processes that compute rows
    (all of them on one worker when the rows are small), and the record carries it."""
    import torch

    worker_id = (workerinput or {}).get("workerid")
    workers = int((workerinput or {}).get("workercount", 1) or 1)
    sharing = int(placement["row_workers"]) if placement else workers
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    chosen = worker_device(device, devices, worker_index(worker_id), count)
    record = {
        "worker": worker_id or "main",
        "workers": workers,
        "threads": apply_thread_budget(sharing),
        "device": chosen,
    }
    if placement:
        record["placement"] = dict(placement)
    # the machine as this process sees it, for a controller that never imports torch (engine.report.provenance
    # takes it out of the execution record)
    record[MACHINE_KEY] = machine_facts()
    return chosen, record
