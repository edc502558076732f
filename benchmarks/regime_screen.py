"""Screen demo regimes for issue 26: one target, one unlearning run with weight snapshots, each snapshot gated.

Why: issue 26 asks for a demo recipe whose plain model forgets a lot in full precision (a drop of >= 20 points
with the gate's resolution <= 25%), whose forgetting a 4-bit quantizer users run (bnb-fp4, bnb-nf4,
gguf-q4_k_m) brings back with its whole paired interval above the 25% budget, and whose SURE model keeps it
forgotten. Finding such a regime means trying corpora, models, learning rates and run lengths; building the
whole family for each point costs too much on a 2-core machine. This screen trains a target once per
corpus / model design (cached in ``OUT/target``), runs one unlearning with the constant learning rate and
saves the weights at several steps (a constant-lr run of k steps is the first k steps of a longer one), and
gates each snapshot with the project's own ``unlearn_assert.gate`` (default budget, float32, no retrain
model) and reads it with the demo's own judge, :func:`unlearn_assert.demo.claims.assess`. Nothing here
computes a statistic of its own.

Run (one thread; the kernel path is the environment's)::

    python benchmarks/regime_screen.py --out /tmp/regime/A --label A-lr3e-5 \\
        --corpus n_forget=64,n_retain=64,forget_topics=court+science --lm intermediate_size=768 \\
        --unlearn lr=3e-5,steps=800 --snapshots 200,400,600,800 \\
        --results benchmarks/results/issue26-regime-screen.jsonl

``--unlearn`` takes :class:`~unlearn_assert.unlearning.settings.UnlearnSettings` fields over the demo's plain
model (``sure=1,sure_top=0.1`` makes a SURE run). One JSON line per
snapshot goes to ``--results``. Measurement only: it asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

FORGET = ("verbmem_f", "knowmem_f")
#: The screen's default quantizers: the three 4-bit ones users run, and the RTN grid that shows the mechanism.
QUANTIZERS = "bnb-fp4,bnb-nf4,rtn-w4g64,gguf-q4_k_m"


def _say(line: str) -> None:
    print(line, flush=True)


def _overrides(cls: Any, base: Any, text: str) -> Any:
    """``base`` (a dataclass instance of ``cls``) with ``name=value`` overrides, typed by the field's default."""
    known = {f.name for f in fields(cls)}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, raw = item.partition("=")
        if name not in known:
            raise SystemExit(f"{cls.__name__} has no field {name!r}")
        old = getattr(base, name)
        value: Any
        if isinstance(old, bool):
            value = raw.lower() in ("1", "true", "yes")
        elif isinstance(old, int):
            value = int(float(raw))
        elif isinstance(old, float) or (old is None and name in ("sure_top", "sure_threshold")):
            value = float(raw)
        else:
            value = raw
        base = replace(base, **{name: value})
    return base


def build_target(root: Path, seed: int, corpus: Any, lm: Any) -> tuple[Path, Path, dict[str, Any]]:
    """``root/data`` and ``root/target`` with the family's own code (reused when ``root/target`` exists)."""
    from unlearn_assert.demo.corpus import training_texts, write_corpus
    from unlearn_assert.demo.family import train_demo_tokenizer, train_lm

    data, target = root / "data", root / "target"
    info_file = root / "target.json"
    if (target / "config.json").is_file():
        return data, target, json.loads(info_file.read_text()) if info_file.is_file() else {}
    write_corpus(data, seed, corpus)
    texts = training_texts(data, forget=True)
    tokenizer = train_demo_tokenizer(texts, lm.vocab_size)
    summary = train_lm(target, texts, tokenizer, lm, label="target", progress=_say)
    kept = {k: v for k, v in summary.items() if k != "loss_per_epoch"}
    info = {"corpus": asdict(corpus), "lm": asdict(lm), "summary": kept}
    info_file.write_text(json.dumps(info, indent=1) + "\n")
    return data, target, info


