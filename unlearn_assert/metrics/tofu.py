"""TOFU's metrics for one model, exactly as open-unlearning computes them: ``evaluate_tofu(model, data)``.

Definitions from ``locuslab/open-unlearning`` (commit d3d7cf9, 2025-12-24; file references below are
to it), reproduced step by step; only the execution is batched. ``benchmarks/naive_tofu.py`` is an
independent one-item-at-a-time implementation and the tests hold the two equal.

**Prompt** (``src/data/utils.py`` ``preprocess_chat_instance``, ``template_args`` of ``configs/model/*``):
for a model without a chat template (open-unlearning's ``Llama-2-7b-hf`` and ``phi-1_5`` configs:
``apply_chat_template: False``) the prompt is ``"Question: " + question + "\\n" + "Answer: "``, the
full sequence is the prompt followed directly by the answer, both tokenized with
``add_special_tokens=True, max_length=512, truncation=True``, and EOS is appended to the full sequence
unless it already ends with it. With a chat template (``apply_chat_template: True``): the tokenizer's
chat template over ``[system?] user: question, assistant: answer`` (full) and over the messages before
the answer with ``add_generation_prompt=True`` (prompt), EOS appended likewise. See :class:`TofuTemplate`.

**Probability** (``memorization.py`` ``probability``, ``utils.py`` ``evaluate_probability``): the loss
is the mean token cross-entropy over the labelled positions, the answer's tokens and the appended
EOS (the full sequence from ``len(prompt)``); the item's probability is ``exp(-mean loss)``; the
metric is the mean over items. Keys: ``forget_prob`` = ``forget_Q_A_Prob`` (``answer`` of
``<forget>_perturbed``), ``retain_prob`` = ``retain_Q_A_Prob`` (``answer`` of ``retain_perturbed``),
``ra_prob``/``wf_prob`` = ``ra_Q_A_Prob``/``wf_Q_A_Prob``.

**Prob_normalised** (``probability_w_options``): ``p_correct / (p_correct + sum(p_wrong) + 1e-10)``
per item with ``p = exp(-mean loss)`` of the answer and of each perturbed answer; the mean over items
(``ra_prob_normalised``, ``wf_prob_normalised``).

**Truth ratio** (``truth_ratio``): ``correct = exp(-loss(correct answer))``, ``wrong =
exp(-mean over the perturbed answers of their mean losses)``, ``TR = wrong / (correct + 1e-10)``. The
correct answer is ``paraphrased_answer`` for forget and retain (``*_Q_A_PARA_Prob``) and ``answer`` for
real authors and world facts (``ra_Q_A_Prob``/``wf_Q_A_Prob``). Aggregates: forget
``closer_to_1_better`` = ``mean(min(TR, 1 / (TR + 1e-10)))``; retain, real authors, world facts
``true_better`` = ``mean(max(0, 1 - TR))``. The per-item score is the term inside the mean.

**ROUGE** (``rouge``, ``utils.py`` ``eval_text_similarity``, ``configs/generation/default.yaml``): greedy
decoding of at most 200 new tokens after the prompt (stop at EOS); the generation is decoded with
special tokens skipped and the transformers-4 clean-up, cut at the first occurrence of the decoded
EOS token, stripped; the reference is the decoded full sequence with the decoded prompt removed
(``str.replace``), stripped; score = ``rouge_score`` ROUGE-L **recall** with the stemmer on,
``scorer.score(reference, generation)``. Keys ``forget_rouge``, ``retain_rouge``, ``ra_rouge``, ``wf_rouge``.

**forget_quality** (``privacy.py`` ``ks_test``, ``configs/eval/tofu_metrics/forget_quality.yaml``): the
p-value of ``scipy.stats.ks_2samp`` between this model's per-item forget truth ratios (raw TR) and
the retain model's; None without the retain model's (open-unlearning: "retain_model_logs not
provided").

**model_utility** (``utility.py`` ``hm_aggregate``, ``model_utility.yaml``): ``scipy.stats.hmean`` of
the nine values retain {prob, rouge, truth_ratio}, real authors {prob_normalised, rouge, truth_ratio},
world facts {prob_normalised, rouge, truth_ratio}.

How it runs: every (prompt, answer) sequence of every split is scored teacher-forced in one batched
pass of :func:`.privleak.score_ids` (batched by padded width, ``lm_head`` only from the answer's first
token, no full-vocabulary logits for a whole batch, no per-token Python loop); identical sequences are
scored once. Generation for ROUGE goes through :func:`.generation.greedy_generate` (batched, left
padding, KV cache). Losses are fp32 ``log_softmax`` sums in float64 (open-unlearning: the model
dtype's cross-entropy), so numbers agree to float rounding, not bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from .generation import eval_mode, model_parts

__all__ = [
    "EPS",
    "FORGET_METRICS",
    "HIGHER_MEANS_FORGOTTEN",
    "MAX_LENGTH",
    "MAX_NEW_TOKENS",
    "METRIC_ROLES",
    "MODEL_UTILITY_COMPONENTS",
    "OPEN_UNLEARNING_KEYS",
    "PLAIN_TEMPLATE",
    "TOFU_METRICS",
    "TofuTemplate",
    "encode_pair",
    "encode_pairs",
    "evaluate_tofu",
    "forget_quality",
    "forget_quality_replicates",
    "model_utility",
    "model_utility_replicates",
    "reference_truth_ratios",
    "resolve_template",
    "sequence_lengths",
    "tofu_settings",
]

#: open-unlearning's epsilon in the truth ratio and Prob_normalised denominators.
EPS = 1e-10
#: ``max_length`` of TOFU's QA datasets (``configs/data/datasets/TOFU_QA_*.yaml``).
MAX_LENGTH = 512
#: ``max_new_tokens`` of ``configs/generation/default.yaml`` (greedy, no stop words).
MAX_NEW_TOKENS = 200

#: Every metric, in report order.
TOFU_METRICS: tuple[str, ...] = (
    "forget_prob",
    "forget_rouge",
    "forget_truth_ratio",
    "forget_quality",
    "model_utility",
    "retain_prob",
    "retain_rouge",
    "retain_truth_ratio",
    "ra_prob",
    "ra_prob_normalised",
    "ra_rouge",
    "ra_truth_ratio",
    "wf_prob",
    "wf_prob_normalised",
    "wf_rouge",
    "wf_truth_ratio",
)
#: The name each metric has in open-unlearning's TOFU report (``configs/eval/tofu_metrics/``).
OPEN_UNLEARNING_KEYS: dict[str, str] = {
    "forget_prob": "forget_Q_A_Prob",
    "forget_rouge": "forget_Q_A_ROUGE",
    "forget_truth_ratio": "forget_truth_ratio",
    "forget_quality": "forget_quality",
    "model_utility": "model_utility",
    "retain_prob": "retain_Q_A_Prob",
    "retain_rouge": "retain_Q_A_ROUGE",
    "retain_truth_ratio": "retain_Truth_Ratio",
    "ra_prob": "ra_Q_A_Prob",
    "ra_prob_normalised": "ra_Q_A_Prob_normalised",
    "ra_rouge": "ra_Q_A_ROUGE",
    "ra_truth_ratio": "ra_Truth_Ratio",
    "wf_prob": "wf_Q_A_Prob",
    "wf_prob_normalised": "wf_Q_A_Prob_normalised",
    "wf_rouge": "wf_Q_A_ROUGE",
    "wf_truth_ratio": "wf_Truth_Ratio",
}
#: The nine values whose harmonic mean is model_utility, and the split each one's items come from.
MODEL_UTILITY_COMPONENTS: dict[str, str] = {
    "retain_prob": "retain",
    "retain_rouge": "retain",
    "retain_truth_ratio": "retain",
    "ra_prob_normalised": "real_authors",
    "ra_rouge": "real_authors",
    "ra_truth_ratio": "real_authors",
    "wf_prob_normalised": "world_facts",
    "wf_rouge": "world_facts",
    "wf_truth_ratio": "world_facts",
}
#: The metrics a recovery check applies to.
FORGET_METRICS: tuple[str, ...] = ("forget_prob", "forget_rouge", "forget_truth_ratio")
#: Proposed role of each metric in a gate (see the Benchmark contract): forget metrics by recovery,
#: utility by the ratio to the target, privacy against an absolute budget with a retain model.
METRIC_ROLES: dict[str, str] = {m: "reported" for m in TOFU_METRICS} | {
    "forget_prob": "forget",
    "forget_rouge": "forget",
    "forget_truth_ratio": "forget",
    "model_utility": "utility",
    "forget_quality": "privacy",
}
#: Forget metrics that rise when the model forgets (the others fall): the forget truth ratio is
#: near 0 for a model that prefers the correct answer and near 1 for one that cannot tell them apart.
#: A recovery ``(m(q(U)) - m(U)) / (m(T) - m(U))`` is direction-free; an "unlearning worked" floor on
#: ``m(T) - m(U)`` must flip its sign for these.
HIGHER_MEANS_FORGOTTEN: frozenset[str] = frozenset({"forget_truth_ratio"})

_SPLITS = ("forget", "retain", "real_authors", "world_facts")
_PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}


# --------------------------------------------------------------------------- prompt template


@dataclass(frozen=True)
class TofuTemplate:
    """open-unlearning's ``template_args``: how a question (and answer) become token ids.

    The default is what open-unlearning uses for a model without a chat template (its
    ``Llama-2-7b-hf`` and ``phi-1_5`` configs): ``Question: {q}\\nAnswer: {a}``. ``apply_chat_template``
    uses the tokenizer's own chat template, with ``system_prompt`` as a system message when given and
    ``date_string`` passed to the template (its Llama-3 configs set both)."""

    apply_chat_template: bool = False
    user_start_tag: str = "Question: "
    user_end_tag: str = "\n"
    asst_start_tag: str = "Answer: "
    system_prompt_with_special_tokens: str | None = None
    system_prompt: str | None = None
    date_string: str | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON record of the template (for provenance and the cache key)."""
        if self.apply_chat_template:
            return {"kind": "chat", "system_prompt": self.system_prompt, "date_string": self.date_string}
        return {
            "kind": "plain",
            **{
                k: v
                for k, v in asdict(self).items()
                if k not in ("apply_chat_template", "system_prompt", "date_string")
            },
        }


