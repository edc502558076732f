"""The benchmarks that exist, by name: pure data, so that ``--unlearn-benchmark`` is validated while pytest
parses options, without importing any benchmark's code."""

from __future__ import annotations

from typing import Final

__all__ = ["AUTO", "BENCHMARKS", "METRIC_NAMES", "TOFU_FORGET_SPLITS", "all_metric_names"]

#: ``--unlearn-benchmark auto``: the first benchmark whose layout the data directory is in
AUTO: Final = "auto"
#: name -> "module:Class", most specific layout first (``auto`` tries them in this order).
BENCHMARKS: dict[str, str] = {
    "tofu": "unlearn_assert.benchmark.tofu:TofuBenchmark",
    "documents": "unlearn_assert.benchmark.documents:DocumentsBenchmark",
    "mc": "unlearn_assert.benchmark.mc:McBenchmark",
    "muse": "unlearn_assert.benchmark.muse:MuseBenchmark",
}
#: TOFU's forget splits (``--unlearn-forget-split``); forget10 is open-unlearning's default
TOFU_FORGET_SPLITS: tuple[str, ...] = ("forget01", "forget05", "forget10")
#: each benchmark's metric names (what budget keys may name; the benchmark's own specs are the truth, and a
#: test checks the two agree)
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "tofu": (
        "forget_prob",
        "forget_rouge",
        "forget_truth_ratio",
        "model_utility",
        "forget_quality",
        "retain_prob",
        "retain_rouge",
        "retain_truth_ratio",
        "ra_prob_normalised",
        "ra_rouge",
        "ra_truth_ratio",
        "wf_prob_normalised",
        "wf_rouge",
        "wf_truth_ratio",
    ),
    "documents": ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"),
    "mc": ("forget_acc", "utility_acc", "forget_acc_norm", "utility_acc_norm"),
    "muse": ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"),
}


def all_metric_names() -> tuple[str, ...]:
    """Every metric name of every benchmark, once each, in registry order."""
    return tuple(dict.fromkeys(m for names in METRIC_NAMES.values() for m in names))
