"""The ``unlearn-assert`` command: library features without pytest.

Subcommands grow with the project (demo, unlearn, report); each prints one-line errors (exit 2)
for bad input instead of a traceback, like the pytest plugin's usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UnlearnAssertError
from .testing import TinyRecipe
from .version import __version__


def _cmd_tiny(args: argparse.Namespace) -> int:
    """Build a tiny Llama (tokenizer + weights) trained on a MUSE-layout data set's text."""
    from .data.muse import load_data
    from .testing import build_tiny_llama

    data = load_data(args.data)
    texts: list[str] = []
    for raw in (data.raw_forget, data.raw_retain):
        if raw:
            texts.extend(p for p in raw.split("\n\n") if p.strip())
    for qa in (*data.knowmem_forget_qa, *data.knowmem_retain_qa, *data.knowmem_forget_icl, *data.knowmem_retain_icl):
        texts.append(f"Question: {qa.question}\nAnswer: {qa.answer}\n\n")
    texts.extend(item.prompt + " " + item.gt for item in data.verbmem_forget)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not (out / "tiny_recipe.json").is_file():
            raise UnlearnAssertError(
                f"output directory '{out}' is not empty; choose a new directory (only an earlier 'tiny' build is "
                "replaced)"
            )
        import shutil

        shutil.rmtree(out)  # our own earlier build (it has our marker file): rebuild it
    recipe = TinyRecipe(steps=args.steps, seed=args.seed)
    print(f"building a tiny Llama from {len(texts)} texts of {args.data} ({recipe.steps} steps) ...", flush=True)
    build_tiny_llama(out, texts, recipe)
    print(f"wrote {out}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    """Quantize a model in memory and print what the quantizer did (nothing is written)."""
    from .models import check_compatible, load_model
    from .quant import quantized

    model = load_model(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    target = None
    if args.target:
        target = load_model(args.target, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
        check_compatible(target, model)
    from .quant.calibration import load_calibration_file, needs_calibration

    calibration = None
    if args.calibration:
        calibration = load_calibration_file(args.calibration)
    elif needs_calibration(args.quantizer):
        raise UnlearnAssertError(
            f"{', '.join(needs_calibration(args.quantizer))} calibrate on text; pass --calibration FILE (retain-like "
            "text)"
        )
    results = []
    for qid in args.quantizer:
        with quantized(model, qid, target=target, calibration=calibration) as q:
            report = q.details.to_dict()
        results.append(report)
        agreement = report.get("code_agreement")
        print(
            f"{qid}: {len(report['modules'])} modules, {report['n_weights']} weights, "
            f"changed {report['changed_fraction']:.4f}"
            + (f", code agreement with target {agreement:.4f}" if agreement is not None else ""),
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": model.path, "fingerprint": model.fingerprint, "quantizers": results}, indent=2)
        )
        print(f"wrote {args.json}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Render a JSON report (from --unlearn-json) as the self-contained HTML page, offline."""
    from .render import load_report, write_html
    from .render.terminal import counts_line, privleak_note, render_table, resolution_lines, summary_line

    report = load_report(args.report)
    out = args.output or str(Path(args.report).with_suffix(".html"))
    if Path(out).resolve() == Path(args.report).resolve():
        raise UnlearnAssertError(f"output '{out}' is the input report; choose another path with -o")
    write_html(report, out)
    counts = counts_line(report)
    if counts:
        print(counts)
    for line, _ in resolution_lines(report):
        print(line)
    print(render_table(report))
    note = privleak_note(report)
    if note:
        print(note)
    print(summary_line(report))
    print(f"wrote {out}")
    return 0


def _cmd_lm_eval(args: argparse.Namespace) -> int:
    """lm-evaluation-harness's own command line with the ``unlearn-assert`` model backend registered."""
    from .lmeval.cli import run_lm_eval

    return run_lm_eval(args.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearn-assert", description="Does LLM unlearning survive quantization?")
    parser.add_argument("--version", action="version", version=f"unlearn-assert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny", help="build a tiny Llama checkpoint trained on a data set's text (no download)")
    tiny.add_argument("--data", required=True, help="MUSE-layout data directory whose text to train on")
    tiny.add_argument("--out", required=True, help="new directory to write the checkpoint to")
    tiny.add_argument(
        "--steps", type=int, default=TinyRecipe.steps, help=f"training steps (default: {TinyRecipe.steps})"
    )
    tiny.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    tiny.set_defaults(func=_cmd_tiny)

    quant = sub.add_parser("quantize", help="quantize a model in memory and report what changed")
    quant.add_argument("model", help="local Hugging Face model directory")
    quant.add_argument(
        "-q", "--quantizer", action="append", required=True, help="quantizer id, repeatable (e.g. rtn-w4g128)"
    )
    quant.add_argument("--target", help="target model: also report code agreement q(model) == q(target)")
    quant.add_argument("--device", default="cpu", help="device (default: cpu)")
    quant.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default: auto)")
    quant.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (unsafe)")
    quant.add_argument("--calibration", help="calibration text for gptq/awq ids (.txt, .json or .jsonl)")
    quant.add_argument("--json", help="also write the reports as JSON to this path")
    quant.set_defaults(func=_cmd_quantize)

    rep = sub.add_parser("report", help="render a JSON report as a self-contained HTML page (offline)")
    rep.add_argument("report", help="JSON report written by --unlearn-json")
    rep.add_argument("-o", "--output", help="HTML path (default: the report path with .html)")
    rep.set_defaults(func=_cmd_report)

    lmeval = sub.add_parser(
        "lm-eval",
        add_help=False,
        help="lm-evaluation-harness's command line with the unlearn-assert backend: lm-eval ARGS... (e.g. run "
        "--model unlearn-assert --model_args pretrained=DIR,variant=rtn-w4g128 --tasks mmlu)",
    )
    lmeval.add_argument("args", nargs=argparse.REMAINDER, help="lm-eval's own arguments, passed unchanged")
    lmeval.set_defaults(func=_cmd_lm_eval)

    from .unlearning.cli import add_unlearn_parser

    add_unlearn_parser(sub)

    from .demo.run import add_demo_parser

    add_demo_parser(sub)

    from .quant.llama_cpp_source import add_parser as add_llama_cpp_parser

    add_llama_cpp_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["lm-eval"]:  # lm-eval's arguments pass unchanged (argparse would take their options for ours)
        args = argparse.Namespace(func=_cmd_lm_eval, args=raw[1:])
    else:
        args = parser.parse_args(raw)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UnlearnAssertError as exc:
        print(f"unlearn-assert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearn-assert: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
