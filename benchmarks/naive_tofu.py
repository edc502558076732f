"""A naive, one-item-at-a-time TOFU evaluation: the reference ``unlearn_assert.metrics.tofu`` is
checked and timed against.

Written from open-unlearning's definitions (``locuslab/open-unlearning`` d3d7cf9: ``src/data/utils.py``
``preprocess_chat_instance``, ``src/evals/metrics/utils.py`` ``evaluate_probability`` and
``eval_text_similarity``, ``memorization.py`` ``probability``/``probability_w_options``/``truth_ratio``/
``rouge``, ``privacy.py`` ``ks_test``, ``utility.py`` ``hm_aggregate``) and sharing no code with the
package: per question and per answer one full forward pass with full-vocabulary logits and
``CrossEntropyLoss(ignore_index=-100)``; per question one ``model.generate`` call; per item one ROUGE
scorer call; numpy for the aggregates, scipy's ``ks_2samp`` and ``hmean``. The data is read straight
from TOFU's JSON-lines files.

One documented adjustment, a no-op for open-unlearning's setting: decoding uses
``clean_up_tokenization_spaces=False`` plus the transformers-4 clean-up written out below, because
transformers 5 ignores the flag for BPE tokenizers while open-unlearning's transformers 4.45 applied it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp

IGNORE_INDEX = -100
#: open-unlearning's template_args for a model without a chat template (configs/model/Llama-2-7b-hf.yaml)
PLAIN_TAGS = {"user_start_tag": "Question: ", "user_end_tag": "\n", "asst_start_tag": "Answer: "}


def _clean_up(text: str) -> str:
    # transformers 4.x PreTrainedTokenizerBase.clean_up_tokenization
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def read_split(directory: str | Path, name: str) -> list[dict[str, Any]]:
    """TOFU's file ``<name>.json``: one JSON record per line."""
    text = (Path(directory) / f"{name}.json").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def preprocess(
    tokenizer: Any,
    question: str,
    answer: str,
    chat: bool = False,
    system_prompt: str | None = None,
    max_length: int = 512,
) -> dict[str, list[int]]:
    """``input_ids`` (the whole conversation), ``labels`` (-100 over the prompt) and the prompt's ids."""
    if chat:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        chat_ids = list(
            tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=False, return_dict=False)
        )
        prompt_ids = list(
            tokenizer.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True, return_dict=False)
        )
    else:
        wrapped = PLAIN_TAGS["user_start_tag"] + question + PLAIN_TAGS["user_end_tag"] + PLAIN_TAGS["asst_start_tag"]
        chat_ids = tokenizer(wrapped + answer, add_special_tokens=True, max_length=max_length, truncation=True)[
            "input_ids"
        ]
        prompt_ids = tokenizer(wrapped, add_special_tokens=True, max_length=max_length, truncation=True)["input_ids"]
    if chat_ids[-1] != tokenizer.eos_token_id:
        chat_ids = chat_ids + [tokenizer.eos_token_id]
    labels = [IGNORE_INDEX] * len(prompt_ids) + chat_ids[len(prompt_ids) :]
    return {"input_ids": chat_ids, "labels": labels, "prompt_ids": prompt_ids}


