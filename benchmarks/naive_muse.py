"""A naive, sequential MUSE evaluation: the reference that the engine is checked and timed against.

Written independently of ``unlearn_assert.metrics`` and in the shape of MUSE's own evaluation code
(muse_bench ``metrics/verbmem.py``, ``knowmem.py``, ``privleak.py``): one prompt at a time, one
``model.generate`` call per prompt, the whole 10-shot ICL prompt re-read for every question, one
forward pass per privleak text. Nothing here is shared with the engine, so agreement between the
two is evidence, not tautology.

Two deliberate, documented adjustments to MUSE's code, both no-ops for MUSE's setting:

* ``attention_mask`` is passed as all ones (MUSE passes none and transformers infers all ones when
  the prompt holds no pad token); this only silences transformers' warning.
* Decoding uses ``clean_up_tokenization_spaces=False`` plus the transformers-4 clean-up written out
  below, because transformers 5 ignores the flag for BPE tokenizers while MUSE's transformers 4.x
  applied it.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np
import torch
from rouge_score import rouge_scorer
from sklearn.metrics import auc as get_auc
from sklearn.metrics import roc_curve as get_roc_curve

STOP_WORDS = ["\n\n", "\nQuestion", "Question:"]


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


def _batch_decode(tokenizer: Any, ids: torch.Tensor) -> str:
    return _clean_up(tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0])


def get_prefix_before_words_occur(string: str, words: list[str]) -> str:
    for word in words:
        string = string.split(word)[0]
    return string


class RougeLogger:
    def __init__(self) -> None:
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.history: list[dict[str, Any]] = []

    def log(self, prompt: str, gt: str, output: str) -> None:
        score = self.scorer.score(gt, output)["rougeL"].fmeasure
        self.history.append({"prompt": prompt, "gt": gt, "response": output, "rougeL": score})

    def mean(self) -> float:
        vals = [h["rougeL"] for h in self.history]
        return sum(vals) / len(vals)


def _generate(model: Any, input_ids: torch.Tensor, tokenizer: Any, max_new_tokens: int) -> torch.Tensor:
    output_ids = model.generate(
        input_ids.to(model.device),
        attention_mask=torch.ones_like(input_ids).to(model.device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return output_ids[:, len(input_ids[0]) :]


def eval_verbmem(
    model: Any, tokenizer: Any, prompts: list[str], gts: list[str], max_new_tokens: int = 128
) -> RougeLogger:
    logger = RougeLogger()
    for prompt, gt in zip(prompts, gts):
        input_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True).input_ids
        gt_ids = tokenizer(gt, return_tensors="pt", add_special_tokens=True).input_ids[:, :max_new_tokens]
        output = _batch_decode(tokenizer, _generate(model, input_ids, tokenizer, max_new_tokens))
        logger.log(prompt, _batch_decode(tokenizer, gt_ids), output)
    return logger


def eval_knowmem(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    answers: list[str],
    icl_qs: list[str],
    icl_as: list[str],
    max_new_tokens: int = 32,
) -> RougeLogger:
    logger = RougeLogger()
    general_prompt = ""
    for question, answer in zip(icl_qs, icl_as):
        general_prompt += f"Question: {question}\nAnswer: {answer}\n\n"
    for question, answer in zip(questions, answers):
        prompt = general_prompt + f"Question: {question}\nAnswer: "
        input_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True).input_ids
        output = _batch_decode(tokenizer, _generate(model, input_ids, tokenizer, max_new_tokens))
        output = get_prefix_before_words_occur(output, STOP_WORDS)
        logger.log(prompt, answer, output)
    return logger


def compute_ppl(text: str, model: Any, tokenizer: Any) -> tuple[list[float], float]:
    input_ids = torch.tensor(tokenizer.encode(text)).unsqueeze(0).to(model.device)
    with torch.no_grad():
        outputs = model(input_ids, labels=input_ids)
    loss, logits = outputs.loss, outputs.logits
    probabilities = torch.nn.functional.log_softmax(logits.float(), dim=-1)
    all_prob = []
    for i, token_id in enumerate(input_ids[0][1:]):
        all_prob.append(probabilities[0, i, token_id].item())
    return all_prob, loss.item()


def inference(text: str, model: Any, tokenizer: Any) -> dict[str, float]:
    all_prob, loss = compute_ppl(text, model, tokenizer)
    k_length = max(int(len(all_prob) * 0.4), 1)  # MUSE has no guard (NaN for texts under 3 tokens)
    return {
        "PPL": float(loss),
        "PPL/zlib": float(loss / len(zlib.compress(bytes(text, "utf-8")))),
        "Min-40%": float(-np.mean(np.sort(all_prob)[:k_length]).item()),
    }


def sweep(ppl: np.ndarray, y: np.ndarray) -> float:
    fpr, tpr, _ = get_roc_curve(y, -ppl)
    return float(get_auc(fpr, tpr))


def eval_privleak(model: Any, tokenizer: Any, forget: list[str], holdout: list[str]) -> dict[str, Any]:
    log = {
        "forget": [inference(t, model, tokenizer) for t in forget],
        "holdout": [inference(t, model, tokenizer) for t in holdout],
    }
    aucs = {}
    for key in ("Min-40%", "PPL", "PPL/zlib"):
        nonmember = [d[key] for d in log["forget"]]
        member = [d[key] for d in log["holdout"]]
        ppl = np.array(nonmember + member)
        y = np.array([0] * len(nonmember) + [1] * len(member))
        aucs[f"forget_holdout_{key}"] = sweep(ppl, y)
    return {"auc": aucs, "log": log}


def naive_evaluate(loaded: Any, data: Any, retrain_auc: float = 0.5) -> dict[str, Any]:
    """MUSE's four numbers, computed the slow way; ``data`` is a MuseData."""
    model, tokenizer = loaded.model, loaded.tokenizer
    out: dict[str, Any] = {"values": {}, "generations": {}, "seconds": {}}
    start = time.perf_counter()
    verb = eval_verbmem(model, tokenizer, [d.prompt for d in data.verbmem_forget], [d.gt for d in data.verbmem_forget])
    out["values"]["verbmem_f"] = verb.mean() * 100
    out["generations"]["verbmem_f"] = [h["response"] for h in verb.history]
    out["seconds"]["verbmem_f"] = time.perf_counter() - start
    for key, qa, icl in (
        ("knowmem_f", data.knowmem_forget_qa, data.knowmem_forget_icl),
        ("knowmem_r", data.knowmem_retain_qa, data.knowmem_retain_icl),
    ):
        start = time.perf_counter()
        know = eval_knowmem(
            model,
            tokenizer,
            [d.question for d in qa],
            [d.answer for d in qa],
            [d.question for d in icl],
            [d.answer for d in icl],
        )
        out["values"][key] = know.mean() * 100
        out["generations"][key] = [h["response"] for h in know.history]
        out["seconds"][key] = time.perf_counter() - start
    start = time.perf_counter()
    leak = eval_privleak(model, tokenizer, list(data.privleak_forget), list(data.privleak_holdout))
    auc = leak["auc"]["forget_holdout_Min-40%"]
    out["values"]["privleak"] = (auc - retrain_auc) / retrain_auc * 100
    out["auc"] = auc
    out["min40"] = [d["Min-40%"] for d in leak["log"]["forget"] + leak["log"]["holdout"]]
    out["seconds"]["privleak"] = time.perf_counter() - start
    return out
