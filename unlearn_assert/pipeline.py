"""The engine, free of pytest: rows (model x quantizer) computed lazily through the cache, verdicts,
and the JSON-ready report. Used by the pytest session and by the CLI alike.

Memory rule: at most the unlearned and the target model are resident, plus one quantized copy of
the affected weights inside a ``quantized`` block; the retrain model is loaded only for its own row
and released right after. Nothing is loaded when every needed row is in the cache.
"""

from __future__ import annotations

import gc
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from . import __version__
from .cache import FingerprintCache, ResultCache, cache_key
from .config import RunConfig
from .errors import BackendUnavailable
from .metrics import DEFAULT_REFERENCE_AUC
from .verdict import (FP, Verdict, evaluate_check, item_name, needed_rows, plan_checks, privleak_pct,
                      privleak_reference_problem, reference_auc)

ROLES = ("unlearned", "target", "retrain")
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
# Settings that change metric numbers; part of every cache key.
METRIC_SETTINGS = {"verbmem_new_tokens": 128, "knowmem_new_tokens": 32, "privleak": "min-40%", "rouge": "rougeL-f1-nostem"}
Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class Engine:
    """Computes and remembers rows; every public method is safe to call in any order."""

    def __init__(self, run: RunConfig, cache: ResultCache | None = None, progress: Progress | None = None) -> None:
        if not run.enabled:
            raise ValueError("Engine needs a RunConfig with a model")
        self.run = run
        self.cache = cache if cache is not None else ResultCache(run.cache_dir, enabled=not run.no_cache)
        self.progress = progress or _noop
        self._fingerprints = FingerprintCache(self.cache)
        self._data: Any = None
        self._models: dict[str, Any] = {}
        self._fps: dict[str, str] = {}
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._active: tuple[tuple[str, str], Any, Any] | None = None
        self._evaluations: dict[str, Any] = {}
        self._full_data: Any = None
        self._calibration: Any = None
        self._target_grids: dict[str, Any] = {}  # quantizer -> T's codes from its q(T) row, for U's row (GPTQ/AWQ)

    # ------------------------------------------------------------------ inputs

    def path(self, role: str) -> str | None:
        return {"unlearned": self.run.model, "target": self.run.target, "retrain": self.run.retrain}[role]

    @property
    def full_data(self) -> Any:
        """The whole data set (calibration text is never cut by --unlearn-max-samples)."""
        if self._full_data is None:
            from .data import load_data

            self._full_data = load_data(str(self.run.data))
        return self._full_data

    @property
    def data(self) -> Any:
        """The evaluated data: the first --unlearn-max-samples items of every split."""
        if self._data is None:
            self._data = self.full_data.limited(self.run.max_samples)
        return self._data

    def calibration(self, quantizer: str) -> Any:
        """Calibration text for a calibrated quantizer (GPTQ, AWQ), else None; read once."""
        from .quant.calibration import needs_calibration, resolve_calibration

        if quantizer == FP or self.run.checkpoint(quantizer) is not None or not needs_calibration([quantizer]):
            return None
        if self._calibration is None:
            self._calibration = resolve_calibration(self.run.calibration, self.full_data)
        return self._calibration

    def fingerprint(self, role: str) -> str:
        if role not in self._fps:
            self._fps[role] = self._fingerprints.fingerprint(str(self.path(role)))
        return self._fps[role]

    def checkpoint_fingerprint(self, name: str, path: str) -> str:
        """The content hash of the user's quantized checkpoint ``name``, computed once per engine
        (the on-disk fingerprint cache is off under --unlearn-no-cache, and a checkpoint is large)."""
        key = "checkpoint:" + name
        if key not in self._fps:
            self._fps[key] = self._fingerprints.fingerprint(str(path))
        return self._fps[key]

    def model(self, role: str) -> Any:
        """Load a model once; the unlearned and retrain models are checked against the target."""
        if role not in self._models:
            from .models import check_compatible, load_model

            start = time.perf_counter()
            loaded = load_model(str(self.path(role)), device=self.run.device, dtype=self.run.dtype, allow_pickle=self.run.allow_pickle,
                                known_fingerprint=self.fingerprint(role))
            self._fps[role] = loaded.fingerprint
            if role != "target":
                check_compatible(self.model("target"), loaded, role=role)
            self._models[role] = loaded
            self.progress(f"loaded {role} model {loaded.path} ({time.perf_counter() - start:.1f} s)")
        return self._models[role]

    def release(self, role: str) -> None:
        if self._models.pop(role, None) is not None:
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover
                pass

    def close(self) -> None:
        self.deactivate()
        self._target_grids.clear()
        for role in list(self._models):
            self.release(role)

    # ------------------------------------------------------------------ rows

    def row_key(self, role: str, quantizer: str) -> str:
        parts: dict[str, Any] = {
            "kind": "row",
            "model": self.fingerprint(role),
            "quantizer": quantizer,
            "data": self.data.fingerprint,
            "metrics": METRIC_SETTINGS,
            "device": self.run.device,
            "dtype": self.run.dtype,
            "batch_size": self.run.batch_size,
        }
        checkpoint = self.run.checkpoint(quantizer)
        if checkpoint is not None:  # the artifact's content, and the model its changed_fraction is measured against
            if role != "unlearned":
                raise ValueError(f"checkpoint '{quantizer}' is a quantized unlearned model; it has no {role} row")
            parts["quantizer"] = "checkpoint:" + self.checkpoint_fingerprint(quantizer, checkpoint.path)
        elif quantizer != FP:
            from .quant.spec import parse_quantizer_id

            spec = parse_quantizer_id(quantizer)
            parts["quantizer"] = spec.canonical_id
            calibration = self.calibration(quantizer)
            if calibration is not None:
                parts["calibration"] = calibration.fingerprint
            if role == "unlearned":  # code agreement depends on the target
                parts["target"] = self.fingerprint("target")
        return cache_key(parts)

    def row(self, role: str, quantizer: str = FP) -> dict[str, Any]:
        """The row of one model under one quantizer ("fp" = full precision), cached."""
        if (role, quantizer) in self.rows:
            return self.rows[(role, quantizer)]
        if self.path(role) is None:
            raise ValueError(f"no {role} model configured")
        key = self.row_key(role, quantizer)
        row = self.cache.get(key)
        if row is not None:
            # the key is content-addressed: the same weights under another role (retrain = target, a
            # "unlearned" model that is the target) share it, so the role is this row's, not the cached one's
            row.update(model=role, quantizer=quantizer, cached=True)
            self.progress(f"{role} {quantizer}: cached result")
        else:
            row = self._compute(role, quantizer)
            if row["status"] == "ok":
                self.cache.put(key, row)
        row["fingerprint"] = self.fingerprint(role)
        self.rows[(role, quantizer)] = row
        return row

    def _compute(self, role: str, quantizer: str) -> dict[str, Any]:
        from .metrics import evaluate

        self.deactivate()  # a view from the ``quantized`` fixture must not leak into this row
        start = time.perf_counter()
        base: dict[str, Any] = {"model": role, "quantizer": quantizer, "status": "ok", "skip_reason": None, "cached": False}
        loaded = self.model(role)
        if quantizer == FP:
            self.progress(f"evaluate {role} fp")
            ev = evaluate(loaded, self.data, batch_size=self.run.batch_size)
            quant = None
        else:
            self.progress(f"quantize {role} {quantizer}")
            try:
                with self._quantized(role, quantizer) as q:
                    self.progress(f"evaluate {role} {quantizer}")
                    ev = evaluate(q, self.data, batch_size=self.run.batch_size)
                    quant = q.report.to_dict()
                    grid = getattr(getattr(q, "backend", None), "grid", None)
                    if role == "target" and grid is not None:  # U's row under this quantizer comes next
                        self._target_grids = {quantizer: grid}
                calibration = self.calibration(quantizer)
                if calibration is not None:
                    quant["calibration"] = calibration.summary()
            except BackendUnavailable as exc:
                return {**base, "status": "skipped", "skip_reason": str(exc), "install": exc.install,
                        "values": {m: None for m in METRICS}, "seconds": time.perf_counter() - start}
        if role == "retrain":
            self.release("retrain")
        out = ev.to_dict()
        row = {
            **base,
            "values": {m: out["values"].get(m) for m in METRICS},
            "ci": out.get("ci", {}),
            "auc": out.get("extras", {}).get("auc"),
            "attack_aucs": out.get("extras", {}).get("attack_aucs"),
            "extras": out.get("extras", {}),
            "samples": out.get("samples", {}),
            "quant": quant,
            "code_agreement": quant.get("code_agreement") if quant else None,
            "changed_fraction": quant.get("changed_fraction") if quant else None,
            "small_delta_fraction": quant.get("small_delta_fraction") if quant else None,
            "seconds": time.perf_counter() - start,
        }
        self.progress(f"{role} {quantizer}: " + ", ".join(f"{m} {v:.1f}" for m, v in row["values"].items() if v is not None)
                      + f" ({row['seconds']:.1f} s)")
        return row

    def _quantized(self, role: str, quantizer: str) -> Any:
        """Context manager: the quantized view of a model, from a backend or the user's own checkpoint."""
        checkpoint = self.run.checkpoint(quantizer)
        if checkpoint is not None:
            if role != "unlearned":
                raise ValueError(f"'{quantizer}' is your quantized unlearned checkpoint; there is no {role} version of it")
            return _checkpoint_view(checkpoint, self.model(role), self.run, self.checkpoint_fingerprint(quantizer, checkpoint.path))
        loaded = self.model(role)
        from .quant import quantized

        target = self.model("target") if role == "unlearned" else None
        grid = self._target_grids.pop(quantizer, None) if role == "unlearned" else None
        return quantized(loaded, quantizer, target=target, calibration=self.calibration(quantizer), target_grid=grid)

    # ------------------------------------------------------------------ views for user tests

    def quantized_view(self, quantizer: str, model: str = "unlearned") -> Any:
        """The ``quantized`` fixture: one variant at a time, kept until another is asked for.

        In-place backends quantize the loaded model itself, so the previous variant is restored
        (bit for bit) before the next is applied: never more than one extra copy of the weights."""
        key = (model, quantizer)
        if self._active is not None and self._active[0] == key:
            return self._active[2]
        self.deactivate()
        self.progress(f"quantize {model} {quantizer}")
        ctx = self._quantized(model, quantizer)
        view = ctx.__enter__()
        self._active = (key, ctx, view)
        return view

    def deactivate(self) -> None:
        if self._active is not None:
            _, ctx, _ = self._active
            self._active = None
            ctx.__exit__(None, None, None)

    def evaluate(self, obj: Any, metrics: tuple[str, ...] | list[str] | None = None) -> Any:
        """The ``muse`` fixture: MUSE metrics of a loaded model or quantized view, cached by content."""
        from .metrics import Evaluation, evaluate

        wanted = tuple(metrics) if metrics else METRICS
        key = cache_key({"kind": "evaluate", "model": obj.fingerprint, "data": self.data.fingerprint, "metrics": wanted,
                         "settings": METRIC_SETTINGS, "device": self.run.device, "dtype": self.run.dtype,
                         "batch_size": self.run.batch_size})
        if key not in self._evaluations:
            hit = self.cache.get(key)
            if hit is not None:
                self._evaluations[key] = Evaluation.from_dict(hit)
            else:
                self.progress(f"evaluate {getattr(obj, 'name', obj.path)}")
                ev = evaluate(obj, self.data, metrics=list(wanted), batch_size=self.run.batch_size)
                self.cache.put(key, ev.to_dict())
                self._evaluations[key] = ev
        return self._evaluations[key]

    # ------------------------------------------------------------------ privleak reference, values, verdicts

    def reference_auc(self) -> tuple[float, str]:
        """MUSE's AUC_R: from the retrain model, else ``--unlearn-retrain-auc``, else 0.5."""
        retrain_auc = self.row("retrain", FP).get("auc") if self.run.retrain is not None else None
        return reference_auc(retrain_auc, self.run.retrain_auc, DEFAULT_REFERENCE_AUC)

    def values(self, rows: list[tuple[str, str]] | None = None) -> dict[tuple[str, str], dict[str, float | None]]:
        """Metric values of rows, with privleak = (AUC - AUC_R) / AUC_R * 100 against the reference."""
        keys = rows if rows is not None else list(self.rows)
        ref, _ = self.reference_auc() if any(self.row(*k).get("auc") is not None for k in keys) else (DEFAULT_REFERENCE_AUC, "default")
        out: dict[tuple[str, str], dict[str, float | None]] = {}
        for key in keys:
            row = self.row(*key)
            vals = dict(row["values"])
            auc = row.get("auc")
            vals["privleak"] = privleak_pct(auc, ref)
            out[key] = vals
        return out

    def checks(self) -> list[tuple[str, str]]:
        return plan_checks(self.run.all_quantizers, self.run.has_reference_auc)

    def verdict(self, quantizer: str, check: str, budget: Any = None) -> Verdict:
        """Compute the rows one check needs, then its verdict (skipped when a backend is missing)."""
        needed = needed_rows(quantizer, check, quantized_target=self.run.checkpoint(quantizer) is None)
        for role, q in needed:
            row = self.row(role, q)
            if row["status"] == "skipped":
                return Verdict(item_name(quantizer, check), quantizer, check, "skipped", str(row["skip_reason"]))
        if check == "privleak":
            problem = privleak_reference_problem(*self.reference_auc())
            if problem is not None:  # the user asked for the check; it cannot be made: fail, never pass or skip
                return Verdict(item_name(quantizer, check), quantizer, check, "failed", problem)
        # q(T) beside a utility item is context when another item already computed it; never computed for it
        qt = ("target", quantizer)
        context = [qt] if qt not in needed and self.rows.get(qt, {}).get("status") == "ok" else []
        return evaluate_check(quantizer, check, self.values(needed + context), budget or self.run.budget)


