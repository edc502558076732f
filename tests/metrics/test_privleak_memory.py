"""Issue 19 on the tiny trained Llama: chunked privleak scoring equals full-vocabulary log-softmax,
chunked prefill / small decode batches / the pre-sized KV cache give the same greedy tokens, and
the memory budget and batch-size rule are deterministic and respected."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from unlearn_assert.data.muse import MuseData
from unlearn_assert.metrics import evaluate
from unlearn_assert.metrics import generation as gen
from unlearn_assert.metrics import privleak as pl
from unlearn_assert.metrics.knowmem import knowmem_generations
from unlearn_assert.metrics.verbmem import verbmem_generations
from unlearn_assert.models import LoadedModel


def _reference_stats(model: Any, tokenizer: Any, text: str) -> tuple[list[float], list[float]]:
    """The pre-issue-19 arithmetic: one batch-1 forward, full [T, V] fp32 log-softmax."""
    import torch

    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    token_lp = logp.gather(-1, ids[0, 1:, None])[:, 0]
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    sigma = ((probs * logp * logp).sum(-1) - mu * mu).clamp(min=1e-12).sqrt()
    return token_lp.tolist(), ((token_lp - mu) / sigma).tolist()


@pytest.mark.parametrize("plan", [None, pl.ScoringPlan(tokens=48, head_positions=7, budget=0)], ids=["auto", "chunked"])
def test_chunked_privleak_scores_equal_full_logits(
    target: LoadedModel, tiny_data: MuseData, plan: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tok = target.model, target.tokenizer
    texts = list(tiny_data.privleak_forget) + list(tiny_data.privleak_holdout)
    head_rows: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: head_rows.append(out.shape[-2]))
    if plan is not None:
        monkeypatch.setattr(pl, "plan_scoring", lambda m: plan)
        assert max(len(tok(t)["input_ids"]) for t in texts) > plan.tokens  # the body really runs in chunks
    chunks: list[int] = []
    stats = pl._Workspace.stats

    def counted(self: Any, head: Any, hidden: Any, targets: Any) -> Any:
        chunks.append(hidden.shape[0])
        return stats(self, head, hidden, targets)

    monkeypatch.setattr(pl._Workspace, "stats", counted)
    try:
        scores, _ = pl.score_texts(model, tok, texts)
    finally:
        handle.remove()
    limit = (plan or pl.plan_scoring(model)).head_positions
    assert head_rows == [8, 8]  # the model's own logits only for the 8-token probe of split_head
    assert 0 < max(chunks) <= limit and sum(chunks) == sum(len(tok(t)["input_ids"]) - 1 for t in texts)
    for text, score in zip(texts, scores):
        logprobs, zscores = _reference_stats(model, tok, text)
        assert score.logprobs == pytest.approx(logprobs, rel=1e-5, abs=2e-5)
        assert score.zscores == pytest.approx(zscores, rel=1e-5, abs=2e-5)
        assert pl.min_k(score.logprobs) == pytest.approx(pl.min_k(logprobs), rel=1e-6)  # Min-K%
        assert pl.min_k(score.zscores) == pytest.approx(pl.min_k(zscores), rel=1e-5, abs=1e-6)  # Min-K%++


def test_a_text_scores_the_same_whatever_shares_its_batch(target: LoadedModel, tiny_data: MuseData) -> None:
    texts = list(tiny_data.privleak_holdout)
    alone, _ = pl.score_texts(target.model, target.tokenizer, texts[:1])
    mixed, used = pl.score_texts(target.model, target.tokenizer, texts + texts[:1])
    assert used > 1
    assert alone[0].logprobs == mixed[0].logprobs == mixed[-1].logprobs  # bit-identical


def test_padded_width_depends_on_the_text_alone() -> None:
    widths = [pl.padded_width(n) for n in range(1, 5000)]
    assert all(w >= n for n, w in zip(range(1, 5000), widths))
    assert all(w - n < max(n / 16, 16) for n, w in zip(range(1, 5000), widths))  # under 1/16 (or 16 tokens) of padding
    assert widths == sorted(widths)
    assert {pl.padded_width(n) for n in range(1805, 1888)} == {1856, 1920}  # MUSE News' privleak texts
    assert pl.padded_width(1000, window=1001) == 1001 and pl.padded_width(1000, window=900) == 1000


def test_chunked_prefill_and_small_batches_give_the_same_tokens(
    target: LoadedModel, tiny_data: MuseData, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tok = target.model, target.tokenizer
    prompts = [item.prompt for item in tiny_data.verbmem_forget]
    reference, _ = verbmem_generations(model, tok, prompts, batch_size=1)
    questions = [item.question for item in tiny_data.knowmem_forget_qa]
    ref_texts, ref_out = knowmem_generations(
        model, tok, questions, tiny_data.knowmem_forget_icl, batch_size=1, reuse_prefix=False, early_stop=False
    )
    # prompts prefilled 5 tokens at a time (several chunks per prompt), 3 rows decoded together
    monkeypatch.setattr(gen, "plan_generation", lambda *a, **k: gen.GenerationPlan(rows=3, prefill_tokens=5, budget=0))
    assert min(len(tok(p)["input_ids"]) for p in prompts) > 5
    ids, out = verbmem_generations(model, tok, prompts)
    assert ids == reference and out.batch_size == 3
    texts, fast = knowmem_generations(model, tok, questions, tiny_data.knowmem_forget_icl)
    assert texts == ref_texts and fast.prefix_tokens > 0
    for short, whole in zip(fast.ids, ref_out.ids):
        assert whole[: len(short)] == short


def test_presized_cache_writes_in_place() -> None:
    import torch

    cache = gen.presized_cache(rows=2, max_len=10)
    first = [torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)]
    k, v = cache.update(first[0], first[1], 0)
    assert k is first[0]  # nothing cached before: the new states themselves
    pointer = cache.layers[0].k_buf.data_ptr()
    cache.window.start = 4
    step = [torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)]
    k, v = cache.update(step[0], step[1], 0)
    assert cache.layers[0].k_buf.data_ptr() == pointer and cache.get_seq_length() == 4
    assert torch.equal(k, torch.cat([first[0], step[0]], dim=2)) and torch.equal(
        v, torch.cat([first[1], step[1]], dim=2)
    )
    cache.compact(torch.tensor([1]), 5)
    assert torch.equal(cache.layers[0].k_buf[0, :, :5], torch.cat([first[0], step[0]], dim=2)[1])


def test_length_buckets_do_not_mix_a_400_token_prompt_with_950() -> None:
    lengths = [950, 400, 940, 390, 900, 20, 30]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets = [[lengths[i] for i in b] for b in gen.length_buckets(order, lengths, rows=8)]
    assert buckets == [[950, 940, 900], [400, 390], [30, 20]]
    assert [len(b) for b in gen.length_buckets(order[:3], lengths, rows=2)] == [2, 1]


def _fake_model(dtype: Any, hidden: int = 2048, layers: int = 16, vocab: int = 32000) -> Any:
    import torch

    config = SimpleNamespace(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        intermediate_size=4 * hidden,
        vocab_size=vocab,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
    )
    param = torch.zeros(1, dtype=torch.uint8)  # packed weights: the budget must not look at them
    return SimpleNamespace(config=config, dtype=dtype, parameters=lambda: iter([param]))


def test_memory_budget_and_plan_respect_it_deterministically() -> None:
    import torch

    model = _fake_model(torch.float32)
    shape = gen.ModelShape.of(model)
    budget = gen.memory_budget(model)
    assert budget == min(int(gen.CPU_BUDGET_FACTOR * shape.weight_bytes), budget) and budget >= gen.MIN_BUDGET
    for prompt, new in ((950, 128), (40, 32), (3000, 128)):
        plan = gen.plan_generation(model, 100, prompt, new)
        per_row = (
            shape.kv_bytes_per_token * (prompt + new) + shape.vocab * 8 + shape.activation_bytes_per_token(prompt + new)
        )
        assert (
            plan.rows == 1
            or plan.rows * per_row + plan.prefill_tokens * shape.activation_bytes_per_token(prompt) <= budget
        )
        assert plan == gen.plan_generation(_fake_model(torch.float32), 100, prompt, new)  # same config -> same plan
    scoring = pl.plan_scoring(model)
    assert scoring.head_positions * shape.vocab * 4 * 3 <= budget // 4 + shape.vocab * 12
    # half precision halves the KV and activation bytes: more rows, from the dtype alone
    assert (
        gen.plan_generation(_fake_model(torch.bfloat16), 100, 950, 128).rows
        >= gen.plan_generation(model, 100, 950, 128).rows
    )


def test_evaluate_reports_where_the_time_goes(target: LoadedModel, tiny_data: MuseData) -> None:
    ev = evaluate(target, tiny_data.limited(2))
    split = ev.extras["time_split"]
    assert set(split) == set(ev.values)
    for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert set(split[metric]) == {"prefill", "decode", "scoring"} and split[metric]["decode"] > 0
    assert set(split["privleak"]) == {"forward", "scoring"}
    for metric, parts in split.items():
        assert sum(parts.values()) == pytest.approx(ev.extras["seconds"][metric])


def test_gqa_attention_on_cpu_copies_no_kv_and_changes_no_bit(
    target: LoadedModel, tiny_data: MuseData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a mask (padded batches, decode steps) transformers copies K and V per query group on
    CPU (``repeat_kv``); ``sdpa_gqa_on_cpu`` lets torch group the heads instead. Same bits, no copy."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.integrations import sdpa_attention

    tok = target.tokenizer
    config = target.model.config.to_dict()
    config.update(num_key_value_heads=target.model.config.num_attention_heads // 2)  # the fixture's shape, with GQA
    torch.manual_seed(0)
    model = LlamaForCausalLM(type(target.model.config).from_dict(config)).eval()
    assert model.config._attn_implementation == "sdpa"
    prompts = [tok(d.prompt)["input_ids"] for d in tiny_data.verbmem_forget[:4]]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    copies: list[int] = []
    repeat = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda x, n: copies.append(n) or repeat(x, n))
    with torch.inference_mode():
        reference = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # transformers' own path
        assert copies, "transformers no longer copies K/V here: sdpa_gqa_on_cpu may be unnecessary"
        copies.clear()
        ours = gen.ModelIO(model).forward(ids, mask, pos, None, last_only=False)
    assert copies == [] and torch.equal(ours, reference)
    assert sdpa_attention.use_gqa_in_sdpa is not gen._gqa_kernel  # restored after the forward


def test_long_texts_run_alone_unpadded_and_score_as_full_logits(
    target: LoadedModel, tiny_data: MuseData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text of SOLO_TOKENS or more is its own batch with no padding (so no mask: SDPA's causal
    kernel), and scores exactly as the full-vocabulary reference does."""
    model, tok = target.model, target.tokenizer
    texts = list(tiny_data.privleak_forget)[:4]
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    monkeypatch.setattr(pl, "SOLO_TOKENS", min(lengths))
    masks: list[Any] = []
    handle = model.model.register_forward_pre_hook(
        lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True
    )
    try:
        scores, used = pl.score_texts(model, tok, texts + texts[:1])  # a duplicate would share a padded batch
    finally:
        handle.remove()
    assert used == 1
    body = [m for m in masks if m is not None and m.shape[-1] > 8]  # not split_head's 8-token probe
    assert sorted(m.shape[-1] for m in body) == sorted(lengths + lengths[:1]) and all(bool(m.all()) for m in body)
    for text, score in zip(texts, scores):
        logprobs, zscores = _reference_stats(model, tok, text)
        assert score.logprobs == pytest.approx(logprobs, rel=1e-5, abs=2e-5)
        assert score.zscores == pytest.approx(zscores, rel=1e-5, abs=2e-5)
    assert scores[-1].logprobs == scores[0].logprobs
