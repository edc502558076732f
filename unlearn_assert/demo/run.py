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

from .claims import judge  # the demo's verdict lives with its headline and table (claims.py); re-exported here

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


def _run(name: str, paths: Mapping[str, str], quantizers: Sequence[str], device: str, out: Path | None) -> Any:
    """The run config of one model's demo gate (``out`` None: no report files, for :func:`_rows_ahead`). Rows are
    cached by the content of the models and the data, so rows computed on the family's build directory are found by
    the gate of the family in place."""
    from ..config import run_config

    return run_config(
        model=paths["model"],
        target=paths["target"],
        retrain=paths["retrain"],
        data=paths["data"],
        quantizers=tuple(quantizers),
        device=device,
        dtype=DEMO_DTYPE if device == "cpu" else "auto",
        json=None if out is None else str(out / f"{name}.json"),
        html=None if out is None else str(out / f"{name}.html"),
        model_spec=f"demo:{name}",
    )


def _rows_ahead(
    name: str,
    paths: dict[str, str],
    quantizers: Sequence[str],
    device: str,
    results_dir: str | None,
    own_rows_first: bool = False,
) -> None:
    """Compute one model's gate rows into the result cache (the target's and the retrain model's too) in a build
    worker that would otherwise idle: SURE's model is built minutes before the plain one, so its gate, and the
    rows the plain model's gate shares with it, are done before the build ends (:func:`.family.build_family`'s
    ``follow_up``); the plain model's worker, once free, computes its own rows beside them (``own_rows_first``:
    then the shared target rows from the far end, so the two jobs rarely wait for each other's claims). One CPU
    thread, as every demo process; prints its own progress lines."""
    from ..cache import ResultCache
    from ..engine import gate
    from ..scaleout.workers import set_torch_threads
    from .family import progress_printer

    set_torch_threads(1)
    say = progress_printer(None)
    gate(
        run=_run(name, paths, quantizers, device, None),
        cache=ResultCache(results_dir),
        progress=lambda line: say(f"  {name} (ahead): {line}"),
        first=_own_rows_first(quantizers) if own_rows_first else None,
    )


def _follow_up(quantizers: Sequence[str], device: str, results_dir: Any) -> Callable[[str, Path], Any]:
    """:func:`.family.build_family`'s ``follow_up`` for the demo: :func:`_rows_ahead` for a model built while
    others train or an earlier job runs (every job after the first computes its own rows first)."""

    from .family import model_paths

    given: list[str] = []

    def job(name: str, directory: Path) -> Any:
        paths = model_paths(directory.parent, name)
        results = None if results_dir is None else str(results_dir)
        given.append(name)
        return _rows_ahead, (name, paths, tuple(quantizers), device, results, len(given) > 1)

    return job


def _model_rows(quantizers: Sequence[str]) -> tuple[list[RowKey], list[RowKey]]:
    """A demo gate's rows: the unlearned model's own (full precision first), and the target's it shares with the
    other model's gate."""
    return [("unlearned", q) for q in ("fp", *quantizers)], [("target", q) for q in quantizers]


def _own_rows_first(quantizers: Sequence[str]) -> list[RowKey]:
    """The schedule of a gate that runs beside another of the same family (they share the result cache, and so each
    row's claim): its own rows first, then the shared target rows from the far end, so they rarely wait for each
    other."""
    own, shared = _model_rows(quantizers)
    return own + shared[::-1]


def _gate(
    name: str,
    paths: dict[str, str],
    quantizers: Sequence[str],
    out: Path,
    device: str,
    cache: Any,
    say: Progress,
    own_rows_first: bool = False,
) -> ReportDict:
    from ..engine import gate
    from ..render import write_html, write_json

    run = _run(name, paths, quantizers, device, out)
    first = _own_rows_first(quantizers) if own_rows_first else None
    report = gate(run=run, cache=cache, progress=lambda line: say(f"  {name}: {line}"), first=first).to_dict()
    write_json(report, out / f"{name}.json")
    write_html(report, out / f"{name}.html")
    return report


def _gate_worker(
    name: str,
    paths: dict[str, str],
    quantizers: Sequence[str],
    out: str,
    device: str,
    results_dir: str | None,
    own_rows_first: bool,
    helps: tuple[str, dict[str, str]] | None = None,
) -> ReportDict:
    """One model's gate in a worker process, on one CPU thread (prints its own progress lines). ``helps``: another
    model of the family, gated in the other worker: once this gate is done, this process computes that model's
    rows that no process holds yet, from the far end (:meth:`~unlearn_assert.engine.Gate.prefetch`). After a build
    that computed the SURE model's rows ahead (:func:`_rows_ahead`), its gate takes seconds and the plain model's
    rows are all that is left: two processes share them instead of one."""
    from ..cache import ResultCache
    from ..scaleout.workers import set_torch_threads
    from .family import progress_printer

    set_torch_threads(1)
    cache, say = ResultCache(results_dir), progress_printer(None)
    report = _gate(name, paths, quantizers, Path(out), device, cache, say, own_rows_first)
    if helps is not None:
        from ..engine import Gate

        other, other_paths = helps
        own, shared = _model_rows(quantizers)
        run = _run(other, other_paths, quantizers, device, None)
        with Gate(run, cache, lambda line: say(f"  {name} (for {other}): {line}")) as g:
            g.prefetch((own + shared)[::-1])
    return report


