"""The command a failing gate points at: SURE with quantization-aware training against the quantizers that failed.

Why: a user whose 4-bit recovery items fail asks "how do I fix my model?". The pytest summary
answers with one runnable ``unlearn-assert unlearn`` command: SURE (a larger learning rate on the most
salient modules, so that the weights leave their 4-bit cells), with the quantizers whose recovery items
failed (4 bits or fewer) in ``--quant-aware``. Measured on the demo family (docs/quant-aware.md, recipe 4)
that command passed every 4-bit recovery item, bnb-fp4 (the format it trained against) included, and
kept 95% of the target's knowmem_r, where quantization-aware training without SURE failed bnb-fp4 and
cost utility. The recipe is the unlearned model's own when ``unlearn-assert unlearn`` made it (its
``unlearn_run.json``), else :data:`DEFAULT_RECIPE`. Changes, each stated in the line: an own recipe
without SURE gets SURE's measured settings (:data:`SURE_RECIPE`); a failing quantizer that cannot be
simulated exactly (GPTQ, AWQ, HQQ) is trained against the round-to-nearest grid of the same bits and
group; and a recipe that stores bf16 weights with a learning rate below :data:`BF16_MIN_LR` gets that
learning rate, because bf16 storage rounds smaller AdamW updates away (measured in docs/quant-aware.md:
at lr 2e-5 the quantization-aware model recovered as much under rtn-w4g64 as the plain one).

Torch-free: the summary is rendered on the pytest controller, which may never have imported torch.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .quant_aware_ids import is_quant_aware_id
from .settings import UnlearnSettings

if TYPE_CHECKING:  # pragma: no cover
    from ..render.schema import ReportDict

__all__ = [
    "BF16_MIN_LR",
    "DEFAULT_RECIPE",
    "SURE_RECIPE",
    "low_bit",
    "previous_settings",
    "remediation_command",
    "remediation_line",
]

#: SURE's settings as measured on the demo family of recipe 4 (docs/quant-aware.md): the 5% most salient modules at
#: lr 1e-4 for 200 steps of 33 per epoch, given in epochs so that the length scales with the user's forget set.
SURE_RECIPE: dict[str, Any] = {"sure": True, "sure_top": 0.05, "lr": 1e-4, "epochs": 6}
#: The recipe named when the unlearned model has no unlearn_run.json: NPO + KLR with bf16 weights and SURE's settings.
DEFAULT_RECIPE: dict[str, Any] = {"method": "npo_klr", "dtype": "bfloat16", **SURE_RECIPE}
#: The smallest learning rate whose AdamW updates bf16 weight storage keeps (docs/quant-aware.md, recipe v3).
BF16_MIN_LR = 5e-5
#: UnlearnSettings fields and their CLI flags, in the order the command lists them.
_FLAGS = (
    ("lr", "--lr"),
    ("batch_size", "--batch-size"),
    ("retain_batch_size", "--retain-batch-size"),
    ("max_length", "--max-length"),
    ("alpha", "--alpha"),
    ("beta", "--beta"),
    ("seed", "--seed"),
    ("dtype", "--dtype"),
    ("weight_decay", "--weight-decay"),
    ("sure_batches", "--sure-batches"),
)
_DEFAULTS = UnlearnSettings()


def _bits(qid: str) -> tuple[int | None, Any]:
    from ..errors import UnlearnAssertError
    from ..variants.quantizers import parse_quantizer_id

    try:
        spec = parse_quantizer_id(qid)
    except UnlearnAssertError:  # an attack id or a user's artifact name: not a quantizer
        return None, None
    return spec.bits, spec


def low_bit(qid: str) -> bool:
    """A quantizer id of 4 bits or fewer (attacks and artifact names are not quantizers)."""
    bits, _ = _bits(qid)
    return bits is not None and bits <= 4


def _simulated(qid: str) -> str:
    """``qid`` itself, or the rtn grid of its bits and group when it cannot be simulated exactly."""
    if is_quant_aware_id(qid):
        return qid
    _, spec = _bits(qid)
    return (
        f"rtn-w{spec.bits}" + (f"g{spec.group_size}" if spec.group_size else "") + ("" if spec.symmetric else "-asym")
    )


def previous_settings(model_dir: str | None) -> dict[str, Any] | None:
    """The ``settings`` of ``model_dir/unlearn_run.json`` (a model ``unlearn-assert unlearn`` made), else None."""
    if not model_dir:
        return None
    try:
        settings = json.loads((Path(model_dir) / "unlearn_run.json").read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return settings if isinstance(settings, dict) and settings.get("method") else None


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def remediation_command(
    failing: list[str], *, target: str, data: str, model: str | None, previous: Mapping[str, Any] | None = None
) -> tuple[str, list[str]]:
    """(the ``unlearn-assert unlearn`` command, what it changed in the recipe, one phrase each)."""
    simulated: list[str] = []
    replaced = []
    for q in failing:
        s = _simulated(q)
        if s != q:
            replaced.append(q)
        if s not in simulated:
            simulated.append(s)
    notes = []
    if replaced:
        notes.append(
            f"{', '.join(replaced)} cannot be simulated exactly, so it trains against the rtn grid "
            "of the same bits and group"
        )
    recipe: dict[str, Any] = dict(previous) if previous else dict(DEFAULT_RECIPE)
    lr = float(recipe.get("lr") or 0.0)
    if not recipe.get("sure"):  # the model's own recipe without SURE: SURE's measured settings replace its length
        recipe.update(SURE_RECIPE, steps=None, sure_threshold=None, lr=max(lr, SURE_RECIPE["lr"]))
        notes.append(
            f"SURE added as measured: the {SURE_RECIPE['sure_top']:.0%} most salient modules, "
            f"lr {_number(recipe['lr'])}, {SURE_RECIPE['epochs']} epochs"
        )
    elif recipe.get("dtype") == "bfloat16" and lr < BF16_MIN_LR:
        notes.append(f"lr raised from {_number(lr)} to {_number(BF16_MIN_LR)}: bf16 weights round smaller updates away")
        recipe["lr"] = BF16_MIN_LR
    for q in recipe.get("quant_aware") or ():
        if q not in simulated:
            simulated.append(q)
    out = f"{model.rstrip('/')}-sure-qa" if model and not model.startswith("demo:") else "unlearned-sure-qa"
    parts = [
        "unlearn-assert",
        "unlearn",
        "--method",
        str(recipe.get("method", "npo_klr")),
        "--quant-aware",
        ",".join(simulated),
        "--target",
        target,
        "--data",
        data,
        "--out",
        out,
    ]
    parts += (
        ["--epochs", str(recipe["epochs"])] if recipe.get("epochs") else ["--steps", str(recipe.get("steps") or 100)]
    )
    for field, flag in _FLAGS:
        value = recipe.get(field)
        if (
            value is not None
            and value != getattr(_DEFAULTS, field)
            and not (field == "sure_batches" and not recipe.get("sure"))
        ):
            parts += [flag, _number(value)]
    if recipe.get("sure"):
        parts.append("--sure")
        if recipe.get("sure_threshold") is not None:
            parts += ["--sure-threshold", _number(recipe["sure_threshold"])]
        elif recipe.get("sure_top") not in (None, 0.1):
            parts += ["--sure-top", _number(recipe["sure_top"])]
        if recipe.get("sure_lm_head"):
            parts.append("--sure-lm-head")
    weight = recipe.get("quant_aware_weight")
    if weight not in (None, 1.0):
        parts += ["--quant-aware-weight", _number(weight)]
    return " ".join(shlex.quote(p) for p in parts), notes


def remediation_line(report: ReportDict, model_dir: str | None = None) -> str | None:
    """When recovery items of a quantizer of 4 bits or fewer failed: one line naming the
    ``unlearn-assert unlearn --sure --quant-aware`` command that trains against exactly those quantizers
    (the recipe of ``model_dir``'s unlearn_run.json when ``unlearn-assert unlearn`` made it); else None."""
    from ..render.schema import report_metrics
    from ..render.terminal import quantizer_order, verdict_check, verdict_outcome, verdict_quantizer

    forget = {m["name"] for m in report_metrics(report) if m.get("role") == "forget"}
    failed = {
        str(verdict_quantizer(v))
        for v in report.get("verdicts", [])
        if verdict_outcome(v) == "failed" and verdict_check(v) in forget and low_bit(str(verdict_quantizer(v)))
    }
    failing = [q for q in quantizer_order(report) if q in failed]
    if not failing:
        return None
    provenance: dict[str, Any] = dict(cast(Any, report.get("provenance")) or {})
    models: dict[str, Any] = dict(provenance.get("models") or {})
    target = (models.get("target") or {}).get("path") or "TARGET_DIR"
    data = (provenance.get("data") or {}).get("path") or "DATA_DIR"
    model = model_dir or (models.get("unlearned") or {}).get("path")
    previous = previous_settings(model)
    command, notes = remediation_command(failing, target=target, data=data, model=model, previous=previous)
    recipe = "the model's own recipe" if previous else "the recipe measured in docs/quant-aware.md"
    return (
        f"unlearn-assert: to make forgetting hold under {', '.join(failing)}, unlearn again with SURE and "
        f"quantization-aware training ({'; '.join([recipe, *notes])}): {command}"
    )
