"""The Benchmark contract: what a row measures, and how each of its metrics is judged.

A *variant* says which model a row measures (the :class:`~unlearn_assert.engine.sources.base.Source`
contract); a *benchmark* says what it measures. A benchmark owns

* its data: whether a directory is in its layout (:meth:`Benchmark.detect`), loading and validating it
  (one :class:`~unlearn_assert.errors.DataError` line per problem) and its content hash
  (:attr:`BenchmarkData.fingerprint`);
* its metrics, each with per-item scores (the ``samples`` of an
  :class:`~unlearn_assert.metrics.Evaluation`, so the paired bootstrap resamples any benchmark's items
  the same way) and a :class:`MetricSpec` that gives its role:

  - **forget**: judged by recovery ``(m(q(U)) - m(U)) / (m(T) - m(U))`` and the "unlearning worked" floor;
  - **utility**: judged by the ratio to the target, ``m(q(U)) >= ratio * m(T)``;
  - **privacy**: judged against an absolute budget with a reference model (:class:`Privacy`);
  - **reported**: shown, never judged;

* the settings that change its numbers (:attr:`Benchmark.settings`), which go into every row's cache key;
* the token sequences its metrics feed a model (:meth:`Benchmark.contexts`), so that an item beyond the
  model's context window is found when the options are read, before any compute.

The engine's checks, verdicts, intervals, report, cache, xdist payloads and fixtures read only this
contract, so a benchmark is added with one module and one entry in
:data:`unlearn_assert.benchmark.BENCHMARKS`; ``tests/benchmark/test_benchmark.py`` registers a toy one that way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import Evaluation
    from ..metrics.stats import Interval

__all__ = ["ROLES", "Benchmark", "BenchmarkData", "Context", "MetricRole", "MetricSpec", "Privacy"]

MetricRole = Literal["forget", "utility", "privacy", "reported"]
ROLES: tuple[MetricRole, ...] = ("forget", "utility", "privacy", "reported")


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a benchmark: its key in a row's values, its role, and how messages and tables name it.

    ``check``: the name of its budget item (``test_budget[<variant>-<check>]``), the metric's own name unless
    a benchmark kept an older one (MUSE's knowmem_r is judged by the ``utility`` item); None for a reported
    metric. ``items``: what its items are, as messages count them ("forget questions"). ``short``: its
    abbreviation in the table's recovery cell ("km"). ``floor_value``: the value that means "nothing
    known" (a multiple-choice accuracy at chance), None when it is 0. ``higher_remembers``: False for a
    metric that grows as the model forgets (TOFU's forget truth ratio); the drop and the floor are then
    measured the other way, and recovery, a ratio of two differences, is the same formula.
    """

    name: str
    role: MetricRole
    items: str
    unit: str = "ROUGE-L F1 x100"
    short: str = ""
    check: str | None = None
    higher_remembers: bool = True
    floor_value: float | None = None
    #: how the value is made of the per-item scores: "mean" (the paired bootstrap resamples them generically),
    #: or another statistic whose interval the benchmark computes (:meth:`Benchmark.interval`)
    aggregate: str = "mean"

    @property
    def item(self) -> str | None:
        """The check name of its budget items (None: reported, never judged)."""
        if self.role == "reported":
            return None
        return self.check or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "check": self.item,
            "items": self.items,
            "unit": self.unit,
            "short": self.short or self.name,
            "higher_remembers": self.higher_remembers,
            "floor_value": self.floor_value,
        }


@dataclass(frozen=True)
class Context:
    """One token sequence a metric feeds the model: ``tokens`` (special tokens included, as the metric tokenizes
    it) plus the ``new_tokens`` generated after it must fit the model's context window.

    ``split`` and ``item`` name it as the report's counts do (``verbmem_forget``, item 0). ``keep``: what
    ``--unlearn-overlong=truncate`` keeps of a sequence too long: ``"end"`` for a prompt (the tokens next to the
    continuation, as lm-evaluation-harness truncates a context) or ``"start"`` for a text scored as a whole
    (its first tokens, as privleak scores a text longer than the window).
    """

    split: str
    item: int
    tokens: int
    new_tokens: int = 0
    keep: Literal["end", "start"] = "end"

    @property
    def length(self) -> int:
        """Positions it occupies: its tokens and those generated after it."""
        return self.tokens + self.new_tokens


class BenchmarkData(Protocol):
    """A loaded, validated data set of some benchmark, as the engine uses it."""

    #: what the user gave (a directory, or an ``hf:`` spec)
    path: str
    #: content hash: the same content in any form hashes the same, and any changed text changes it
    fingerprint: str

    def limited(self, max_samples: int | None) -> Any:
        """At most ``max_samples`` items in every evaluated split (a new fingerprint when anything was cut)."""
        ...

    def counts(self) -> dict[str, int]:
        """Items per split, for the report."""
        ...


