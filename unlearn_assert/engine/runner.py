"""The gate: which rows a budget item needs, computed once each and in order, then its verdict; and
:func:`gate`, the one call that runs a whole gate and returns its :class:`~.report.Report`.

The pytest plugin runs the same :class:`Gate` one item at a time (each ``test_budget[...]`` item is
one :meth:`Gate.check`) and builds the same report from the rows and verdicts its workers send
(:func:`~.report.build_report`); ``ua.gate(...)`` and ``unlearn-assert demo`` run every item at once.
Rows come from the result cache when their key is there (:mod:`.rows`), so a re-run on unchanged
inputs loads no model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..benchmark import judged_metrics
from ..cache import ResultCache
from ..config import Budget, RunConfig, run_config
from ..names import FP, Role, item_name
from ..scaleout.claims import RowClaims
from .derive import Figures, bootstrap_of, figures
from .inputs import Inputs, Progress, precheck
from .report import Report, build_report
from .rows import Row, RowKey, cached_row, compute_row, row_key
from .sources import Source, source_for
from .verdicts import Verdict, judge_item, needed_rows, plan_checks
from .views import GateView

if TYPE_CHECKING:  # pragma: no cover
    import os

__all__ = ["Gate", "gate"]


class Gate:
    """Computes and remembers the rows of one run, and judges its items; safe to call in any order.

    ``shared``: a directory shared with the other processes of this run (xdist workers), so that each
    row is computed once per run (:mod:`unlearn_assert.scaleout.claims`): results go to the result cache, or under
    ``--unlearn-no-cache`` to ``shared`` (this run only). ``device``: where this process loads its
    models, when not ``run.device`` (one GPU per worker). Use a Gate as a context manager (or call
    :meth:`close`): it holds loaded models and a fixture's variant.

    Public state: :attr:`rows` (every row known so far, read-only), :attr:`computing` (the row being
    computed, for error messages), :attr:`view` (what the fixtures see: :class:`~.views.GateView`).
    """

    def __init__(
        self,
        run: RunConfig,
        cache: ResultCache | None = None,
        progress: Progress | None = None,
        shared: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.run = run
        self.cache = cache if cache is not None else ResultCache(run.cache_dir, enabled=not run.no_cache)
        # where computed rows go, and who claims them: the cache (also shared by concurrent runs), or this run's
        # directory
        self.store, self.claims = self.cache, RowClaims(self.cache.directory) if self.cache.enabled else None
        if not self.cache.enabled and shared is not None:
            self.store, self.claims = ResultCache(Path(shared) / "rows"), RowClaims(Path(shared) / "claims")
        self.inputs = Inputs(run, self.cache, progress, device)
        self._rows: dict[RowKey, Row] = {}
        self._sources: dict[str, Source] = {}
        self._handoffs: dict[str, Any] = {}  # variant -> what q(T)'s source handed on to q(U)'s
        self._figures: dict[frozenset[RowKey], Figures] = {}
        #: what the fixtures see of this gate
        self.view = GateView(self.inputs, self.cache, self.source)
        #: the row being computed right now, so that an internal error can say which (None between rows)
        self.computing: RowKey | None = None

    @property
    def rows(self) -> Mapping[RowKey, Row]:
        """Every row computed or read from the cache so far, by (role, variant); rows never change."""
        return MappingProxyType(self._rows)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.view.close()
        self._handoffs.clear()
        self.inputs.close()

    def source(self, variant: str) -> Source:
        if variant not in self._sources:
            self._sources[variant] = source_for(variant, self.run)
        return self._sources[variant]

    # ------------------------------------------------------------------ rows

    def row(self, role: Role, variant: str = FP) -> Row:
        """The row of one model under one variant ("fp" = full precision), from the cache or computed."""
        row = self._row(role, variant, wait=True)
        assert row is not None
        return row

    def prefetch(self, keys: Sequence[RowKey]) -> None:
        """Compute those of ``keys`` that no other process of the run is computing, before waiting for any that one
        is: two spread workers whose first items both need T and U in full precision then compute one each, instead
        of one computing both while the other waits. Serial and one-worker runs have nothing to wait for."""
        if self.claims is None:
            return
        for role, variant in keys:
            self._row(role, variant, wait=False)

    def _row(self, role: Role, variant: str, wait: bool) -> Row | None:
        """:meth:`row`; with ``wait=False``, None instead of waiting for a row another process holds."""
        if (role, variant) in self._rows:
            return self._rows[(role, variant)]
        self.computing = (role, variant)
        if self.inputs.path(role) is None:
            raise ValueError(f"no {role} model configured")
        source = None if variant == FP else self.source(variant)
        if source is not None and role not in source.roles:
            raise ValueError(f"'{variant}' has no {role} version (it exists for {', '.join(source.roles)})")
        key = row_key(role, source, self.inputs)
        row = self._stored(key, role, variant)
        while row is None:  # not stored: compute it, unless another process of the run already is
            if self.claims is None:
                row = self._compute(key, role, variant, source)
            elif self.claims.try_claim(key):
                # another process may have stored it and let go between the look above and the claim
                row = self._stored(key, role, variant)
                if row is None:
                    row = self._compute(key, role, variant, source)
                else:
                    self.claims.release(key)
            elif not wait:
                self.computing = None
                return None
            else:
                self.inputs.progress(f"{role} {variant}: waiting for another worker")
                self.claims.wait(key, lambda: self.store.get(key))
                row = self._stored(key, role, variant)  # None: its holder stopped without a result; claim it
        row.fingerprint = self.inputs.fingerprint(role)
        self._rows[(role, variant)] = row
        self.computing = None
        return row

    def _stored(self, key: str, role: Role, variant: str) -> Row | None:
        hit = self.store.get(key)
        if hit is None:
            return None
        self.inputs.progress(f"{role} {variant}: cached result")
        return cached_row(hit, role, variant)

    def _compute(self, key: str, role: Role, variant: str, source: Source | None) -> Row:
        held: AbstractContextManager[None] = self.claims.holding(key) if self.claims is not None else nullcontext()
        with held:
            self.view.close()  # a fixture's variant must not leak into this row
            row, handoff = compute_row(role, source, self.inputs, self._handoffs.pop(variant, None))
            if role == "target" and handoff is not None:  # U's row under this variant comes next
                self._handoffs = {variant: handoff}
            if row.ok or self.store is not self.cache:  # a skipped row is not kept beyond this run
                self.store.put(key, row.to_dict())
        return row

    # ------------------------------------------------------------------ items

    def checks(self) -> list[tuple[str, str]]:
        """The run's (variant, check) items, in order."""
        return plan_checks(self.run.variants, judged_metrics(self.inputs.benchmark))

    def check(self, variant: str, check: str, budget: Budget | None = None) -> Verdict:
        """Compute the rows one item needs, then judge it (skipped when a backend is missing)."""
        spec = next((m for m in self.inputs.benchmark.metrics if m.item == check), None)
        if spec is None:
            raise ValueError(f"'{check}' is no item of the {self.inputs.benchmark.name} benchmark")
        has_target = variant == FP or "target" in self.source(variant).roles
        needed = needed_rows(variant, spec.role, quantized_target=has_target, retrain=self.run.retrain is not None)
        self.prefetch(needed)
        for role, q in needed:
            row = self.row(role, q)
            if not row.ok:
                return Verdict(item_name(variant, check), variant, check, "skipped", str(row.skip_reason))
        figs = self.figures(needed)
        if spec.role == "privacy":
            problem = figs.rules[spec.name].problem(*figs.reference[spec.name])
            if problem is not None:  # the user asked for the check; it cannot be made: fail, never pass or skip
                return Verdict(item_name(variant, check), variant, check, "failed", problem)
        return judge_item(variant, check, figs, budget or self.run.budget, self.run.verdict)

    def figures(self, keys: Sequence[RowKey]) -> Figures:
        """The figures of these rows (an item's: so its intervals are the same on any worker), once
        per set of rows: rows never change once computed, and the bootstrap is the costly part."""
        memo = frozenset(keys)
        if memo not in self._figures:
            self._figures[memo] = figures([self._rows[k] for k in keys], self.inputs.benchmark, bootstrap_of(self.run))
        return self._figures[memo]

    def build_report(self, verdicts: Iterable[Verdict], execution: list[dict[str, Any]] | None = None) -> Report:
        """The report of every row computed so far and ``verdicts``."""
        return build_report(
            self.run,
            self._rows.values(),
            verdicts,
            data=self.inputs.data,
            fingerprints=self.inputs.fingerprints(),
            execution=execution,
            benchmark=self.inputs.benchmark,
        )


