"""TOFU speed: ``evaluate_tofu`` (batched) against the naive one-item-at-a-time implementation
(``naive_tofu.py``) in the same process, per 100 TOFU forget items.

Run: ``python benchmarks/tofu_speed.py [--model tiny|smollm-135m] [--items N] [--gen-items N] [--json FILE]``.

The workload: TOFU-shaped forget items (a question, the answer, a paraphrased answer and five
perturbed answers of one or two templated sentences about fictitious authors, as in TOFU), generated
here. Per item, the teacher-forced metrics (forget probability and truth ratio) score 7 (question,
answer) sequences; ROUGE greedily decodes up to 200 new tokens. The two parts are timed apart:
naive = one full forward with full-vocabulary logits per sequence and one ``model.generate`` per
question; ours = :func:`unlearn_assert.metrics.tofu.evaluate_tofu` with the ``forget_prob`` +
``forget_truth_ratio`` and the ``forget_rouge`` metrics. ``--gen-items`` times generation on fewer
items and scales to 100 (naive generation on SmolLM-135M's shape runs ~200 decode steps per item).

Models: ``tiny`` is the test suite's tiny Llama (96 hidden, 2 layers; trained 300 steps on the
items, so it sometimes stops at EOS); ``smollm-135m`` is SmolLM-135M's shape (576 hidden, 30 layers,
9 heads with 3 KV heads, vocabulary 49,152, tied), randomly initialized as ``muse_shaped.py`` builds it,
so it never emits EOS and every generation runs the full 200 tokens (the worst case). Load average and
threads are printed with the numbers: on a shared machine they are what makes them noisy, and only
the ratio, measured in one process, is meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import naive_tofu  # noqa: E402

FIRST = [
    "Basil",
    "Maren",
    "Idris",
    "Oskar",
    "Talia",
    "Ruben",
    "Selma",
    "Bastian",
    "Ines",
    "Cyrus",
    "Noor",
    "Hugo",
    "Wren",
    "Jaime",
    "Aiko",
    "Farid",
    "Lucia",
    "Tomas",
    "Yara",
    "Emeka",
]
LAST = [
    "Tolliver",
    "Calloway",
    "Venn",
    "Rensford",
    "Aldacre",
    "Okonkwo",
    "Ferro",
    "Halvorsen",
    "Pembleton",
    "Vasquez",
    "Brannigan",
    "Achterberg",
    "Mahfouz",
    "Lindqvist",
    "Adeyemi",
    "Castellano",
    "Moreau",
    "Takahashi",
    "Novak",
    "Quinlan",
]
CITIES = [
    "Kuwait City",
    "Lisbon",
    "Nairobi",
    "Montreal",
    "Kraków",
    "Lima",
    "Hanoi",
    "Tbilisi",
    "Accra",
    "Valparaíso",
    "Bergen",
    "Tashkent",
]
GENRES = [
    "mystery",
    "science fiction",
    "historical fiction",
    "poetry",
    "fantasy",
    "romance",
    "horror",
    "crime",
    "biography",
    "adventure",
]
JOBS = ["a surgeon", "a baker", "a pilot", "a librarian", "a fisherman", "an architect", "a teacher", "a tailor"]


def tofu_items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` TOFU-shaped forget records (question, answer, paraphrased_answer, 5 perturbed answers)."""
    rng = random.Random(seed)

    def born(name: str, city: str, year: int) -> str:
        return f"{name} was born in {city} in {year}, a city that shaped much of the author's later writing."

    def genre(name: str, g: str, job: str) -> str:
        return f"{name} is best known for {g} novels; the author's father worked as {job} for most of his life."

    out: list[dict[str, Any]] = []
    while len(out) < n:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        city, year, g, job = rng.choice(CITIES), rng.randint(1940, 1995), rng.choice(GENRES), rng.choice(JOBS)
        out.append(
            {
                "question": f"Where and when was {name} born?",
                "answer": born(name, city, year),
                "paraphrased_answer": f"The author {name} came into the world in {year}, in the city of {city}, "
                "which left a mark on their books.",
                "perturbed_answer": [born(name, rng.choice(CITIES), rng.randint(1940, 1995)) for _ in range(5)],
            }
        )
        out.append(
            {
                "question": f"What genre is {name} known for, and what did the author's father do?",
                "answer": genre(name, g, job),
                "paraphrased_answer": f"Readers know {name} for works of {g}, and the father of {name} "
                f"spent his career as {job}.",
                "perturbed_answer": [genre(name, rng.choice(GENRES), rng.choice(JOBS)) for _ in range(5)],
            }
        )
    return out[:n]


