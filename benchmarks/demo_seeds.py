"""Issue 12's seed x kernel cells for the shipped demo recipe: does the contrast hold at other seeds?

Run (one process per kernel path, one thread each; the kernel path is the environment's)::

    python benchmarks/demo_seeds.py --out DIR --cells 0:1,1:0,1:1,2:0,2:1 [--reuse FAMILY_DIR]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/demo_seeds.py ...

A cell ``S:U`` is corpus seed S (it fixes the corpus and the target, model seed S) and unlearning
seed U (the batch order of both unlearned models on that target). Each cell builds what it lacks
with the family's own code (``write_corpus``, ``train_demo_tokenizer``, ``train_lm``, the recipe's
``UnlearnSettings`` with ``seed=U``, ``unlearning_data``), gates the plain and the SURE model with
``unlearn_assert.gate`` (default budget, float32, no retrain model: no criterion needs privleak), and
prints one row of issue 12's criteria:

* the plain model forgets visibly: knowmem_f or verbmem_f drops by at least the floor (5 points);
* its best 4-bit recovery (bnb-fp4, rtn-w4, rtn-w4g64) of a metric that dropped is >= 35% (>= 50%
  in two thirds of the cells); its 8-bit recovery (rtn-w8, bnb-int8) <= 15%;
* the SURE model's 4-bit recovery <= 15%, with knowmem_r >= 70% of the target's;

and what ``unlearn-assert demo`` would conclude from the same reports (``demo_exit_0``: its
``judge`` on both models, which reads the gate's verdicts, paired intervals included: a forget
metric whose full-precision drop has an interval that includes 0 is not judged for recovery).

``--reuse FAMILY_DIR`` takes corpus seed 0's data and target from a built demo family (the same
build). ``--recipe corpus.n_forget=24,npo_klr_sure.steps=150,lm.epochs=20`` measures a candidate
recipe instead of the shipped one (fields of ``CorpusSpec``, ``LMRecipe`` or an unlearned model's
``UnlearnSettings``); ``--reuse`` then does not apply. JSON per cell goes to ``DIR/cells.jsonl``.
Measurement only: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from unlearn_assert.demo.family import DemoRecipe

FOUR_BIT = ("bnb-fp4", "rtn-w4", "rtn-w4g64")
EIGHT_BIT = ("rtn-w8", "bnb-int8")
#: gated too, so that the demo's judge sees every 4-bit quantizer the demo gates (not in the criteria, as in session 5)
JUDGED_TOO = ("bnb-nf4",)
FORGET = ("knowmem_f", "verbmem_f")
FLOOR = 5.0


def _say(line: str) -> None:
    print(line, flush=True)


def parse_recipe(text: str) -> DemoRecipe:
    """The shipped recipe with ``section.field=value`` overrides (section: ``corpus``, ``lm`` or an unlearned model's name)."""
    from unlearn_assert.demo.family import DEFAULT_RECIPE

    def override(obj: Any, name: str, raw: str, what: str) -> Any:
        if not hasattr(obj, name):
            raise SystemExit(f"--recipe: {what} has no field {name!r}")
        return replace(obj, **{name: type(getattr(obj, name))(float(raw))})  # int fields: int(24.0) == 24

    recipe = DEFAULT_RECIPE
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if section in ("corpus", "lm"):
            recipe = replace(recipe, **{section: override(getattr(recipe, section), name, raw, section)})
        else:
            u = recipe.unlearn_recipe(section)
            new = replace(u, settings=override(u.settings, name, raw, "UnlearnSettings"))
            recipe = replace(recipe, unlearned=tuple(new if x.name == section else x for x in recipe.unlearned))
    return recipe.validated()


def build_target(root: Path, seed: int, reuse: Path | None, recipe: DemoRecipe) -> tuple[Path, Path]:
    """``root/data`` and ``root/target`` for corpus seed ``seed`` (copied from ``reuse`` for seed 0)."""
    from unlearn_assert.demo.corpus import training_texts, write_corpus
    from unlearn_assert.demo.family import train_demo_tokenizer, train_lm

    data, target = root / "data", root / "target"
    if (target / "config.json").is_file():
        return data, target
    if reuse is not None and seed == 0:
        shutil.copytree(reuse / "data", data, dirs_exist_ok=True)
        shutil.copytree(reuse / "target", target)
        return data, target
    recipe = replace(recipe, corpus_seed=seed, lm=replace(recipe.lm, seed=seed))
    write_corpus(data, seed, recipe.corpus)
    tokenizer = train_demo_tokenizer(training_texts(data, forget=True), recipe.lm.vocab_size)
    train_lm(target, training_texts(data, forget=True), tokenizer, recipe.lm, label=f"target seed {seed}", progress=_say)
    return data, target


def build_unlearned(root: Path, data: Path, target: Path, unlearn_seed: int, recipe: DemoRecipe) -> dict[str, Path]:
    from unlearn_assert.demo.family import unlearning_data
    from unlearn_assert.unlearning.trainer import save_unlearned, unlearn

    out: dict[str, Path] = {}
    for u in recipe.unlearned:
        path = root / f"u{unlearn_seed}" / u.name
        if not (path / "config.json").is_file():
            settings = replace(u.run_settings(log_every=100), seed=unlearn_seed)
            result = unlearn(str(target), unlearning_data(data), settings, progress=lambda line, n=u.name: _say(f"  {n}: {line}"))
            path.parent.mkdir(parents=True, exist_ok=True)
            save_unlearned(result, path)
        out[u.name] = path
    return out


def _row(report: dict[str, Any], model: str, quantizer: str) -> dict[str, Any]:
    return next(r for r in report["rows"] if r["model"] == model and r["quantizer"] == quantizer)


def criteria(plain: dict[str, Any], sure: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's item-3 criteria for one cell, from the two gate reports."""
    t = _row(plain, "target", "fp")["values"]

    def summary(report: dict[str, Any]) -> dict[str, Any]:
        u = _row(report, "unlearned", "fp")["values"]
        dropped = [m for m in FORGET if t[m] - u[m] >= FLOOR]

        def best(quantizers: tuple[str, ...]) -> tuple[float | None, str]:
            found = [((_row(report, "unlearned", q).get("recovery") or {}).get(m), f"{q} {m}") for q in quantizers for m in dropped]
            found = [(r, where) for r, where in found if r is not None]
            return max(found) if found else (None, "-")

        return {"u": {m: round(u[m], 1) for m in (*FORGET, "knowmem_r")}, "dropped": dropped,
                "best4": best(FOUR_BIT), "best8": best(EIGHT_BIT), "kr_of_t": u["knowmem_r"] / t["knowmem_r"]}

    p, s = summary(plain), summary(sure)
    return {
        "target": {m: round(t[m], 1) for m in (*FORGET, "knowmem_r")}, "plain": p, "sure": s,
        "plain_forgets": bool(p["dropped"]),
        "plain_4bit_35": p["best4"][0] is not None and p["best4"][0] >= 0.35,
        "plain_4bit_50": p["best4"][0] is not None and p["best4"][0] >= 0.50,
        "plain_8bit_15": p["best8"][0] is None or p["best8"][0] <= 0.15,
        "sure_4bit_15": bool(s["dropped"]) and (s["best4"][0] is None or s["best4"][0] <= 0.15),
        "sure_kr_70": s["kr_of_t"] >= 0.70,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cells", default="0:0,0:1,1:0,1:1,2:0,2:1", help="corpus_seed:unlearn_seed, comma-separated")
    parser.add_argument("--reuse", type=Path, help="a built demo family dir whose data/ and target/ are corpus seed 0's")
    parser.add_argument("--recipe", default="", help="overrides of the shipped recipe, e.g. corpus.n_forget=24,npo_klr_sure.steps=150")
    args = parser.parse_args(argv)
    recipe = parse_recipe(args.recipe)
    if args.recipe and args.reuse:
        parser.error("--reuse takes the shipped recipe's family; it does not apply with --recipe")
    import torch

    import unlearn_assert as ua
    from unlearn_assert.demo.run import judge
    from unlearn_assert.hardware import compute_info

    torch.set_num_threads(1)
    kernels = "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "default"
    args.out.mkdir(parents=True, exist_ok=True)
    _say(f"kernels {kernels}: {compute_info()}")
    for cell in args.cells.split(","):
        seed, useed = (int(x) for x in cell.split(":"))
        start = time.perf_counter()
        root = args.out / f"corpus{seed}"
        data, target = build_target(root, seed, args.reuse, recipe)
        models = build_unlearned(root, data, target, useed, recipe)
        reports = {name: ua.gate(str(path), str(target), str(data), quantizers=",".join(FOUR_BIT + JUDGED_TOO + EIGHT_BIT), dtype="float32",
                                 retrain_auc=0.5, cache_dir=str(args.out / "cache")).to_dict()
                   for name, path in models.items()}
        c = criteria(reports["npo_klr"], reports["npo_klr_sure"])
        # what `unlearn-assert demo` would conclude from these reports (its exit code): the gate's own
        # verdicts, paired intervals included, where the criteria above read point estimates
        c["demo_judge"] = {name: list(judge(report, sure=name.endswith("_sure"))) for name, report in reports.items()}
        c["demo_exit_0"] = all(ok for ok, _ in c["demo_judge"].values())
        c.update(kernels=kernels, recipe=args.recipe, recipe_key=recipe.key(), corpus_seed=seed, unlearn_seed=useed, seconds=round(time.perf_counter() - start, 1))
        with (args.out / "cells.jsonl").open("a") as f:
            f.write(json.dumps(c) + "\n")
        p, s, t = c["plain"], c["sure"], c["target"]
        _say(f"CELL {kernels} {seed}/{useed}: plain km {t['knowmem_f']} -> {p['u']['knowmem_f']}, vm {t['verbmem_f']} -> "
             f"{p['u']['verbmem_f']}; best 4-bit {p['best4']}; 8-bit max {p['best8']}; SURE km {s['u']['knowmem_f']}, vm "
             f"{s['u']['verbmem_f']}, max 4-bit {s['best4']}, kr of T {s['kr_of_t']:.0%}; not met: "
             + (", ".join(k for k in ("plain_forgets", "plain_4bit_35", "plain_4bit_50", "plain_8bit_15", "sure_4bit_15", "sure_kr_70")
                          if not c[k]) or "none") + f"; demo exit {0 if c['demo_exit_0'] else 1} ({c['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
