"""Unlearning losses on hand-made logits, the trainer on the tiny model, SURE's mask, and the CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from unlearn_assert.errors import ConfigError, DataError, UnlearnAssertError
from unlearn_assert.unlearning import METHODS
from unlearn_assert.unlearning.losses import (
    LossInputs,
    RefOutputs,
    ga_loss,
    gdr_loss,
    klr_loss,
    method_loss,
    nll_loss,
    npo_loss,
    parse_method,
    sequence_logprob,
    shift_for_lm,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def _t(rows: list[list[list[float]]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# p = [1/4, 1/2, 1/4]
QUARTER_HALF = [0.0, LN2, 0.0]
UNIFORM = [0.0, 0.0, 0.0]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """2 shared cores: torch's 2-thread kernels stall under contention; 1 thread is 10x faster here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- losses, by hand


def test_nll_and_ga_are_cross_entropy_and_its_negation() -> None:
    logits = _t([[QUARTER_HALF, QUARTER_HALF]])
    targets = torch.tensor([[1, 0]])
    mask = torch.ones(1, 2)
    expected = (LN2 + math.log(4.0)) / 2  # -log(1/2), -log(1/4)
    assert nll_loss(logits, targets, mask).item() == pytest.approx(expected)
    assert gdr_loss(logits, targets, mask).item() == pytest.approx(expected)
    assert ga_loss(logits, targets, mask).item() == pytest.approx(-expected)
    assert ga_loss(_t([[UNIFORM]]), torch.tensor([[2]]), torch.ones(1, 1)).item() == pytest.approx(-LN3)


def test_padding_is_masked_in_token_losses() -> None:
    logits = _t([[QUARTER_HALF, [9.0, -9.0, 3.0]]])
    targets = torch.tensor([[1, 1]])
    mask = torch.tensor([[1, 0]])
    assert ga_loss(logits, targets, mask).item() == pytest.approx(-LN2)
    assert sequence_logprob(logits, targets, mask).item() == pytest.approx(-LN2)


def test_npo_equal_to_reference_is_2_over_beta_log2() -> None:
    logits = _t([[QUARTER_HALF, UNIFORM], [UNIFORM, QUARTER_HALF]])
    targets, mask = torch.tensor([[1, 0], [2, 2]]), torch.ones(2, 2)
    for beta in (0.1, 0.5):
        assert npo_loss(logits, logits.clone(), targets, mask, beta).item() == pytest.approx((2 / beta) * LN2, rel=1e-6)


def test_npo_uses_summed_sequence_log_ratio_and_masks_padding() -> None:
    beta = 0.1
    # sequence 0: two tokens, each log p_model - log p_ref = log(1/2) - log(1/3) -> ratio 2*log 1.5 (a sum, not a mean)
    # sequence 1: one token with ratio log(1/4) - log(1/3) = log 0.75, then a padded position that must not count
    model = _t([[QUARTER_HALF, QUARTER_HALF], [QUARTER_HALF, [5.0, 0.0, 0.0]]])
    ref = _t([[UNIFORM, UNIFORM], [UNIFORM, UNIFORM]])
    targets = torch.tensor([[1, 1], [0, 1]])
    mask = torch.tensor([[1, 1], [1, 0]])
    ratios = [2 * math.log(1.5), math.log(0.75)]
    expected = -(2 / beta) * sum(math.log(1 / (1 + math.exp(beta * r))) for r in ratios) / 2  # logsigmoid(-b r)
    assert npo_loss(model, ref, targets, mask, beta).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError):
        npo_loss(model, ref, targets, mask, beta=0.0)


def test_npo_gradient_only_reaches_the_model() -> None:
    model = _t([[QUARTER_HALF]]).requires_grad_(True)
    ref = _t([[UNIFORM]]).requires_grad_(True)
    npo_loss(model, ref, torch.tensor([[1]]), torch.ones(1, 1)).backward()
    assert model.grad is not None and ref.grad is None


