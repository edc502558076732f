"""Issue 28's speed measurement: multiple-choice scoring through lm-eval, against lm-eval's own
``simple_evaluate`` with its plain ``HFLM`` on the same model and items, in one process.

Run (the kernel path is the environment's; measure both)::

    python benchmarks/lmeval_speed.py [--items N] [--model tiny|smollm-135m] [--batch-size B] [--repeats R]
                                      [--json FILE]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/lmeval_speed.py

Two item sets of the same questions (random words, 40-90 tokens; four choices of 1-6 words):

* **letters**: WMDP's form (:func:`unlearn_assert.lmeval.wmdp.wmdp_task_config`): the choices are
  scored as " A" ... " D", one token each given the prompt;
* **texts**: the same questions scored ARC-style, each choice's text as the continuation (several tokens).

Reported, per set:

* seconds of :func:`unlearn_assert.lmeval.evaluate.evaluate` (``ours``), of the same with ``quiet=True`` as a
  gate row runs it (``gate``: no progress bars, no git and environment probes) and of ``lm_eval.simple_evaluate``
  on ``HFLM(pretrained=model)`` with the same task objects and batch size (``plain``), best of
  ``--repeats`` after an untimed run of each, in rotated order; the ratios; whether every
  per-item log-likelihood and acc is equal;
* what the model computed (a forward pre-hook): sequences and tokens per question. lm-eval's
  ``logits_cache`` groups requests by context + continuation[:-1], so one-token choices share one
  forward per question and multi-token choices take one forward each;
* for texts: a shared-prefix scorer written here for the measurement (the question once, its KV cache
  repeated over the choices, the choices' tokens after it): its seconds against lm-eval's scoring of
  the same requests, the largest log-likelihood difference and the number of items whose acc differs;
* lm-eval at batch size 1 against ``--batch-size``: whether its own log-likelihoods depend on the batch.

Also the cost of lm-eval's index of its built-in tasks (``TaskManager()``), which a plain
``simple_evaluate(tasks=[name])`` builds on every call and :func:`unlearn_assert.lmeval.tasks.load_tasks`
builds only when a name or YAML needs it, once per process. Absolute times depend on the machine's
load; the ratios are taken in one process. Measurement only: it asserts nothing.
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

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPES: dict[str, tuple[dict[str, int], int]] = {
    "tiny": (
        {
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        },
        384,
    ),
    "smollm-135m": (
        {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
        },
        49152,
    ),
}


class Loaded:
    """What :func:`unlearn_assert.lmeval.evaluate.evaluate` takes: ``.model`` and ``.tokenizer``."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer


