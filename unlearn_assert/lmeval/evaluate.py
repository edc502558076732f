"""Run lm-eval's ``simple_evaluate`` on a model that is already loaded, and return lm-eval's own results.

What is measured is whatever object the caller holds: a :class:`~unlearn_assert.models.LoadedModel`,
a quantized view (:func:`unlearn_assert.quant.quantized`), a relearned or artifact view (an
:class:`~unlearn_assert.engine.sources.Applied` view), or anything with ``.model`` (a causal LM
module) and ``.tokenizer``. It is wrapped in lm-eval's own ``HFLM`` (:func:`hflm`), the class lm-eval
uses for every Hugging Face model, and handed to ``simple_evaluate`` with ``log_samples=True``: the
prompts, the log-likelihoods and ``acc`` / ``acc_norm`` are lm-eval's, item by item.

**What HFLM assumes of a model it is given** (``lm_eval/models/huggingface.py``, ``HFLM.__init__`` with
a non-string ``pretrained``): inputs go to ``model.device`` (the first parameter's device: a model
dispatched over several devices takes its inputs there, as transformers' hooks expect); ``dtype``,
``device``, ``parallelize`` and the quantization options are ignored (the model is used as it is, so a
bnb / HQQ / dequantized view runs in the modules it has); the data-parallel setup is skipped (one
process). It calls ``model.eval()`` and ``model.tie_weights()``. Re-tying is skipped here
(:func:`keep_ties`): on a model loaded by transformers it is a no-op, and on anything else it would
change the caller's model, which other rows still measure, not only the copy lm-eval scores.

**Speed.** HFLM batches (``batch_size``; "auto" searches the largest that fits) and, with its default
``logits_cache``, groups the requests of a multiple-choice question whose choices are one token
given the question (WMDP's and MMLU's " A" ... " D"): one forward per question, not one per choice.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import require_lm_eval
from .tasks import LoadedTasks, TaskEntry, TaskSpec, load_tasks

__all__ = ["ItemResult", "TaskResult", "evaluate", "hflm", "keep_ties", "quiet_lm_eval", "quiet_run"]

#: simple_evaluate's arguments that evaluate() sets itself
_OWN = frozenset(
    {"model", "model_args", "tasks", "task_manager", "log_samples", "batch_size", "max_batch_size", "device"}
)


@dataclass(frozen=True)
class ItemResult:
    """One document of one lm-eval task, as lm-eval's per-sample log has it."""

    #: the leaf task (``wmdp_form_forget``, ``mmlu_anatomy``)
    task: str
    #: lm-eval's ``doc_id``: the document's index in the task's evaluated split
    doc_id: int
    #: lm-eval's filter name (``none`` for log-likelihood tasks)
    filter: str
    #: the gold answer, as ``doc_to_target`` gives it (a choice index for WMDP's form)
    target: Any
    #: lm-eval's per-document metric values (``acc``, ``acc_norm``, ...: 1.0 or 0.0 for accuracy)
    metrics: Mapping[str, Any]
    #: the log-likelihood of each choice given the prompt (multiple choice); empty for generation
    loglikelihoods: tuple[float, ...]
    #: lm-eval's hashes of the document and of the prompt (to check that two runs scored the same inputs)
    doc_hash: str
    prompt_hash: str

    @property
    def n_choices(self) -> int:
        return len(self.loglikelihoods)

    def score(self, metric: str = "acc") -> float:
        value = self.metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"lm-eval task '{self.task}' has no per-item number '{metric}'; it reports {', '.join(self.metrics)}"
            )
        return float(value)


