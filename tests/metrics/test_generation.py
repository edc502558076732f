"""The metrics engine on the tiny trained Llama: exactness of batching and prefix reuse, equality
with the naive sequential MUSE implementation, run-to-run reproducibility, long texts, max_samples.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from unlearn_assert.data.muse import MuseData
from unlearn_assert.metrics import compute_auc, evaluate
from unlearn_assert.metrics.generation import greedy_generate
from unlearn_assert.metrics.knowmem import icl_prefix, knowmem_generations, knowmem_prompt
from unlearn_assert.metrics.privleak import privleak_scores, score_texts
from unlearn_assert.metrics.verbmem import verbmem_generations
from unlearn_assert.models import LoadedModel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for this module: the tiny model gains nothing from two, and on a shared
    2-core runner (or under pytest-xdist) spin-waiting OpenMP threads slow batched kernels 5x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def evaluation(target: LoadedModel, tiny_data: MuseData) -> Any:
    return evaluate(target, tiny_data)


def _naive_module() -> ModuleType:
    """benchmarks/naive_muse.py, imported by path (benchmarks/ is not a package)."""
    name = "naive_muse_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "naive_muse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- batching


def test_batch_size_does_not_change_greedy_tokens(target: LoadedModel, tiny_data: MuseData) -> None:
    prompts = [item.prompt for item in tiny_data.verbmem_forget]
    single, used1 = verbmem_generations(target.model, target.tokenizer, prompts, batch_size=1)
    triple, used3 = verbmem_generations(target.model, target.tokenizer, prompts, batch_size=3)
    full, used_auto = verbmem_generations(target.model, target.tokenizer, prompts, batch_size=None)
    assert (used1.batch_size, used3.batch_size, used_auto.batch_size) == (
        1,
        3,
        len(prompts),
    )  # auto: all 8 fit in one batch
    assert used1.forward_passes > used3.forward_passes > used_auto.forward_passes
    assert single == triple == full
    assert any(len(ids) == 128 for ids in single)  # the rows really ran to max_new_tokens


def test_batched_knowmem_equals_batch_one(target: LoadedModel, tiny_data: MuseData) -> None:
    questions = [item.question for item in tiny_data.knowmem_retain_qa]
    runs = [
        knowmem_generations(
            target.model,
            target.tokenizer,
            questions,
            tiny_data.knowmem_retain_icl,
            batch_size=bs,
            reuse_prefix=reuse,
            early_stop=False,
        )
        for bs in (1, 4)
        for reuse in (False, True)
    ]
    ids = [out.ids for _, out in runs]
    assert ids[0] == ids[1] == ids[2] == ids[3]


# --------------------------------------------------------------------------- shared prefix


def test_prefix_reuse_equals_full_prompt_path(target: LoadedModel, tiny_data: MuseData) -> None:
    tok = target.tokenizer
    questions = [item.question for item in tiny_data.knowmem_forget_qa]
    fast_texts, fast = knowmem_generations(target.model, tok, questions, tiny_data.knowmem_forget_icl, batch_size=4)
    slow_texts, slow = knowmem_generations(
        target.model, tok, questions, tiny_data.knowmem_forget_icl, batch_size=1, reuse_prefix=False, early_stop=False
    )
    assert fast_texts == slow_texts
    for short, whole in zip(fast.ids, slow.ids):  # early stop only drops tokens the cut removes
        assert whole[: len(short)] == short
    prefix_len = len(tok(icl_prefix(tiny_data.knowmem_forget_icl))["input_ids"])
    # byte-level BPE tokenizes the trailing "\n\n" differently before "Question": one token short
    assert prefix_len - 4 <= fast.prefix_tokens < prefix_len
    assert fast.fallbacks == 0 and slow.prefix_tokens == 0
    assert sum(map(len, fast.ids)) <= sum(map(len, slow.ids))


def test_prompts_outside_the_prefix_fall_back_and_still_match(target: LoadedModel, tiny_data: MuseData) -> None:
    tok = target.tokenizer
    prefix = icl_prefix(tiny_data.knowmem_forget_icl)
    texts = [knowmem_prompt(prefix, item.question) for item in tiny_data.knowmem_forget_qa[:4]]
    texts.append(tiny_data.verbmem_forget[0].prompt)  # does not start with the prefix
    prompts = [tok(t)["input_ids"] for t in texts]
    shared = greedy_generate(target.model, tok, prompts, 16, batch_size=2, prefix_ids=tok(prefix)["input_ids"])
    naive = greedy_generate(target.model, tok, prompts, 16, batch_size=1)
    assert shared.fallbacks == 1 and shared.prefix_tokens > 0
    assert shared.ids == naive.ids


# --------------------------------------------------------------------------- reproducibility / naive


def test_reproducible_identical_floats(target: LoadedModel, tiny_data: MuseData, evaluation: Any) -> None:
    again = evaluate(target, tiny_data)
    assert again.values == evaluation.values
    assert again.ci == evaluation.ci
    assert again.samples == evaluation.samples
    assert set(evaluation.values) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"}


def test_equals_naive_sequential_implementation(target: LoadedModel, tiny_data: MuseData, evaluation: Any) -> None:
    naive = _naive_module().naive_evaluate(target, tiny_data)
    assert naive["values"] == evaluation.values  # exact float equality, all four metrics
    for key in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert [s["generation"] for s in evaluation.samples[key]] == naive["generations"][key]
    assert naive["auc"] == evaluation.extras["auc"]
    engine_min40 = [s["score"] for s in evaluation.samples["privleak"]]
    assert engine_min40 == pytest.approx(naive["min40"], rel=1e-5, abs=1e-6)  # batched forward: last bits may differ


def test_evaluation_records(evaluation: Any, tiny_data: MuseData) -> None:
    extras = evaluation.extras
    assert extras["n"] == {
        "verbmem_forget": 8,
        "knowmem_forget_qa": 10,
        "knowmem_retain_qa": 10,
        "privleak_forget": 10,
        "privleak_holdout": 10,
    }
    assert extras["auc_reference"] == 0.5 and extras["auc_reference_source"] == "default"
    assert set(extras["attack_aucs"]) == {"min_40", "loss", "zlib", "mink_pp"}
    assert extras["generation_config_ignored"] == []
    assert extras["prefix_fallbacks"] == 0 and set(extras["prefix_cache"]) == {"knowmem_f", "knowmem_r"}
    assert set(extras["seconds"]) == set(evaluation.values) == set(extras["batch_size"])
    assert (
        extras["over_context"] == {"verbmem_f": 0, "knowmem_f": 0, "knowmem_r": 0} and extras["privleak_truncated"] == 0
    )
    for metric, (lo, hi) in evaluation.ci.items():
        assert lo <= evaluation.values[metric] <= hi, metric
    record = evaluation.samples["knowmem_f"][0]
    assert set(record) >= {"id", "prompt", "generation", "reference", "score"}
    assert record["reference"] == tiny_data.knowmem_forget_qa[0].answer
    assert len(evaluation.samples["privleak"]) == 20
    plain = evaluation.to_dict()
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain
    assert plain["values"] == evaluation.values


# --------------------------------------------------------------------------- privleak


def test_privleak_orientation_on_the_trained_model(target: LoadedModel, tiny_data: MuseData, evaluation: Any) -> None:
    # the tiny model was trained on privleak/forget.json but not on holdout: it memorized them
    assert evaluation.extras["auc"] < 0.1
    assert evaluation.values["privleak"] < -80
    # identical distributions (the same texts on both sides) leak nothing
    same = privleak_scores(target.model, target.tokenizer, tiny_data.privleak_holdout, tiny_data.privleak_holdout)
    assert same.auc == 0.5


def test_reference_auc_from_retrain_model(target: LoadedModel, tiny_data: MuseData, evaluation: Any) -> None:
    auc = compute_auc(target, tiny_data)
    assert auc == evaluation.extras["auc"]
    ev = evaluate(target, tiny_data, metrics=["privleak"], retrain_auc=0.25, retrain_auc_source="retrain")
    assert ev.extras["auc_reference"] == 0.25 and ev.extras["auc_reference_source"] == "retrain"
    assert ev.values["privleak"] == (auc - 0.25) / 0.25 * 100
    assert evaluate(target, tiny_data, metrics="privleak", retrain_auc=0.4).extras["auc_reference_source"] == "option"


def test_long_text_policy_truncates_to_the_context_window(target: LoadedModel, tiny_data: MuseData) -> None:
    import torch

    tok = target.tokenizer
    long_text = " ".join(tiny_data.privleak_forget) * 4
    ids = tok(long_text)["input_ids"]
    window = target.model.config.max_position_embeddings
    assert len(ids) > window
    scores, _ = score_texts(target.model, tok, [long_text, tiny_data.privleak_holdout[0]], batch_size=2)
    assert scores[0].truncated and scores[0].n_tokens == window and len(scores[0].logprobs) == window - 1
    assert not scores[1].truncated
    # the kept tokens are scored exactly as one forward pass over the first `window` tokens
    with torch.inference_mode():
        logits = target.model(torch.tensor([ids[:window]])).logits.float()
    expected = torch.log_softmax(logits[0, :-1], -1).gather(-1, torch.tensor(ids[1:window])[:, None])[:, 0].tolist()
    assert scores[0].logprobs == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # an explicit, shorter window
    short, _ = score_texts(target.model, tok, [long_text], max_length=16)
    assert short[0].n_tokens == 16 and short[0].logprobs == pytest.approx(expected[:15], rel=1e-5, abs=1e-6)
    result = privleak_scores(target.model, tok, [long_text], [tiny_data.privleak_holdout[0]])
    assert result.extras["truncated"] == 1 and result.extras["context"] == window


# --------------------------------------------------------------------------- options


def test_max_samples_and_batch_size(target: LoadedModel, tiny_data: MuseData, evaluation: Any) -> None:
    small = evaluate(target, tiny_data, max_samples=2, batch_size=1)
    assert set(small.extras["n"].values()) == {2}
    assert all(len(records) == (4 if metric == "privleak" else 2) for metric, records in small.samples.items())
    assert set(small.extras["batch_size"].values()) == {1}
    assert small.extras["max_samples"] == 2
    # the first two items score as they do in the full run (greedy tokens independent of batch)
    for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert [s["generation"] for s in small.samples[metric]] == [
            s["generation"] for s in evaluation.samples[metric][:2]
        ]
    same = evaluate(target, tiny_data.limited(2), batch_size=2)
    assert same.values == small.values