def test_klr_is_kl_ref_to_model_from_log_softmax_and_masked() -> None:
    ref = _t([[[LN2, 0.0, 0.0], [LN2, 0.0, 0.0], [0.0, 7.0, 0.0]]])  # p_ref = [1/2, 1/4, 1/4]
    model = _t([[UNIFORM, [LN2 + 3.0, 3.0, 3.0], UNIFORM]])  # uniform; then equal to ref (shifted logits)
    kl = 0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75)
    assert klr_loss(model, ref, torch.tensor([[1, 1, 0]])).item() == pytest.approx(kl / 2, rel=1e-6)
    assert klr_loss(model[:, :1], ref[:, :1], torch.ones(1, 1)).item() == pytest.approx(kl, rel=1e-6)
    assert klr_loss(ref, ref.clone() + 4.0, torch.ones(1, 3)).item() == pytest.approx(0.0, abs=1e-7)


def test_shift_for_lm_aligns_position_t_with_token_t_plus_1() -> None:
    logits = torch.randn(2, 5, 3)
    ids = torch.arange(10).reshape(2, 5)
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    aligned, targets, mask = shift_for_lm(logits, ids, am)
    assert (
        torch.equal(aligned, logits[:, :4])
        and torch.equal(targets, ids[:, 1:])
        and mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    )


@pytest.mark.parametrize("name", list(METHODS) + ["NPO_KLR", "ga-gdr"])
def test_method_dispatch(name: str) -> None:
    method = parse_method(name)
    f_ref, r_ref, f_tok, r_tok, one = (
        _t([[UNIFORM]]),
        _t([[QUARTER_HALF]]),
        torch.tensor([[1]]),
        torch.tensor([[0]]),
        torch.ones(1, 1),
    )
    f = LossInputs(_t([[QUARTER_HALF]]), f_tok, one, RefOutputs.from_logits(f_ref, f_tok, one))
    r = LossInputs(_t([[UNIFORM]]), r_tok, one, RefOutputs.from_logits(r_ref, r_tok, one))
    parts = method_loss(name, f, r, alpha=0.5, beta=0.1)
    forget = (
        ga_loss(f.logits, f.targets, f.mask)
        if method.forget == "ga"
        else npo_loss(f.logits, f_ref, f.targets, f.mask, 0.1)
    )
    assert parts.forget.item() == pytest.approx(forget.item())
    if method.retain is None:
        assert parts.retain is None and parts.total.item() == pytest.approx(forget.item())
    else:
        retain = gdr_loss(r.logits, r.targets, r.mask) if method.retain == "gdr" else klr_loss(r.logits, r_ref, r.mask)
        assert parts.retain is not None and parts.retain.item() == pytest.approx(retain.item())
        assert parts.total.item() == pytest.approx(forget.item() + 0.5 * retain.item())
    assert method.needs_reference == (method.forget == "npo" or method.retain == "klr")


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown unlearning method 'rmu'"):
        parse_method("rmu")


# --------------------------------------------------------------------------- data and settings


def test_chunking_is_continuous_bos_prefixed_and_padded(tiny_model_dir: Path) -> None:
    from unlearn_assert.models import load_tokenizer
    from unlearn_assert.unlearning.trainer import chunk_text

    tok = load_tokenizer(tiny_model_dir)
    text = "The quick brown fox jumps over the lazy dog. " * 5
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = chunk_text(tok, text, 8)
    assert chunks.input_ids.shape == (math.ceil(len(ids) / 7), 8)
    assert (chunks.input_ids[:, 0] == tok.bos_token_id).all()
    content = [
        t
        for row, m in zip(chunks.input_ids.tolist(), chunks.attention_mask.tolist())
        for t, keep in zip(row[1:], m[1:])
        if keep
    ]
    assert content == ids
    assert chunks.attention_mask[:-1].all() and chunks.attention_mask[-1, 1 + len(ids) % 7 :].sum() == 0


def test_batch_cycler_is_seeded_and_covers_each_epoch() -> None:
    from unlearn_assert.unlearning.trainer import BatchCycler

    a, b = BatchCycler(7, 3, seed=5), BatchCycler(7, 3, seed=5)
    first = [a.next().tolist() for _ in range(3)]
    assert first == [b.next().tolist() for _ in range(3)]
    assert [len(x) for x in first] == [3, 3, 1] and sorted(sum(first, [])) == list(range(7))


