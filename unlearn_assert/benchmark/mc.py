"""Multiple-choice questions as a benchmark (WMDP's form), scored by lm-evaluation-harness itself.

Hazardous-knowledge unlearning (WMDP bio and cyber, with RMU and its successors) is reported as lm-eval's
multiple-choice accuracy, so this benchmark runs lm-eval (:mod:`unlearn_assert.lmeval`) on every row's model and
never rescores:

* ``forget_acc``: lm-eval's ``acc`` on the forget questions, a forget metric judged by recovery. Guessing scores
  chance (the mean of 1/number of choices: 25 with four), so chance is its "nothing known" value
  (:attr:`~.base.MetricSpec.floor_value`): a forget accuracy at chance is full forgetting, and the "unlearning
  worked" floor is capped at what forgetting down to chance removes (:mod:`unlearn_assert.engine.verdicts`).
* ``utility_acc``: ``acc`` on the utility questions (MMLU's form), judged by its ratio to the target's.
* ``forget_acc_norm``, ``utility_acc_norm``: lm-eval's ``acc_norm`` from the same log-likelihoods, reported
  (null where the task does not compute it: WMDP's own tasks report ``acc`` only).

Values are accuracies x100 (points, as every benchmark's floor is); the per-item scores in the samples are 0 or
100, from lm-eval's per-sample log, so the paired bootstrap resamples questions as it resamples any items.

``--unlearn-data`` names the questions one of three ways:

* a directory with ``forget.jsonl`` (or ``.json`` / ``.parquet``) and optionally ``utility.*``, records as WMDP
  and MMLU have them (``question``, ``choices``, ``answer`` index; an optional ``subject``): each file is scored as
  WMDP's own lm-eval task scores its questions (:func:`unlearn_assert.lmeval.wmdp.wmdp_task_config`);
* ``lm-eval:NAME``: an lm-eval task, group or tag (``lm-eval:wmdp_bio``) whose data is in the local Hugging Face
  cache, or a task of ``--unlearn-lm-eval-include``;
* a task YAML path.

The last two are the forget questions only; the "still works" check is then ``--unlearn-utility-tasks=mmlu``
(:mod:`.utility_tasks`). The tasks are built (their data read, from local files and caches only) when the data
is loaded, before any model, once per process; the lm-eval version, the task configs and documents
(:meth:`~unlearn_assert.lmeval.tasks.TaskEntry.fingerprint`) and lm-eval's batch size go into the cache key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import LM_EVAL_PREFIX
from ..errors import ConfigError, DataError, UnlearnAssertError
from ..plain import digest
from .base import Context, MetricSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..lmeval.evaluate import TaskResult
    from ..lmeval.tasks import LoadedTasks, TaskEntry, TaskSpec
    from ..metrics import Evaluation
    from ..metrics.stats import Interval

__all__ = [
    "DEFAULT_LM_EVAL_BATCH_SIZE",
    "SCALE",
    "McBenchmark",
    "McData",
    "built_tasks",
    "lm_eval_batch_size",
    "lm_eval_version",
    "scored_metric",
    "task_scores",
]

#: values and per-item scores are accuracies x100 (points), as MUSE's ROUGE and TOFU's values are
SCALE = 100.0
#: lm-eval's batch size when --unlearn-batch-size is auto: a fixed one, because lm-eval's log-likelihoods differ in
#: the last bits between batch sizes (docs/lm-eval.md), and a result must not depend on the memory it ran in
DEFAULT_LM_EVAL_BATCH_SIZE = 8
_YAML = (".yaml", ".yml")
_SPLITS = ("forget", "utility")


def lm_eval_batch_size(batch_size: int | None) -> int:
    """lm-eval's batch size for a run's ``--unlearn-batch-size`` (None: auto)."""
    return batch_size or DEFAULT_LM_EVAL_BATCH_SIZE


def lm_eval_version() -> str | None:
    """The installed lm-eval's version, from its metadata (no import)."""
    from importlib import metadata

    try:
        return metadata.version("lm-eval")
    except metadata.PackageNotFoundError:
        return None


