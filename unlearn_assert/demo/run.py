"""``unlearn-assert demo``: build the demo family if needed, gate its plain and its SURE model,
print both tables, write ``DIR/<model>.json`` and ``DIR/<model>.html``, and end with one plain
sentence per model.

What the demo is meant to show (the paper's result, measured on this machine): the plain
small-learning-rate model forgets in full precision, but 4-bit quantization brings a large part of
the forgotten knowledge back, so the default budget fails its 4-bit items; the SURE model forgets
and stays forgotten under the same quantizers, so its 4-bit recovery items pass. The exit code is 0
exactly when both happened (see :func:`judge`); every quantizer's recovery is printed and written,
including those that show none, and so is the relearning attack's (:data:`DEMO_ATTACKS`), which
the exit code does not judge.

The gate runs through :func:`unlearn_assert.engine.gate`, the same engine as the pytest plugin,
with the default budget, so a warm run (family built, rows in the result cache) loads no model.

Importing this module is cheap (no torch): ``add_demo_parser`` runs for every ``unlearn-assert --help``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.rows import RowKey
    from ..render.schema import ReportDict

__all__ = ["DEMO_ATTACKS", "DEMO_GGUF", "DEMO_QUANTIZERS", "add_demo_parser", "demo_quantizers", "judge", "run_demo"]

#: The quantizers the demo gates with: the paper's 4-bit (bitsandbytes FP4), round-to-nearest 4-bit
#: per channel and in groups of 64, NF4, and the two 8-bit ones. bnb-* rows are reported as skipped
#: (with the pip command) when bitsandbytes is not installed.
DEMO_QUANTIZERS: tuple[str, ...] = ("bnb-fp4", "rtn-w4", "rtn-w4g64", "bnb-nf4", "rtn-w8", "bnb-int8")
#: The other cheap attack, beside the quantizers: 50 steps of fine-tuning on the first half of the
#: forget articles, measured on the other half (docs/relearning.md). Reported, not judged: the demo
#: is about quantization, and its exit code says whether the quantization contrast showed.
DEMO_ATTACKS: tuple[str, ...] = ("relearn-forget-50",)
#: llama.cpp's usual default, added to the demo's table when the ``[gguf]`` extra is installed. It is
#: reported, not judged: llama.cpp picks each tensor's type itself (q5_0 where a row is not a multiple
#: of 256, as the demo's 688-wide MLP down projections), so its nominal 4 bits are not the paper's 4-bit setting.
DEMO_GGUF = "gguf-q4_k_m"


def demo_quantizers() -> tuple[str, ...]:
    """:data:`DEMO_QUANTIZERS`, plus :data:`DEMO_GGUF` when gguf and llama-cpp-python are importable and
    llama.cpp's converter is set up (``unlearn-assert llama-cpp-converter``), then :data:`DEMO_ATTACKS`."""
    from importlib.util import find_spec

    from ..quant.llama_cpp_source import find_converter

    has_gguf = find_spec("gguf") is not None and find_spec("llama_cpp") is not None and find_converter()[0] is not None
    return DEMO_QUANTIZERS + ((DEMO_GGUF,) if has_gguf else ()) + DEMO_ATTACKS


DEFAULT_OUT = "demo-report"
#: The demo gates in float32 on CPU, on every CPU: its bf16 weights upcast exactly, and its numbers
#: then do not depend on whether this CPU has native bf16 (``auto`` would pick bf16 where it has).
DEMO_DTYPE = "float32"
Progress = Callable[[str], None]


def _bits(qid: str) -> int | None:
    """A quantizer's bit width; None for an attack (relearning has no bits)."""
    from ..variants.attacks import is_attack_id
    from ..variants.quantizers import parse_quantizer_id

    if is_attack_id(qid):
        return None

    return parse_quantizer_id(qid).bits


def _verdicts(report: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v.get("quantizer", ""), v.get("check", "")): v for v in report.get("verdicts", [])}


