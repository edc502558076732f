"""Bad input, table-driven: each case gives one line that names the fix, the right exit code, no
traceback, and leaves the user's files byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import copy_tiny_inputs

USAGE = pytest.ExitCode.USAGE_ERROR
FAILED = pytest.ExitCode.TESTS_FAILED


@dataclass
class Case:
    id: str
    breaker: Callable[[Path], list[str]]  # gets the work dir, returns extra CLI args
    needle: str
    code: int = USAGE
    env: dict[str, str] = field(default_factory=dict)  # set for the run (e.g. no visible GPU)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "cache" not in p.parts and not p.name.endswith((".xml",))
    }


def _model(w: Path) -> Path:
    return w / "unlearned"


def _data(w: Path) -> Path:
    return w / "data"


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value))


def _truncate(w: Path) -> list[str]:
    f = _model(w) / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-64])
    return []


def _garbage_weights(w: Path) -> list[str]:
    (_model(w) / "model.safetensors").write_bytes(struct.pack("<Q", 4) + b"oops")
    return []


def _pickle_only(w: Path) -> list[str]:
    (_model(w) / "model.safetensors").rename(_model(w) / "pytorch_model.bin")
    return []


def _no_weights(w: Path) -> list[str]:
    (_model(w) / "model.safetensors").unlink()
    return []


def _no_config(w: Path) -> list[str]:
    (_model(w) / "config.json").unlink()
    return []


def _bad_config_json(w: Path) -> list[str]:
    (_model(w) / "config.json").write_text("{ broken")
    return []


def _model_is_file(w: Path) -> list[str]:
    (w / "file.txt").write_text("x")
    return [f"--unlearn-model={w / 'file.txt'}"]


def _missing_target(w: Path) -> list[str]:
    return [f"--unlearn-target={w / 'nowhere'}"]


def _other_architecture(w: Path) -> list[str]:
    cfg = json.loads((_model(w) / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    _write_json(_model(w) / "config.json", cfg)
    return []


def _architectures_not_a_list(w: Path) -> list[str]:
    cfg = json.loads((_model(w) / "config.json").read_text())
    cfg["architectures"] = True
    _write_json(_model(w) / "config.json", cfg)
    return []


def _other_vocab(w: Path) -> list[str]:
    tok = json.loads((_model(w) / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first = next(iter(vocab))
    vocab["zz" + first] = vocab.pop(first)
    _write_json(_model(w) / "tokenizer.json", tok)
    return []


def _other_shapes(w: Path) -> list[str]:
    from safetensors.torch import load_file, save_file

    f = _model(w) / "model.safetensors"
    tensors = load_file(str(f))
    name = next(n for n in tensors if n.endswith("o_proj.weight"))
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, str(f), metadata={"format": "pt"})
    return []


def _nan_weights(w: Path) -> list[str]:
    from safetensors.torch import load_file, save_file

    f = _model(w) / "model.safetensors"
    tensors = load_file(str(f))
    name = next(n for n in tensors if n.endswith("q_proj.weight"))
    tensors[name][0, 0] = float("inf")
    save_file(tensors, str(f), metadata={"format": "pt"})
    return []


def _data_missing(w: Path) -> list[str]:
    return [f"--unlearn-data={w / 'no-data'}"]


def _data_bad_json(w: Path) -> list[str]:
    (_data(w) / "knowmem" / "forget_qa.json").write_text('[{"question": "q", "answer": "a"},')
    return []


def _data_wrong_type(w: Path) -> list[str]:
    items = json.loads((_data(w) / "knowmem" / "retain_qa.json").read_text())
    items[2]["answer"] = 42
    _write_json(_data(w) / "knowmem" / "retain_qa.json", items)
    return []


def _data_empty_split(w: Path) -> list[str]:
    _write_json(_data(w) / "verbmem" / "forget.json", [])
    return []


def _data_missing_icl(w: Path) -> list[str]:
    (_data(w) / "knowmem" / "forget_qa_icl.json").unlink()
    return []


def _data_missing_key(w: Path) -> list[str]:
    items = json.loads((_data(w) / "verbmem" / "forget.json").read_text())
    del items[1]["gt"]
    _write_json(_data(w) / "verbmem" / "forget.json", items)
    return []


def _data_privleak_not_strings(w: Path) -> list[str]:
    _write_json(_data(w) / "privleak" / "holdout.json", [{"text": "a"}])
    return []


def _no_tokenizer(w: Path) -> list[str]:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (_model(w) / name).unlink()
    return []


def _weights_link_loop(w: Path) -> list[str]:
    f = _model(w) / "model.safetensors"
    f.unlink()
    f.symlink_to("model.safetensors")  # points to itself
    return []


def _weights_dangling_link(w: Path) -> list[str]:
    f = _model(w) / "model.safetensors"
    f.rename(w / "moved.safetensors")
    f.symlink_to(w / "gone.safetensors")
    return []


def _missing_shard(w: Path) -> list[str]:
    from unlearn_assert.models import read_weight_headers

    names = read_weight_headers(_model(w))
    (_model(w) / "model.safetensors").rename(_model(w) / "model-00001-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"  # the shard that was never copied
    _write_json(_model(w) / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    return []


def _cache_dir_is_a_file(w: Path) -> list[str]:
    (w / "plain.txt").write_text("x")
    return [f"--unlearn-cache-dir={w / 'plain.txt'}"]


def _cache_dir_under_a_file(w: Path) -> list[str]:
    (w / "plain.txt").write_text("x")
    return [f"--unlearn-cache-dir={w / 'plain.txt' / 'results'}"]


def _report_under_a_file(w: Path) -> list[str]:
    (w / "plain.txt").write_text("x")
    return [f"--unlearn-json={w / 'plain.txt' / 'r.json'}"]


CASES = [
    Case("truncated-safetensors", _truncate, "truncated"),
    Case("garbage-safetensors", _garbage_weights, "corrupt"),
    Case("pickle-only", _pickle_only, "--unlearn-allow-pickle"),
    Case("no-weights", _no_weights, "no weight files"),
    Case("no-config", _no_config, "no config.json"),
    Case("bad-config-json", _bad_config_json, "not valid JSON"),
    Case("model-is-a-file", _model_is_file, "not a directory"),
    Case("missing-target", _missing_target, "does not exist"),
    Case("other-architecture", _other_architecture, "MistralForCausalLM"),
    Case("mismatched-tokenizer", _other_vocab, "different tokenizer vocabulary"),
    Case("mismatched-shapes", _other_shapes, "does not match the target's parameters"),
    Case("nan-weights", _nan_weights, "NaN or Inf", FAILED),
    Case("data-missing", _data_missing, "does not exist"),
    Case("data-bad-json", _data_bad_json, "knowmem/forget_qa.json"),
    Case("data-wrong-type", _data_wrong_type, "retain_qa.json"),
    Case("data-empty-split", _data_empty_split, "verbmem/forget.json"),
    Case("data-missing-icl", _data_missing_icl, "forget_qa_icl.json"),
    Case("data-missing-key", _data_missing_key, "'gt'"),
    Case("data-privleak-objects", _data_privleak_not_strings, "holdout.json"),
    Case("unknown-quantizer", lambda w: ["--unlearn-quantizers=rtn-w4g128,exl2-w4"], "unknown quantizer 'exl2-w4'"),
    Case("malformed-quantizer", lambda w: ["--unlearn-quantizers=rtn-w1"], "rtn-w1"),
    Case("nonsense-budget", lambda w: ["--unlearn-budget=recovery=-0.5"], "out of range"),
    Case("unknown-budget-key", lambda w: ["--unlearn-budget=forgetfulness=0.1"], "unknown budget key"),
    Case("report-dir-missing", lambda w: [f"--unlearn-json={w / 'nope' / 'r.json'}"], "does not exist"),
    Case("report-path-is-dir", lambda w: [f"--unlearn-html={w}"], "is a directory"),
    Case("bad-batch-size", lambda w: ["--unlearn-batch-size=many"], "--unlearn-batch-size"),
    # issue 16: the five that got past the option-time checks, then the preconditions around them
    Case(
        "cuda-without-cuda",
        lambda w: ["--unlearn-device=cuda"],
        "--unlearn-device: 'cuda' was requested but CUDA is not available",
        env={"CUDA_VISIBLE_DEVICES": ""},
    ),
    Case("cache-dir-is-a-file", _cache_dir_is_a_file, "plain.txt' is a file, not a directory"),
    Case(
        "no-tokenizer-files", _no_tokenizer, "it needs tokenizer.json, or tokenizer.model, or vocab.json + merges.txt"
    ),
    Case("empty-quantizers", lambda w: ["--unlearn-quantizers="], "--unlearn-quantizers is empty"),
    Case("weights-link-loop", _weights_link_loop, "model.safetensors' is a symbolic link loop"),
    Case("weights-dangling-link", _weights_dangling_link, "is a dangling symbolic link to"),
    Case("missing-shard", _missing_shard, "lacks the weight shard model-00002-of-00002.safetensors"),
    Case("cache-dir-under-a-file", _cache_dir_under_a_file, "(on the way to"),
    Case("report-under-a-file", _report_under_a_file, "plain.txt' in"),
    Case(
        "architectures-not-a-list", _architectures_not_a_list, "not a list of class names"
    ),  # a retyped field, as the file fuzz makes them
    Case("report-to-a-device", lambda w: ["--unlearn-json=/dev/null"], "'/dev/null' is not a regular file"),
]


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_unlearned_dir: Path, tiny_data_dir: Path
) -> Path:
    return copy_tiny_inputs(tmp_path_factory.mktemp("pristine"), tiny_unlearned_dir, tiny_model_dir, tiny_data_dir)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(pytester: pytest.Pytester, pristine: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    work = pytester.path / "work"
    shutil.copytree(pristine, work)
    extra = case.breaker(work)
    before = _digest(work)
    args = [
        f"--unlearn-model={_model(work)}",
        f"--unlearn-target={work / 'target'}",
        f"--unlearn-data={_data(work)}",
        "--unlearn-quantizers=rtn-w8",
        f"--unlearn-cache-dir={pytester.path / 'cache'}",
        "-k",
        "fp-verbmem_f",
    ]
    # later options win in argparse, so a case's own value replaces the default above
    result = pytester.runpytest_subprocess(*args, *extra)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == case.code, output[-2000:]
    assert "Traceback" not in output
    if case.code == USAGE:
        lines = [line for line in result.stderr.lines if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith("ERROR: ") and case.needle in lines[0], lines[0]
    else:
        failures = [line for line in result.stdout.lines if case.needle in line and "\\n" not in line]
        assert failures, output[-2000:]
    assert len(CASES) >= 20
    assert _digest(work) == before, "the user's files must be left byte-identical"