def avg_loss(model: Any, tokenizer: Any, question: str, answer: str, **template: Any) -> float:
    """``evaluate_probability`` for one (question, answer): mean cross-entropy over the labelled tokens."""
    item = preprocess(tokenizer, question, answer, **template)
    ids = torch.tensor([item["input_ids"]])
    labels = torch.tensor([item["labels"]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    shifted_labels = labels[..., 1:].contiguous()
    logits = logits[..., :-1, :].contiguous().float()
    loss = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="none")(
        logits.transpose(-1, -2), shifted_labels
    ).sum(dim=-1)
    return float(loss / (labels != IGNORE_INDEX).sum(-1))


def generate_answer(
    model: Any, tokenizer: Any, question: str, answer: str, max_new_tokens: int = 200, **template: Any
) -> tuple[str, str]:
    """``eval_text_similarity`` for one question: (greedy answer, ground truth)."""
    item = preprocess(tokenizer, question, answer, **template)
    prompt = torch.tensor([item["prompt_ids"]])
    decode = lambda ids: _clean_up(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    input_text = decode(item["prompt_ids"])
    full_text = decode(item["input_ids"])
    ground_truth = full_text.replace(input_text, "").strip()
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.eos_token_id,
        )
    gen = decode(out[0, prompt.shape[1] :].tolist())
    eos_word = tokenizer.decode([tokenizer.eos_token_id])
    if eos_word and eos_word in gen:
        gen = gen.split(eos_word)[0]
    return gen.strip(), ground_truth


def evaluate(
    model: Any,
    tokenizer: Any,
    splits: dict[str, list[dict[str, Any]]],
    reference_truth_ratios: list[float] | None = None,
    rouge: bool = True,
    **template: Any,
) -> dict[str, Any]:
    """Every TOFU number for one model, one item at a time. ``splits``: forget, retain, real_authors,
    world_facts (TOFU records). Returns ``values`` and the per-item ``scores`` and raw forget ``truth_ratios``."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    values: dict[str, float] = {}
    scores: dict[str, list[float]] = {}
    raw_tr: list[float] = []
    for split, prefix in (("forget", "forget"), ("retain", "retain"), ("real_authors", "ra"), ("world_facts", "wf")):
        probs, norms, trs, rouges = [], [], [], []
        for rec in splits[split]:
            q = rec["question"]
            a_loss = avg_loss(model, tokenizer, q, rec["answer"], **template)
            wrong_losses = [avg_loss(model, tokenizer, q, w, **template) for w in rec["perturbed_answer"]]
            probs.append(np.exp(-a_loss))
            wrong_probs = np.exp(-np.array(wrong_losses))
            norms.append(probs[-1] / (probs[-1] + np.sum(wrong_probs) + 1e-10))
            correct_loss = (
                avg_loss(model, tokenizer, q, rec["paraphrased_answer"], **template)
                if split in ("forget", "retain")
                else a_loss
            )
            tr = np.exp(-np.mean(wrong_losses)) / (np.exp(-correct_loss) + 1e-10)
            trs.append(tr)
            if rouge:
                gen, gt = generate_answer(model, tokenizer, q, rec["answer"], **template)
                rouges.append(scorer.score(gt, gen)["rougeL"].recall)
        trs_arr = np.array(trs)
        if split == "forget":
            raw_tr = list(trs_arr)
            tr_scores = list(np.minimum(trs_arr, 1 / (trs_arr + 1e-10)))
        else:
            tr_scores = list(np.maximum(0, 1 - trs_arr))
        for name, vals in (
            (f"{prefix}_prob", probs),
            (f"{prefix}_truth_ratio", tr_scores),
            (f"{prefix}_rouge", rouges),
        ):
            if vals:
                scores[name] = [float(v) for v in vals]
                values[name] = float(np.mean(vals))
        if split in ("real_authors", "world_facts"):
            scores[f"{prefix}_prob_normalised"] = [float(v) for v in norms]
            values[f"{prefix}_prob_normalised"] = float(np.mean(norms))
    if rouge:
        values["model_utility"] = float(
            hmean(
                [
                    values[k]
                    for k in (
                        "retain_prob",
                        "retain_rouge",
                        "retain_truth_ratio",
                        "ra_prob_normalised",
                        "ra_rouge",
                        "ra_truth_ratio",
                        "wf_prob_normalised",
                        "wf_rouge",
                        "wf_truth_ratio",
                    )
                ]
            )
        )
    if reference_truth_ratios is not None:
        values["forget_quality"] = float(ks_2samp(np.array(raw_tr), np.array(reference_truth_ratios)).pvalue)
    return {"values": values, "scores": scores, "truth_ratios": [float(t) for t in raw_tr]}
