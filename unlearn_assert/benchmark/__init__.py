"""Benchmarks: what a row measures (see :mod:`.base` for the contract), and the registry of those that exist.

``--unlearn-benchmark auto`` picks the first benchmark in :data:`BENCHMARKS` whose ``detect`` accepts the
data directory, most specific first; a layout none accepts is one line that lists them. Each entry is
``"module:Class"``, imported only when the run uses it, so ``pytest --co`` imports no benchmark's code.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from .registry import AUTO, BENCHMARKS

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig
    from .base import Benchmark, MetricSpec

__all__ = [
    "AUTO",
    "BENCHMARKS",
    "benchmark_class",
    "benchmark_for",
    "clear_memos",
    "detect_benchmark",
    "judged_metrics",
]


def benchmark_class(name: str) -> Any:
    """The class registered as ``name``."""
    module, attr = BENCHMARKS[name].split(":")
    return getattr(import_module(module), attr)


def detect_benchmark(path: str) -> str:
    """The name of the benchmark whose layout ``path`` is in (one DataError line when none's is, or when a local
    path does not exist)."""
    if ":" not in path.split("/")[0] and not Path(path).expanduser().exists():  # not hf:..., lm-eval:..., a file
        raise DataError(
            f"data path '{path}' does not exist; pass a data directory (MUSE's, TOFU's, a documents or "
            "multiple-choice layout), hf:OWNER/NAME or lm-eval:TASK"
        )
    for name in BENCHMARKS:
        if benchmark_class(name).detect(path):
            return name
    raise DataError(
        f"data dir '{path}' is in no layout unlearn-assert reads ({', '.join(BENCHMARKS)}); "
        "see the README's data section, or pass --unlearn-benchmark to name one and see what it misses"
    )


def benchmark_for(run: RunConfig) -> Benchmark:
    """The run's benchmark, configured from its settings (``--unlearn-benchmark``, and each benchmark's own); with
    ``--unlearn-utility-tasks``, wrapped to measure those lm-eval tasks as more utility metrics
    (:mod:`.utility_tasks`)."""
    name = run.benchmark if run.benchmark != AUTO else detect_benchmark(str(run.data))
    benchmark: Benchmark = benchmark_class(name).from_run(run)
    if run.utility_tasks:
        from .utility_tasks import WithUtilityTasks

        return WithUtilityTasks.around(benchmark, run)  # type: ignore[return-value]
    return benchmark


def judged_metrics(benchmark: Benchmark) -> tuple[MetricSpec, ...]:
    """The metrics a run judges, in item order: every forget and utility metric, and each privacy metric whose
    reference exists in this run (privleak: a retrain model or --unlearn-retrain-auc)."""
    return tuple(
        m
        for m in benchmark.metrics
        if m.role in ("forget", "utility") or (m.role == "privacy" and benchmark.privacy(m.name).available)
    )


def clear_memos() -> None:
    """Forget the intervals the benchmarks memoized (a fresh process, for the performance benchmarks)."""
    for name in BENCHMARKS:
        module = import_module(BENCHMARKS[name].split(":")[0])
        for memo in getattr(module, "MEMOS", ()):
            memo.cache_clear()
