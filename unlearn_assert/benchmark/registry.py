"""The benchmarks that exist, by name: pure data, so that ``--unlearn-benchmark`` is validated while pytest
parses options, without importing any benchmark's code."""

from __future__ import annotations

from typing import Final

__all__ = ["AUTO", "BENCHMARKS", "METRIC_NAMES", "all_metric_names"]

#: ``--unlearn-benchmark auto``: the first benchmark whose layout the data directory is in
AUTO: Final = "auto"
#: name -> "module:Class", most specific layout first (``auto`` tries them in this order).
BENCHMARKS: dict[str, str] = {
    "muse": "unlearn_assert.benchmark.muse:MuseBenchmark",
}
#: each benchmark's metric names (what budget keys may name; the benchmark's own specs are the truth, and a
#: test checks the two agree)
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "muse": ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"),
}


def all_metric_names() -> tuple[str, ...]:
    """Every metric name of every benchmark, once each, in registry order."""
    return tuple(dict.fromkeys(m for names in METRIC_NAMES.values() for m in names))
