"""Where the rows of a ``pytest -n N`` run are computed: all on one worker, or spread over the workers.

Why: users run their whole suite with ``-n auto``, so the gate's items land on every worker, and each worker
that computes a row first imports torch and the quantization libraries and loads the models. For the smallest
rows that fixed cost is as much as the parallel rows win, at more CPU, while larger rows win with spreading
(docs/scale-out.md has the measurements). So the controller decides once, before any worker starts, from
what it read at option time (:class:`unlearn_assert.engine.footprint.Footprint`):

* with at least as many visible GPUs as workers, every worker takes its own GPU and the rows are spread;
* otherwise the rows' cost decides: spread when their forward FLOPs (``2 x params x tokens x rows``) reach
  :data:`CROSSOVER_FLOPS`, else the built-in suite's items go to one worker as one work unit, which then
  takes all the cores' threads (:func:`make_scheduler`: pytest-xdist's ``loadgroup`` scheduler, the gate's
  items one group, every other test a unit of its own as under ``load``).

Why a scheduler and not an ``xdist_group`` mark with ``--dist loadgroup``: a worker re-parses the command
line (it would not see a ``--dist`` the plugin chose), and pytest-xdist 3.8 gives a marked item its group by
rewriting ``item._nodeid``, which pytest 9.2 no longer reads (its node ids live in ``_id``), so the mark
groups nothing here. The controller's scheduler sees every node id, and the suite's are known.

The user's ``--dist`` wins: only xdist's default (``-n`` without ``--dist``) and ``loadgroup`` are scheduled
this way; ``loadscope`` and ``loadfile`` keep the built-in suite (one module) on one worker by themselves;
``load``, ``worksteal`` and ``each`` given explicitly are left as they are. Items of your own tests that use
the gate's fixtures are scheduled as your ``--dist`` says. ``provenance.execution`` records the decision and
its numbers (``placement``). ``benchmarks/xdist_crossover.py`` times serial against ``-n 2`` at several sizes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CROSSOVER_FLOPS",
    "GROUP",
    "WORKERINPUT_KEY",
    "Placement",
    "cuda_visible",
    "decide",
    "is_suite_item",
    "make_scheduler",
    "visible_gpus",
]

#: Forward FLOPs of a run's rows from which spreading them over two CPU workers is faster than one worker
#: (docs/scale-out.md, ``benchmarks/xdist_crossover.py``, 2 cores): at 6.3 GFLOP the two tie in wall time (10.2 s
#: against 10.3 s) and spreading costs 40% more CPU; from 25.1 GFLOP up spreading wins (12.1 s against 13.4 s; 52.6
#: GFLOP: 14.2 s against 17.2 s; the 135M-parameter run's 14,519 GFLOP: 166 s against 240 s serially).
CROSSOVER_FLOPS = 2.0e10
#: The work unit the built-in suite's items share when they run on one worker.
GROUP = "unlearn-assert"
#: The built-in suite's test function (``suites/test_budget.py``).
SUITE_TEST = "test_budget"
#: The key of the controller's decision in each worker's ``workerinput``.
WORKERINPUT_KEY = "unlearn_assert_placement"
#: ``--dist`` values under which the gate places its items itself (``no``: the user gave none, xdist's default).
PLACED = ("no", "loadgroup")
#: ``--dist`` values that keep one module, and so the built-in suite, on one worker by themselves.
BY_MODULE = ("loadscope", "loadfile")


@dataclass(frozen=True)
class Placement:
    """The decision: ``mode`` "serial", "one worker" or "spread"; ``row_workers``: processes that compute rows
    (a worker's torch threads are the cores divided by it); ``dist``: the ``--dist`` the run uses ("load" for
    ``-n`` alone); ``scheduled``: True when the gate's scheduler (:func:`make_scheduler`) puts the suite on one
    worker; ``gpus``: GPUs the workers use; ``gflop``: the rows' estimated forward GFLOP (None when not counted)."""

    mode: str
    reason: str
    workers: int
    row_workers: int
    dist: str
    gpus: int
    gflop: float | None = None
    scheduled: bool = False
    crossover_gflop: float = CROSSOVER_FLOPS / 1e9

    @property
    def grouped(self) -> bool:
        return self.mode == "one worker"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Placement:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def visible_gpus(device: str, devices: tuple[int, ...]) -> int:
    """The GPUs the workers of a run can use, without importing torch (the controller computes no row):
    ``--unlearn-devices`` names them; ``--unlearn-device`` cpu uses none, ``cuda:N`` or ``mps`` one; ``auto`` and
    ``cuda`` the NVIDIA GPUs the driver lists (``/proc/driver/nvidia/gpus``), as many as ``CUDA_VISIBLE_DEVICES``
    lets through. torch's own count when torch is already imported."""
    if devices:
        return len(devices)
    if device == "cpu":
        return 0
    if device not in ("auto", "cuda"):
        return 1
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    listed = Path("/proc/driver/nvidia/gpus")
    return cuda_visible(len(list(listed.iterdir())) if listed.is_dir() else 0, os.environ.get("CUDA_VISIBLE_DEVICES"))