def _row(report: Mapping[str, Any], model: str, quantizer: str) -> dict[str, Any] | None:
    for row in report.get("rows", []):
        if row.get("model") == model and row.get("quantizer") == quantizer:
            return row
    return None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def judge(report: Mapping[str, Any], *, sure: bool) -> tuple[bool, str]:
    """Did this model show what the demo expects of it? Returns (ok, one plain sentence).

    * plain model: some forget metric dropped in full precision by at least the budget's floor
      (its ``fp`` item passed), and some 4-bit quantizer's recovery item for such a metric failed
      on the recovery budget (not on the floor);
    * SURE model: some forget metric dropped in full precision, and every recovery item
      (verbmem_f, knowmem_f) of every 4-bit quantizer passed.
    Skipped items (a backend not installed) count neither way. Utility and privleak items are
    reported in the sentence (:func:`_other_items`), not judged: the demo is about recovery under
    quantization.
    """
    verdicts = _verdicts(report)
    prov = report.get("provenance", {})
    quantizers = list(prov.get("settings", {}).get("quantizers", []))
    budgets = prov.get("budgets", {})
    four = [q for q in quantizers if _bits(q) == 4 and q != DEMO_GGUF]
    t_fp = (_row(report, "target", "fp") or {}).get("values", {})
    u_fp = (_row(report, "unlearned", "fp") or {}).get("values", {})
    forgot = [m for m in ("knowmem_f", "verbmem_f") if (verdicts.get(("fp", m)) or {}).get("passed") is True]

    def rec(q: str, metric: str) -> float | None:
        return ((_row(report, "unlearned", q) or {}).get("recovery") or {}).get(metric)

    def passed(q: str, check: str) -> bool | None:
        return (verdicts.get((q, check)) or {}).get("passed")

    table = ", ".join(f"{q} {_pct(rec(q, 'knowmem_f'))} / {_pct(rec(q, 'verbmem_f'))}" for q in quantizers)
    recovered = f"recovery of knowmem_f / verbmem_f: {table}"

    if not forgot:
        drops = ", ".join(f"{m} {t_fp.get(m, float('nan')):.1f} -> {u_fp.get(m, float('nan')):.1f}" for m in ("knowmem_f", "verbmem_f"))
        return False, f"unlearning did not measurably work in full precision ({drops}), so there is no recovery to measure."
    main = max(forgot, key=lambda m: (t_fp.get(m, 0) - u_fp.get(m, 0)) / max(t_fp.get(m, 1e-9), 1e-9))
    drop = (f"{main} fell from {t_fp[main]:.1f} to {u_fp[main]:.1f} in full precision ({u_fp[main] / t_fp[main]:.0%} of the target's)"
            if t_fp.get(main) else f"{main} fell to {u_fp.get(main)}")
    limit = f"{budgets['recovery']:.0%}" if isinstance(budgets.get("recovery"), (int, float)) else "the budget"
    if not sure:
        failing = [q for q in four if any(passed(q, m) is False and rec(q, m) is not None for m in forgot)]
        if failing:
            ranked = sorted(((q, m) for q in failing for m in forgot if rec(q, m) is not None),
                            key=lambda t: (t[1] == main, rec(*t) or 0.0), reverse=True)
            best = ranked[0]
            return True, (f"{drop}, but 4-bit quantization brings it back ({_pct(rec(*best))} of the {best[1]} drop under {best[0]}; "
                          f"{recovered}); the default budget (recovery <= {limit}) fails it under {', '.join(failing)}."
                          + _other_items(verdicts, quantizers, t_fp, u_fp, budgets))
        return False, (f"{drop}, and no 4-bit quantizer brought more than {limit} back ({recovered}); "
                       f"the demo expected this model to fail.")
    bad = [f"{q} {m}" for q in four for m in ("knowmem_f", "verbmem_f") if passed(q, m) is False]
    if bad:
        return False, f"{drop}, but under 4-bit quantization it failed the budget ({', '.join(bad)}; {recovered}); the demo expected SURE to pass."
    return True, (f"{drop}, and it stays forgotten under quantization ({recovered}); every 4-bit recovery item passes."
                  + _other_items(verdicts, quantizers, t_fp, u_fp, budgets))