# ---------------------------------------------------------------------- report assembly


@contextmanager
def _checkpoint_view(checkpoint: Any, source: Any, run: RunConfig, known_fingerprint: str) -> Iterator[Any]:
    """The user's quantized checkpoint as a view with a ``report``, like ``quantized`` yields."""
    from .quant.checkpoint import open_checkpoint

    with open_checkpoint(checkpoint, source, device=run.device, dtype=None if run.dtype == "auto" else run.dtype,
                         known_fingerprint=known_fingerprint) as (loaded, report):
        loaded.report = report  # type: ignore[attr-defined]
        yield loaded


def _calibration_info(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The calibration GPTQ/AWQ rows were computed with, as recorded on the rows (None without them)."""
    return next((r["quant"]["calibration"] for r in rows if (r.get("quant") or {}).get("calibration")), None)


def provenance(run: RunConfig, fingerprints: dict[str, str], data: Any, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    cuda = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    models: dict[str, Any] = {}
    for role, path in (("unlearned", run.model), ("target", run.target), ("retrain", run.retrain)):
        models[role] = {"path": path, "fingerprint": fingerprints.get(role)} if path else None
    return {
        "unlearn_assert": __version__,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "backends": {name: _version(name) for name in ("bitsandbytes", "llmcompressor", "gptqmodel", "hqq")},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": __import__("os").cpu_count(), "cuda": cuda},
        "models": models,
        "data": {"path": run.data, "fingerprint": getattr(data, "fingerprint", None),
                 "counts": data.counts() if data is not None and hasattr(data, "counts") else {}},
        "budgets": run.budget.to_dict(),
        "settings": {"device": run.device, "dtype": run.dtype, "batch_size": run.batch_size,
                     "max_samples": run.max_samples, "quantizers": list(run.all_quantizers),
                     "calibration": calibration,
                     "quantized_checkpoints": {c.name: {"path": c.path, "method": c.method} for c in run.prequantized}},
        "argv": sys.argv[1:],
    }


def assemble_report(
    run: RunConfig,
    rows: list[dict[str, Any]],
    verdicts: list[dict[str, Any]],
    fingerprints: dict[str, str],
    data: Any,
    reference: tuple[float, str] | None = None,
) -> dict[str, Any]:
    """The schema-1 JSON report (DESIGN.md, "JSON report") from plain rows and verdicts."""
    by_key = {(r["model"], r["quantizer"]): r for r in rows}
    ref_auc, ref_source = reference or reference_auc(by_key.get(("retrain", FP), {}).get("auc"), run.retrain_auc, DEFAULT_REFERENCE_AUC)
    order = [("unlearned", FP)] + [("unlearned", q) for q in run.all_quantizers] + [("target", FP)] + \
        [("target", q) for q in run.quantizers] + [("retrain", FP)]
    out_rows: list[dict[str, Any]] = []
    samples: dict[str, Any] = {}
    t_fp = by_key.get(("target", FP), {}).get("values", {})
    u_fp = by_key.get(("unlearned", FP), {}).get("values", {})
    for key in order + [k for k in by_key if k not in order]:
        row = by_key.get(key)
        if row is None:
            continue
        values = dict(row.get("values") or {})
        auc = row.get("auc")
        values["privleak"] = privleak_pct(auc, ref_auc)
        rec = None
        if key[0] == "unlearned" and key[1] != FP and row.get("status") == "ok":
            from .verdict import recovery

            rec = {}
            for m in ("verbmem_f", "knowmem_f"):
                if None in (values.get(m), u_fp.get(m), t_fp.get(m)):
                    rec[m] = None
                else:
                    rec[m] = recovery(values[m], u_fp[m], t_fp[m])
        out_rows.append({
            "model": key[0], "quantizer": key[1], "values": values, "ci": row.get("ci", {}), "recovery": rec,
            "code_agreement": row.get("code_agreement"), "changed_fraction": row.get("changed_fraction"),
            "small_delta_fraction": row.get("small_delta_fraction"), "quant": row.get("quant"),
            "auc": auc, "attack_aucs": row.get("attack_aucs"), "status": row.get("status", "ok"),
            "skip_reason": row.get("skip_reason"), "cached": bool(row.get("cached")), "seconds": row.get("seconds", 0.0),
        })
        if row.get("samples"):
            samples[f"{key[0]}:{key[1]}"] = row["samples"]
    prov = provenance(run, fingerprints, data, _calibration_info(rows))
    prov["privleak_reference"] = {"auc": ref_auc, "source": ref_source}
    return {
        "schema_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": prov,
        "rows": out_rows,
        "verdicts": sorted(verdicts, key=lambda v: _verdict_order(run, v)),
        "samples": samples,
    }


def _verdict_order(run: RunConfig, v: dict[str, Any]) -> tuple[int, str]:
    qs = [FP, *run.all_quantizers]
    q = v.get("quantizer", FP)
    return (qs.index(q) if q in qs else len(qs), str(v.get("item")))