def test_settings_validation() -> None:
    from unlearn_assert.unlearning.trainer import UnlearnSettings

    with pytest.raises(ConfigError, match="exactly one of steps or epochs"):
        UnlearnSettings().validated()
    with pytest.raises(ConfigError, match="without sure"):
        UnlearnSettings(steps=1, sure_top=0.2).validated()
    s = UnlearnSettings(method="NPO_GDR", steps=1, sure=True).validated()
    assert s.method == "npo_gdr" and s.sure_top == 0.1


# --------------------------------------------------------------------------- trainer on the tiny model


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> Any:
    from unlearn_assert.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def data(tiny_data_dir: Path) -> Any:
    from unlearn_assert.data.muse import load_data

    return load_data(tiny_data_dir)


def _settings(**kw: Any) -> Any:
    from unlearn_assert.unlearning.trainer import UnlearnSettings

    base: dict[str, Any] = dict(method="npo_klr", steps=5, batch_size=2, max_length=32, lr=1e-3, seed=0)
    base.update(kw)
    return UnlearnSettings(**base)


def _forget_nll(model: Any, tokenizer: Any, text: str) -> float:
    from unlearn_assert.unlearning.trainer import chunk_text

    chunks = chunk_text(tokenizer, text, 32)
    with torch.no_grad():
        logits = model(input_ids=chunks.input_ids, attention_mask=chunks.attention_mask).logits
        return nll_loss(*shift_for_lm(logits, chunks.input_ids, chunks.attention_mask)).item()