def build(shape_name: str, items: int, seed: int, out: Path) -> tuple[Loaded, Path]:
    """A randomly initialized Llama of the shape, a BPE tokenizer on the item text, and the items."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearn_assert.testing import train_tokenizer

    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "sta", "vol", "dre", "qui", "nor", "bel", "tash", "um", "ix", "pel", "zan"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(600)})
    records = []
    for _ in range(items):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(30, 70))).capitalize() + "?"
        choices = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(4)]
        records.append({"question": question, "choices": choices, "answer": rng.randrange(4)})
    data = out / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    shape, vocab = SHAPES[shape_name]
    tokenizer = train_tokenizer([r["question"] + " " + " ".join(r["choices"]) for r in records] * 3, 384)
    torch.manual_seed(seed)
    if vocab > len(tokenizer):
        tokenizer.add_tokens([f"<extra_{i}>" for i in range(vocab - len(tokenizer))])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **shape,
    )
    return Loaded(LlamaForCausalLM(config).eval(), tokenizer), data


def texts_config(data: Path) -> dict[str, Any]:
    """The same questions, each choice's text as the continuation (ARC's way)."""
    from unlearn_assert.lmeval.wmdp import WmdpForm, wmdp_task_config

    config = wmdp_task_config(WmdpForm(str(data), name="texts", subject="words"))
    config.update({"doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "choices"})
    return config


class RowCounter:
    """Sequences and tokens the model's forward received (a pre-hook on the top module)."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows, self.tokens, self.handle = model, 0, 0, None

    def __enter__(self) -> RowCounter:
        def hook(module: Any, args: Any, kwargs: Any) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.rows += int(ids.shape[0])
            self.tokens += int(ids.numel())

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def shared_prefix_scores(loaded: Loaded, requests: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
    """Log-likelihood of each choice given its question, the question computed once: its KV cache is
    repeated over the choices, whose tokens follow it (right-padded: causal attention never sees the
    padding of a later position). Written for this measurement, from the definition."""
    import torch
    import torch.nn.functional as F

    model = loaded.model
    out: list[list[float]] = []
    with torch.no_grad():
        for context, conts in requests:
            first = model(torch.tensor([context]), use_cache=True)
            head = F.log_softmax(first.logits[0, -1], dim=-1)
            scores = [float(head[c[0]]) for c in conts]
            longest = max(len(c) for c in conts)
            if longest > 1:
                cache = first.past_key_values
                cache.batch_repeat_interleave(len(conts))
                rows = torch.tensor([c[:-1] + [0] * (longest - len(c)) for c in conts])
                positions = torch.arange(len(context), len(context) + longest - 1).expand(len(conts), -1)
                logp = F.log_softmax(model(rows, past_key_values=cache, position_ids=positions).logits, dim=-1)
                for i, c in enumerate(conts):
                    scores[i] += float(sum(logp[i, j, c[j + 1]] for j in range(len(c) - 1)))
            out.append(scores)
    return out


def _requests(lm: Any, task: Any) -> tuple[list[tuple[list[int], list[list[int]]]], list[int]]:
    """lm-eval's own (context, continuation) token pairs of every item (``TemplateLM._encode_pair``)."""
    requests, gold = [], []
    for doc in task.eval_docs:
        ctx = task.fewshot_context(doc, 0)
        pairs = [lm._encode_pair(ctx, f"{task.config.target_delimiter}{c}") for c in task.doc_to_choice(doc)]
        requests.append((pairs[0][0], [p[1] for p in pairs]))
        gold.append(task.doc_to_target(doc))
    return requests, gold


def _plain(loaded: Loaded, tasks: Any, batch_size: int) -> Any:
    """lm-eval by itself: its HFLM around the model, simple_evaluate with per-sample logging."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks.objects, task_manager=tasks.manager, log_samples=True)


def _ours(loaded: Loaded, tasks: Any, batch_size: int) -> Any:
    from unlearn_assert.lmeval.evaluate import evaluate

    return evaluate(loaded, tasks, batch_size=batch_size)


def _gate(loaded: Loaded, tasks: Any, batch_size: int) -> Any:
    """As a gate row runs lm-eval: quietly (no progress bars, no git / environment probes in lm-eval's results)."""
    from unlearn_assert.lmeval.evaluate import evaluate

    return evaluate(loaded, tasks, batch_size=batch_size, quiet=True)


def _against_plain(loaded: Loaded, tasks: Any, name: str, batch_size: int, repeats: int, items: int) -> dict[str, Any]:
    """ours, the gate's quiet run and plain after one untimed run of each (first-call costs), then in rotated order;
    best of ``repeats``. Their outputs compared, and what the model computed."""
    runs = (("plain", _plain), ("ours", _ours), ("gate", _gate))
    outputs: dict[str, Any] = {label: fn(loaded, tasks, batch_size) for label, fn in runs}
    best = {label: float("inf") for label, _ in runs}
    for repeat in range(repeats):
        for label, fn in runs[repeat % 3 :] + runs[: repeat % 3]:
            start = time.perf_counter()
            outputs[label] = fn(loaded, tasks, batch_size)
            best[label] = min(best[label], time.perf_counter() - start)
    samples = sorted(outputs["plain"]["samples"][name], key=lambda s: s["doc_id"])
    lls = [tuple(r[0] for r in s["filtered_resps"]) for s in samples]
    equal = all(
        lls == [i.loglikelihoods for i in mine.items] and [s["acc"] for s in samples] == mine.scores("acc")
        for mine in (outputs["ours"][0], outputs["gate"][0])
    )
    mine = outputs["ours"][0]
    with RowCounter(loaded.model) as counter:
        _plain(loaded, tasks, batch_size)
    return {
        "ours_s": best["ours"],
        "plain_s": best["plain"],
        "ratio_plain_over_ours": best["plain"] / best["ours"],
        "gate_s": best["gate"],
        "ratio_plain_over_gate": best["plain"] / best["gate"],
        "identical": equal,
        "forward_sequences_per_item": counter.rows / items,
        "forward_tokens_per_item": counter.tokens / items,
        "acc": mine.value("acc"),
    }


def _shared_prefix(loaded: Loaded, tasks: Any, batch_size: int, repeats: int, items: int) -> dict[str, Any]:
    """The shared-prefix scorer against lm-eval's scoring of the same token requests, and lm-eval at batch 1."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    task = next(iter(tasks.entries[0].leaf_tasks().values()))
    requests, gold = _requests(lm, task)
    flat = [(None, ctx, cont) for ctx, conts in requests for cont in conts]
    shared_prefix_scores(loaded, requests[:2])  # first-call costs
    lm_s = shared_s = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        theirs = [r[0] for r in lm._loglikelihood_tokens(flat, disable_tqdm=True)]
        lm_s = min(lm_s, time.perf_counter() - start)
        start = time.perf_counter()
        shared = shared_prefix_scores(loaded, requests)
        shared_s = min(shared_s, time.perf_counter() - start)
    flat_shared = [s for row in shared for s in row]
    k = len(requests[0][1])
    flips = sum(
        (max(range(k), key=lambda j, i=i: theirs[i * k + j]) == gold[i])
        != (max(range(k), key=row.__getitem__) == gold[i])
        for i, row in enumerate(shared)
    )
    with RowCounter(loaded.model) as counter:
        shared_prefix_scores(loaded, requests)
    one = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1)
    single = [r[0] for r in one._loglikelihood_tokens(flat, disable_tqdm=True)]
    return {
        "lm_eval_s": lm_s,
        "shared_s": shared_s,
        "ratio_lm_eval_over_shared": lm_s / shared_s,
        "max_abs_loglik_diff": max(abs(a - b) for a, b in zip(theirs, flat_shared)),
        "bitwise_equal": theirs == flat_shared,
        "acc_flips": flips,
        "forward_tokens_per_item": counter.tokens / items,
        "lm_eval_batch1_bitwise_equal": single == theirs,
        "lm_eval_batch1_max_abs_diff": max(abs(a - b) for a, b in zip(single, theirs)),
    }


def measure(items: int, shape: str, batch_size: int, repeats: int, shared_only: bool = False) -> dict[str, Any]:
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    from unlearn_assert.lmeval.tasks import load_tasks
    from unlearn_assert.lmeval.wmdp import WmdpForm

    report: dict[str, Any] = {
        "items": items,
        "model": shape,
        "batch_size": batch_size,
        "lm_eval": lm_eval.__version__,
        "torch_threads": torch.get_num_threads(),
        "kernels": os.environ.get("ATEN_CPU_CAPABILITY", "default"),
    }
    with tempfile.TemporaryDirectory(prefix="lmeval-speed-") as tmp:
        import datasets.config

        datasets.config.HF_DATASETS_CACHE = Path(tmp) / "hf-datasets"  # the items' Arrow cache goes with the temp dir
        loaded, data = build(shape, items, 0, Path(tmp))
        letters = load_tasks([WmdpForm(str(data), name="letters", subject="words")])
        texts = load_tasks([texts_config(data)])
        if not shared_only:
            report["letters"] = _against_plain(loaded, letters, "letters", batch_size, repeats, items)
            report["texts"] = _against_plain(loaded, texts, "texts", batch_size, repeats, items)
        report.setdefault("texts", {})["shared_prefix"] = _shared_prefix(loaded, texts, batch_size, repeats, items)
        start = time.perf_counter()
        TaskManager()
        report["task_index_s"] = time.perf_counter() - start
        start = time.perf_counter()
        TaskManager(include_defaults=False)
        report["empty_task_index_s"] = time.perf_counter() - start
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"lm-eval {r['lm_eval']}, {r['model']} shape, {r['items']} items, batch {r['batch_size']}, "
        f"{r['torch_threads']} thread(s), kernels {r['kernels']}"
    ]
    for name in ("letters", "texts"):
        e = r.get(name, {})
        if "ours_s" in e:
            lines.append(
                f"{name}: ours {e['ours_s']:.2f} s, plain simple_evaluate {e['plain_s']:.2f} s "
                f"(plain/ours {e['ratio_plain_over_ours']:.3f}), gate (quiet) {e['gate_s']:.2f} s "
                f"(plain/gate {e['ratio_plain_over_gate']:.3f}); identical {e['identical']}; "
                f"forward {e['forward_sequences_per_item']:.2f} sequences, "
                f"{e['forward_tokens_per_item']:.0f} tokens per item"
            )
        if "shared_prefix" in e:
            s = e["shared_prefix"]
            lines.append(
                f"  shared prefix: {s['shared_s']:.2f} s vs lm-eval's {s['lm_eval_s']:.2f} s "
                f"(x{s['ratio_lm_eval_over_shared']:.2f}), {s['forward_tokens_per_item']:.0f} tokens per item; "
                f"max |d loglik| {s['max_abs_loglik_diff']:.3g}, bitwise equal {s['bitwise_equal']}, "
                f"acc flips {s['acc_flips']}"
            )
            lines.append(
                f"  lm-eval batch 1 vs {r['batch_size']}: bitwise equal {s['lm_eval_batch1_bitwise_equal']}, "
                f"max |d| {s['lm_eval_batch1_max_abs_diff']:.3g}"
            )
    lines.append(
        f"TaskManager(): {r['task_index_s']:.1f} s to index the built-in tasks; "
        f"without them {r['empty_task_index_s'] * 1e3:.1f} ms"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shared-only", action="store_true", help="only the shared-prefix measurement (for the larger shape)"
    )
    parser.add_argument("--json", help="also write the report as JSON")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    report = measure(args.items, args.model, args.batch_size, args.repeats, args.shared_only)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