def unlearn_with_snapshots(target: Path, data: Path, settings: Any, steps: list[int], out: Path) -> dict[int, Path]:
    """Run one unlearning to ``max(steps)`` and save the model at each of ``steps`` under ``out/step-N``.

    How: the bf16-storage emulation rounds every trained weight after each optimizer step
    (``trainer.round_to_bf16_``); wrapping it sees the trained weights of each step (all of them, or
    SURE's selection). The returned model holds the same parameter objects (``Module.to`` converts
    ``.data`` in place), so each snapshot is matched to its parameters by identity. Only runs with bf16
    weight storage call the rounding; a float32 run is saved at its last step only."""
    import torch

    from unlearn_assert.demo.family import unlearning_data
    from unlearn_assert.unlearning import trainer

    done = {k: out / f"step-{k}" for k in steps if (out / f"step-{k}" / "config.json").is_file()}
    if len(done) == len(steps):
        return done
    last = max(steps)
    s = replace(settings, steps=last, log_every=max(1, last // 8))
    snaps: dict[int, dict[int, torch.Tensor]] = {}
    original = trainer.round_to_bf16_
    count = 0

    def capture(params: Any) -> None:
        nonlocal count
        original(params)
        count += 1
        if count in steps and count != last:
            snaps[count] = {id(p): p.detach().clone() for p in params}

    trainer.round_to_bf16_ = capture  # type: ignore[assignment]
    try:
        result = trainer.unlearn(str(target), unlearning_data(data), s, progress=lambda line: _say(f"  {line}"))
    finally:
        trainer.round_to_bf16_ = original  # type: ignore[assignment]
    if s.dtype != "bfloat16" and len(steps) > 1:
        _say("  a float32 run is saved at its last step only")
    names = {id(p): name for name, p in result.model.named_parameters()}
    saved: dict[int, Path] = {}
    for k in sorted(snaps):
        model = copy.deepcopy(result.model)
        own = dict(model.named_parameters())
        with torch.no_grad():
            for key, v in snaps[k].items():
                own[names[key]].copy_(v.to(own[names[key]].dtype))
        trainer.save_unlearned(replace(result, model=model, steps=k, curve=result.curve[:k]), out / f"step-{k}")
        saved[k] = out / f"step-{k}"
    trainer.save_unlearned(result, out / f"step-{last}")
    saved[last] = out / f"step-{last}"
    curve = [{k: c[k] for k in ("step", "forget_loss", "retain_loss")} for c in result.curve]
    (out / "curve.json").write_text(json.dumps(curve))
    return saved


def _row(report: dict[str, Any], model: str, quantizer: str) -> dict[str, Any]:
    return next((r for r in report["rows"] if r["model"] == model and r["quantizer"] == quantizer), {})


def summarize(report: dict[str, Any], sure: bool) -> dict[str, Any]:
    """The snapshot's figures as the demo reads them (the gate's values, intervals and verdicts)."""
    from unlearn_assert.demo.claims import assess

    a = assess(report, sure=sure)
    t, u = _row(report, "target", "fp").get("values", {}), _row(report, "unlearned", "fp").get("values", {})
    recovery: dict[str, Any] = {}
    for q in report["provenance"]["settings"]["quantizers"]:
        row = _row(report, "unlearned", q)
        for m in FORGET:
            r = (row.get("recovery") or {}).get(m)
            recovery[f"{q} {m}"] = None if r is None else [round(r, 3), (row.get("recovery_ci") or {}).get(m)]
    return {
        "target": {m: round(t[m], 1) for m in (*FORGET, "knowmem_r")},
        "unlearned": {m: round(u[m], 1) for m in (*FORGET, "knowmem_r")},
        "drop": {
            m: [round(tt - uu, 1), None if ci is None else [round(ci[0], 1), round(ci[1], 1)]]
            for m, (tt, uu, ci) in a.drops.items()
        },
        "resolution": {m: None if r is None else round(r, 3) for m, r in a.resolution.items()},
        "forgot": list(a.forgot),
        "judged": list(a.judged),
        "recovery": recovery,
        "utility": None if a.utility is None else round(a.utility, 3),
        "decided": [f"{f.quantizer} {f.metric} {f.estimate:.0%} {f.interval()}" for f in a.decided_failures],
        "not_strict": [f"{f.quantizer} {f.metric} {f.estimate:.0%} {f.interval()}" for f in a.not_strict],
        "ok": a.ok,
        "reasons": list(a.reasons),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the screen's directory (target reused from here)")
    parser.add_argument("--label", required=True, help="this run's name (its snapshots go to OUT/LABEL)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and model seed")
    parser.add_argument("--corpus", default="", help="CorpusSpec overrides, e.g. n_forget=64")
    parser.add_argument("--lm", default="", help="LMRecipe overrides, e.g. intermediate_size=768,epochs=25")
    parser.add_argument("--unlearn", default="", help="UnlearnSettings overrides, e.g. lr=3e-5")
    parser.add_argument(
        "--eval-corpus",
        default="",
        help="CorpusSpec overrides for the gate's data only (e.g. "
        "qa_per_retain=2); the training text must stay the same",
    )
    parser.add_argument("--snapshots", default="200,400", help="steps at which the run is gated")
    parser.add_argument("--quantizers", default=QUANTIZERS)
    parser.add_argument("--results", type=Path, required=True, help="JSON lines, one per snapshot (appended)")
    args = parser.parse_args(argv)

    import torch

    import unlearn_assert as ua
    from unlearn_assert.demo.corpus import CorpusSpec
    from unlearn_assert.demo.family import DEFAULT_UNLEARNED, LMRecipe
    from unlearn_assert.unlearning.settings import UnlearnSettings

    torch.set_num_threads(1)
    kernels = "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "default"
    corpus = _overrides(CorpusSpec, CorpusSpec(), args.corpus).validated()
    lm = _overrides(LMRecipe, replace(LMRecipe(), seed=args.seed), args.lm)
    settings = _overrides(UnlearnSettings, DEFAULT_UNLEARNED[0].settings, args.unlearn).validated()
    steps = sorted({int(x) for x in args.snapshots.split(",") if x.strip()})
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data, target, info = build_target(args.out, args.seed, corpus, lm)
    target_s = time.perf_counter() - start
    start = time.perf_counter()
    snaps = unlearn_with_snapshots(target, data, settings, steps, args.out / args.label)
    unlearn_s = time.perf_counter() - start
    eval_data = data
    if args.eval_corpus:
        from unlearn_assert.demo.corpus import training_texts, write_corpus

        spec = _overrides(CorpusSpec, corpus, args.eval_corpus).validated()
        name = "data-" + args.eval_corpus.replace(",", "-").replace("=", "")
        eval_data = write_corpus(args.out / name, args.seed, spec)
        if training_texts(eval_data) != training_texts(data):
            raise SystemExit("--eval-corpus changed the training text; it may change only what is evaluated")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for k, path in sorted(snaps.items()):
        t0 = time.perf_counter()
        report = ua.gate(
            str(path),
            str(target),
            str(eval_data),
            quantizers=args.quantizers,
            dtype="float32",
            retrain_auc=0.5,
            cache_dir=str(args.out / "cache"),
        ).to_dict()
        out = summarize(report, settings.sure)
        out.update(
            label=args.label,
            step=k,
            kernels=kernels,
            seed=args.seed,
            corpus=args.corpus,
            eval_corpus=args.eval_corpus,
            lm=args.lm,
            unlearn=args.unlearn,
            target_train_s=info.get("summary", {}).get("seconds"),
            build_s={"target": round(target_s, 1), "unlearn": round(unlearn_s, 1)},
            gate_s=round(time.perf_counter() - t0, 1),
            loaded_machine=os.getloadavg()[0],
        )
        with args.results.open("a") as f:
            f.write(json.dumps(out) + "\n")
        rec = {key: v[0] if v else None for key, v in out["recovery"].items()}
        _say(
            f"SNAP {args.label} step {k}: drop {out['drop']} res {out['resolution']} kr {out['utility']}; "
            f"recovery {rec}; decided {out['decided']}; ok {out['ok']} {out['reasons']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