def _stamp(path: str | Path | None) -> tuple[int, int] | None:
    """A file's (size, mtime): a memoized build is rebuilt when a file it read changed."""
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if stat is None else (stat.st_size, stat.st_mtime_ns)


@contextmanager
def _quiet_build() -> Iterator[None]:
    """No progress bars or lm-eval info lines while tasks are built at option time (before the first test)."""
    import datasets

    from ..lmeval.evaluate import quiet_lm_eval

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with quiet_lm_eval():
            yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


@lru_cache(maxsize=16)
def _built(specs: tuple[TaskSpec, ...], include: str | None, stamps: tuple[Any, ...]) -> LoadedTasks:
    from ..lmeval.tasks import load_tasks

    with _quiet_build():
        return load_tasks(list(specs), include, offline=True)


def built_tasks(specs: Sequence[TaskSpec], include: str | None) -> LoadedTasks:
    """The lm-eval tasks of ``specs`` (:func:`unlearn_assert.lmeval.tasks.load_tasks`, offline), built once per
    process: the option-time check, the collection and every row of a run share them."""
    from ..lmeval import require_lm_eval
    from ..lmeval.wmdp import WmdpForm

    require_lm_eval()
    stamps = tuple(
        _stamp(s.path)
        if isinstance(s, WmdpForm)
        else _stamp(s)
        if isinstance(s, (str, Path)) and str(s).lower().endswith(_YAML)
        else None
        for s in specs
    )
    return _built(tuple(specs), include, stamps)


def scored_metric(entry: TaskEntry) -> str:
    """The per-item metric a task is judged on: lm-eval's ``acc`` when every leaf task computes it, else the first
    metric every leaf averages over its items with higher better (``exact_match``); one ConfigError line when there
    is none, or when a leaf has several filters (the gate scores one answer per item)."""
    from lm_eval.api.metrics import mean

    leaves = list(entry.leaf_tasks().values())
    for task in leaves:
        filters = task.config.filter_list or []
        if len(filters) > 1:
            names = ", ".join(str(f.get("name")) for f in filters if isinstance(f, dict))
            raise ConfigError(
                f"lm-eval task '{task.task_name}' has several filters ({names}); the gate scores one answer "
                "per item: write a task YAML that includes it with one filter_list entry"
            )
    common = [m for m in leaves[0].aggregation() if all(m in t.aggregation() for t in leaves)]
    if "acc" in common:
        return "acc"
    for m in common:
        if all(t.aggregation()[m] is mean and t.higher_is_better().get(m) for t in leaves):
            return m
    raise ConfigError(
        f"lm-eval task '{entry.spec}' has no per-item metric averaged over its items with higher better "
        f"(it computes {', '.join(common) or 'none its tasks share'}); the gate judges an accuracy-like mean"
    )


def _has_metric(entry: TaskEntry, metric: str) -> bool:
    return all(metric in t.aggregation() for t in entry.leaf_tasks().values())


def _evaluated_docs(entry: TaskEntry, limit: int | None) -> Iterator[tuple[Any, Any]]:
    for task in entry.leaf_tasks().values():
        docs = task.eval_docs
        for i, doc in enumerate(docs):
            if limit is not None and i >= limit:
                break
            yield task, doc


def _chance(entry: TaskEntry, limit: int | None) -> float:
    """The accuracy of guessing on the evaluated documents: the mean of 1/(number of choices)."""
    shares = [1.0 / len(task.doc_to_choice(doc)) for task, doc in _evaluated_docs(entry, limit)]
    return sum(shares) / len(shares) if shares else 0.0


def task_scores(
    result: TaskResult, metric: str, key: str, *, details: bool = False
) -> tuple[float | None, Any, list[dict[str, Any]]]:
    """One lm-eval result as a metric of a row: the mean of the per-item ``metric`` x100, its bootstrap interval,
    and the per-item records (``id`` ``task/doc_id``, ``score`` 0..100; with ``details`` also lm-eval's gold
    ``target`` and the ``loglikelihoods`` of the choices)."""
    from ..metrics.stats import bootstrap_mean_ci

    items = result.filtered()
    scores = [i.score(metric) for i in items]
    if not scores:
        return None, None, []
    records: list[dict[str, Any]] = []
    for item, score in zip(items, scores):
        record: dict[str, Any] = {"id": f"{item.task}/{item.doc_id}", "score": score * SCALE}
        if details:
            record.update(target=item.target, loglikelihoods=list(item.loglikelihoods))
        records.append(record)
    value = sum(scores) / len(scores) * SCALE
    return value, bootstrap_mean_ci(scores, seed=0, key=key, scale=SCALE), records


