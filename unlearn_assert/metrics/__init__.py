"""MUSE's four metrics for one model on one MUSE-layout data set: ``evaluate(model, data)``.

Definitions are MUSE's to the letter (see DESIGN.md "Metric definitions" and the docstrings of
:mod:`.verbmem`, :mod:`.knowmem`, :mod:`.privleak`), so numbers can be set beside published MUSE
numbers; only the execution is faster (batched greedy decoding, a shared ICL-prefix KV cache,
batched scoring), and the tests and ``benchmarks/`` check it against a naive sequential
implementation. The submodules import torch lazily, so importing this package is cheap.

``privleak`` needs the AUC of a model retrained without the forget set. The caller computes it
with :func:`compute_auc` on the retrain model (source "retrain"), or takes it from
``--unlearn-retrain-auc`` (source "option"); without either we use 0.5 (source "default").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import REFERENCE_AUC_RANGE, reference_auc_ok
from ..errors import ConfigError
from ..names import METRICS
from ..plain import plain
from ..render.schema import MUSE_METRICS as MUSE_METRIC_SPECS
from .generation import eval_mode, model_parts
from .knowmem import KNOWMEM_MAX_NEW_TOKENS
from .privleak import MIN_K_RATIO
from .verbmem import VERBMEM_MAX_NEW_TOKENS

__all__ = [
    "AUC_SOURCES",
    "DEFAULT_REFERENCE_AUC",
    "METRICS",
    "METRIC_SETTINGS",
    "Evaluation",
    "compute_auc",
    "evaluate",
]

#: The settings that change metric numbers (MUSE's definitions); part of every cached result's key.
METRIC_SETTINGS: dict[str, Any] = {
    "verbmem_new_tokens": VERBMEM_MAX_NEW_TOKENS,
    "knowmem_new_tokens": KNOWMEM_MAX_NEW_TOKENS,
    "privleak": f"min-{round(MIN_K_RATIO * 100)}%",
    "rouge": "rougeL-f1-nostem",
}
#: What each metric's items are, as progress lines count them ("37/100 forget passages").
ITEM_NOUNS: dict[str, str] = {m["name"]: m["items"] for m in MUSE_METRIC_SPECS}
#: Where the reference (retrain) AUC came from.
AUC_SOURCES: tuple[str, ...] = ("retrain", "option", "default")
#: The reference AUC without a retrain model or option: a model that cannot tell forget from holdout.
DEFAULT_REFERENCE_AUC = 0.5


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`.

    ``values``: metric -> number (ROUGE x100 as MUSE; privleak in %). ``ci``: metric -> seeded
    bootstrap 95% interval on the same scale. ``samples``: metric -> per-sample records (id,
    prompt excerpt, generation, reference, score). ``extras``: AUCs (``auc``, ``auc_reference``,
    ``auc_reference_source``, ``attack_aucs``), split sizes ``n``, ``batch_size`` and ``seconds``
    per metric, ``prefix_cache`` and ``prefix_fallbacks`` of the KnowMem prefix reuse,
    ``over_context`` (prompts + new tokens beyond the context window, per generation metric) and
    ``privleak_truncated`` (texts cut to the window), ``time_split`` (per metric: seconds in
    ``prefill`` and ``decode`` forwards, or privleak's body ``forward``, and ``scoring``: the rest),
    and more.
    """

    values: dict[str, float]
    ci: dict[str, tuple[float, float]]
    samples: dict[str, list[dict[str, Any]]]
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: dicts, lists, str, int, float, bool, None (non-finite floats -> None)."""
        return {
            "values": plain(self.values),
            "ci": plain({k: list(v) for k, v in self.ci.items()}),
            "samples": plain(self.samples),
            "extras": plain(self.extras),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """Rebuild an evaluation from :meth:`to_dict` output (a cache entry)."""
        return cls(
            values={k: (float(v) if v is not None else float("nan")) for k, v in data.get("values", {}).items()},
            ci={k: (float(v[0]), float(v[1])) for k, v in data.get("ci", {}).items() if v and None not in v},
            samples=dict(data.get("samples", {})),
            extras=dict(data.get("extras", {})),
        )


# --------------------------------------------------------------------------- argument checks


def _metrics(metrics: Iterable[str] | str | None) -> list[str]:
    if metrics is None:
        return list(METRICS)
    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ConfigError(
            f"unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(METRICS)}"
        )
    return [m for m in METRICS if m in chosen]


def _data(data: Any) -> Any:
    if isinstance(data, (str, os.PathLike)):
        from ..data.muse import load_data

        return load_data(data)
    return data


def _items(data: Any, metric: str) -> int:
    """How many items a metric evaluates (privleak: forget and holdout texts), for progress lines."""
    if metric == "privleak":
        return len(data.privleak_forget) + len(data.privleak_holdout)
    if metric == "verbmem_f":
        return len(data.verbmem_forget)
    return len(data.knowmem_forget_qa if metric == "knowmem_f" else data.knowmem_retain_qa)


def _reference(retrain_auc: float | None, source: str | None) -> tuple[float, str]:
    if source is not None and source not in AUC_SOURCES:
        raise ConfigError(f"unknown retrain AUC source {source!r}; use one of {', '.join(AUC_SOURCES)}")
    if retrain_auc is None:
        if source not in (None, "default"):
            raise ConfigError(f"retrain AUC source {source!r} given without a retrain AUC; pass retrain_auc as well")
        return DEFAULT_REFERENCE_AUC, "default"
    try:
        value = float(retrain_auc)
    except (TypeError, ValueError):
        value = float("nan")
    if not reference_auc_ok(value):
        raise ConfigError(
            f"retrain AUC must be a number in {REFERENCE_AUC_RANGE} (privleak divides by it), got {retrain_auc!r}; "
            "pass e.g. --unlearn-retrain-auc 0.48"
        )
    return value, source or "option"


# --------------------------------------------------------------------------- entry points


def compute_auc(
    model: Any,
    data: Any,
    *,
    batch_size: int | str | None = None,
    max_samples: int | None = None,
    max_length: int | None = None,
) -> float:
    """The Min-40% forget-vs-holdout AUC of ``model`` alone: evaluate the retrain model with this
    and pass the result to :func:`evaluate` as ``retrain_auc`` (source "retrain")."""
    from .generation import resolve_batch_size
    from .privleak import privleak_scores

    hf, tokenizer = model_parts(model, "evaluate")
    data = _data(data).limited(max_samples)
    with eval_mode(hf):
        scores = privleak_scores(
            hf,
            tokenizer,
            data.privleak_forget,
            data.privleak_holdout,
            batch_size=resolve_batch_size(batch_size),
            max_length=max_length,
        )
    return scores.auc


def evaluate(
    model: Any,
    data: Any,
    metrics: Iterable[str] | str | None = None,
    batch_size: int | str | None = None,
    max_samples: int | None = None,
    retrain_auc: float | None = None,
    retrain_auc_source: str | None = None,
    seed: int = 0,
    *,
    max_length: int | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] | None = None,
    truncate: bool = False,
) -> Evaluation:
    """Compute MUSE metrics for ``model`` (a LoadedModel or quantized view) on ``data`` (a MuseData
    or a MUSE-layout directory).

    ``metrics``: subset of :data:`METRICS` (None = all). ``batch_size``: sequences per forward pass
    (None/"auto" = the largest that fits memory, up to 64). ``max_samples``: first N items of every
    split. ``retrain_auc``/``retrain_auc_source``: the reference AUC for privleak and where it came
    from ("retrain" or "option"; 0.5 and "default" when absent). ``seed``: bootstrap seed.
    ``max_length``: privleak's context window override (default: the model config's). ``truncate``: a
    verbmem or knowmem prompt beyond the context window keeps its end (privleak's texts are cut to the
    window either way); each cut item's record carries ``truncation``, ``extras["truncated"]`` counts them.
    ``progress``: receives a line on a metric that runs longer than 30 s, at most one per 30 s: the
    items done, the time so far and the expected remainder (:mod:`.progress`; ``clock``: seconds,
    ``time.monotonic`` by default, injectable for tests).
    """
    from .generation import ignored_generation_settings, resolve_batch_size
    from .knowmem import knowmem
    from .privleak import privleak, privleak_scores
    from .progress import Meter
    from .stats import bootstrap_auc_ci, bootstrap_mean_ci
    from .verbmem import verbmem_f

    chosen = _metrics(metrics)
    hf, tokenizer = model_parts(model, "evaluate")
    data = _data(data).limited(max_samples)
    bs = resolve_batch_size(batch_size)
    reference, source = _reference(retrain_auc, retrain_auc_source)

    values: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    extras: dict[str, Any] = {
        "n": {},
        "batch_size": {},
        "seconds": {},
        "time_split": {},
        "prefix_cache": {},
        "prefix_fallbacks": 0,
        "over_context": {},
        "truncated": {},
        "seed": seed,
        "max_samples": max_samples,
        "generation_config_ignored": ignored_generation_settings(hf),
        "model_fingerprint": getattr(model, "fingerprint", None),
        "data_fingerprint": getattr(data, "fingerprint", None),
    }
    with eval_mode(hf):
        for metric in chosen:
            start = time.perf_counter()
            meter = Meter(progress, metric, _items(data, metric), ITEM_NOUNS[metric], clock=clock)
            if metric == "privleak":
                scores = privleak_scores(
                    hf,
                    tokenizer,
                    data.privleak_forget,
                    data.privleak_holdout,
                    batch_size=bs,
                    max_length=max_length,
                    meter=meter,
                )
                values[metric] = privleak(scores.auc, reference)
                forget_member = [-v["min_40"] for v in scores.forget]
                holdout_member = [-v["min_40"] for v in scores.holdout]
                ci[metric] = bootstrap_auc_ci(
                    forget_member, holdout_member, seed=seed, key=metric, transform=lambda auc: privleak(auc, reference)
                )
                samples[metric] = scores.samples
                extras.update(
                    auc=scores.auc,
                    auc_reference=reference,
                    auc_reference_source=source,
                    attack_aucs=dict(scores.aucs),
                    privleak_truncated=scores.extras["truncated"],
                    privleak_context=scores.extras["context"],
                )
                extras["n"].update(
                    privleak_forget=len(data.privleak_forget), privleak_holdout=len(data.privleak_holdout)
                )
                extras["batch_size"][metric] = scores.extras["batch_size"]
                extras["truncated"][metric] = scores.extras["truncated"]
                split_seconds = dict(scores.extras["seconds_split"])
            else:
                if metric == "verbmem_f":
                    result = verbmem_f(
                        hf, tokenizer, data.verbmem_forget, batch_size=bs, meter=meter, truncate=truncate
                    )
                    extras["n"]["verbmem_forget"] = len(data.verbmem_forget)
                else:
                    split = "forget" if metric == "knowmem_f" else "retain"
                    qa, icl = getattr(data, f"knowmem_{split}_qa"), getattr(data, f"knowmem_{split}_icl")
                    result = knowmem(hf, tokenizer, qa, icl, batch_size=bs, meter=meter, truncate=truncate)
                    extras["n"][f"knowmem_{split}_qa"] = len(qa)
                    extras["prefix_cache"][metric] = {
                        "prefix_tokens": result.extras["prefix_tokens"],
                        "fallbacks": result.extras["prefix_fallbacks"],
                        "icl_pairs": result.extras["icl_pairs"],
                    }
                    extras["prefix_fallbacks"] += result.extras["prefix_fallbacks"]
                values[metric] = result.value
                ci[metric] = bootstrap_mean_ci(result.scores, seed=seed, key=metric)
                samples[metric] = result.samples
                extras["batch_size"][metric] = result.extras["batch_size"]
                extras["over_context"][metric] = result.extras["over_context"]
                extras["truncated"][metric] = result.extras["truncated"]
                split_seconds = dict(result.extras["seconds_split"])
            extras["seconds"][metric] = time.perf_counter() - start
            # where the time went: forwards (prefill/decode, or privleak's body forward) and the
            # rest (lm_head + statistics for privleak, decoding text + ROUGE for generation)
            split_seconds["scoring"] = extras["seconds"][metric] - sum(
                v for k, v in split_seconds.items() if k != "scoring"
            )
            extras["time_split"][metric] = split_seconds
    return Evaluation(values=values, ci=ci, samples=samples, extras=extras)
