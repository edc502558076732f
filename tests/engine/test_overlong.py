"""Items beyond the model's context window (issue 31): found when the options are read, before anything loads;
refused in one line by default, cut as MUSE and lm-eval cut them with ``--unlearn-overlong=truncate``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from unlearn_assert.config import build_run_config, run_config
from unlearn_assert.errors import ConfigError

#: the reporter's case: a pasted document as the first verbmem prompt
LONG_TOKENS = 120_000


def _long_text(tokenizer: Any, tokens: int, source: Path) -> str:
    """Fixture text repeated until ``tokenizer`` counts at least ``tokens`` tokens in it."""
    base = source.read_text() + " "
    per_copy = len(tokenizer(base)["input_ids"])
    return base * (tokens // per_copy + 1)


def _data_with(root: Path, tiny_data_dir: Path, rel: str, edit: Any) -> Path:
    """A copy of the tiny MUSE data whose file ``rel`` (JSON) is changed by ``edit``."""
    data = root / "data"
    shutil.copytree(tiny_data_dir, data)
    path = data / rel
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return data


@pytest.fixture(scope="module")
def long_data(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path, tiny_model_dir: Path) -> Path:
    from unlearn_assert.engine.overlong import FileTokenizer

    text = _long_text(FileTokenizer(tiny_model_dir), LONG_TOKENS, tiny_data_dir / "raw" / "forget.txt")

    def first_prompt_long(items: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{**items[0], "prompt": text}, *items[1:]]

    return _data_with(tmp_path_factory.mktemp("long"), tiny_data_dir, "verbmem/forget.json", first_prompt_long)


def _window(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])


# --------------------------------------------------------------------------- counting


def test_tokenizer_json_counts_what_the_metrics_tokenize(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    """The torch-free count (tokenizer.json through the tokenizers library) equals the count of the tokenizer the
    metrics use, for every MUSE and TOFU sequence of the fixtures."""
    from unlearn_assert.benchmark.muse import muse_contexts
    from unlearn_assert.benchmark.tofu import TofuBenchmark
    from unlearn_assert.data.muse import load_data
    from unlearn_assert.engine.overlong import FileTokenizer, counting_tokenizer
    from unlearn_assert.models import load_tokenizer

    files, real = FileTokenizer(tiny_model_dir), load_tokenizer(tiny_model_dir)
    data = load_data(tiny_data_dir)
    counted = muse_contexts(data, files)
    splits = ("verbmem_forget", "knowmem_forget_qa", "knowmem_retain_qa", "privleak_forget", "privleak_holdout")
    assert counted == muse_contexts(data, real) and len(counted) == sum(len(getattr(data, s)) for s in splits)
    assert [c.new_tokens for c in counted if c.split == "verbmem_forget"][0] == 128
    assert {c.keep for c in counted if c.split.startswith("privleak")} == {"start"}
    tofu = TofuBenchmark()
    tofu_data = tofu.load(str(Path(__file__).resolve().parents[2] / "fixtures" / "tiny-tofu"))
    assert tofu.contexts(tofu_data, files) == tofu.contexts(tofu_data, real)
    assert isinstance(counting_tokenizer(tiny_model_dir)[0], FileTokenizer)


def test_a_chat_template_is_counted_with_transformers(tmp_path: Path, tiny_model_dir: Path) -> None:
    from unlearn_assert.engine.overlong import FileTokenizer, counting_tokenizer

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    config = tmp_path / "m" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": "{{ messages[0]['content'] }}"}))
    tokenizer, exact = counting_tokenizer(tmp_path / "m")
    assert exact and not isinstance(tokenizer, FileTokenizer)


# --------------------------------------------------------------------------- error (the default)


def test_the_120k_token_prompt_is_one_line_before_anything_loads(
    tiny_unlearned_dir: Path, tiny_model_dir: Path, long_data: Path
) -> None:
    from unlearn_assert.engine.inputs import precheck

    run = run_config(model=tiny_unlearned_dir, target=tiny_model_dir, data=long_data, max_samples=2)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        precheck(run)
    seconds = time.perf_counter() - start
    message, window = str(info.value), _window(tiny_model_dir)
    assert "\n" not in message
    assert message.startswith("--unlearn-data: verbmem_forget item 0 is ")
    tokens = int(message.split(" is ")[1].split(" tokens")[0].replace(",", ""))
    assert tokens >= LONG_TOKENS
    assert "the 128 tokens generated after it" in message and f"context window of {window:,} tokens" in message
    assert "max_position_embeddings in" in message
    assert f"--unlearn-overlong=truncate to keep its last {window - 128:,} tokens" in message
    assert seconds < 30, f"the option-time check took {seconds:.1f} s"  # a fraction of a second on a quiet machine


def test_every_kind_of_sequence_is_checked(
    tmp_path: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """A knowmem prompt (with 32 new tokens) and a privleak text (scored whole) beyond the window are refused too,
    each with the fix that fits it; several items too long are counted in the same line."""
    from unlearn_assert.engine.inputs import precheck
    from unlearn_assert.engine.overlong import FileTokenizer

    window = _window(tiny_model_dir)
    text = _long_text(FileTokenizer(tiny_model_dir), window + 50, tiny_data_dir / "raw" / "forget.txt")
    cases = {
        "knowmem/forget_qa.json": (
            lambda qa: [{**qa[0], "question": text}, *qa[1:]],
            "knowmem_forget_qa item 0 is",
            "with the 32 tokens generated after it",
        ),
        "privleak/holdout.json": (
            lambda texts: [texts[0], text, text],
            "privleak_holdout item 1 is",
            f"to score its first {window:,} tokens",
        ),
    }
    for i, (rel, (edit, where, fix)) in enumerate(cases.items()):
        data = _data_with(tmp_path / str(i), tiny_data_dir, rel, edit)
        with pytest.raises(ConfigError, match="--unlearn-data: ") as info:
            precheck(run_config(model=tiny_unlearned_dir, target=tiny_model_dir, data=data))
        assert where in str(info.value) and fix in str(info.value), str(info.value)
    assert "(1 more too long: privleak_holdout item 2)" in str(info.value)


def test_a_tofu_item_beyond_the_window_is_refused(
    tmp_path: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path
) -> None:
    from unlearn_assert.engine.inputs import precheck

    data = tmp_path / "tofu"
    shutil.copytree(Path(__file__).resolve().parents[2] / "fixtures" / "tiny-tofu", data)
    for name in ("forget10.json", "forget10_perturbed.json"):  # JSON lines
        items = [json.loads(line) for line in (data / name).read_text().splitlines() if line.strip()]
        items[0]["question"] = "Who wrote it? " * 200
        (data / name).write_text("".join(json.dumps(item) + "\n" for item in items))
    with pytest.raises(ConfigError, match=r"--unlearn-data: forget item 0 is [\d,]+ tokens") as info:
        precheck(run_config(model=tiny_unlearned_dir, target=tiny_model_dir, data=data))
    assert "truncate" in str(info.value)


def test_the_gate_exits_with_a_usage_error_and_loads_nothing(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, long_data: Path
) -> None:
    start = time.perf_counter()
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={long_data}",
        "--unlearn-max-samples=2",
        "-p",
        "no:randomly",
    )
    seconds = time.perf_counter() - start
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "verbmem_forget item 0 is" in errors[0], result.stderr.str()
    assert "loaded" not in result.stdout.str() and "Traceback" not in result.stderr.str()
    print(f"usage error after {seconds:.1f} s (a fresh pytest process)")


# --------------------------------------------------------------------------- truncate


def test_truncate_completes_in_seconds_and_records_each_cut(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, long_data: Path
) -> None:
    window = _window(tiny_model_dir)
    start = time.perf_counter()
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={long_data}",
        "--unlearn-max-samples=2",
        "--unlearn-quantizers=rtn-w8",
        "--unlearn-overlong=truncate",
        "--unlearn-no-cache",
        "--unlearn-json=r.json",
        "-p",
        "no:randomly",
    )
    seconds = time.perf_counter() - start
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-2000:]
    report = json.loads((pytester.path / "r.json").read_text())
    assert {r["status"] for r in report["rows"]} == {"ok"} and len(report["rows"]) == 4
    for key, metrics in report["samples"].items():
        first, second = metrics["verbmem_f"]
        assert first["truncation"]["kept"] == window - 128 and first["truncation"]["keep"] == "end", key
        assert first["truncation"]["tokens"] >= LONG_TOKENS and "truncation" not in second
        assert not any("truncation" in s for m in ("knowmem_f", "knowmem_r", "privleak") for s in metrics[m])
    # the 8.5 minutes of the issue were the model attending over 120,000 positions; cut, the run is the tiny gate's
    assert seconds < 300, f"took {seconds:.0f} s"
    print(f"truncate: the whole gate took {seconds:.1f} s (a fresh pytest process, loaded machine)")


def test_left_truncation_is_lm_evals(unlearned: Any) -> None:
    """A prompt beyond the window keeps its last ``window - new`` tokens (BOS gone, as lm-eval's
    ``left_truncate_len``): its continuation is the one of those tokens alone, and the cut is recorded."""
    from unlearn_assert.metrics.generation import context_window, greedy_generate, left_truncate

    window = context_window(unlearned.model)
    assert window is not None
    text = (Path(__file__).resolve().parents[2] / "fixtures" / "tiny-muse" / "raw" / "forget.txt").read_text()
    ids = unlearned.tokenizer(text)["input_ids"]
    long, short = ids[: window + 40], ids[:60]
    out = greedy_generate(unlearned.model, unlearned.tokenizer, [short, long], 8, truncate=True)
    alone = greedy_generate(unlearned.model, unlearned.tokenizer, [short, long[-(window - 8) :]], 8)
    assert out.ids == alone.ids and out.truncated == {1: window + 40}
    assert out.kept == window - 8 and out.over_context == 0
    assert left_truncate([[1, 2, 3, 4, 5]], 6, 3) == ([[3, 4, 5]], {0: 5}, 3)
    assert left_truncate([[1, 2]], None, 3) == ([[1, 2]], {}, None)
    with pytest.raises(ConfigError, match="cannot hold the 8 tokens"):
        left_truncate([[1]], 8, 8)


def test_a_scored_sequence_keeps_its_answer(unlearned: Any) -> None:
    """``keep_end``: a question + answer beyond the window loses the start of its question, and the answer's
    tokens are scored as in the sequence's last ``window`` tokens alone (lm-eval's loglikelihood)."""
    from unlearn_assert.metrics.privleak import score_ids

    ids = list(range(5, 85))
    (cut,) = score_ids(unlearned.model, [ids], pad_id=0, first=[70], moments=False, max_length=32, keep_end=True)[0]
    (alone,) = score_ids(unlearned.model, [ids[-32:]], pad_id=0, first=[70 - 48], moments=False)[0]
    assert cut.logprobs == alone.logprobs and len(cut.logprobs) == 10 and cut.truncated and cut.source_tokens == 80
    (head,) = score_ids(unlearned.model, [ids], pad_id=0, moments=False, max_length=32)[0]  # privleak: the start
    assert head.n_tokens == 32 and head.source_tokens == 80 and len(head.logprobs) == 31


def test_the_option_is_validated_when_parsed() -> None:
    def run(**options: Any) -> Any:
        return build_run_config(lambda opt: options.get(opt.name, opt.default))

    assert run().overlong == "error" and run(overlong=" Truncate ").overlong == "truncate"
    with pytest.raises(ConfigError, match="--unlearn-overlong: 'cut' is not a mode; use error .* or truncate"):
        run(overlong="cut")


def test_truncate_is_part_of_the_cache_key_only_when_set() -> None:
    from unlearn_assert.benchmark.muse import MuseBenchmark
    from unlearn_assert.metrics import METRIC_SETTINGS

    assert MuseBenchmark().settings == METRIC_SETTINGS
    assert MuseBenchmark(overlong="truncate").settings == {**METRIC_SETTINGS, "overlong": "truncate"}
