"""Issue 29's side-by-side table: the plain model, SURE, and quantization-aware unlearning on a demo family.

Run (one thread; the kernel path is the environment's)::

    python benchmarks/quant_aware_table.py --family ~/.cache/unlearn-assert/demo/<key> --out DIR \\
        [--qa qa_rtn:quant_aware=rtn-w4g64] [--qa qa_rtn_lr5:quant_aware=rtn-w4g64,lr=5e-5,steps=200] \\
        [--timing-steps 20]

``--family`` is a built demo family (``unlearn-assert demo`` builds one; its ``family.json`` holds the
recipe). Each ``--qa NAME:OVERRIDES`` trains one quantization-aware model with the family's own
trainer settings of its plain model (``npo_klr``: method, lr, steps, bf16 weights, seed), changed by
``OVERRIDES`` (``field=value`` of ``UnlearnSettings``, comma-separated; ``quant_aware`` lists ids
joined by ``+``), on the family's target and unlearning data, and saves it to ``DIR/models/NAME``
(reused when it is there). Then every model (the family's plain and SURE models and each QA model)
is gated with ``unlearn_assert.gate`` exactly as ``unlearn-assert demo`` gates (default budget,
float32, the family's retrain model, the demo's quantizers and ``relearn-forget-50``; rows cached in
``DIR/cache``), and the script writes:

* ``DIR/table.md``: full-precision forgetting and utility, training cost, then recovery and utility
  under every quantizer (the one each QA model was trained against and the others) per model;
* ``DIR/table.json``: the same numbers, the settings of every model and the gate reports' paths.

Training cost is measured as a ratio in this process (absolute times on a shared machine mean
little): the plain, SURE and every QA recipe run ``--timing-steps`` steps each, in turn, twice, on
the same target and data; the table gives each recipe's seconds per step (the faster round) and
its ratio to the plain recipe's, and the full run's estimated time (steps x seconds per step).
Measurement only: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

FORGET = ("knowmem_f", "verbmem_f")


def _say(line: str) -> None:
    print(line, flush=True)


def parse_qa(text: str, base: Any) -> tuple[str, Any]:
    """``NAME:field=value,...`` -> (NAME, the base settings with those fields replaced)."""
    name, _, overrides = text.partition(":")
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"--qa {text!r}: NAME must be letters, digits and '_'")
    types = {f.name: f.type for f in fields(base)}
    changes: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in overrides.split(","))):
        key, _, raw = item.partition("=")
        if key not in types:
            raise SystemExit(f"--qa {text!r}: UnlearnSettings has no field {key!r}")
        current = getattr(base, key)
        if key == "quant_aware":
            changes[key] = tuple(filter(None, raw.split("+")))
        elif isinstance(current, bool):
            changes[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(current, int) and not isinstance(current, bool):
            changes[key] = int(float(raw))
        elif isinstance(current, float):
            changes[key] = float(raw)
        elif current is None:  # sure_top, steps, epochs: numbers that may be unset
            changes[key] = float(raw) if "." in raw or "e" in raw else int(raw)
        else:
            changes[key] = raw
    return name, replace(base, **changes).validated()


def family_settings(family: Path) -> dict[str, Any]:
    """{model name: UnlearnSettings} of the family's unlearned models, from family.json."""
    from unlearn_assert.demo.family import UnlearnRecipe

    meta = json.loads((family / "family.json").read_text())
    return {u["name"]: UnlearnRecipe.from_dict(u).run_settings() for u in meta["recipe"]["unlearned"]}