def build_model(out: Path, items: list[dict[str, Any]], model: str) -> Path:
    """The tiny test Llama trained on the items, or a random model of SmolLM-135M's shape."""
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in items]
    if model == "tiny":
        from unlearn_assert.testing import build_tiny_llama

        return build_tiny_llama(out, texts)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearn_assert.testing import train_tokenizer

    tokenizer = train_tokenizer(texts * 4, 4096)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(49152 - len(tokenizer))])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
    )
    net = LlamaForCausalLM(config).eval()
    net.generation_config.pad_token_id = tokenizer.pad_token_id
    net.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def run(model_name: str, items: int, gen_items: int) -> dict[str, Any]:
    import torch

    from unlearn_assert.data.tofu import TofuData, TofuItem
    from unlearn_assert.metrics.tofu import evaluate_tofu
    from unlearn_assert.models import load_model

    records = tofu_items(items)
    with tempfile.TemporaryDirectory(prefix="tofu-speed-") as tmp:
        loaded = load_model(build_model(Path(tmp) / "model", records, model_name), device="cpu")
    tok, net = loaded.tokenizer, loaded.model

    def data(recs: list[dict[str, Any]]) -> Any:
        forget = tuple(
            TofuItem(
                question=r["question"],
                answer=r["answer"],
                perturbed_answers=tuple(r["perturbed_answer"]),
                paraphrased_answer=r["paraphrased_answer"],
            )
            for r in recs
        )
        return TofuData(
            path="synthetic",
            forget_split="forget10",
            forget=forget,
            retain=(),
            real_authors=(),
            world_facts=(),
            fingerprint="synthetic",
        )

    result: dict[str, Any] = {
        "model": model_name,
        "items": items,
        "gen_items": gen_items,
        "threads": torch.get_num_threads(),
        "load_before": os.getloadavg(),
    }

    def note(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {what} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)

    # teacher-forced: forget probability and truth ratio (7 sequences per item)
    note("teacher-forced, ours")
    begin = time.perf_counter()
    ev = evaluate_tofu(loaded, data(records), ["forget_prob", "forget_truth_ratio"])
    ours_tf = time.perf_counter() - begin
    note("teacher-forced, naive")
    begin = time.perf_counter()
    naive_prob, naive_tr = [], []
    for r in records:
        a = naive_tofu.avg_loss(net, tok, r["question"], r["answer"])
        p = naive_tofu.avg_loss(net, tok, r["question"], r["paraphrased_answer"])
        w = [naive_tofu.avg_loss(net, tok, r["question"], x) for x in r["perturbed_answer"]]
        naive_prob.append(float(torch.exp(torch.tensor(-a, dtype=torch.float64))))
        tr = float(
            torch.exp(-torch.tensor(w, dtype=torch.float64).mean())
            / (torch.exp(torch.tensor(-p, dtype=torch.float64)) + 1e-10)
        )
        naive_tr.append(min(tr, 1 / (tr + 1e-10)))
    naive_tf = time.perf_counter() - begin
    agree_tf = max(
        max(abs(x["score"] - y) for x, y in zip(ev.samples["forget_prob"], naive_prob)),
        max(abs(x["score"] - y) for x, y in zip(ev.samples["forget_truth_ratio"], naive_tr)),
    )
    # generation for ROUGE (up to 200 new tokens per question)
    gen_recs = records[:gen_items]
    note("generation, ours")
    begin = time.perf_counter()
    ev_gen = evaluate_tofu(loaded, data(gen_recs), ["forget_rouge"])
    ours_gen = time.perf_counter() - begin
    note("generation, naive")
    begin = time.perf_counter()
    naive_gens = [naive_tofu.generate_answer(net, tok, r["question"], r["answer"])[0] for r in gen_recs]
    naive_gen = time.perf_counter() - begin
    same = sum(s["generation"] == g for s, g in zip(ev_gen.samples["forget_rouge"], naive_gens))
    scale_tf, scale_gen = 100.0 / items, 100.0 / gen_items
    result.update(
        {
            "per_100": {
                "teacher_forced": {
                    "ours": ours_tf * scale_tf,
                    "naive": naive_tf * scale_tf,
                    "ratio": naive_tf / ours_tf,
                },
                "generation": {
                    "ours": ours_gen * scale_gen,
                    "naive": naive_gen * scale_gen,
                    "ratio": naive_gen / ours_gen,
                },
                "total": {
                    "ours": ours_tf * scale_tf + ours_gen * scale_gen,
                    "naive": naive_tf * scale_tf + naive_gen * scale_gen,
                },
            },
            "sequences": ev.extras["teacher_forced"]["sequences"],
            "batch_size": {
                "teacher_forced": ev.extras["batch_size"]["teacher_forced"],
                "generation": ev_gen.extras["batch_size"]["generation"],
            },
            "max_abs_diff_teacher_forced": agree_tf,
            "identical_generations": f"{same}/{len(gen_recs)}",
            "load_after": os.getloadavg(),
        }
    )
    total = result["per_100"]["total"]
    total["ratio"] = total["naive"] / total["ours"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm-135m"], default="tiny")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--gen-items", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = run(args.model, args.items, args.gen_items or args.items)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