def cuda_visible(physical: int, mask: str | None) -> int:
    """How many of ``physical`` GPUs ``CUDA_VISIBLE_DEVICES=mask`` lets a process see (None: all of them); CUDA
    stops reading the list at the first entry that names no device."""
    if mask is None:
        return physical
    allowed = 0
    for entry in mask.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        allowed += 1
    return min(allowed, physical)


def decide(workers: int, user_dist: str, gpus: int, flops: float | None) -> Placement:
    """The placement of a run with ``workers`` xdist workers (0: serial); ``user_dist``: the ``--dist`` the user
    gave ("no" when none), ``gpus``: :func:`visible_gpus`, ``flops``: the rows' forward FLOPs (None: unknown)."""
    gflop = None if flops is None else round(flops / 1e9, 1)
    dist = "load" if user_dist == "no" else user_dist  # xdist's own default for -n alone
    if workers <= 1:
        if workers == 0:
            return Placement("serial", "no xdist workers", 0, 1, "no", gpus, gflop)
        return Placement("one worker", "one xdist worker", workers, 1, dist, gpus, gflop)
    if user_dist not in PLACED + BY_MODULE:
        return Placement("spread", f"your --dist {user_dist} places the items", workers, workers, dist, gpus, gflop)
    if user_dist in BY_MODULE:
        return Placement(
            "one worker",
            f"your --dist {user_dist} keeps the built-in suite's module on one worker",
            workers,
            1,
            dist,
            gpus,
            gflop,
        )
    if gpus >= workers:
        return Placement(
            "spread", f"{gpus} GPUs for {workers} workers: one GPU per worker", workers, workers, dist, gpus, gflop
        )
    if flops is not None and flops >= CROSSOVER_FLOPS:
        return Placement(
            "spread",
            f"rows of {gflop:g} GFLOP reach the crossover of {CROSSOVER_FLOPS / 1e9:g} GFLOP: parallel rows win",
            workers,
            workers,
            dist,
            gpus,
            gflop,
        )
    size = "an unknown size" if gflop is None else f"{gflop:g} GFLOP"
    return Placement(
        "one worker",
        f"rows of {size}, below the crossover of {CROSSOVER_FLOPS / 1e9:g} GFLOP: one more "
        "process loading the models costs more than it wins",
        workers,
        1,
        dist,
        gpus,
        gflop,
        scheduled=True,
    )


def is_suite_item(nodeid: str) -> bool:
    """True for an item of the built-in suite (``.../test_budget.py::test_budget[...]``; pytest 9 gives a module
    outside the rootdir an empty path, ``::test_budget[...]``)."""
    path, _, name = nodeid.rpartition("::")
    return name.startswith(SUITE_TEST + "[") and (path == "" or path.endswith(SUITE_TEST + ".py"))


def make_scheduler(config: Any, log: Any) -> Any:
    """pytest-xdist's ``loadgroup`` scheduler with the built-in suite's items as one work unit (one worker runs
    them all) and every other item its own unit, or its ``xdist_group`` as ``loadgroup`` gives it."""
    from xdist.scheduler import LoadGroupScheduling

    class GateScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return GROUP if is_suite_item(nodeid) else str(super()._split_scope(nodeid))

    return GateScheduling(config, log)