@dataclass(frozen=True)
class TaskResult:
    """A task (or group) evaluated on one model: lm-eval's aggregate and every item."""

    #: the spec as the user gave it, and lm-eval's name of the task or group
    spec: str
    name: str
    #: lm-eval's ``results[name]``, keys as lm-eval writes them (``"acc,none"``, ``"acc_stderr,none"``, ``"alias"``...)
    aggregate: Mapping[str, Any]
    #: lm-eval's ``results`` of each leaf task (for a group: its members)
    subtasks: Mapping[str, Mapping[str, Any]]
    #: every item, ordered by (task, filter, doc_id): the same order for every model
    items: tuple[ItemResult, ...]
    #: lm-eval's config of each leaf task as evaluated, and the settings that change the numbers
    configs: Mapping[str, Mapping[str, Any]]
    settings: Mapping[str, Any]
    #: :meth:`TaskEntry.fingerprint`: lm-eval's version, the configs and the documents' content
    fingerprint: str

    def value(self, metric: str = "acc", filter: str = "none") -> float:
        """lm-eval's aggregate ``metric`` (``acc``: the mean over items, or a group's size-weighted mean)."""
        key = f"{metric},{filter}"
        if key not in self.aggregate:
            known = sorted(k for k in self.aggregate if "," in k and "_stderr" not in k)
            raise ConfigError(f"lm-eval task '{self.name}' has no aggregate '{key}'; it reports {', '.join(known)}")
        return float(self.aggregate[key])

    def filters(self) -> list[str]:
        return sorted({i.filter for i in self.items})

    def scores(self, metric: str = "acc", filter: str | None = None) -> list[float]:
        """Per-item ``metric`` in :attr:`items` order (one filter: ``none`` or the task's only one)."""
        return [i.score(metric) for i in self.filtered(filter)]

    def item_ids(self, filter: str | None = None) -> list[str]:
        """``task/doc_id`` of every item, in :meth:`scores` order."""
        return [f"{i.task}/{i.doc_id}" for i in self.filtered(filter)]

    def chance(self, filter: str | None = None) -> float:
        """The accuracy of guessing: the mean of 1/(number of choices) over the items (0.25 with four)."""
        items = self.filtered(filter)
        if not items or any(i.n_choices == 0 for i in items):
            raise ConfigError(
                f"lm-eval task '{self.name}' is not multiple choice; chance accuracy is defined for choices only"
            )
        return sum(1.0 / i.n_choices for i in items) / len(items)

    def filtered(self, filter: str | None = None) -> list[ItemResult]:
        """The items of one filter (``none``, or the task's only one), in :attr:`items` order."""
        names = self.filters()
        want = (
            filter
            if filter is not None
            else ("none" if "none" in names or not names else names[0] if len(names) == 1 else None)
        )
        if want is None:
            raise ConfigError(f"lm-eval task '{self.name}' has filters {', '.join(names)}; say which one")
        return [i for i in self.items if i.filter == want]


@contextmanager
def keep_ties(module: Any) -> Iterator[None]:
    """Shadow ``module.tie_weights`` for the block (see the module docstring)."""
    if not callable(getattr(module, "tie_weights", None)):
        yield
        return
    module.tie_weights = lambda *args, **kwargs: None
    try:
        yield
    finally:
        del module.tie_weights


@contextmanager
def quiet_lm_eval(name: str = "lm_eval") -> Iterator[None]:
    """lm-eval's warnings about an already loaded model ("many arguments may be ignored"), which we pass on purpose."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def quiet_run(lm: Any) -> Iterator[None]:
    """lm-eval's ``simple_evaluate`` without its progress bars and its environment probes, for the block.

    Its model's request methods take ``disable_tqdm``, which its evaluator never passes: they are called with it.
    Its tasks' request builders call ``tqdm`` with no switch (and tqdm reads ``TQDM_DISABLE`` only when imported):
    the name they call is a disabled tqdm. Its results record ``git describe`` of the working directory (a
    subprocess that prints "fatal: not a git repository" outside one) and torch's ``collect_env`` report (2.6-2.9 s
    of subprocesses per call, measured here): both are skipped, so those two entries of its results are empty.
    Nothing that changes a number is touched."""
    import lm_eval.api.task as task_module
    import lm_eval.evaluator as evaluator_module

    shadowed = []
    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        method = getattr(lm, name, None)
        if callable(method) and "disable_tqdm" in inspect.signature(method).parameters:
            setattr(lm, name, functools.partial(method, disable_tqdm=True))
            shadowed.append(name)
    saved = (task_module.tqdm, evaluator_module.get_git_commit_hash, evaluator_module.add_env_info)
    task_module.tqdm = functools.partial(saved[0], disable=True)
    evaluator_module.get_git_commit_hash = _no_git_hash
    evaluator_module.add_env_info = _no_env_info
    try:
        yield
    finally:
        task_module.tqdm, evaluator_module.get_git_commit_hash, evaluator_module.add_env_info = saved
        for name in shadowed:
            delattr(lm, name)


def _no_git_hash() -> None:
    return None


def _no_env_info(storage: dict[str, Any]) -> None:
    return None


def hflm(model: Any, *, batch_size: int | str = 1, max_batch_size: int = 64, **hf_args: Any) -> Any:
    """lm-eval's ``HFLM`` around a loaded model (``.model`` and ``.tokenizer``, or a bare module with
    ``tokenizer=`` in ``hf_args``). ``hf_args`` are HFLM's own (``max_length``, ``logits_cache``,
    ``add_bos_token``, ``softmax_dtype``...)."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    module = getattr(model, "model", model)
    tokenizer = hf_args.pop("tokenizer", None) or getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError("the model to evaluate has no tokenizer; pass a loaded model with .model and .tokenizer")
    if getattr(tokenizer, "pad_token", None) is None:  # HFLM would set one on the caller's tokenizer
        import copy

        tokenizer = copy.deepcopy(tokenizer)
    with keep_ties(module), quiet_lm_eval():
        return HFLM(
            pretrained=module, tokenizer=tokenizer, batch_size=batch_size, max_batch_size=max_batch_size, **hf_args
        )