#: open-unlearning's template for a model without a chat template.
PLAIN_TEMPLATE = TofuTemplate()


def resolve_template(tokenizer: Any, template: str | TofuTemplate = "auto") -> TofuTemplate:
    """``"auto"``: the chat template when the tokenizer has one (open-unlearning configures every
    instruct model that way), else :data:`PLAIN_TEMPLATE`; ``"plain"``/``"chat"`` force one."""
    if isinstance(template, TofuTemplate):
        return template
    if template == "plain":
        return PLAIN_TEMPLATE
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat":
        if not has_chat:
            raise ConfigError(
                "the TOFU template 'chat' needs a tokenizer with a chat template, and this one has none; "
                "use 'plain' (open-unlearning's 'Question: ... Answer: ' prompt) or 'auto'"
            )
        return TofuTemplate(apply_chat_template=True)
    if template == "auto":
        return TofuTemplate(apply_chat_template=True) if has_chat else PLAIN_TEMPLATE
    raise ConfigError(f"unknown TOFU template {template!r}; use auto, plain or chat")


def _ids(value: Any) -> list[int]:
    if isinstance(value, Mapping):
        value = value["input_ids"]
    return [int(v) for v in value]


def encode_pair(
    tokenizer: Any, template: TofuTemplate, question: str, answer: str, max_length: int = MAX_LENGTH
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, full_ids)`` exactly as ``preprocess_chat_instance`` builds them (no few-shot):
    the answer's labels are ``full_ids[len(prompt_ids):]``, EOS included."""
    eos = tokenizer.eos_token_id
    if template.apply_chat_template:
        chat: list[dict[str, str]] = (
            [{"role": "system", "content": template.system_prompt}] if template.system_prompt else []
        )
        chat += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        extra = {"date_string": template.date_string} if template.date_string is not None else {}
        full = _ids(
            tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=False, return_dict=False, **extra)
        )
        prompt = _ids(
            tokenizer.apply_chat_template(
                chat[:-1], tokenize=True, add_generation_prompt=True, return_dict=False, **extra
            )
        )
    else:
        wrapped = (
            (template.system_prompt_with_special_tokens or "")
            + template.user_start_tag
            + question
            + template.user_end_tag
            + template.asst_start_tag
        )
        full = _ids(
            tokenizer(wrapped + answer, add_special_tokens=True, max_length=max_length, truncation=True)["input_ids"]
        )
        prompt = _ids(tokenizer(wrapped, add_special_tokens=True, max_length=max_length, truncation=True)["input_ids"])
    if not full or full[-1] != eos:
        full = full + [eos]
    return prompt, full


