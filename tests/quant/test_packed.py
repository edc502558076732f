"""GPTQ / AWQ packed-checkpoint decoding: hand-packed words, independent packers, GPTQ and AWQ
exports of the tiny model decoded whole, and an AWQ export gated through ``--unlearn-quantized``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from unlearn_assert.errors import ModelError  # noqa: E402
from unlearn_assert.quant.artifact import open_artifact, read_artifact  # noqa: E402
from unlearn_assert.quant.packed import AWQ_ORDER, decode_awq, decode_gptq, unpack_cols, unpack_rows  # noqa: E402
from unlearn_assert.quant.rtn import rtn_codes, rtn_params  # noqa: E402


def _word(values: list[int], bits: int) -> int:
    """Pack values into one int32 word, first value in the lowest bits (as a signed int32)."""
    word = sum(v << (bits * k) for k, v in enumerate(values))
    return word - (1 << 32) if word >= 1 << 31 else word


def pack_gptq(q: torch.Tensor, zeros: torch.Tensor, bits: int, v1: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference packer with Python ints: q (in, out) along rows, zeros (groups, out) along columns."""
    per = 32 // bits
    qw = [
        [_word([int(q[r * per + k, c]) for k in range(per)], bits) for c in range(q.shape[1])]
        for r in range(q.shape[0] // per)
    ]
    z = zeros - (1 if v1 else 0)
    qz = [
        [_word([int(z[g, c * per + k]) for k in range(per)], bits) for c in range(z.shape[1] // per)]
        for g in range(z.shape[0])
    ]
    return torch.tensor(qw, dtype=torch.int32), torch.tensor(qz, dtype=torch.int32)


def pack_awq(x: torch.Tensor) -> torch.Tensor:
    """Reference AWQ GEMM packer: 8 columns per word, nibble k = column AWQ_ORDER[k]."""
    return torch.tensor(
        [
            [_word([int(x[r, c * 8 + AWQ_ORDER[k]]) for k in range(8)], 4) for c in range(x.shape[1] // 8)]
            for r in range(x.shape[0])
        ],
        dtype=torch.int32,
    )


def test_hand_packed_words() -> None:
    word = torch.tensor([[0x76543210]], dtype=torch.int32)
    assert unpack_rows(word, 4)[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert unpack_cols(word, 4)[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert unpack_rows(torch.tensor([[0x04030201]], dtype=torch.int32), 8)[:, 0].tolist() == [1, 2, 3, 4]
    assert (
        unpack_rows(torch.tensor([[_word([3] * 16, 2)]], dtype=torch.int32), 2)[:, 0].tolist() == [3] * 16
    )  # sign bit set
    # AWQ: nibble k holds column ORDER[k], so a word of nibbles 0..7 reads as columns [0, 4, 1, 5, 2, 6, 3, 7]
    q = decode_awq(word.expand(1, 1).contiguous(), torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, 8), group_size=1)
    assert q[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("v1", [True, False])
def test_gptq_decodes_independently_packed_layers(bits: int, v1: bool) -> None:
    gen = torch.Generator().manual_seed(bits)
    n_in, n_out, group = 64, 32, 16
    q = torch.randint(0, 2**bits, (n_in, n_out), generator=gen)
    zeros = torch.randint(1 if v1 else 0, 2**bits, (n_in // group, n_out), generator=gen)
    scales = torch.rand(n_in // group, n_out, generator=gen).half() + 0.01
    qweight, qzeros = pack_gptq(q, zeros, bits, v1)
    expected = ((q - zeros.repeat_interleave(group, 0)).float() * scales.float().repeat_interleave(group, 0)).T
    assert torch.equal(decode_gptq(qweight, qzeros, scales, None, bits, group, v1), expected)
    # act-order: g_idx assigns rows to groups in any order
    g_idx = torch.randperm(n_in, generator=gen) % (n_in // group)
    expected = ((q - zeros[g_idx]).float() * scales.float()[g_idx]).T
    assert torch.equal(decode_gptq(qweight, qzeros, scales, g_idx.int(), bits, group, v1), expected)


def test_awq_decodes_an_independently_packed_layer() -> None:
    gen = torch.Generator().manual_seed(0)
    n_in, n_out, group = 64, 32, 16
    q = torch.randint(0, 16, (n_in, n_out), generator=gen)
    zeros = torch.randint(0, 16, (n_in // group, n_out), generator=gen)
    scales = torch.rand(n_in // group, n_out, generator=gen).half() + 0.01
    expected = ((q - zeros.repeat_interleave(group, 0)).float() * scales.float().repeat_interleave(group, 0)).T
    assert torch.equal(decode_awq(pack_awq(q), pack_awq(zeros), scales, group), expected)


def test_three_bit_gptq_is_refused() -> None:
    with pytest.raises(ModelError, match="3-bit packing is not supported"):
        decode_gptq(
            torch.zeros(3, 8, dtype=torch.int32), torch.zeros(1, 3, dtype=torch.int32), torch.ones(1, 8), None, 3, 32
        )


def _packed_export(src: Path, out: Path, method: str, group: int = 32) -> dict[str, torch.Tensor]:
    """Write src as a packed 4-bit checkpoint of our symmetric RTN, the way auto-gptq (``gptq``, v1:
    codes -7..7 stored as 1..15, zero 8 stored as 7) or AutoAWQ (``awq`` GEMM: zero 8, its nibble
    order) lays it out; return the dense weights it stands for."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    tensors = load_file(str(out / "model.safetensors"))
    packed: dict[str, torch.Tensor] = {}
    dense: dict[str, torch.Tensor] = {}
    for key, w in tensors.items():
        if not key.endswith("proj.weight"):
            packed[key] = w
            continue
        name = key[: -len(".weight")]
        scale, _ = rtn_params(w, 4, group)
        scale16 = scale.half()
        codes = rtn_codes(w, 4, group, params=(scale16.double(), torch.zeros_like(scale)))
        q = (codes + 8).T.contiguous()  # (in, out), unsigned
        zeros = torch.full((w.shape[1] // group, w.shape[0]), 8)
        if method == "gptq":
            qweight, qzeros = pack_gptq(q, zeros, 4, v1=True)
            packed[f"{name}.g_idx"] = (torch.arange(w.shape[1]) // group).int()
        else:
            qweight, qzeros = pack_awq(q), pack_awq(zeros)
        packed.update({f"{name}.qweight": qweight, f"{name}.qzeros": qzeros, f"{name}.scales": scale16.T.contiguous()})
        dense[key] = codes.float() * scale16.float().repeat_interleave(group, 1)
    (out / "model.safetensors").unlink()
    save_file(packed, str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = (
        {
            "quant_method": "gptq",
            "bits": 4,
            "group_size": group,
            "sym": True,
            "desc_act": False,
            "checkpoint_format": "gptq",
        }
        if method == "gptq"
        else {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    )
    (out / "config.json").write_text(json.dumps(config))
    return dense


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_a_packed_export_of_the_tiny_model_loads_as_its_dense_weights(
    method: str, tmp_path: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path, unlearned
) -> None:
    dense = _packed_export(tiny_unlearned_dir, tmp_path / method, method)
    info = read_artifact("shipped", str(tmp_path / method), str(tiny_model_dir))
    assert (info.method, info.bits, info.group_size) == (method, 4, 32)
    assert info.symmetric is (method == "gptq")  # AWQ stores a zero point (zero_point: true), even when it is 8
    with open_artifact(info, unlearned) as (loaded, report):
        modules = dict(loaded.model.named_modules())
        for key, w in dense.items():
            assert torch.equal(
                modules[key[: -len(".weight")]].weight.float(),
                w.to(modules[key[: -len(".weight")]].weight.dtype).float(),
            )
        assert report.backend == f"checkpoint:{method}" and len(report.modules) == 14 and report.changed_fraction > 0.5
        # everything else (embeddings, norms, rotary buffers) is the source model's: same logits as
        # the source model carrying the same dense weights
        import copy

        reference = copy.deepcopy(unlearned.model)
        ref_modules = dict(reference.named_modules())
        with torch.no_grad():
            for key, w in dense.items():
                weight = ref_modules[key[: -len(".weight")]].weight
                weight.copy_(w.to(weight.dtype))
            ids = loaded.tokenizer("The river flows past the old mill", return_tensors="pt")
            torch.testing.assert_close(loaded.model(**ids).logits, reference(**ids).logits, rtol=1e-5, atol=1e-5)


def test_an_awq_export_is_gated_through_the_option(
    pytester: pytest.Pytester, tmp_path: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """The whole path a provider takes: their packed artifact named on the command line becomes a
    row and its items, with the numbers of the dense weights it decodes to."""
    from gate_helpers import gate_args, outcomes

    _packed_export(tiny_unlearned_dir, tmp_path / "awq", "awq")
    result = pytester.runpytest_subprocess(
        *gate_args(
            tiny_unlearned_dir,
            tiny_model_dir,
            tiny_data_dir,
            f"--unlearn-quantized=shipped_awq={tmp_path / 'awq'}",
            "--unlearn-json=r.json",
            "--junitxml=j.xml",
            "-k",
            "shipped_awq",
            cache=pytester.path / "c",
        )
    )
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-2000:]
    seen = outcomes(pytester.path / "j.xml")
    assert {k for k in seen if k.startswith("shipped_awq-")} == {
        f"shipped_awq-{c}" for c in ("verbmem_f", "knowmem_f", "utility")
    }
    assert all(v in ("passed", "failed") for k, v in seen.items() if k.startswith("shipped_awq-"))
    rows = {(r["model"], r["quantizer"]): r for r in json.loads((pytester.path / "r.json").read_text())["rows"]}
    row = rows[("unlearned", "shipped_awq")]
    assert (
        row["status"] == "ok" and row["quant"]["backend"] == "checkpoint:awq" and row["quant"]["changed_fraction"] > 0.5
    )


def test_group_size_minus_one_is_per_layer() -> None:
    from unlearn_assert.quant.packed import iter_dense

    gen = torch.Generator().manual_seed(1)
    tensors: dict[str, torch.Tensor] = {}
    expected = {}
    for name, n_in in (("a", 32), ("b", 64)):  # one group per row, of each layer's own width
        q = torch.randint(0, 16, (n_in, 8), generator=gen)
        zeros = torch.randint(1, 16, (1, 8), generator=gen)
        scales = torch.rand(1, 8, generator=gen).half() + 0.01
        qweight, qzeros = pack_gptq(q, zeros, 4)
        tensors.update({f"{name}.qweight": qweight, f"{name}.qzeros": qzeros, f"{name}.scales": scales})
        expected[f"{name}.weight"] = ((q - zeros).float() * scales.float()).T
    dense = dict(iter_dense(tensors, "gptq", 4, None, "test"))
    assert dense.keys() == expected.keys() and tensors == {}
    assert all(torch.equal(dense[k], v) for k, v in expected.items())