def gate(
    model: str | os.PathLike[str] | None = None,
    target: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    *,
    run: RunConfig | None = None,
    cache: ResultCache | None = None,
    progress: Progress | None = None,
    checks: Sequence[tuple[str, str]] | None = None,
    first: Sequence[RowKey] | None = None,
    **settings: Any,
) -> Report:
    """Run a whole gate and return its report: every (variant, check) item, with the q(T) row of
    every quantizer beside its q(U) row.

    ``ua.gate("ckpt/unlearned", "ckpt/target", "data/news", quantizers="bnb-fp4,rtn-w8", budget="recovery=0.2")``:
    keyword settings are the options' names without ``--unlearn-`` (``retrain``, ``quantizers``,
    ``budget``, ``device``, ``dtype``, ``batch_size``, ``max_samples``, ``quantized``, ``calibration``,
    ``retrain_auc``, ``cache_dir``, ``no_cache``...), validated as the options are; or pass a
    ready ``run``. Every input is checked before any model loads (:func:`~.inputs.precheck`).
    ``checks`` limits the items run (default: all of the run's). ``first``: rows to compute before
    the items ask for them, a schedule hint for processes sharing a cache (the results are the same).
    """
    if run is None:
        given = {"model": model, "target": target, "data": data, **settings}
        run = run_config(**given)
    elif model is not None or target is not None or data is not None or settings:
        from ..errors import ConfigError

        raise ConfigError("pass either a run config (run=) or the gate's settings, not both")
    precheck(run)
    from ..scaleout.workers import divide_machine

    device, execution = divide_machine(run.device, run.devices, None)
    with Gate(run, cache, progress, device=device) as g:
        for role, variant in first or ():
            g.row(role, variant)
        verdicts = [g.check(q, c) for q, c in (checks if checks is not None else g.checks())]
        for q in run.variant_ids:  # the table shows q(T) beside q(U) even where no check needed it
            g.row("target", q)
        return g.build_report(verdicts, execution=[execution])