class Privacy(Protocol):
    """How a privacy metric of a row is made from the rows and judged (MUSE's privleak is
    :class:`unlearn_assert.benchmark.muse.Privleak`): its value against a reference (the retrain model's row,
    an option, or a default), its paired interval, and the values a budget accepts."""

    #: the budget key its bound is read from (``privleak=25``), and ``KEY@VARIANT``
    budget_key: str
    #: its bound when the budget names none (a key that is not one of the Budget's own fields)
    default_budget: float
    #: True when this run can judge it (its reference exists: a retrain model, or an option)
    available: bool
    #: the reference a row's own value (and interval) is against, before the run's reference is known
    own_reference: float | None

    def reference_record(self, reference: float | None, source: str) -> dict[str, Any]:
        """What the report records of the reference (``provenance["<metric>_reference"]``)."""
        ...

    def reference(self, rows: Mapping[Any, Any]) -> tuple[float | None, str]:
        """The reference value and where it came from ("retrain", "option", "default", or "none")."""
        ...

    def value(self, row: Any, reference: float | None, reference_row: Any) -> float | None:
        """The row's value against the reference (None: undefined)."""
        ...

    def interval(
        self,
        row: Any,
        reference_row: Any,
        reference: float | None,
        estimate: float | None,
        boot: Any,
        paired: Callable[..., Any],
    ) -> Interval | None:
        """Its paired interval for a U row (``paired(metric, rows, split)`` gives the rows' per-item scores)."""
        ...

    def problem(self, reference: float | None, source: str) -> str | None:
        """Why the metric cannot be computed against this reference, or None when it can."""
        ...

    def accept(self, bound: float) -> tuple[float, float]:
        """The values a budget of ``bound`` accepts, ``(lo, hi)`` with +-inf for none."""
        ...

    def describe(self, value: float) -> str:
        """The value as messages print it (``+3.2%``)."""
        ...

    def budget_text(self, bound: float) -> str:
        """The budget in words (``|privleak| <= 25%``)."""
        ...

    def interval_text(self, ci: Interval) -> str:
        """An interval as messages print it (`` [+1.0%, +5.0%]``)."""
        ...


class Benchmark(Protocol):
    """A benchmark (see the module docstring)."""

    #: its name in ``--unlearn-benchmark`` and in the report
    name: str
    #: every metric, in the report's column order
    metrics: tuple[MetricSpec, ...]

    @classmethod
    def from_run(cls, run: Any) -> Benchmark:
        """The benchmark configured from a run's settings."""
        ...

    @property
    def settings(self) -> Mapping[str, Any]:
        """Every setting that changes its numbers: part of each row's cache key and of the report."""
        ...

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` (a directory, or a spec such as ``hf:OWNER/NAME``) is in this benchmark's layout."""
        ...

    def load(self, path: str) -> BenchmarkData:
        """Read and validate the data (read-only); every problem is one DataError line naming the file and the fix."""
        ...

    def measure(
        self,
        model: Any,
        data: Any,
        *,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Evaluation:
        """The metrics of ``model`` (a LoadedModel or a view) on ``data``, with per-item records in ``samples``."""
        ...

    def privacy(self, metric: str) -> Privacy:
        """How the privacy metric ``metric`` is referenced, computed and judged."""
        ...

    def interval(
        self, spec: MetricSpec, rows: Sequence[Any], estimate: float | None, boot: Any, paired: Callable[..., Any]
    ) -> Interval | None:
        """The paired interval of a utility ratio ``rows[0] / rows[1]`` of a metric that is not an item mean
        (``spec.aggregate``); ``paired(metric, rows)`` gives the rows' per-item scores item for item."""
        ...

    def record(self, data: Any) -> dict[str, Any]:
        """What the report records of the data beyond its counts (how items were derived, a chosen split)."""
        ...

    def relearn_split(self, data: Any) -> tuple[Any, tuple[str, ...]]:
        """relearn-forget's split of ``data`` (a :class:`~unlearn_assert.data.links.RelearnSplit`: the forget
        documents it trains on, the items of each forget metric it evaluates, which come only from the others)
        and the documents it indexes; one DataError line when the data cannot be split."""
        ...

    def restricted(self, data: Any, split: Any) -> Any:
        """``data`` with every forget metric's items cut to those ``split`` evaluates (a new fingerprint)."""
        ...

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        """Every token sequence its metrics feed a model for ``data`` (the evaluated items), with the tokens generated
        after it. ``tokenizer`` is called as transformers' (``tokenizer(texts)["input_ids"]``, BOS included); the
        engine checks the lengths against the context window when the options are read."""
        ...
