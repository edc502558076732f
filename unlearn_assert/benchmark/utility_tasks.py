"""The user's lm-eval tasks as more utility checks beside any benchmark (``--unlearn-utility-tasks``).

Teams that measure "does the model still do its job" on MMLU, ARC, HellaSwag or their own task YAMLs want the
gate to check exactly that, beside MUSE's knowmem_r, TOFU's model_utility or a multiple-choice forget set.
:class:`WithUtilityTasks` wraps the run's benchmark (:func:`unlearn_assert.benchmark.benchmark_for` does it when
the option is given): its metrics are the base benchmark's plus one utility metric per task, named as the option
names it (:func:`unlearn_assert.config.utility_task_metric`: ``mmlu``, ``arc_easy``; a YAML by its file name),
judged like every utility metric, ``m(variant of U) >= ratio * m(T)``, with the task's name as its budget key
(``arc_easy=0.95``, ``arc_easy@rtn-w4g128=0.9``; a bare ``utility=`` covers them all).

Each task's value is the mean of lm-eval's per-item ``acc`` x100 (or, for a task without ``acc``, its first
averaged metric: :func:`~.mc.scored_metric`), from lm-eval's own run on the row's model; that is lm-eval's number
for a task and for a group that weights its tasks by size (mmlu). The base benchmark's data and metrics are
untouched: its ``load`` and ``measure`` run as they would alone, and the tasks are measured after them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import utility_task_metric
from ..errors import ConfigError, UnlearnAssertError
from .base import Context, MetricSpec
from .mc import SCALE, built_tasks, lm_eval_batch_size, lm_eval_version, scored_metric, task_scores

if TYPE_CHECKING:  # pragma: no cover
    from ..lmeval.tasks import LoadedTasks, TaskEntry
    from ..metrics import Evaluation
    from ..metrics.stats import Interval
    from .base import Benchmark, Privacy

__all__ = ["WithUtilityTasks"]

OPTION = "--unlearn-utility-tasks"


class WithUtilityTasks:
    """``base`` (any benchmark) plus one utility metric per lm-eval task of ``specs`` (see the module docstring)."""

    def __init__(
        self,
        base: Benchmark,
        specs: Sequence[str],
        include: str | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
    ) -> None:
        self.base = base
        self.name = f"{base.name}+lm-eval"
        self.specs = tuple(specs)
        self.include = include
        self.batch_size = lm_eval_batch_size(batch_size)
        self.max_samples = max_samples
        #: spec -> its metric's name
        self.names = {spec: utility_task_metric(spec) for spec in self.specs}
        self._metrics: tuple[MetricSpec, ...] | None = None

    @classmethod
    def around(cls, base: Benchmark, run: Any) -> WithUtilityTasks:
        """The run's benchmark with its ``--unlearn-utility-tasks`` (and their include folder, batch size, limit)."""
        return cls(base, run.utility_tasks, run.lm_eval_include, run.batch_size, run.max_samples)

    # ------------------------------------------------------------------ tasks

    def tasks(self) -> LoadedTasks:
        """The tasks, built once per process (offline: from local files and the Hugging Face cache only); every
        problem is one ConfigError line naming the option."""
        try:
            loaded = built_tasks(self.specs, self.include)
            for entry in loaded.entries:
                scored_metric(entry)
        except UnlearnAssertError as exc:
            raise ConfigError(f"{OPTION}: {exc}") from None
        return loaded

    def _entries(self) -> dict[str, TaskEntry]:
        """metric name -> its built task."""
        return {self.names[spec]: entry for spec, entry in zip(self.specs, self.tasks().entries)}

    # ------------------------------------------------------------------ the contract

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        if self._metrics is None:
            extra = []
            for name, entry in self._entries().items():
                metric = scored_metric(entry)
                extra.append(MetricSpec(name, "utility", items=f"{name} items", unit=f"{metric} x100", short=name))
            self._metrics = tuple(self.base.metrics) + tuple(extra)
        return self._metrics

    @property
    def settings(self) -> Mapping[str, Any]:
        """The base benchmark's, and the tasks': lm-eval's version, its batch size, the limit, and per task the
        metric scored and its fingerprint (lm-eval's configs and the documents' content)."""
        tasks = {
            name: {"metric": scored_metric(entry), "fingerprint": entry.fingerprint()}
            for name, entry in self._entries().items()
        }
        return {
            **self.base.settings,
            "utility_tasks": {
                "lm_eval": lm_eval_version(),
                "batch_size": self.batch_size,
                "limit": self.max_samples,
                "tasks": tasks,
            },
        }

    @classmethod
    def detect(cls, path: str) -> bool:
        return False  # never a layout of its own: it wraps the benchmark the data is in

    def load(self, path: str | os.PathLike[str]) -> Any:
        """The base benchmark's data, after the tasks are built (so a task that cannot be read fails first, in a
        second, before any model loads)."""
        self.tasks()
        return self.base.load(os.fspath(path))

    def record(self, data: Any) -> dict[str, Any]:
        """The base benchmark's record, and each task: what named it, lm-eval's name, its leaves, metric, items."""
        tasks = {
            name: {
                "spec": entry.spec,
                "name": entry.name,
                "leaves": list(entry.leaves),
                "metric": scored_metric(entry),
                "fingerprint": entry.fingerprint(),
                "items": sum(
                    len(t.eval_docs) if self.max_samples is None else min(len(t.eval_docs), self.max_samples)
                    for t in entry.leaf_tasks().values()
                ),
            }
            for name, entry in self._entries().items()
        }
        return {**self.base.record(data), "utility_tasks": tasks}

    def measure(
        self,
        model: Any,
        data: Any,
        *,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Evaluation:
        """The base benchmark's metrics of ``model`` on ``data`` (a variant's own data view too), then lm-eval on the
        tasks ``metrics`` asks for."""
        from ..lmeval.evaluate import evaluate, quiet_lm_eval
        from ..lmeval.tasks import LoadedTasks
        from ..metrics import Evaluation

        base_names = [m.name for m in self.base.metrics]
        wanted = [m.name for m in self.metrics if metrics is None or m.name in metrics]
        base_wanted = [m for m in wanted if m in base_names]
        if base_wanted:
            ev = self.base.measure(
                model, data, metrics=None if metrics is None else base_wanted, batch_size=batch_size, progress=progress
            )
        else:
            ev = Evaluation(values={}, ci={}, samples={})
        entries = {name: entry for name, entry in self._entries().items() if name in wanted}
        if not entries:
            return ev
        if progress is not None:
            progress(f"lm-eval: {', '.join(entries)}")
        loaded = LoadedTasks(entries=tuple(entries.values()), manager=self.tasks().manager)
        with quiet_lm_eval():
            results = evaluate(model, loaded, batch_size=self.batch_size, quiet=True, limit=self.max_samples)
        values, ci, samples = dict(ev.values), dict(ev.ci), dict(ev.samples)
        lm_eval: dict[str, Any] = {}
        for (name, entry), result in zip(entries.items(), results):
            metric = scored_metric(entry)
            value, interval, records = task_scores(result, metric, name)
            if value is not None:
                values[name], ci[name], samples[name] = value, interval, records
            lm_eval[name] = {
                "task": result.name,
                "metric": metric,
                "aggregate": dict(result.aggregate),
                "n": len(records),
                "scale": SCALE,
            }
        extras = {**ev.extras, "utility_tasks": lm_eval}
        return Evaluation(values=values, ci=ci, samples=samples, extras=extras)

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        """The base benchmark's (the utility tasks are lm-eval's, which truncates their contexts itself)."""
        return self.base.contexts(data, tokenizer)

    def relearn_split(self, data: Any) -> tuple[Any, tuple[str, ...]]:
        return self.base.relearn_split(data)

    def restricted(self, data: Any, split: Any) -> Any:
        return self.base.restricted(data, split)

    def privacy(self, metric: str) -> Privacy:
        return self.base.privacy(metric)

    def interval(
        self, spec: MetricSpec, rows: Sequence[Any], estimate: float | None, boot: Any, paired: Callable[..., Any]
    ) -> Interval | None:
        if spec.name in self.names.values():
            return None  # a task's value is an item mean: the engine's paired bootstrap covers it
        return self.base.interval(spec, rows, estimate, boot, paired)