@dataclass(frozen=True)
class McData:
    """Multiple-choice data, its tasks built: ``entries`` by split (``forget``, optionally ``utility``), each
    lm-eval's :class:`~unlearn_assert.lmeval.tasks.TaskEntry`; ``limit``: at most this many documents of every
    leaf task (``--unlearn-max-samples``)."""

    path: str
    fingerprint: str
    tasks: LoadedTasks
    entries: Mapping[str, TaskEntry]
    limit: int | None = None

    def _size(self, split: str) -> int:
        entry = self.entries[split]
        return sum(
            len(t.eval_docs) if self.limit is None else min(len(t.eval_docs), self.limit)
            for t in entry.leaf_tasks().values()
        )

    def limited(self, max_samples: int | None) -> McData:
        """At most ``max_samples`` documents of every leaf task (a new fingerprint when any was cut)."""
        if max_samples is None or all(
            len(t.eval_docs) <= max_samples for e in self.entries.values() for t in e.leaf_tasks().values()
        ):
            return self
        return replace(self, limit=max_samples, fingerprint=digest({"data": self.fingerprint, "limit": max_samples}))

    def counts(self) -> dict[str, int]:
        return {split: self._size(split) for split in self.entries}

    def chance(self, split: str) -> float:
        """The accuracy of guessing on the evaluated questions of ``split``."""
        return _chance(self.entries[split], self.limit)


def _spec_of(path: str) -> tuple[list[tuple[str, TaskSpec]], str]:
    """(split, task spec) pairs of a data spec, and what it is in words; one DataError line for a bad one."""
    from ..lmeval.wmdp import WmdpForm, detect_layout

    if path.startswith(LM_EVAL_PREFIX):
        name = path[len(LM_EVAL_PREFIX) :].strip()
        if not name:
            raise DataError(f"'{path}' names no lm-eval task; write e.g. lm-eval:wmdp_bio")
        return [("forget", name)], "lm-eval task"
    file = Path(path).expanduser()
    if file.suffix.lower() in _YAML:
        if not file.is_file():
            raise DataError(f"lm-eval task YAML '{path}' does not exist; pass the path of a task config file")
        return [("forget", str(file))], "lm-eval task YAML"
    layout = detect_layout(file)
    if layout is None:
        raise DataError(
            f"data dir '{path}' has no forget.jsonl, forget.json or forget.parquet; multiple-choice data in "
            "WMDP's form is a forget file (and optionally a utility file) of records like "
            '{"question": "...", "choices": ["...", "..."], "answer": 0}'
        )
    pairs: list[tuple[str, TaskSpec]] = [("forget", WmdpForm(str(layout.forget), name="wmdp_form_forget"))]
    if layout.utility is not None:
        pairs.append(("utility", WmdpForm(str(layout.utility), name="wmdp_form_utility")))
    return pairs, "WMDP-form directory"


@lru_cache(maxsize=16)
def _load(path: str, include: str | None, stamps: tuple[Any, ...]) -> McData:
    pairs, _ = _spec_of(path)
    try:
        tasks = built_tasks([spec for _, spec in pairs], include)
    except UnlearnAssertError as exc:
        raise DataError(str(exc)) from None
    entries = {split: entry for (split, _), entry in zip(pairs, tasks.entries)}
    for split, entry in entries.items():
        wrong = {t.task_name: t.OUTPUT_TYPE for t in entry.leaf_tasks().values() if t.OUTPUT_TYPE != "multiple_choice"}
        if wrong:
            name, kind = next(iter(wrong.items()))
            raise DataError(
                f"the {split} task '{name}' is {kind}, not multiple_choice; this benchmark scores "
                "multiple-choice questions (their accuracy, against chance)"
            )
        if not _has_metric(entry, "acc"):
            raise DataError(
                f"the {split} task '{entry.name}' does not compute lm-eval's acc; add "
                "{metric: acc, aggregation: mean, higher_is_better: true} to its metric_list"
            )
        if not any(len(t.eval_docs) for t in entry.leaf_tasks().values()):
            raise DataError(f"the {split} task '{entry.name}' has no documents to evaluate")
    fingerprint = digest({split: entry.fingerprint() for split, entry in entries.items()})
    return McData(path=path, fingerprint=fingerprint, tasks=tasks, entries=entries)