def _metrics(sample: Mapping[str, Any]) -> dict[str, Any]:
    return {k: sample[k] for k in sample.get("metrics", ()) if k in sample}


def _loglikelihoods(sample: Mapping[str, Any]) -> tuple[float, ...]:
    out: list[float] = []
    for resp in sample.get("filtered_resps", ()):
        if isinstance(resp, (tuple, list)) and resp and isinstance(resp[0], (int, float)):
            out.append(float(resp[0]))
        else:
            return ()  # a generation task: the responses are text
    return tuple(out)


def _task_result(entry: TaskEntry, results: Mapping[str, Any], settings: Mapping[str, Any]) -> TaskResult:
    samples = results.get("samples") or {}
    items = []
    for leaf in entry.leaves:
        for sample in samples.get(leaf, ()):
            items.append(
                ItemResult(
                    task=leaf,
                    doc_id=int(sample["doc_id"]),
                    filter=str(sample.get("filter", "none")),
                    target=sample.get("target"),
                    metrics=_metrics(sample),
                    loglikelihoods=_loglikelihoods(sample),
                    doc_hash=str(sample.get("doc_hash", "")),
                    prompt_hash=str(sample.get("prompt_hash", "")),
                )
            )
    items.sort(key=lambda i: (i.task, i.filter, i.doc_id))
    table = results.get("results") or {}
    return TaskResult(
        spec=entry.spec,
        name=entry.name,
        aggregate=dict(table.get(entry.name, {})),
        subtasks={leaf: dict(table.get(leaf, {})) for leaf in entry.leaves},
        items=tuple(items),
        configs={leaf: (results.get("configs") or {}).get(leaf, {}) for leaf in entry.leaves},
        settings=dict(settings),
        fingerprint=entry.fingerprint(),
    )


def evaluate(
    model: Any,
    tasks: LoadedTasks | Sequence[TaskSpec] | TaskSpec,
    *,
    include_path: str | Path | Sequence[str | Path] | None = None,
    batch_size: int | str = 1,
    max_batch_size: int = 64,
    hf_args: Mapping[str, Any] | None = None,
    quiet: bool = False,
    **evaluate_args: Any,
) -> list[TaskResult]:
    """Evaluate ``model`` (see the module docstring) on ``tasks`` with lm-eval; one :class:`TaskResult`
    per task spec, in order.

    ``tasks``: :func:`load_tasks`'s result (build it before loading the model, and once for all the
    models of a run), or specs that are built now. ``evaluate_args`` go to ``simple_evaluate``
    unchanged (``num_fewshot``, ``limit``, ``apply_chat_template``, ``bootstrap_iters``, the seeds...);
    lm-eval's defaults apply otherwise. ``model`` may also be an lm-eval ``LM`` already built
    (an ``UnlearnAssertLM``, or an ``HFLM`` for comparison); then ``batch_size`` and ``hf_args`` are its own.
    ``quiet=True`` (what a gate does; it prints its own progress lines) runs lm-eval without its progress bars and
    its environment probes (:func:`quiet_run`); the numbers are the same."""
    require_lm_eval()
    import lm_eval
    from lm_eval.api.model import LM

    clash = sorted(set(evaluate_args) & _OWN)
    if clash:
        raise ConfigError(
            f"evaluate() sets {', '.join(clash)} itself; pass the model, tasks and batch_size as its own arguments"
        )
    loaded = tasks if isinstance(tasks, LoadedTasks) else load_tasks(tasks, include_path)
    lm = (
        model
        if isinstance(model, LM)
        else hflm(model, batch_size=batch_size, max_batch_size=max_batch_size, **dict(hf_args or {}))
    )
    with quiet_run(lm) if quiet else nullcontext():
        results = lm_eval.simple_evaluate(
            model=lm, tasks=loaded.objects, task_manager=loaded.manager, log_samples=True, **evaluate_args
        )
    if results is None:  # only a non-zero rank of a distributed run gets None; we never start one
        raise RuntimeError("lm-eval returned no results (not rank 0)")
    settings = {"lm_eval": lm_eval.__version__, "batch_size": getattr(lm, "batch_size", batch_size), **evaluate_args}
    return [_task_result(entry, results, settings) for entry in loaded.entries]