def encode_pairs(
    tokenizer: Any, template: TofuTemplate, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH
) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_pair` for many (question, answer) pairs: the plain template's texts are tokenized
    in two batched tokenizer calls (each distinct prompt once), with the same ids as one by one."""
    if template.apply_chat_template or not pairs:
        return [encode_pair(tokenizer, template, q, a, max_length) for q, a in pairs]
    head = (template.system_prompt_with_special_tokens or "") + template.user_start_tag
    tail = template.user_end_tag + template.asst_start_tag
    wrapped = [head + q + tail for q, _ in pairs]
    distinct = list(dict.fromkeys(wrapped))
    kwargs = {"add_special_tokens": True, "max_length": max_length, "truncation": True}
    prompt_ids = dict(zip(distinct, (_ids(x) for x in tokenizer(distinct, **kwargs)["input_ids"])))
    fulls = [_ids(x) for x in tokenizer([w + a for w, (_, a) in zip(wrapped, pairs)], **kwargs)["input_ids"]]
    eos = tokenizer.eos_token_id
    return [(prompt_ids[w], f if f and f[-1] == eos else f + [eos]) for w, f in zip(wrapped, fulls)]


def tofu_settings(
    template: TofuTemplate,
    *,
    question_key: str = "question",
    forget_split: str | None = None,
    max_length: int = MAX_LENGTH,
) -> dict[str, Any]:
    """The settings that change TOFU numbers (part of every cached result's key)."""
    return {
        "benchmark": "tofu",
        "template": template.describe(),
        "question_key": question_key,
        "forget_split": forget_split,
        "max_length": max_length,
        "max_new_tokens": MAX_NEW_TOKENS,
        "rouge": "rougeL-recall-stem",
        "truth_ratio": "forget: mean(min(TR,1/TR)); others: mean(max(0,1-TR))",
        "reference": "open-unlearning@d3d7cf9",
    }


# --------------------------------------------------------------------------- aggregates


def _truth_ratio(correct_loss: float, wrong_losses: Sequence[float]) -> tuple[float, float, float]:
    """``(TR, correct, wrong)``: ``wrong = exp(-mean(wrong losses))``, ``correct = exp(-correct loss)``,
    ``TR = wrong / (correct + 1e-10)`` (open-unlearning's TR)."""
    import numpy as np

    wrong = float(np.exp(-np.mean(np.asarray(wrong_losses, dtype=np.float64))))
    correct = math.exp(-correct_loss)
    return wrong / (correct + EPS), correct, wrong


def forget_quality(truth_ratios: Sequence[float], reference: Sequence[float] | None) -> float | None:
    """The p-value of ``scipy.stats.ks_2samp(truth_ratios, reference)`` (raw per-item forget truth
    ratios of this model and of the retain model); None without a reference."""
    if reference is None:
        return None
    return float(_ks_pvalue(list(truth_ratios), list(reference)))


def _ks_pvalue(a: Any, b: Any) -> float:
    """``ks_2samp(a, b).pvalue`` with scipy's defaults; scipy's warning that the exact p-value failed
    (ties) and it used the asymptotic one is not repeated: the value is scipy's either way."""
    import warnings

    from scipy.stats import ks_2samp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful", category=RuntimeWarning)
        return float(ks_2samp(a, b).pvalue)


def forget_quality_replicates(truth_ratios: Sequence[float], reference: Sequence[float], counts: Any) -> Any:
    """forget_quality of each bootstrap replicate: ``counts`` (B x n multiplicities of the n forget
    items, the same draw for both models: they answered the same questions) -> B p-values."""
    import numpy as np

    a, b = np.asarray(truth_ratios, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    c = np.asarray(counts).astype(np.int64)
    return np.array([_ks_pvalue(np.repeat(a, row), np.repeat(b, row)) for row in c], dtype=np.float64)


def model_utility(values: Mapping[str, float]) -> float:
    """``scipy.stats.hmean`` of the nine :data:`MODEL_UTILITY_COMPONENTS` values (0 when one is 0)."""
    from scipy.stats import hmean

    return float(hmean([float(values[k]) for k in MODEL_UTILITY_COMPONENTS]))


def model_utility_replicates(scores: Mapping[str, Sequence[float]], counts: Mapping[str, Any]) -> Any:
    """model_utility of each bootstrap replicate: ``scores`` are the per-item scores of the nine
    components (their means are the components), ``counts`` the B x n multiplicities per split
    (``retain``, ``real_authors``, ``world_facts``); the harmonic mean of the replicate means."""
    import numpy as np

    means = []
    for name, split in MODEL_UTILITY_COMPONENTS.items():
        s = np.asarray(scores[name], dtype=np.float64)
        c = np.asarray(counts[split], dtype=np.float64)
        means.append(c @ s / s.size)
    m = np.vstack(means)  # 9 x B
    with np.errstate(divide="ignore"):
        out = np.where((m > 0).all(axis=0), m.shape[0] / (1.0 / np.where(m > 0, m, 1.0)).sum(axis=0), 0.0)
    return out


# --------------------------------------------------------------------------- scoring


@dataclass
class _Sequences:
    """Deduplicated teacher-forced sequences: each (full ids, first answer token) once."""

    encoded: list[list[int]]
    first: list[int]
    index: dict[tuple[tuple[int, ...], int], int]

    def add(self, prompt: list[int], full: list[int]) -> int:
        key = (tuple(full), len(prompt))
        at = self.index.get(key)
        if at is None:
            at = self.index[key] = len(self.encoded)
            self.encoded.append(full)
            self.first.append(len(prompt))
        return at


def _question(item: Any, question_key: str) -> str:
    if question_key == "paraphrased_question":
        return item.paraphrased_question or item.question
    return str(item.question)


def _losses(
    model: Any,
    tokenizer: Any,
    seqs: _Sequences,
    batch_size: int | None,
    max_length: int | None,
    timings: dict[str, float],
    keep_end: bool = False,
) -> tuple[list[float], int, dict[int, tuple[int, int]]]:
    """Mean answer-token loss of every sequence (NaN when it has no answer token, as open-unlearning's
    0/0), the largest batch, and the sequences the context window truncated (index -> (tokens, kept);
    ``keep_end``: their ends are kept, the answer with them)."""
    from .generation import pad_token_id
    from .privleak import score_ids

    scores, used = score_ids(
        model,
        seqs.encoded,
        pad_id=pad_token_id(tokenizer),
        first=seqs.first,
        moments=False,
        batch_size=batch_size,
        max_length=max_length,
        timings=timings,
        keep_end=keep_end,
    )
    out: list[float] = []
    for score, first in zip(scores, seqs.first):
        n = len(score.logprobs)
        out.append(-math.fsum(score.logprobs) / n if n and first >= 1 else float("nan"))
    return out, used, {i: (s.source_tokens, s.n_tokens) for i, s in enumerate(scores) if s.truncated}


def _generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    fulls: list[list[int]],
    batch_size: int | None,
    timings: dict[str, float],
    truncate: bool = False,
) -> tuple[list[str], list[str], Any]:
    """Greedy answers (decoded, cut at the decoded EOS, stripped), references for ROUGE, and the generation record."""
    from .generation import greedy_generate
    from .rouge import decode

    out = greedy_generate(model, tokenizer, prompts, MAX_NEW_TOKENS, batch_size=batch_size, truncate=truncate)
    timings["prefill"] = timings.get("prefill", 0.0) + out.prefill_seconds
    timings["decode"] = timings.get("decode", 0.0) + out.decode_seconds
    eos_text = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else ""
    generations: list[str] = []
    for ids in out.ids:
        text = decode(tokenizer, ids)
        if eos_text and eos_text in text:
            text = text.split(eos_text)[0]
        generations.append(text.strip())
    references = [
        decode(tokenizer, full).replace(decode(tokenizer, prompt), "").strip() for prompt, full in zip(prompts, fulls)
    ]
    return generations, references, out


def _item_truncation(cuts: Mapping[int, tuple[int, int]], sequences: Sequence[int], keep: str) -> dict[str, Any]:
    """An item's ``truncation`` record when the context window cut one of its sequences (its answer, a perturbed
    or the paraphrased one): the longest one's tokens, the tokens kept, which end, and how many were cut."""
    cut = [cuts[j] for j in dict.fromkeys(sequences) if j in cuts]
    if not cut:
        return {}
    longest = max(cut)
    return {"truncation": {"tokens": longest[0], "kept": longest[1], "keep": keep, "sequences": len(cut)}}


def _needed(chosen: Iterable[str]) -> tuple[set[str], set[str], set[str]]:
    """(metrics to compute, splits to score teacher-forced, splits to generate for)."""
    want = set(chosen)
    if "model_utility" in want:
        want |= set(MODEL_UTILITY_COMPONENTS)
    if "forget_quality" in want:
        want.add("forget_truth_ratio")
    split_of = {
        m: next(s for s in _SPLITS if m.startswith(_PREFIX[s] + "_"))
        for m in TOFU_METRICS
        if m not in ("forget_quality", "model_utility")
    }
    forced = {split_of[m] for m in want if m in split_of and not m.endswith("_rouge")}
    generated = {split_of[m] for m in want if m.endswith("_rouge")}
    return want, forced, generated


def sequence_lengths(
    tokenizer: Any, data: Any, *, template: str | TofuTemplate = "auto", question_key: str = "question"
) -> list[tuple[str, int, int, int]]:
    """``(split, item, tokens, new_tokens)`` of every sequence :func:`evaluate_tofu` feeds a model, tokenized as it
    tokenizes them: per item its longest question + answer sequence (answer, perturbed or paraphrased answer, EOS
    appended; scored, no new tokens), then its generation prompt with :data:`MAX_NEW_TOKENS`. For the option-time
    check of the context window."""
    tmpl = resolve_template(tokenizer, template)
    out: list[tuple[str, int, int, int]] = []
    for split, items in data.splits().items():
        pairs: list[tuple[str, str]] = []
        spans: list[tuple[int, int]] = []  # each item's pairs; the first, (question, answer), has its generation prompt
        for item in items:
            q = _question(item, question_key) if split in ("forget", "retain") else str(item.question)
            para = [item.paraphrased_answer] if item.paraphrased_answer is not None else []
            answers = [item.answer, *item.perturbed_answers, *para]
            spans.append((len(pairs), len(pairs) + len(answers)))
            pairs += [(q, a) for a in answers]
        encoded = encode_pairs(tokenizer, tmpl, pairs)
        out += [(split, i, max(len(full) for _, full in encoded[a:b]), 0) for i, (a, b) in enumerate(spans)]
        out += [(split, i, len(encoded[a][0]), MAX_NEW_TOKENS) for i, (a, _) in enumerate(spans)]
    return out


def _metrics(metrics: Iterable[str] | str | None) -> list[str]:
    if metrics is None:
        return list(TOFU_METRICS)
    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in chosen if m not in TOFU_METRICS]
    if unknown or not chosen:
        raise ConfigError(
            f"unknown TOFU metric(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(TOFU_METRICS)}"
        )
    return [m for m in TOFU_METRICS if m in chosen]


@dataclass
class _Results:
    """What :func:`evaluate_tofu`'s passes fill in: values, per-item records, intervals, per-item scores."""

    values: dict[str, float]
    samples: dict[str, list[dict[str, Any]]]
    ci: dict[str, tuple[float, float]]
    per_item: dict[str, list[float]]

    def add(self, metric: str, scores: list[float], records: list[dict[str, Any]]) -> None:
        self.values[metric] = _mean(scores)
        self.samples[metric] = records
        self.per_item[metric] = scores


def _teacher_forced(
    hf: Any,
    tokenizer: Any,
    tmpl: TofuTemplate,
    splits: dict[str, Any],
    forced: set[str],
    want: set[str],
    qtext: Any,
    bs: int | None,
    max_length: int | None,
    truncate: bool,
    extras: dict[str, Any],
    out: _Results,
) -> None:
    """Probability, normalised probability and truth ratio: every answer of every split in ``forced`` (correct,
    perturbed and paraphrased) scored in one batched teacher-forced pass."""
    seqs = _Sequences([], [], {})
    plan: dict[str, list[dict[str, Any]]] = {}
    for split in _SPLITS:
        if split not in forced:
            continue
        pairs: list[tuple[str, str]] = []
        for item in splits[split]:
            q = qtext(split, item)
            pairs += [(q, item.answer), *((q, w) for w in item.perturbed_answers)]
            if item.paraphrased_answer is not None:
                pairs.append((q, item.paraphrased_answer))
        encoded = iter(encode_pairs(tokenizer, tmpl, pairs))
        rows = []
        for item in splits[split]:
            row: dict[str, Any] = {"answer": seqs.add(*next(encoded))}
            row["wrong"] = [seqs.add(*next(encoded)) for _ in item.perturbed_answers]
            if item.paraphrased_answer is not None:
                row["para"] = seqs.add(*next(encoded))
            rows.append(row)
        plan[split] = rows
    timings = extras["time_split"]["teacher_forced"]
    losses, used, cuts = (
        _losses(hf, tokenizer, seqs, bs, max_length, timings, truncate) if seqs.encoded else ([], 0, {})
    )
    extras["batch_size"]["teacher_forced"] = used
    extras["teacher_forced"] = {"sequences": len(seqs.encoded), "truncated": len(cuts)}
    for split, rows in plan.items():
        _score_split(split, rows, splits[split], losses, cuts, want, qtext, truncate, out)


def _score_split(
    split: str,
    rows: list[dict[str, Any]],
    items: Sequence[Any],
    losses: Sequence[float],
    cuts: dict[int, Any],
    want: set[str],
    qtext: Any,
    truncate: bool,
    out: _Results,
) -> None:
    """One split's teacher-forced metrics from the pass's losses (``rows``: each item's sequence indices)."""
    from .rouge import excerpt

    p = _PREFIX[split]
    prob: list[float] = []
    norm: list[float] = []
    trs: list[float] = []
    tr_scores: list[float] = []
    recs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("prob", "norm", "tr")}
    for i, (row, item) in enumerate(zip(rows, items)):
        a_loss = losses[row["answer"]]
        wrong = [losses[j] for j in row["wrong"]]
        pa = math.exp(-a_loss)
        prob.append(pa)
        pw = [math.exp(-w) for w in wrong]
        norm.append(pa / (pa + math.fsum(pw) + EPS))
        correct_loss = losses[row["para"]] if split in ("forget", "retain") else a_loss
        tr, p_correct, p_wrong = _truth_ratio(correct_loss, wrong)
        trs.append(tr)
        tr_scores.append(min(tr, 1.0 / (tr + EPS)) if split == "forget" else max(0.0, 1.0 - tr))
        q = excerpt(qtext(split, item))
        cut = _item_truncation(
            cuts,
            [row["answer"], *row["wrong"], *([row["para"]] if "para" in row else [])],
            "end" if truncate else "start",
        )
        recs["prob"].append({"id": i, "score": pa, "question": q, "avg_loss": a_loss, **cut})
        recs["norm"].append({"id": i, "score": norm[-1], "question": q, "prob": pa, "wrong_probs": pw, **cut})
        recs["tr"].append(
            {
                "id": i,
                "score": tr_scores[-1],
                "truth_ratio": tr,
                "question": q,
                "correct_prob": p_correct,
                "wrong_prob": p_wrong,
                **cut,
            }
        )
    for metric, scores, records in (
        (f"{p}_prob", prob, recs["prob"]),
        (f"{p}_truth_ratio", tr_scores, recs["tr"]),
        (f"{p}_prob_normalised", norm, recs["norm"]),
    ):
        if metric in OPEN_UNLEARNING_KEYS and metric in want:
            out.add(metric, scores, records)
    if split == "forget":
        out.per_item["forget_truth_ratio_raw"] = trs


def _rouge(
    hf: Any,
    tokenizer: Any,
    tmpl: TofuTemplate,
    splits: dict[str, Any],
    generated: set[str],
    qtext: Any,
    bs: int | None,
    truncate: bool,
    extras: dict[str, Any],
    out: _Results,
) -> None:
    """ROUGE-L recall of greedy answers: every split in ``generated`` in one batched decode."""
    from .generation import truncation_record
    from .rouge import excerpt, rouge_l_recall_stemmed

    prompts: list[list[int]] = []
    fulls: list[list[int]] = []
    owners: list[tuple[str, int]] = []
    for split in _SPLITS:
        if split not in generated:
            continue
        pairs = [(qtext(split, item), item.answer) for item in splits[split]]
        for i, (prompt, full) in enumerate(encode_pairs(tokenizer, tmpl, pairs)):
            prompts.append(prompt)
            fulls.append(full)
            owners.append((split, i))
    if not prompts:
        return
    gens, refs, generated_out = _generate(
        hf, tokenizer, prompts, fulls, bs, extras["time_split"]["generation"], truncate
    )
    extras["batch_size"]["generation"] = generated_out.batch_size
    extras["over_context"] = generated_out.over_context
    extras["generation_truncated"] = len(generated_out.truncated)
    by_split: dict[str, list[dict[str, Any]]] = {}
    for index, ((split, i), gen, ref) in enumerate(zip(owners, gens, refs)):
        item = splits[split][i]
        by_split.setdefault(split, []).append(
            {
                "id": i,
                "score": rouge_l_recall_stemmed(ref, gen),
                "prompt": excerpt(qtext(split, item)),
                "generation": gen,
                "reference": ref,
                **truncation_record(generated_out, index),
            }
        )
    for split, records in by_split.items():
        out.add(f"{_PREFIX[split]}_rouge", [r["score"] for r in records], records)


def _forget_quality(reference_ratios: Sequence[float] | None, seed: int, extras: dict[str, Any], out: _Results) -> None:
    """forget_quality: the KS test of the forget truth ratios against the retain model's, and its interval."""
    from .stats import resample_counts

    trs = out.per_item.get("forget_truth_ratio_raw", [])
    reference = None if reference_ratios is None else [float(x) for x in reference_ratios]
    if reference is not None and len(reference) != len(trs):
        raise ConfigError(
            f"the retain model's forget truth ratios cover {len(reference)} items, this model's {len(trs)}; "
            "evaluate both on the same TOFU forget split (and --unlearn-max-samples)"
        )
    fq = forget_quality(trs, reference)
    out.values["forget_quality"] = float("nan") if fq is None else fq
    out.samples["forget_quality"] = [
        {"id": i, "score": tr, "reference": None if reference is None else reference[i]} for i, tr in enumerate(trs)
    ]
    reason = (
        None
        if fq is not None
        else "no retain model: forget_quality is the KS-test p-value against a model "
        "retrained without the forget set (--unlearn-retrain)"
    )
    extras["forget_quality"] = {"pvalue": fq, "reason": reason}
    if reference is not None and trs:
        counts = resample_counts(len(trs), seed=seed, key="forget_quality")
        out.ci["forget_quality"] = _percentiles(forget_quality_replicates(trs, reference, counts))


def evaluate_tofu(
    model: Any,
    data: Any,
    metrics: Iterable[str] | str | None = None,
    batch_size: int | str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    *,
    template: str | TofuTemplate = "auto",
    question_key: str = "question",
    reference_truth_ratios: Sequence[float] | None = None,
    max_length: int | None = None,
    truncate: bool = False,
) -> Any:
    """TOFU's metrics for ``model`` (a LoadedModel or quantized view) on ``data`` (a TofuData or a
    TOFU directory), as an :class:`~unlearn_assert.metrics.Evaluation`.

    ``values``: metric -> number on open-unlearning's scale ([0, 1]; forget_quality a p-value, NaN
    without ``reference_truth_ratios``). ``samples``: metric -> per-item records in the data's order,
    ``{"id", "score", ...}`` whose mean is the value (forget_quality: the raw truth ratios its KS test
    compares; model_utility has none: it is a harmonic mean of component means, see
    ``extras["aggregates"]``). ``ci``: seeded 95% bootstrap intervals. ``reference_truth_ratios``: the
    retain model's per-item forget truth ratios (:func:`reference_truth_ratios`). ``template``: "auto",
    "plain", "chat" or a :class:`TofuTemplate`. ``question_key``: "question" or
    "paraphrased_question" (open-unlearning's ``eval.tofu.question_key``; forget and retain splits).
    ``max_length``: the scoring context window override (default: the model config's). ``truncate``: a
    sequence beyond the context window keeps its end (a question + answer its answer, as lm-evaluation-harness
    scores a continuation; a generation prompt its last ``window - 200`` tokens) instead of its start; an item
    with a cut sequence carries ``truncation`` in its records.
    """
    from . import Evaluation
    from .generation import ignored_generation_settings, resolve_batch_size
    from .stats import bootstrap_mean_ci, resample_counts

    if question_key not in ("question", "paraphrased_question"):
        raise ConfigError(f"unknown TOFU question key {question_key!r}; use question or paraphrased_question")
    chosen = _metrics(metrics)
    hf, tokenizer = model_parts(model, "evaluate_tofu")
    data = _tofu_data(data).limited(max_samples)
    bs = resolve_batch_size(batch_size)
    tmpl = resolve_template(tokenizer, template)
    want, forced, generated = _needed(chosen)
    splits = data.splits()
    timings: dict[str, dict[str, float]] = {"teacher_forced": {}, "generation": {}}
    extras: dict[str, Any] = {
        "benchmark": "tofu",
        "settings": tofu_settings(tmpl, question_key=question_key, forget_split=data.forget_split),
        "n": {s: len(splits[s]) for s in _SPLITS},
        "batch_size": {},
        "seconds": {},
        "time_split": timings,
        "seed": seed,
        "max_samples": max_samples,
        "generation_config_ignored": ignored_generation_settings(hf),
        "model_fingerprint": getattr(model, "fingerprint", None),
        "data_fingerprint": getattr(data, "fingerprint", None),
        "aggregates": {
            "model_utility": {"kind": "hmean", "components": dict(MODEL_UTILITY_COMPONENTS)},
            "forget_quality": {"kind": "ks_2samp", "of": "forget_truth_ratio", "field": "truth_ratio"},
        },
        "open_unlearning_keys": {m: OPEN_UNLEARNING_KEYS[m] for m in chosen},
    }
    values: dict[str, float] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    ci: dict[str, tuple[float, float]] = {}
    per_item: dict[str, list[float]] = {}

    def qtext(split: str, item: Any) -> str:
        return _question(item, question_key) if split in ("forget", "retain") else str(item.question)

    results = _Results(values, samples, ci, per_item)
    with eval_mode(hf):
        start = time.perf_counter()
        _teacher_forced(hf, tokenizer, tmpl, splits, forced, want, qtext, bs, max_length, truncate, extras, results)
        extras["seconds"]["teacher_forced"] = time.perf_counter() - start
        start = time.perf_counter()
        _rouge(hf, tokenizer, tmpl, splits, generated, qtext, bs, truncate, extras, results)
        extras["seconds"]["generation"] = time.perf_counter() - start
    if "forget_quality" in want:
        _forget_quality(reference_truth_ratios, seed, extras, results)
    if "model_utility" in want:
        values["model_utility"] = model_utility(values)
        draws = {
            s: resample_counts(len(splits[s]), seed=seed, key=f"model_utility:{s}")
            for s in ("retain", "real_authors", "world_facts")
        }
        ci["model_utility"] = _percentiles(
            model_utility_replicates({k: per_item[k] for k in MODEL_UTILITY_COMPONENTS}, draws)
        )
    for metric, scores in per_item.items():
        if metric in values and metric not in ci:
            ci[metric] = bootstrap_mean_ci(scores, seed=seed, key=metric, scale=1.0)
    ordered = [m for m in TOFU_METRICS if m in values]
    return Evaluation(
        values={m: values[m] for m in ordered if m in chosen},
        ci={m: ci[m] for m in ordered if m in chosen and m in ci},
        samples={m: samples[m] for m in ordered if m in chosen and m in samples},
        extras=extras,
    )


def reference_truth_ratios(
    model: Any,
    data: Any,
    *,
    batch_size: int | str | None = None,
    max_samples: int | None = None,
    template: str | TofuTemplate = "auto",
    question_key: str = "question",
    max_length: int | None = None,
) -> list[float]:
    """The retain model's per-item forget truth ratios (raw TR), for ``evaluate_tofu(...,
    reference_truth_ratios=...)``: evaluate the retain model with this, as privleak's compute_auc."""
    ev = evaluate_tofu(
        model,
        data,
        ["forget_truth_ratio"],
        batch_size=batch_size,
        max_samples=max_samples,
        template=template,
        question_key=question_key,
        max_length=max_length,
    )
    return [float(r["truth_ratio"]) for r in ev.samples["forget_truth_ratio"]]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


def _percentiles(reps: Any) -> tuple[float, float]:
    import numpy as np

    lo, hi = np.percentile(np.asarray(reps, dtype=np.float64), [2.5, 97.5])
    return float(lo), float(hi)


def _tofu_data(data: Any) -> Any:
    import os

    if isinstance(data, (str, os.PathLike)):
        from ..data.tofu import load_tofu

        return load_tofu(data)
    return data