def _other_items(verdicts: dict[tuple[str, str], dict[str, Any]], quantizers: list[str], t_fp: dict[str, Any],
                 u_fp: dict[str, Any], budgets: dict[str, Any]) -> str:
    """The utility and privleak items in one or two plain sentences: not judged by the demo, but
    never hidden (a reader must not take "every recovery item passes" for "the model passes")."""
    rows = ["fp", *quantizers]

    def failing(check: str) -> list[str]:
        return [q for q in rows if (verdicts.get((q, check)) or {}).get("passed") is False]

    out = ""
    kr_t, kr_u = t_fp.get("knowmem_r"), u_fp.get("knowmem_r")
    if kr_t and kr_u is not None:
        bad = failing("utility")
        ratio = budgets.get("utility", 0.9)
        out += f" It keeps {kr_u / kr_t:.0%} of the target's knowmem_r in full precision; "
        if not bad:
            out += f"its utility items (>= {ratio:.0%} of the target's) pass."
        elif len(bad) == len(rows):
            out += f"its utility items (>= {ratio:.0%} of the target's) fail everywhere."
        else:
            out += f"its utility items (>= {ratio:.0%} of the target's) fail under {', '.join(bad)} and pass elsewhere."
    checked = [q for q in rows if (q, "privleak") in verdicts]
    if checked and u_fp.get("privleak") is not None:
        bad = failing("privleak")
        bound = budgets.get("privleak", 25.0)
        state = ("pass" if not bad else "fail everywhere" if len(bad) == len(checked)
                 else f"fail under {', '.join(bad)}")
        out += (f" Its privleak is {u_fp['privleak']:+.0f}% in full precision (retrain-like is 0; budget +-{bound:g}%), "
                f"so its privleak items {state}.")
    return out


def _gate(name: str, paths: dict[str, str], quantizers: Sequence[str], out: Path, device: str, cache: Any,
          say: Progress, own_rows_first: bool = False) -> ReportDict:
    from ..config import run_config
    from ..engine import gate
    from ..render import write_html, write_json

    run = run_config(model=paths["model"], target=paths["target"], retrain=paths["retrain"], data=paths["data"],
                     quantizers=tuple(quantizers), device=device, dtype=DEMO_DTYPE if device == "cpu" else "auto",
                     json=str(out / f"{name}.json"), html=str(out / f"{name}.html"), model_spec=f"demo:{name}")
    # beside another gate of the same family (sharing the result cache, and so each row's claim): its own
    # rows first, then the shared target rows from the far end, so the two processes rarely wait for each other
    own: list[RowKey] = [("unlearned", q) for q in ("fp", *quantizers)]
    shared: list[RowKey] = [("target", q) for q in reversed(quantizers)]
    first = own + shared if own_rows_first else None
    report = gate(run=run, cache=cache, progress=lambda line: say(f"  {name}: {line}"), first=first).to_dict()
    write_json(report, out / f"{name}.json")
    write_html(report, out / f"{name}.html")
    return report


def _gate_worker(name: str, paths: dict[str, str], quantizers: Sequence[str], out: str, device: str,
                 results_dir: str | None, own_rows_first: bool) -> ReportDict:
    """One model's gate in a worker process, on one CPU thread (prints its own progress lines)."""
    from ..cache import ResultCache
    from ..scaleout.workers import set_torch_threads
    from .family import progress_printer

    set_torch_threads(1)
    return _gate(name, paths, quantizers, Path(out), device, ResultCache(results_dir), progress_printer(None), own_rows_first)


def _gate_all(models: Sequence[str], quantizers: Sequence[str], out: Path, device: str, results_dir: Any, cache_dir: Any,
              recipe: Any, say: Progress) -> dict[str, ReportDict]:
    """Gate every demo model, on one CPU thread per process. Why one thread: on a 2-core machine
    shared with other work, a 2-thread torch process stalls at every step (one evaluation of the
    demo target took 136 s with 2 threads, 15 s with 1, measured here under load). On CPU with two
    or more cores the two models are gated side by side in two processes sharing the result cache
    (the second computes its own rows first, then the target's from the far end, so the shared rows
    are mostly computed once)."""
    from ..cache import ResultCache
    from ..scaleout.workers import torch_threads
    from .family import default_workers, resolve_demo

    paths = {name: resolve_demo(name, cache_dir=cache_dir, recipe=recipe, build=False) for name in models}
    for name in models:
        say(f"gating demo:{name} under {', '.join(quantizers)} (default budget)")
    if device == "cpu" and len(models) > 1 and default_workers() > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(_gate_worker, name, paths[name], tuple(quantizers), str(out), device,
                                         None if results_dir is None else str(results_dir), i % 2 == 1)
                       for i, name in enumerate(models)}
            return {name: f.result() for name, f in futures.items()}
    with torch_threads(1 if device == "cpu" else None):
        cache = ResultCache(results_dir)
        return {name: _gate(name, paths[name], quantizers, out, device, cache, say) for name in models}