def _gate_all(
    models: Sequence[str],
    quantizers: Sequence[str],
    out: Path,
    device: str,
    results_dir: Any,
    cache_dir: Any,
    recipe: Any,
    say: Progress,
) -> dict[str, ReportDict]:
    """Gate every demo model, on one CPU thread per process. Why one thread: on a 2-core machine
    shared with other work, a 2-thread torch process stalls at every step (one evaluation of the
    demo target took 136 s with 2 threads, 15 s with 1, measured here under load). On CPU with two
    or more cores the two models are gated side by side in two processes sharing the result cache
    (each row computed once: claims): the second computes its own rows first, then the target's from the
    far end, then what is left of the first model's from the far end (after a cold build its own were
    computed during the build, :func:`_rows_ahead`, so it goes straight to the first model's)."""
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
            futures = {
                name: pool.submit(
                    _gate_worker,
                    name,
                    paths[name],
                    tuple(quantizers),
                    str(out),
                    device,
                    None if results_dir is None else str(results_dir),
                    i % 2 == 1,
                    (models[0], paths[models[0]]) if i == 1 else None,
                )
                for i, name in enumerate(models)
            }
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
    quantizers = demo_quantizers() if quantizers is None else quantizers
    ahead = _follow_up(quantizers, device, results_dir) if device == "cpu" else None
    build_family(recipe, cache_dir, progress=say, rebuild=rebuild, follow_up=ahead)
    reports = _gate_all(models, quantizers, out, device, results_dir, cache_dir, recipe, say)
    print_outcome(reports, recipe, out, time.perf_counter() - start)
    expected = all(judge(reports[name], sure=recipe.unlearn_recipe(name).sure)[0] for name in models)
    return 0 if expected else 1


def print_outcome(reports: Mapping[str, ReportDict], recipe: Any, out: Path, seconds: float) -> None:
    """What the demo prints once the gates ran, readable on one screen: one headline per model (what it
    forgot, what came back under which quantizer, pass or fail against the budget), then per model the
    resolution line and a compact table with each check's verdict, then what privleak's -100% means,
    where the reports are, and the demo's conclusion (the same verdicts as the exit code)."""
    from ..render.terminal import privleak_note, resolution_lines
    from .claims import demo_table, headline

    models = list(reports)
    sure = {name: recipe.unlearn_recipe(name).sure for name in models}
    print("\n== unlearn-assert demo: does unlearning survive 4-bit quantization? ==", flush=True)
    for name in models:
        print("\n".join(headline(reports[name], sure=sure[name], name=name)), flush=True)
    for name in models:
        print(f"\n-- demo:{name}: {recipe.unlearn_recipe(name).description}", flush=True)
        for line, _ in resolution_lines(reports[name]):
            print(line.removeprefix("unlearn-assert: "), flush=True)
        print(demo_table(reports[name], sure=sure[name]), flush=True)
    print(
        "\n(values: unlearned model, q(T) = the target under the same quantizer; vm / km / utility / privleak: the "
        "gate's verdict of each check; * = the items the demo judges, the others are reported)",
        flush=True,
    )
    note = next((n for n in (privleak_note(reports[name]) for name in models) if n), None)
    if note:
        print(
            note.removeprefix("unlearn-assert: ") + " The demo does not judge privleak (docs/demo-regime.md, "
            '"privleak at this size").',
            flush=True,
        )
    written = ", ".join(str(out / f"{n}.{ext}") for n in models for ext in ("json", "html"))
    print(f"wrote {written} ({seconds:.0f} s)", flush=True)
    shown = all(judge(reports[name], sure=sure[name])[0] for name in models)
    print(
        "demo: the gate fails the plain model under 4-bit quantization and passes the SURE model: the contrast "
        "showed (exit 0)"
        if shown
        else "demo: the expected contrast did NOT show (see the headlines above; exit 1)",
        flush=True,
    )


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to an ``add_subparsers()`` object; its ``func`` is :func:`cmd_demo`."""
    p = subparsers.add_parser(
        "demo",
        help="build the demo family (once) and show the paper's result: the gate fails a plain unlearned model, passes "
        "its SURE variant",
        description="Builds (once, cached) a fictitious-news corpus, a tiny Llama that knows it, a retrain model and "
        "unlearned models, then gates the plain and the SURE model under 4- and 8-bit quantizers (and the "
        "relearn-forget-50 "
        "attack, reported) with the default budget. "
        "Writes DIR/<model>.json and DIR/<model>.html. Exit code 0 when the plain model fails the 4-bit budget and the "
        "SURE model passes it.",
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"report directory (default: ./{DEFAULT_OUT})")
    p.add_argument("--rebuild", action="store_true", help="rebuild the demo family even if it is cached")
    p.add_argument("--device", default="cpu", help="device to evaluate on (default: cpu, where the family is built)")
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="root of the demo family cache (default: $UNLEARN_ASSERT_DEMO_CACHE or ~/.cache/unlearn-assert/demo)",
    )
    p.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.out, rebuild=args.rebuild, cache_dir=args.cache_dir, device=args.device)
