"""Hand-checked numbers for the metric building blocks (no model needed; fast).

Every expected value below was worked out by hand from the definitions in DESIGN.md, so a change
in the engine that moves a number away from MUSE's definition fails here, not in a report.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from unlearn_assert.errors import ConfigError, ModelError
from unlearn_assert.metrics import METRICS, Evaluation, evaluate
from unlearn_assert.metrics.generation import ignored_generation_settings, plan_prefix, resolve_batch_size
from unlearn_assert.metrics.knowmem import icl_prefix, knowmem_prompt
from unlearn_assert.metrics.privleak import TextScore, attack_values, min_k, privleak, roc_auc
from unlearn_assert.metrics.rouge import (
    clean_up_tokenization,
    contains_stop_string,
    cut_at_stop_strings,
    decode,
    excerpt,
    rouge_l_f1,
)
from unlearn_assert.metrics.stats import bootstrap_auc_ci, bootstrap_mean_ci, mann_whitney_auc
from unlearn_assert.metrics.verbmem import reference_text

# --------------------------------------------------------------------------- ROUGE-L F1


@pytest.mark.parametrize(
    ("reference", "generation", "expected"),
    [
        # LCS "the cat on mat" = 4 of 6 tokens each side: P = R = 4/6, F1 = 2/3
        ("the cat sat on the mat", "the cat lay on a mat", 2 / 3),
        # LCS 2; P = 2/4, R = 2/2; F1 = 2 * 0.5 * 1 / 1.5 = 2/3
        ("Orla Vantreck", "Orla Vantreck was mayor", 2 / 3),
        # rouge_score lower-cases and drops punctuation
        ("Lio Marsh", "lio marsh.", 1.0),
        # no stemmer: "running" and "run" are different tokens (with a stemmer this is 1.0)
        ("running", "run", 0.0),
        # LCS "b c" = 2; P = 2/3, R = 2/4; F1 = 2 * (2/3) * (1/2) / (7/6) = 4/7
        ("a b c d", "b x c", 4 / 7),
        ("14 million crowns", "", 0.0),
    ],
)
def test_rouge_l_f1_hand_checked(reference: str, generation: str, expected: float) -> None:
    assert rouge_l_f1(reference, generation) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- text processing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lio Marsh\n\nQuestion: Who", "Lio Marsh"),
        ("Lio Marsh\nQuestion 2", "Lio Marsh"),
        ("Lio MarshQuestion: who", "Lio Marsh"),
        ("Lio Marsh\nAnswer", "Lio Marsh\nAnswer"),  # a single newline is not a stop
        ("a Question: b\n\nc", "a "),  # the earliest stop string wins, whatever the list order
        ("\n\nLio", ""),
        ("no stop here", "no stop here"),
    ],
)
def test_stop_string_truncation(text: str, expected: str) -> None:
    assert cut_at_stop_strings(text) == expected
    assert contains_stop_string(text) == (expected != text)


def test_transformers4_clean_up() -> None:
    assert (
        clean_up_tokenization("Hello , world . Is it ? Yes ! I do n't , it 's ok")
        == "Hello, world. Is it? Yes! I don't, it's ok"
    )
    assert clean_up_tokenization("plain text") == "plain text"


def test_excerpt() -> None:
    assert excerpt("short") == "short"
    assert excerpt("x" * 10 + "END", limit=3, tail=True) == "...END"
    assert excerpt("BEG" + "x" * 10, limit=3) == "BEG..."


def test_knowmem_prompt_is_muse_format() -> None:
    icl = [SimpleNamespace(question="Q1?", answer="A1"), SimpleNamespace(question="Q2?", answer="A2")]
    prefix = icl_prefix(icl)
    assert prefix == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\n"
    assert knowmem_prompt(prefix, "Who?") == prefix + "Question: Who?\nAnswer: "


# --------------------------------------------------------------------------- tokenizer-level details


@pytest.fixture(scope="module")
def tokenizer():
    from unlearn_assert.testing import train_tokenizer

    text = "Before entering politics she ran a ferry company on the Sallow River. " * 20
    return train_tokenizer([text, "Question: Who?\nAnswer: Lio Marsh\n\n"], 300)


def test_verbmem_reference_counts_bos_among_its_tokens(tokenizer) -> None:
    gt = "Before entering politics she ran a ferry company on the Sallow River."
    ids = tokenizer(gt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # tokenizer(gt) adds BOS, as in MUSE
    # MUSE: tokenizer(gt).input_ids[:, :max_tokens], decoded with skip_special_tokens=True.
    # BOS is one of the max_tokens, so only max_tokens - 1 tokens of gt survive.
    assert reference_text(tokenizer, gt, max_tokens=5) == tokenizer.decode(ids[1:5])
    assert reference_text(tokenizer, gt, max_tokens=5) == decode(tokenizer, ids[:5])
    assert reference_text(tokenizer, gt) == gt  # short gt: whole text, no "<s>"


def test_decode_skips_special_tokens(tokenizer) -> None:
    ids = tokenizer("Lio Marsh")["input_ids"] + [tokenizer.eos_token_id]
    assert decode(tokenizer, ids) == "Lio Marsh"


# --------------------------------------------------------------------------- Min-K% and AUC


def test_min_k_on_known_vector() -> None:
    logprobs = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0]
    # k = int(0.4 * 10) = 4 lowest: -10, -9, -8, -7 -> mean -8.5 -> Min-40% = 8.5
    assert min_k(logprobs) == 8.5
    # order does not matter
    assert min_k(list(reversed(logprobs))) == 8.5
    # n = 5: k = int(2.0) = 2 -> -(-5 + -4) / 2 = 4.5
    assert min_k([-1.0, -5.0, -2.0, -4.0, -3.0]) == 4.5
    # n = 2: int(0.8) = 0, guarded to k = 1 (MUSE would give NaN)
    assert min_k([-0.5, -3.0]) == 3.0
    assert math.isnan(min_k([]))


def test_attack_values_hand_checked() -> None:
    score = TextScore(logprobs=[-1.0, -3.0], zscores=[0.5, -1.5], n_tokens=3, truncated=False)
    values = attack_values(score, "abc")
    assert values["loss"] == 2.0
    assert values["min_40"] == 3.0
    assert values["mink_pp"] == 1.5
    assert values["zlib"] == 2.0 / len(__import__("zlib").compress(b"abc"))


def test_auc_orientation_memorized_forget_set() -> None:
    # A model that memorized the forget texts gives them high log-probs, i.e. low Min-40%.
    forget = [0.1, 0.2, 0.3, 0.4]
    holdout = [2.0, 2.5, 3.0, 3.5]
    assert roc_auc(forget, holdout) == 0.0
    assert privleak(roc_auc(forget, holdout), 0.5) == -100.0
    # the opposite: forget texts less likely than holdout
    assert roc_auc(holdout, forget) == 1.0
    assert privleak(1.0, 0.5) == 100.0


def test_auc_identical_distributions_give_no_leak() -> None:
    values = [0.3, 1.2, 2.2, 0.7, 1.9]
    assert roc_auc(values, values) == 0.5
    assert privleak(roc_auc(values, values), 0.5) == 0.0


def test_privleak_formula() -> None:
    assert privleak(0.6, 0.5) == pytest.approx(20.0)
    assert privleak(0.4772, 0.4772) == 0.0
    assert privleak(0.25, 0.5) == -50.0


def test_mann_whitney_equals_sklearn_auc_with_ties() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    forget = np.round(rng.normal(0, 1, 23), 1).tolist()
    holdout = np.round(rng.normal(0.4, 1, 17), 1).tolist()
    # roc_auc takes Min-K% *values* (score = -value); mann_whitney takes member scores
    assert mann_whitney_auc([-v for v in forget], [-v for v in holdout]) == pytest.approx(
        roc_auc(forget, holdout), abs=1e-12
    )


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_ci_is_seeded_and_sane() -> None:
    scores = [0.0, 0.1, 0.5, 0.9, 1.0, 0.3, 0.2, 0.8]
    first = bootstrap_mean_ci(scores, seed=0, key="knowmem_f")
    assert first == bootstrap_mean_ci(scores, seed=0, key="knowmem_f")
    assert first != bootstrap_mean_ci(scores, seed=1, key="knowmem_f")
    assert first != bootstrap_mean_ci(scores, seed=0, key="knowmem_r")  # independent per metric
    mean = sum(scores) / len(scores) * 100
    assert first[0] < mean < first[1]
    assert 0.0 <= first[0] and first[1] <= 100.0
    assert bootstrap_mean_ci([0.25] * 5, seed=0, key="x") == (25.0, 25.0)


def test_bootstrap_auc_ci() -> None:
    lo, hi = bootstrap_auc_ci([0.0, 0.1, 0.2], [1.0, 1.1, 1.2], seed=0, key="privleak")
    assert lo == hi == 1.0  # perfectly separated in every resample
    lo, hi = bootstrap_auc_ci(
        [0.0, 0.1, 0.2], [1.0, 1.1, 1.2], seed=0, key="privleak", transform=lambda a: privleak(a, 0.5)
    )
    assert lo == hi == 100.0
    lo, hi = bootstrap_auc_ci([0.0, 0.5, 1.0, 0.2], [0.1, 0.6, 0.9, 0.3], seed=3, key="privleak")
    assert 0.0 <= lo < mann_whitney_auc([0.0, 0.5, 1.0, 0.2], [0.1, 0.6, 0.9, 0.3]) < hi <= 1.0


# --------------------------------------------------------------------------- shared prefix plan


def test_plan_prefix_cuts_before_the_boundary_merge() -> None:
    prefix = [1, 10, 11, 12, 13]
    prompts = [
        [1, 10, 11, 12, 14, 20],  # last prefix token re-merged with the question (BPE boundary)
        [1, 10, 11, 12, 13, 21, 22],  # exact prefix
        [1, 30, 31, 32, 33, 34],  # a different prompt altogether
    ]
    assert plan_prefix(prefix, prompts, slack=1) == (4, [2])
    assert plan_prefix(prefix, prompts, slack=0) == (5, [0, 2])
    assert plan_prefix(prefix, [[1, 10, 11, 12, 13]], slack=0) == (0, [0])  # nothing left to feed
    assert plan_prefix(prefix, [[2, 3]], slack=1) == (0, [0])


# --------------------------------------------------------------------------- API checks


def test_metric_names() -> None:
    assert METRICS == ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")


def test_evaluation_to_dict_is_plain_json() -> None:
    import numpy as np

    ev = Evaluation(
        values={"knowmem_f": 12.5, "privleak": float("nan")},
        ci={"knowmem_f": (1.0, 20.0)},
        samples={
            "knowmem_f": [{"id": 0, "prompt": "q", "generation": "a", "reference": "b", "score": np.float64(0.5)}]
        },
        extras={"n": {"knowmem_forget_qa": np.int64(1)}, "t": (1, 2)},
    )
    data = ev.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["values"]["privleak"] is None
    assert data["ci"]["knowmem_f"] == [1.0, 20.0]
    assert type(data["extras"]["n"]["knowmem_forget_qa"]) is int
    assert data["extras"]["t"] == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ["verbmem"]}, "unknown metric"),
        ({"metrics": []}, "unknown metric"),
        ({"batch_size": -1}, "batch size"),
        ({"batch_size": "many"}, "batch size"),
        ({"retrain_auc": 0.0}, "retrain AUC"),
        ({"retrain_auc": 1.5}, "retrain AUC"),
        ({"retrain_auc": 0.5, "retrain_auc_source": "guess"}, "source"),
        ({"retrain_auc_source": "retrain"}, "without a retrain AUC"),
    ],
)
def test_evaluate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    fake = SimpleNamespace(model=SimpleNamespace(training=False), tokenizer=object())
    data = SimpleNamespace(limited=lambda n: data)
    with pytest.raises(ConfigError, match=message):
        evaluate(fake, data, **kwargs)


def test_evaluate_needs_a_loaded_model() -> None:
    with pytest.raises(ModelError, match="load_model"):
        evaluate(object(), SimpleNamespace(limited=lambda n: None))


def test_resolve_batch_size() -> None:
    assert resolve_batch_size(None) is None
    assert resolve_batch_size("auto") is None
    assert resolve_batch_size(0) is None
    assert resolve_batch_size(8) == 8
    assert resolve_batch_size("4") == 4
    with pytest.raises(ConfigError):
        resolve_batch_size(True)


def test_generation_settings_that_greedy_generate_would_apply_are_reported() -> None:
    config = SimpleNamespace(repetition_penalty=1.0, no_repeat_ngram_size=0, temperature=0.6, top_p=0.9, do_sample=True)
    assert ignored_generation_settings(SimpleNamespace(generation_config=config)) == []  # sampling: MUSE ignores it too
    config.repetition_penalty, config.no_repeat_ngram_size = 1.3, 3
    assert ignored_generation_settings(SimpleNamespace(generation_config=config)) == [
        "no_repeat_ngram_size",
        "repetition_penalty",
    ]
    assert ignored_generation_settings(SimpleNamespace()) == []