def _layout_files(path: str) -> tuple[Any, ...]:
    """The stamps of the files a data spec names (a memoized load is redone when one changed)."""
    from ..lmeval.wmdp import SUFFIXES

    if path.startswith(LM_EVAL_PREFIX):
        return ()
    if Path(path).suffix.lower() in _YAML:
        return (_stamp(Path(path).expanduser()),)
    directory = Path(path).expanduser()
    return tuple(_stamp(directory / f"{split}{suffix}") for split in _SPLITS for suffix in SUFFIXES)


def _has_utility_file(path: str) -> bool:
    from ..lmeval.wmdp import SUFFIXES

    if path.startswith(LM_EVAL_PREFIX) or Path(path).suffix.lower() in _YAML:
        return False
    return any((Path(path).expanduser() / f"utility{suffix}").is_file() for suffix in SUFFIXES)


class McBenchmark:
    """Multiple-choice questions scored by lm-eval (see the module docstring)."""

    name = "mc"

    def __init__(
        self,
        path: str | None = None,
        include: str | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
    ) -> None:
        self.path = path
        self.include = include
        self.batch_size = lm_eval_batch_size(batch_size)
        self.max_samples = max_samples
        self._metrics: tuple[MetricSpec, ...] | None = None

    @classmethod
    def from_run(cls, run: Any) -> McBenchmark:
        return cls(run.data, run.lm_eval_include, run.batch_size, run.max_samples)

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        """forget_acc (its floor value: chance on the evaluated forget questions), forget_acc_norm, and utility_acc,
        utility_acc_norm when the directory has a utility file. Chance needs the built tasks (built once per process,
        by the option-time check already)."""
        if self._metrics is None:
            chance = None
            if self.path is not None:
                chance = self.load(self.path).limited(self.max_samples).chance("forget") * SCALE
            specs = [
                MetricSpec(
                    "forget_acc",
                    "forget",
                    items="forget questions",
                    unit="accuracy x100",
                    short="fa",
                    floor_value=chance,
                )
            ]
            utility = self.path is not None and _has_utility_file(self.path)
            if utility:
                specs.append(
                    MetricSpec("utility_acc", "utility", items="utility questions", unit="accuracy x100", short="ua")
                )
            specs.append(MetricSpec("forget_acc_norm", "reported", items="forget questions", unit="accuracy x100"))
            if utility:
                specs.append(
                    MetricSpec("utility_acc_norm", "reported", items="utility questions", unit="accuracy x100")
                )
            self._metrics = tuple(specs)
        return self._metrics

    @property
    def settings(self) -> Mapping[str, Any]:
        """lm-eval's version, its batch size, what is scored, and each task's fingerprint (configs and documents)."""
        tasks = {}
        if self.path is not None:
            data = self.load(self.path)
            tasks = {split: entry.fingerprint() for split, entry in data.entries.items()}
        return {
            "benchmark": "mc",
            "lm_eval": lm_eval_version(),
            "batch_size": self.batch_size,
            "scored": "lm-eval acc and acc_norm per item (log_samples)",
            "scale": SCALE,
            "tasks": tasks,
        }

    @classmethod
    def detect(cls, path: str) -> bool:
        """``lm-eval:NAME``, a task YAML, or a directory with a forget.jsonl / .json / .parquet file (by names only)."""
        from ..lmeval.wmdp import SUFFIXES

        if path.startswith(LM_EVAL_PREFIX):
            return True
        spec = Path(path).expanduser()
        if spec.suffix.lower() in _YAML:
            return spec.is_file()
        return spec.is_dir() and any((spec / f"forget{suffix}").is_file() for suffix in SUFFIXES)

    def load(self, path: str | os.PathLike[str]) -> McData:
        """The tasks of ``path`` built through lm-eval (offline), checked: multiple choice, with lm-eval's acc, not
        empty; every problem is one DataError line."""
        text = os.fspath(path)
        return _load(text, self.include, _layout_files(text))

    def record(self, data: Any) -> dict[str, Any]:
        """Each split's task: what named it, lm-eval's name, its leaf tasks and their fingerprint, and chance."""
        if not isinstance(data, McData):
            return {}
        return {
            "tasks": {
                split: {
                    "spec": entry.spec,
                    "name": entry.name,
                    "leaves": list(entry.leaves),
                    "fingerprint": entry.fingerprint(),
                    "chance": data.chance(split) * SCALE,
                }
                for split, entry in data.entries.items()
            }
        }

    def measure(
        self,
        model: Any,
        data: Any,
        *,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Evaluation:
        """lm-eval's ``simple_evaluate`` on ``model`` (as loaded, or a variant's view) for the splits ``metrics``
        need; values, intervals and per-item records from lm-eval's per-sample log."""
        from ..lmeval.evaluate import evaluate, quiet_lm_eval
        from ..lmeval.tasks import LoadedTasks
        from ..metrics import Evaluation

        wanted = [m.name for m in self.metrics if metrics is None or m.name in metrics]
        splits = [s for s in _SPLITS if s in data.entries and any(m.startswith(s + "_") for m in wanted)]
        if not splits:
            return Evaluation(values={}, ci={}, samples={})
        if progress is not None:
            progress(f"lm-eval: {', '.join(f'{data.counts()[s]} {s} questions' for s in splits)}")
        loaded = LoadedTasks(entries=tuple(data.entries[s] for s in splits), manager=data.tasks.manager)
        with quiet_lm_eval():
            results = evaluate(model, loaded, batch_size=self.batch_size, quiet=True, limit=data.limit)
        values: dict[str, float] = {}
        ci: dict[str, tuple[float, float]] = {}
        samples: dict[str, list[dict[str, Any]]] = {}
        lm_eval: dict[str, Any] = {}
        for split, result in zip(splits, results):
            for metric, key in (("acc", f"{split}_acc"), ("acc_norm", f"{split}_acc_norm")):
                if key not in wanted or not _has_metric(data.entries[split], metric):
                    continue
                value, interval, records = task_scores(result, metric, key, details=metric == "acc")
                if value is not None:
                    values[key], ci[key], samples[key] = value, interval, records
            lm_eval[split] = {
                "task": result.name,
                "aggregate": dict(result.aggregate),
                "chance": result.chance() * SCALE,
                "n": len(result.filtered()),
            }
        return Evaluation(
            values=values,
            ci=ci,
            samples=samples,
            extras={"lm_eval": lm_eval, "batch_size": self.batch_size, "settings": results[0].settings},
        )

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        """None to check: lm-eval scores each choice by log-likelihood and cuts a context beyond the window to its
        end itself (its HFLM), one forward per choice, so a long question costs one truncated pass, never a stall;
        and its prompts are the task's templates, which only lm-eval renders."""
        return []

    def relearn_split(self, data: Any) -> tuple[Any, tuple[str, ...]]:
        """Multiple-choice data has no documents to relearn from: relearning attacks gate MUSE, TOFU and documents."""
        from ..errors import DataError

        raise DataError(
            f"multiple-choice data '{data.path}' has no forget documents to relearn on; gate relearning "
            "attacks on MUSE, TOFU or documents data, or leave relearn-* out of --unlearn-quantizers"
        )

    def restricted(self, data: Any, split: Any) -> Any:
        raise NotImplementedError  # relearn_split never makes a split here

    def privacy(self, metric: str) -> Any:
        raise KeyError(metric)  # no privacy metric

    def interval(
        self, spec: MetricSpec, rows: Sequence[Any], estimate: float | None, boot: Any, paired: Callable[..., Any]
    ) -> Interval | None:
        return None  # accuracies are item means: the engine's paired bootstrap covers them