def train(family: Path, out: Path, settings: Any) -> dict[str, Any]:
    from unlearn_assert.demo.family import unlearning_data
    from unlearn_assert.unlearning.trainer import save_unlearned, unlearn

    if (out / "config.json").is_file():
        return json.loads((out / "unlearn_run.json").read_text())
    result = unlearn(
        str(family / "target"),
        unlearning_data(family / "data"),
        replace(settings, log_every=max(1, (settings.steps or 10) // 10)),
        progress=lambda line: _say(f"  {out.name}: {line}"),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_unlearned(result, out)
    return result.to_json()


def time_recipes(family: Path, recipes: dict[str, Any], steps: int) -> dict[str, dict[str, float]]:
    """Seconds per step of each recipe over ``steps`` steps, two rounds in turn, in this process."""
    from unlearn_assert.demo.family import unlearning_data
    from unlearn_assert.models import load_model
    from unlearn_assert.unlearning.trainer import unlearn

    target = load_model(str(family / "target"), device="cpu", dtype="float32")
    data = unlearning_data(family / "data")
    best: dict[str, float] = {}
    for _ in range(2):
        for name, s in recipes.items():
            t = time.perf_counter()
            result = unlearn(target, data, replace(s, steps=steps, epochs=None, log_every=steps))
            per_step = result.seconds / steps  # the loop only: setup (SURE saliency, llama.cpp's plan) is once per run
            setup = time.perf_counter() - t - result.seconds
            if per_step < best.get(name, float("inf")):
                best[name] = per_step
                best[f"{name}:setup"] = setup
    plain = best[next(iter(recipes))]
    return {
        name: {
            "seconds_per_step": round(best[name], 4),
            "x_plain": round(best[name] / plain, 2),
            "setup_seconds": round(best[f"{name}:setup"], 2),
            "full_run_seconds": round(best[name] * (recipes[name].steps or 0), 1),
        }
        for name in recipes
    }


def gate(model: Path, family: Path, quantizers: tuple[str, ...], out: Path, name: str) -> dict[str, Any]:
    import unlearn_assert as ua
    from unlearn_assert.demo.run import DEMO_DTYPE

    path = out / "reports" / f"{name}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    report = ua.gate(
        str(model),
        str(family / "target"),
        str(family / "data"),
        retrain=str(family / "retrain"),
        quantizers=",".join(quantizers),
        dtype=DEMO_DTYPE,
        cache_dir=str(out / "cache"),
        progress=lambda line: _say(f"  {name}: {line}"),
    ).to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return dict(report)


def _row(report: dict[str, Any], model: str, variant: str) -> dict[str, Any]:
    return next((r for r in report["rows"] if r["model"] == model and r["quantizer"] == variant), {})


def _verdicts(report: dict[str, Any], variant: str) -> dict[str, str]:
    return {v.get("check", ""): v.get("outcome", "") for v in report["verdicts"] if v.get("quantizer") == variant}


def summarize(name: str, report: dict[str, Any], quantizers: tuple[str, ...]) -> dict[str, Any]:
    t, u = _row(report, "target", "fp")["values"], _row(report, "unlearned", "fp")["values"]
    out: dict[str, Any] = {
        "fp": {m: u.get(m) for m in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")},
        "target_fp": {m: t.get(m) for m in ("verbmem_f", "knowmem_f", "knowmem_r")},
        "utility_fp": _row(report, "unlearned", "fp").get("utility"),
        "fp_verdicts": _verdicts(report, "fp"),
        "variants": {},
    }
    for q in quantizers:
        row = _row(report, "unlearned", q)
        out["variants"][q] = {
            "recovery": row.get("recovery"),
            "recovery_ci": row.get("recovery_ci"),
            "utility": row.get("utility"),
            "values": row.get("values"),
            "code_agreement": row.get("code_agreement"),
            "verdicts": _verdicts(report, q),
            "status": row.get("status"),
        }
    return out


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.0%}"


def _cell(v: dict[str, Any]) -> str:
    if v.get("status") == "skipped":
        return "skipped"
    rec = v.get("recovery") or {}
    failed = [c for c, o in v["verdicts"].items() if o == "failed"]
    verdict = "pass" if not failed else "FAIL " + ", ".join(failed)
    return (
        f"km {_pct(rec.get('knowmem_f'))} / vm {_pct(rec.get('verbmem_f'))}, util {_pct(v.get('utility'))} ({verdict})"
    )


def markdown(summary: dict[str, Any], quantizers: tuple[str, ...], meta: dict[str, Any]) -> str:
    names = list(summary["models"])
    c = meta["compute"] if isinstance(meta["compute"], dict) else {}
    compute = (
        f"{c.get('cpu_capability')}, {'native' if c.get('native_bf16') else 'no native'} bf16" if c else meta["compute"]
    )
    lines = [
        f"Family `{meta['family_key']}` ({meta['family']}), kernels: {meta['kernels']} ({compute}), "
        f"seed {meta['seed']}, default budget, float32 evaluation. Measured {meta['date']}.",
        "",
    ]
    lines += [
        "| model | trained against | fp knowmem_f | fp verbmem_f | knowmem_r (of T) | privleak | fp items "
        "| s/step (x plain) | full run (est.) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    t = next(iter(summary["models"].values()))["target_fp"]
    lines.append(f"| target | - | {t['knowmem_f']:.1f} | {t['verbmem_f']:.1f} | {t['knowmem_r']:.1f} | - | - | - | - |")
    for name in names:
        s = summary["models"][name]
        fp = s["fp"]
        timing = summary["timing"].get(name, {})
        failed = [c for c, o in s["fp_verdicts"].items() if o == "failed"]
        qa = ", ".join(summary["settings"][name].get("quant_aware") or []) or (
            "SURE" if summary["settings"][name].get("sure") else "-"
        )
        lines.append(
            f"| {name} | {qa} | {fp['knowmem_f']:.1f} | {fp['verbmem_f']:.1f} | {fp['knowmem_r']:.1f} "
            f"({_pct(s['utility_fp'])}) | {fp['privleak']:+.1f} | "
            f"{'pass' if not failed else 'FAIL ' + ', '.join(failed)} | "
            f"{timing.get('seconds_per_step', '-')} ({timing.get('x_plain', '-')}x) | "
            f"{timing.get('full_run_seconds', '-')} s |"
        )
    lines += ["", "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for q in quantizers:
        lines.append(f"| {q} | " + " | ".join(_cell(summary["models"][n]["variants"][q]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--family", type=Path, required=True, help="a built demo family directory (holds family.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--qa", action="append", default=None, help="NAME:field=value,... (default: qa_rtn_w4g64:quant_aware=rtn-w4g64)"
    )
    parser.add_argument(
        "--quantizers",
        default=None,
        help="comma-separated (default: the demo's, with gguf-q4_k_m and relearn-forget-50)",
    )
    parser.add_argument("--timing-steps", type=int, default=20, help="steps per recipe for the cost ratio (0: skip)")
    parser.add_argument(
        "--plain",
        default="npo_klr",
        help="the family's plain model (default: npo_klr); QA models start from its settings",
    )
    parser.add_argument("--sure", default="npo_klr_sure", help="the family's SURE model (default: npo_klr_sure)")
    parser.add_argument("--render-only", action="store_true", help="only write DIR/table.md again from DIR/table.json")
    args = parser.parse_args(argv)
    if args.render_only:
        done = json.loads((args.out / "table.json").read_text())
        (args.out / "table.md").write_text(markdown(done, tuple(done["meta"]["quantizers"]), done["meta"]))
        _say((args.out / "table.md").read_text())
        return 0
    import torch

    from unlearn_assert.demo.run import demo_quantizers
    from unlearn_assert.hardware import compute_info

    torch.set_num_threads(1)
    family = args.family.expanduser().resolve()
    settings = family_settings(family)
    plain_name, sure_name = args.plain, args.sure
    qa = dict(parse_qa(text, settings[plain_name]) for text in (args.qa or ["qa_rtn_w4g64:quant_aware=rtn-w4g64"]))
    quantizers = tuple(args.quantizers.split(",")) if args.quantizers else demo_quantizers()
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    for name, s in qa.items():
        _say(f"training {name}: {s}")
        runs[name] = train(family, args.out / "models" / name, s)
    timing = (
        time_recipes(
            family, {plain_name: settings[plain_name], sure_name: settings[sure_name], **qa}, args.timing_steps
        )
        if args.timing_steps
        else {}
    )
    models = {
        plain_name: family / plain_name,
        sure_name: family / sure_name,
        **{n: args.out / "models" / n for n in qa},
    }
    summary: dict[str, Any] = {"models": {}, "timing": timing, "settings": {}, "reports": {}}
    for name, path in models.items():
        report = gate(path, family, quantizers, args.out, name)
        summary["models"][name] = summarize(name, report, quantizers)
        summary["reports"][name] = str(args.out / "reports" / f"{name}.json")
        summary["settings"][name] = asdict(settings.get(name) or qa[name])
        if name in runs:
            summary["models"][name]["training_seconds_measured"] = runs[name]["seconds"]
    meta = {
        "family": str(family),
        "family_key": family.name,
        "kernels": "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "default",
        "compute": compute_info(),
        "seed": settings[plain_name].seed,
        "date": time.strftime("%Y-%m-%d"),
        "quantizers": list(quantizers),
    }
    summary["meta"] = meta
    (args.out / "table.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (args.out / "table.md").write_text(markdown(summary, quantizers, meta))
    _say((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
