"""The demo's seed x kernel cells (issues 12 and 26): does the contrast hold at other seeds?

Run (one process per kernel path, one thread each; the kernel path is the environment's)::

    python benchmarks/demo_seeds.py --out DIR --cells 0:1,1:0,1:1,2:0,2:1 [--reuse FAMILY_DIR]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/demo_seeds.py ...

A cell ``S:U`` is corpus seed S (it fixes the corpus and the target, model seed S) and unlearning
seed U (the batch order of both unlearned models on that target). Each cell builds what it lacks
with the family's own code (``write_corpus``, ``train_demo_tokenizer``, ``train_lm``, the recipe's
``UnlearnSettings`` with ``seed=U``, ``unlearning_data``), gates the plain and the SURE model with
``unlearn_assert.gate`` under the demo's quantizers (default budget, float32, no retrain model: no
criterion needs privleak), and prints one row of issue 26's criteria, read with the demo's own
:mod:`unlearn_assert.demo.claims` (the gate's verdicts and paired intervals):

* ``large_drop``: the plain model's full-precision drop is >= 20 points on a forget metric whose
  resolution is <= 25% (item 1);
* ``plain_decided``: the plain model's recovery of a judged metric lies above the budget with its
  whole interval under bnb-fp4, bnb-nf4 or gguf-q4_k_m (item 2);
* ``sure_strict``: every judged 4-bit recovery item of the SURE model lies within the budget with its
  whole interval; ``sure_utility``: it keeps >= 90% of the target's knowmem_r in full precision;

and ``demo_exit_0``: what ``unlearn-assert demo`` would conclude from the same two reports (its
``judge`` on both models: exactly the last three criteria).

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
from typing import TYPE_CHECKING, Any, get_args, get_type_hints

if TYPE_CHECKING:  # pragma: no cover
    from unlearn_assert.demo.family import DemoRecipe

FORGET = ("knowmem_f", "verbmem_f")
#: the plain model's full-precision drop that issue 26 asks for, in points, on a metric with a resolution <= the budget
LARGE_DROP = 20.0


def _say(line: str) -> None:
    print(line, flush=True)


def parse_recipe(text: str) -> DemoRecipe:
    """The shipped recipe with ``section.field=value`` overrides (section: ``corpus``, ``lm`` or an unlearned model's
    name)."""
    from unlearn_assert.demo.family import DEFAULT_RECIPE

    def override(obj: Any, name: str, raw: str, what: str) -> Any:
        if not hasattr(obj, name):
            raise SystemExit(f"--recipe: {what} has no field {name!r}")
        # the field's declared type, not its value's: an optional field (retain_batch_size, sure_threshold) is None
        hint = get_type_hints(type(obj))[name]
        kind = next((t for t in get_args(hint) if t is not type(None)), hint)
        value = raw if kind is str else kind(float(raw))  # int fields: int(24.0) == 24
        return replace(obj, **{name: value})

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
    train_lm(
        target, training_texts(data, forget=True), tokenizer, recipe.lm, label=f"target seed {seed}", progress=_say
    )
    return data, target


def build_unlearned(root: Path, data: Path, target: Path, unlearn_seed: int, recipe: DemoRecipe) -> dict[str, Path]:
    from unlearn_assert.demo.family import unlearning_data
    from unlearn_assert.unlearning.trainer import save_unlearned, unlearn

    out: dict[str, Path] = {}
    for u in recipe.unlearned:
        path = root / f"u{unlearn_seed}" / u.name
        if not (path / "config.json").is_file():
            settings = replace(u.run_settings(log_every=100), seed=unlearn_seed)
            result = unlearn(
                str(target), unlearning_data(data), settings, progress=lambda line, n=u.name: _say(f"  {n}: {line}")
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            save_unlearned(result, path)
        out[u.name] = path
    return out


def _row(report: dict[str, Any], model: str, quantizer: str) -> dict[str, Any]:
    return next(r for r in report["rows"] if r["model"] == model and r["quantizer"] == quantizer)


def criteria(plain: dict[str, Any], sure: dict[str, Any]) -> dict[str, Any]:
    """Issue 26's criteria for one cell, from the two gate reports (see the module docstring)."""
    from unlearn_assert.demo.claims import assess

    def summary(report: dict[str, Any], is_sure: bool) -> dict[str, Any]:
        a = assess(report, sure=is_sure)
        u = _row(report, "unlearned", "fp")["values"]
        four = {
            f"{q} {m}": [
                round(r, 3) if (r := (_row(report, "unlearned", q).get("recovery") or {}).get(m)) is not None else None,
                _row(report, "unlearned", q).get("recovery_ci", {}).get(m),
            ]
            for q in a.four_bit
            for m in FORGET
        }
        return {
            "u": {m: round(u[m], 1) for m in (*FORGET, "knowmem_r")},
            "drop": {m: round(t - uu, 1) for m, (t, uu, _) in a.drops.items()},
            "resolution": {m: None if r is None else round(r, 3) for m, r in a.resolution.items()},
            "judged": list(a.judged),
            "four_bit": four,
            "utility": None if a.utility is None else round(a.utility, 3),
            "decided": [f"{f.quantizer} {f.metric} {f.estimate:.0%} {f.interval()}" for f in a.decided_failures],
            "worst": None
            if a.worst is None
            else f"{a.worst.quantizer} {a.worst.metric} {a.worst.estimate:.0%} {a.worst.interval()}",
            "ok": a.ok,
            "reasons": list(a.reasons),
        }

    p, s = summary(plain, False), summary(sure, True)
    t = _row(plain, "target", "fp")["values"]
    plain_a, sure_a = assess(plain, sure=False), assess(sure, sure=True)
    return {
        "target": {m: round(t[m], 1) for m in (*FORGET, "knowmem_r")},
        "plain": p,
        "sure": s,
        "large_drop": any(p["drop"].get(m, 0) >= LARGE_DROP for m in plain_a.judged),
        "plain_decided": bool(plain_a.decided_failures),
        "sure_strict": bool(sure_a.judged) and not sure_a.not_strict and sure_a.worst is not None,
        "sure_utility": sure_a.utility is not None and sure_a.utility >= 0.9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cells", default="0:0,0:1,1:0,1:1,2:0,2:1", help="corpus_seed:unlearn_seed, comma-separated")
    parser.add_argument(
        "--reuse", type=Path, help="a built demo family dir whose data/ and target/ are corpus seed 0's"
    )
    parser.add_argument(
        "--recipe", default="", help="overrides of the shipped recipe, e.g. corpus.n_forget=24,npo_klr_sure.steps=150"
    )
    args = parser.parse_args(argv)
    recipe = parse_recipe(args.recipe)
    if args.recipe and args.reuse:
        parser.error("--reuse takes the shipped recipe's family; it does not apply with --recipe")
    import torch

    import unlearn_assert as ua
    from unlearn_assert.demo.run import DEMO_ATTACKS, demo_quantizers, judge
    from unlearn_assert.hardware import compute_info

    torch.set_num_threads(1)
    quantizers = [q for q in demo_quantizers() if q not in DEMO_ATTACKS]  # the demo's, without the relearn attack
    kernels = "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "default"
    args.out.mkdir(parents=True, exist_ok=True)
    _say(f"kernels {kernels}: {compute_info()}")
    for cell in args.cells.split(","):
        seed, useed = (int(x) for x in cell.split(":"))
        start = time.perf_counter()
        root = args.out / f"corpus{seed}"
        data, target = build_target(root, seed, args.reuse, recipe)
        models = build_unlearned(root, data, target, useed, recipe)
        reports = {
            name: ua.gate(
                str(path),
                str(target),
                str(data),
                quantizers=",".join(quantizers),
                dtype="float32",
                retrain_auc=0.5,
                cache_dir=str(args.out / "cache"),
            ).to_dict()
            for name, path in models.items()
        }
        plain_name, sure_name = (next(u.name for u in recipe.unlearned if u.sure is flag) for flag in (False, True))
        c = criteria(reports[plain_name], reports[sure_name])
        # what `unlearn-assert demo` would conclude from these reports (its exit code)
        c["demo_judge"] = {
            name: list(judge(report, sure=recipe.unlearn_recipe(name).sure)) for name, report in reports.items()
        }
        c["demo_exit_0"] = all(ok for ok, _ in c["demo_judge"].values())
        c.update(
            kernels=kernels,
            recipe=args.recipe,
            recipe_key=recipe.key(),
            corpus_seed=seed,
            unlearn_seed=useed,
            quantizers=list(quantizers),
            seconds=round(time.perf_counter() - start, 1),
        )
        with (args.out / "cells.jsonl").open("a") as f:
            f.write(json.dumps(c) + "\n")
        p, s, t = c["plain"], c["sure"], c["target"]
        _say(
            f"CELL {kernels} {seed}/{useed}: plain km {t['knowmem_f']} -> {p['u']['knowmem_f']}, vm {t['verbmem_f']} "
            "-> "
            f"{p['u']['verbmem_f']} (resolution {p['resolution']}); decided {p['decided']}; SURE km "
            f"{s['u']['knowmem_f']}, "
            f"vm {s['u']['verbmem_f']}, worst 4-bit {s['worst']}, kr of T {s['utility']}; not met: "
            + (
                ", ".join(k for k in ("large_drop", "plain_decided", "sure_strict", "sure_utility") if not c[k])
                or "none"
            )
            + f"; demo exit {0 if c['demo_exit_0'] else 1} ({c['seconds']} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