def run_demo(
    out_dir: str | os.PathLike[str] = DEFAULT_OUT,
    models: Sequence[str] = ("npo_klr", "npo_klr_sure"),
    rebuild: bool = False,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    recipe: Any = None,
    device: str = "cpu",
    quantizers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Build (if needed) and gate the demo models; returns the exit code (0 = the demo showed the
    paper's result: the plain model fails the 4-bit budget and the SURE model passes it).

    ``cache_dir``: root of the demo family cache (default :func:`.family.default_demo_cache`);
    ``results_dir``: the result cache (default: the user cache dir's ``unlearn-assert/results``);
    ``quantizers``: default :func:`demo_quantizers`.
    """
    from ..render.terminal import counts_line, render_table, resolution_lines, summary_line
    from .family import DEFAULT_RECIPE, build_family, progress_printer

    say = progress_printer(progress)
    recipe = recipe or DEFAULT_RECIPE
    start = time.perf_counter()
    unknown = [m for m in models if m not in recipe.names]
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"unknown demo model(s) {', '.join(unknown)}; choose from {', '.join(recipe.names)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_family(recipe, cache_dir, progress=say, rebuild=rebuild)
    quantizers = demo_quantizers() if quantizers is None else quantizers
    reports = _gate_all(models, quantizers, out, device, results_dir, cache_dir, recipe, say)
    results: list[tuple[str, bool, str]] = []
    for name in models:
        report = reports[name]
        u = recipe.unlearn_recipe(name)
        print(f"\n== demo:{name}: {u.description}", flush=True)
        print(counts_line(report) or "", flush=True)
        for line, _ in resolution_lines(report):
            print(line, flush=True)
        print(render_table(report), flush=True)
        print(summary_line(report), flush=True)
        ok, sentence = judge(report, sure=u.sure)
        results.append((name, ok, sentence))
    print(flush=True)
    for name, _, sentence in results:
        print(f"demo:{name}: {sentence}", flush=True)
    written = ", ".join(str(out / f"{n}.{ext}") for n in models for ext in ("json", "html"))
    print(f"wrote {written} ({time.perf_counter() - start:.0f} s)", flush=True)
    expected = all(ok for _, ok, _ in results)
    if not expected:
        print("the demo did NOT show the expected contrast (see the sentences above)", flush=True)
    return 0 if expected else 1


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to an ``add_subparsers()`` object; its ``func`` is :func:`cmd_demo`."""
    p = subparsers.add_parser(
        "demo",
        help="build the demo family (once) and show the paper's result: the gate fails a plain unlearned model, passes its SURE variant",
        description="Builds (once, cached) a fictitious-news corpus, a tiny Llama that knows it, a retrain model and "
        "unlearned models, then gates the plain and the SURE model under 4- and 8-bit quantizers (and the relearn-forget-50 "
        "attack, reported) with the default budget. "
        "Writes DIR/<model>.json and DIR/<model>.html. Exit code 0 when the plain model fails the 4-bit budget and the "
        "SURE model passes it.",
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"report directory (default: ./{DEFAULT_OUT})")
    p.add_argument("--rebuild", action="store_true", help="rebuild the demo family even if it is cached")
    p.add_argument("--device", default="cpu", help="device to evaluate on (default: cpu, where the family is built)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="root of the demo family cache (default: $UNLEARN_ASSERT_DEMO_CACHE or ~/.cache/unlearn-assert/demo)")
    p.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.out, rebuild=args.rebuild, cache_dir=args.cache_dir, device=args.device)