def _params(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_ga_raises_forget_nll_and_leaves_the_given_target_untouched(target: Any, data: Any) -> None:
    from unlearn_assert.unlearning import unlearn

    before = _params(target.model)
    nll0 = _forget_nll(target.model, target.tokenizer, data.raw_forget)
    lines: list[str] = []
    result = unlearn(target, data, _settings(method="ga", log_every=2), progress=lines.append)
    assert _forget_nll(result.model, result.tokenizer, data.raw_forget) > nll0 + 0.05
    assert all(torch.equal(p, before[n]) for n, p in target.model.named_parameters())
    assert [c["step"] for c in result.curve] == [1, 2, 3, 4, 5] and result.curve[0]["retain_loss"] is None
    assert sum(line.startswith("step ") for line in lines) == 3  # steps 2, 4 and the last


def test_same_seed_gives_bit_identical_weights(target: Any, data: Any) -> None:
    from unlearn_assert.unlearning import unlearn

    a = unlearn(target, data, _settings(steps=3))
    b = unlearn(target, data, _settings(steps=3))
    c = unlearn(target, data, _settings(steps=3, seed=1))
    pb, pc = _params(b.model), _params(c.model)
    assert all(torch.equal(p, pb[n]) for n, p in a.model.named_parameters())
    assert not all(torch.equal(p, pc[n]) for n, p in a.model.named_parameters())
    assert a.curve[0]["forget_loss"] == pytest.approx(20 * LN2, rel=1e-5)  # NPO at the reference: (2/beta) log 2
    assert a.curve[0]["retain_loss"] == pytest.approx(0.0, abs=1e-6)  # KLR at the reference


def _count_reference_rows() -> tuple[list[int], Any]:
    """(the chunks of each reference forward, in order; a ReferenceCache method that records them and runs
    ``ReferenceCache._run``), to patch over ``_run`` (or over ``outputs``, which then never caches)."""
    from unlearn_assert.unlearning import trainer

    rows: list[int] = []
    run = trainer.ReferenceCache._run

    def counting(self: Any, index: torch.Tensor) -> Any:
        rows.append(len(index))
        return run(self, index)

    return rows, counting


def test_reference_outputs_are_computed_once_per_chunk_and_change_no_bit(
    target: Any, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference cache: every chunk's reference outputs come from one forward of that chunk, and the
    weights are those of a run that runs the reference on every batch (the cache off)."""
    from unlearn_assert.unlearning import trainer, unlearn

    rows, counting = _count_reference_rows()
    monkeypatch.setattr(trainer.ReferenceCache, "_run", counting)
    n_forget = len(trainer.chunk_text(target.tokenizer, data.raw_forget, 32))
    n_retain = len(trainer.chunk_text(target.tokenizer, data.raw_retain, 32))
    steps = max(n_forget, n_retain) // 2 + 3  # batches of 2: every chunk is drawn, some twice
    settings = _settings(steps=steps, method="npo_klr", max_length=32)
    cached = unlearn(target, data, settings)
    assert sum(rows) == n_forget + n_retain  # each chunk's reference ran once
    monkeypatch.setattr(trainer.ReferenceCache, "outputs", counting)  # no cache: the whole batch, every step
    rows.clear()
    fresh = unlearn(target, data, settings)
    assert sum(rows) == steps * 2 * 2
    pf = _params(fresh.model)
    assert all(torch.equal(p, pf[name]) for name, p in cached.model.named_parameters())
    assert [c["total"] for c in cached.curve] == [c["total"] for c in fresh.curve]


def test_klr_reference_beyond_the_cache_bound_runs_per_batch(
    target: Any, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unlearn_assert.unlearning import trainer, unlearn

    monkeypatch.setattr(trainer, "REF_CACHE_BYTES", 0)
    kept: list[bool] = []
    init = trainer.ReferenceCache.__init__

    def spy(self: Any, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        kept.append(self.keep_logp)

    rows, counting = _count_reference_rows()
    monkeypatch.setattr(trainer.ReferenceCache, "__init__", spy)
    monkeypatch.setattr(trainer.ReferenceCache, "_run", counting)
    a = unlearn(target, data, _settings(steps=4, method="ga_klr"))
    monkeypatch.undo()
    b = unlearn(target, data, _settings(steps=4, method="ga_klr"))
    assert kept == [False]  # ga_klr: only the retain side has a reference, and it was not kept
    assert rows == [2, 2, 2, 2]  # so the reference ran on every retain batch (4 steps of 2 chunks)
    pb = _params(b.model)
    assert all(torch.equal(p, pb[name]) for name, p in a.model.named_parameters())


def test_retain_batch_size_sets_the_retain_side_only(target: Any, data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearn_assert.unlearning import trainer, unlearn

    monkeypatch.setattr(trainer, "REF_CACHE_BYTES", 0)  # the retain reference then runs on every retain batch
    rows, counting = _count_reference_rows()
    monkeypatch.setattr(trainer.ReferenceCache, "_run", counting)
    forward = trainer._forward
    sizes: list[int] = []

    def sized(model: Any, chunks: Any, index: torch.Tensor, *args: Any) -> Any:
        sizes.append(len(index))
        return forward(model, chunks, index, *args)

    monkeypatch.setattr(trainer, "_forward", sized)
    unlearn(target, data, _settings(steps=3, method="ga_klr", batch_size=2, retain_batch_size=1))
    assert rows == [1, 1, 1]  # the retain reference saw one chunk a step
    assert sizes == [2, 1, 2, 1, 2, 1]  # forget batches keep batch_size, retain batches take retain_batch_size


def test_retain_batch_size_is_validated() -> None:
    with pytest.raises(ConfigError, match="retain_batch_size must be a positive integer"):
        _settings(retain_batch_size=0).validated()


def test_bf16_mode_trains_pure_bf16_weights(target: Any, data: Any) -> None:
    from unlearn_assert.unlearning import unlearn

    result = unlearn(target, data, _settings(method="ga_gdr", steps=2, dtype="bfloat16"))
    assert {p.dtype for p in result.model.parameters()} == {torch.bfloat16}
    start = {n: p.to(torch.bfloat16) for n, p in target.model.named_parameters()}
    assert any(not torch.equal(p, start[n]) for n, p in result.model.named_parameters())


def test_missing_retain_text_names_the_file(target: Any, data: Any) -> None:
    from dataclasses import replace

    from unlearn_assert.unlearning import unlearn

    with pytest.raises(DataError, match="raw/retain.txt"):
        unlearn(target, replace(data, raw_retain=None), _settings(method="ga_klr"))


# --------------------------------------------------------------------------- SURE


def test_sure_selection_rules() -> None:
    from unlearn_assert.unlearning.sure import select_modules

    sal = {f"m{i}": float(i) for i in range(10)}
    assert select_modules(sal, top=0.1)[0] == ["m9"]
    assert select_modules(sal, top=0.3)[0] == ["m9", "m8", "m7"]
    assert select_modules(sal, threshold=6.5)[0] == ["m9", "m8", "m7"]
    with pytest.raises(ConfigError, match="largest is 9"):
        select_modules(sal, threshold=100.0)


def test_sure_candidates_are_linear_modules_only(target: Any) -> None:
    from unlearn_assert.unlearning.sure import candidate_modules

    names = list(candidate_modules(target.model))
    assert len(names) == 14 and all("proj" in n for n in names)  # 2 layers x (q, k, v, o, gate, up, down)
    assert "lm_head" in candidate_modules(target.model, include_lm_head=True)


def test_sure_updates_only_selected_modules(target: Any, data: Any, tiny_model_dir: Path) -> None:
    from unlearn_assert.models import load_model
    from unlearn_assert.unlearning import unlearn

    settings = _settings(sure=True, sure_top=0.1, sure_batches=2, lr=5e-2, weight_decay=0.1, dtype="bfloat16")
    result = unlearn(target, data, settings)
    sure = result.sure
    assert sure is not None and len(sure.saliency) == 14 and all(v > 0 for v in sure.saliency.values())
    assert len(sure.selected) == 2 and sure.selected == sorted(sure.saliency, key=lambda n: -sure.saliency[n])[:2]
    assert [m["module"] for m in result.selected_modules] == sure.selected
    start = load_model(tiny_model_dir, dtype="bfloat16").model.state_dict()
    selected = tuple(f"{m}." for m in sure.selected)
    changed = []
    for name, p in result.model.named_parameters():
        if name.startswith(selected):
            changed.append(not torch.equal(p, start[name]))
        else:
            assert torch.equal(p, start[name]), f"{name} was not selected but changed"
    assert changed and any(changed)


# --------------------------------------------------------------------------- CLI


def _tree_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(directory.rglob("*")):
        digest.update(str(f.relative_to(directory)).encode())
        if f.is_file():
            digest.update(f.read_bytes())
    return digest.hexdigest()


def _cli(argv: list[str]) -> int:
    from unlearn_assert.unlearning.cli import add_unlearn_parser, run_unlearn

    parser = argparse.ArgumentParser(prog="unlearn-assert")
    add_unlearn_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["unlearn", *argv])
    assert args.func is run_unlearn
    return int(args.func(args))


def test_cli_end_to_end(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unlearn_assert.models import load_model

    before = _tree_hash(tiny_model_dir)
    out = tmp_path / "unlearned"
    common = [
        "--target",
        str(tiny_model_dir),
        "--data",
        str(tiny_data_dir),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--max-length",
        "32",
        "--lr",
        "1e-2",
        "--log-every",
        "2",
    ]
    assert (
        _cli(
            [
                *("--method", "NPO_KLR", "--sure", "--sure-top", "0.1", "--dtype", "bfloat16"),
                *("--retain-batch-size", "1", "--out", str(out), *common),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert sum(line.startswith("step ") for line in printed.splitlines()) == 2 and "SURE" in printed
    loaded = load_model(out)
    assert loaded.info["checkpoint_dtype"] == "bfloat16" and (out / "model.safetensors").is_file()
    run = json.loads((out / "unlearn_run.json").read_text())
    assert run["settings"]["method"] == "npo_klr" and run["settings"]["sure_top"] == 0.1
    assert run["settings"]["retain_batch_size"] == 1 and run["settings"]["batch_size"] == 2
    assert [c["step"] for c in run["curve"]] == [1, 2, 3, 4]
    assert set(run["curve"][0]) == {"step", "forget_loss", "retain_loss", "total", "seconds"}
    assert len(run["selected_modules"]) == 2 and all(m["saliency"] > 0 for m in run["selected_modules"])
    assert run["target"]["fingerprint"] == load_model(tiny_model_dir).fingerprint
    assert _tree_hash(tiny_model_dir) == before

    with pytest.raises(UnlearnAssertError, match="is not empty"):
        _cli(["--out", str(out), *common])
    with pytest.raises(UnlearnAssertError, match="inside the target model directory"):
        _cli(["--out", str(tiny_model_dir / "sub"), *common])
    assert _tree_hash(tiny_model_dir) == before


def test_cli_data_without_raw_forget_is_one_line_error(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    (data / "raw" / "forget.txt").unlink()
    with pytest.raises(DataError, match="raw/forget.txt") as info:
        _cli(["--target", str(tiny_model_dir), "--data", str(data), "--steps", "1", "--out", str(tmp_path / "o")])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "o").exists()
