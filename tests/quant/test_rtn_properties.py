"""Hypothesis properties of the RTN math in ``unlearn_assert.quant.rtn`` (the paper's quantizer).

Tensors stay tiny (at most 4 x 24) so the file runs in seconds under the derandomized CI profile.
Float tolerances, where a property needs one, are stated next to it; everything else is exact.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("hypothesis")
torch = pytest.importorskip("torch")

from hypothesis import assume, example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from unlearn_assert.models import LoadedModel  # noqa: E402
from unlearn_assert.quant import quantized  # noqa: E402
from unlearn_assert.quant.rtn import code_range, rtn_codes, rtn_params, rtn_quantize, rtn_step  # noqa: E402
from unlearn_assert.variants.quantizers import BITS_RANGE  # noqa: E402

F32 = torch.float32
EPS32 = torch.finfo(F32).eps
EPS64 = torch.finfo(torch.float64).eps
# Magnitudes span 33 binades but stay clear of fp32 subnormals and overflow even after scaling by 2^+-8.
MAG_LO, MAG_HI = 2.0**-20, 2.0**13
MAX_ROWS, MAX_COLS, MAX_GROUP = 4, 24, 10

magnitudes = st.floats(MAG_LO, MAG_HI, width=32)
# Multiples of 1/8 put many weights exactly on grid points and rounding ties, where bugs hide.
dyadic = st.integers(-64, 64).map(lambda k: k / 8)
values = st.one_of(st.just(0.0), magnitudes, magnitudes.map(lambda x: -x), dyadic)
bits_st = st.integers(BITS_RANGE.start, BITS_RANGE.stop - 1)
groups_st = st.one_of(st.none(), st.integers(1, MAX_GROUP))
configs = st.tuples(bits_st, groups_st, st.booleans())


@st.composite
def weights(draw: st.DrawFn, elements: st.SearchStrategy[float] = values, max_rows: int = MAX_ROWS) -> torch.Tensor:
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, MAX_COLS))
    data = draw(st.lists(elements, min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(data, dtype=F32).reshape(rows, cols)


def _err_tol(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Float slack of Q(w): casting to w's dtype costs half an ulp, <= eps*|q| (eps*|w| on top);
    the float64 grid point code*s + zero carries ~eps64 of the row's largest |w| (for asym groups
    like [-31, 0] the top point comes out 3.6e-15, not 0); eps*tiny is one subnormal step."""
    info = torch.finfo(w.dtype)
    grid_noise = 4 * EPS64 * w.double().abs().amax(dim=-1, keepdim=True)
    return info.eps * (q.double().abs() + w.double().abs()) + grid_noise + info.eps * info.tiny


def _frac_to_boundary(t: torch.Tensor) -> torch.Tensor:
    """Distance, in code units, from t to the nearest rounding boundary (a half-integer)."""
    return 0.5 - (t - torch.round(t)).abs()


def _zero_like(w: torch.Tensor, cfg: tuple[int, int | None, bool]) -> torch.Tensor:
    """The per-weight zero (offset) of w's group, broadcast to w's shape."""
    bits, group, symmetric = cfg
    _, zero = rtn_params(w, bits, group, symmetric)
    size = w.shape[-1] if group is None else min(group, w.shape[-1])
    return zero.repeat_interleave(size, dim=-1)[..., : w.shape[-1]]


# --------------------------------------------------------------------------- the grid itself


@given(weights(), configs)
def test_idempotent(w: torch.Tensor, cfg: tuple[int, int | None, bool]) -> None:
    """Quantizing an already quantized tensor changes nothing, bit for bit: Q(Q(w)) == Q(w)."""
    q = rtn_quantize(w, *cfg)
    assert torch.equal(rtn_quantize(q, *cfg), q)


@given(weights(), configs)
def test_error_at_most_half_step(w: torch.Tensor, cfg: tuple[int, int | None, bool]) -> None:
    """|w - Q(w)| <= s/2 for every weight (min/max scaling keeps all inside the clamp range);
    tolerance: eps32 * (|w| + |Q(w)|) for the float64 grid and the cast back to fp32."""
    q = rtn_quantize(w, *cfg)
    err = (w.double() - q.double()).abs()
    assert bool((err <= rtn_step(w, *cfg) / 2 + _err_tol(w, q)).all())


@given(weights(), configs)
def test_codes_in_representable_range(w: torch.Tensor, cfg: tuple[int, int | None, bool]) -> None:
    """Codes are int32 of w's shape within [-(2^(b-1)-1), 2^(b-1)-1] (sym) or [0, 2^b-1] (asym)."""
    bits, _, symmetric = cfg
    codes = rtn_codes(w, *cfg)
    low, high = code_range(bits, symmetric)
    assert codes.dtype == torch.int32 and codes.shape == w.shape
    assert int(codes.min()) >= low and int(codes.max()) <= high
    assert high - low + 1 == (2**bits - 1 if symmetric else 2**bits)


@given(weights(), bits_st, groups_st)
def test_symmetric_is_odd(w: torch.Tensor, bits: int, group: int | None) -> None:
    """The symmetric quantizer is an odd function, exactly: Q(-w) == -Q(w), codes(-w) == -codes(w)."""
    assert torch.equal(rtn_quantize(-w, bits, group, True), -rtn_quantize(w, bits, group, True))
    assert torch.equal(rtn_codes(-w, bits, group, True), -rtn_codes(w, bits, group, True))


@given(weights(), configs, st.floats(2.0**-7, 2.0**7))
def test_positive_scale_equivariance(w: torch.Tensor, cfg: tuple[int, int | None, bool], c: float) -> None:
    """Q(c w) ~= c Q(w) for c > 0. Computing c*w in fp32 moves each w/s by up to a few fp32 eps times
    the code (< 1e-4 code units), so a weight that close to a rounding boundary may land one step
    away (|diff| <= c s); all others agree within 1e-6 * c * max|w| of their group row."""
    bits, group, symmetric = cfg
    qc = rtn_quantize(w * c, *cfg).double()
    cq = c * rtn_quantize(w, *cfg).double()
    step = rtn_step(w, *cfg)
    t = (w.double() - (0 if symmetric else _zero_like(w, cfg))) / step
    near_tie = _frac_to_boundary(t) < 1e-4
    tol = 1e-6 * c * w.double().abs().amax(dim=-1, keepdim=True) + c * EPS32 * torch.finfo(F32).tiny
    diff = (qc - cq).abs()
    assert bool((diff[~near_tie] <= tol.expand_as(diff)[~near_tie]).all())
    assert bool((diff[near_tie] <= (c * step + tol)[near_tie]).all())


@given(weights(), configs, st.integers(-8, 8))
def test_power_of_two_scale_is_exact(w: torch.Tensor, cfg: tuple[int, int | None, bool], k: int) -> None:
    """For c = 2^k scaling is exact in binary floating point, so Q(c w) == c Q(w) bit for bit."""
    c = 2.0**k
    assert torch.equal(rtn_quantize(w * c, *cfg), c * rtn_quantize(w, *cfg))


# --------------------------------------------------------------------------- grouping


@given(weights(), st.integers(1, MAX_GROUP), bits_st, st.booleans())
@example(torch.arange(-3.0, 4.0).reshape(1, 7), 3, 4, True)  # 7 = 3 + 3 + 1: a short last group
def test_groups_are_independent(w: torch.Tensor, group: int, bits: int, symmetric: bool) -> None:
    """Group quantization equals quantizing each group alone, the shorter last group included."""
    pieces = [rtn_quantize(w[:, i : i + group], bits, None, symmetric) for i in range(0, w.shape[-1], group)]
    assert torch.equal(rtn_quantize(w, bits, group, symmetric), torch.cat(pieces, dim=-1))
    codes = [rtn_codes(w[:, i : i + group], bits, None, symmetric) for i in range(0, w.shape[-1], group)]
    assert torch.equal(rtn_codes(w, bits, group, symmetric), torch.cat(codes, dim=-1))


@given(weights(), bits_st, st.booleans(), st.integers(0, MAX_GROUP))
def test_per_channel_equals_one_group_per_row(w: torch.Tensor, bits: int, symmetric: bool, extra: int) -> None:
    """group_size=None equals group_size=in_features, and any larger group size."""
    per_channel = rtn_quantize(w, bits, None, symmetric)
    assert torch.equal(per_channel, rtn_quantize(w, bits, w.shape[-1] + extra, symmetric))
    rows = [rtn_quantize(w[r : r + 1], bits, None, symmetric) for r in range(w.shape[0])]
    assert torch.equal(per_channel, torch.cat(rows, dim=0))


@given(weights(), bits_st, groups_st)
def test_asymmetric_hits_group_min_and_max(w: torch.Tensor, bits: int, group: int | None) -> None:
    """Asym RTN reproduces each group's min exactly and its max within float64 noise
    (4 eps64 * (|min| + |max|)) plus the fp32 cast (eps32 * |max|)."""
    size = w.shape[-1] if group is None else min(group, w.shape[-1])
    q = rtn_quantize(w, bits, group, False)
    for i in range(0, w.shape[-1], size):
        wg, qg = w[:, i : i + size], q[:, i : i + size]
        lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)
        assert torch.equal(qg.amin(dim=-1), lo)
        tol = 4 * EPS64 * (lo.double().abs() + hi.double().abs()) + EPS32 * hi.double().abs()
        assert bool(((qg.amax(dim=-1).double() - hi.double()).abs() <= tol).all())


@given(st.lists(values, min_size=1, max_size=MAX_ROWS), st.integers(1, MAX_COLS), configs)
def test_constant_groups_are_exact(row_values: list[float], cols: int, cfg: tuple[int, int | None, bool]) -> None:
    """A constant group (zero or not) is reproduced exactly, never NaN: a degenerate scale
    is replaced by 1 so nothing divides by zero."""
    w = torch.tensor(row_values, dtype=F32)[:, None].expand(-1, cols).contiguous()
    q = rtn_quantize(w, *cfg)
    assert torch.equal(q, w)
    scale, _ = rtn_params(w, *cfg)
    assert bool(torch.isfinite(scale).all() and (scale > 0).all())


@given(weights(), bits_st, bits_st, groups_st, st.booleans())
def test_more_bits_tighter_bound_and_nested_grids(
    w: torch.Tensor, b1: int, b2: int, group: int | None, symmetric: bool
) -> None:
    """More bits never increase the worst-case error bound: every error at b2 > b1 bits is within
    s_b1 / 2. The *actual* max error can grow (grids of 4 and 5 bits are not nested; see
    test_rtn.py), but when the b1 grid is a subset of the b2 grid (qmax_b1 divides qmax_b2),
    no weight's error grows. Tolerance: the stated fp32/float64 slack of each side."""
    lo_bits, hi_bits = sorted((b1, b2))
    assume(lo_bits < hi_bits)
    q_lo, q_hi = rtn_quantize(w, lo_bits, group, symmetric), rtn_quantize(w, hi_bits, group, symmetric)
    err_lo = (w.double() - q_lo.double()).abs()
    err_hi = (w.double() - q_hi.double()).abs()
    step_lo, step_hi = rtn_step(w, lo_bits, group, symmetric), rtn_step(w, hi_bits, group, symmetric)
    assert bool((step_hi <= step_lo).all())
    assert bool((err_hi <= step_lo / 2 + _err_tol(w, q_hi)).all())
    if code_range(hi_bits, symmetric)[1] % code_range(lo_bits, symmetric)[1] == 0:
        assert bool((err_hi <= err_lo + _err_tol(w, q_hi) + _err_tol(w, q_lo)).all())


@given(weights(), configs, st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_low_precision_dtypes(w: torch.Tensor, cfg: tuple[int, int | None, bool], dtype: torch.dtype) -> None:
    """Output has the input's dtype and shape, is idempotent in that dtype, and the error bound holds
    with the dtype's own slack eps_dtype * (|w| + |Q(w)|) (Q(w) is rounded to the dtype)."""
    x = w.clamp(-(2.0**10), 2.0**10).to(dtype)  # inside fp16's range
    q = rtn_quantize(x, *cfg)
    assert q.dtype == dtype and q.shape == x.shape
    assert torch.equal(rtn_quantize(q, *cfg), q)
    err = (x.double() - q.double()).abs()
    assert bool((err <= rtn_step(x, *cfg) / 2 + _err_tol(x, q)).all())


@given(weights(max_rows=1, elements=st.floats(-1.0, 1.0, width=32)), bits_st, st.booleans())
def test_matches_scalar_reference(w: torch.Tensor, bits: int, symmetric: bool) -> None:
    """Per-channel RTN equals a plain-Python transcription of the DESIGN.md formula (Python's
    round() is also round-half-to-even), value for value."""
    xs = [float(x) for x in w[0]]
    low, high = code_range(bits, symmetric)
    if symmetric:
        zero, scale = 0.0, max(abs(x) for x in xs) / high
    else:
        zero, scale = min(xs), (max(xs) - min(xs)) / (high - low)
    scale = scale if scale > 0 else 1.0
    codes = [min(max(round((x - zero) / scale), low), high) for x in xs]
    expected = torch.tensor([c * scale + zero for c in codes], dtype=torch.float64).to(F32)
    assert rtn_codes(w, bits, None, symmetric)[0].tolist() == codes
    assert torch.equal(rtn_quantize(w, bits, None, symmetric)[0], expected)


# --------------------------------------------------------------------------- the paper's lemma


def _grid_position(
    w: torch.Tensor, bits: int, symmetric: bool
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """T's per-channel grid (held fixed) and t = (w - zero) / s in code units, as RTN computes it."""
    params = rtn_params(w, bits, None, symmetric)
    scale, zero = params
    return params, (w.double() - zero) / scale


@given(weights(max_rows=1), bits_st, st.booleans(), st.data())
def test_lemma_small_move_keeps_the_code(w: torch.Tensor, bits: int, symmetric: bool, data: st.DataObject) -> None:
    """The paper's lemma: with the scale held fixed, if |dw| is below the distance from w to its
    nearest rounding boundary (|dw| < s * (0.5 - |w/s - round(w/s)|)), then Q(w + dw) == Q(w).
    Weights within 1e-6 code units of a boundary get dw = 0, since the float64 addition w + dw
    itself can move them by ~1e-13; dw uses (1 - 1e-6) of the allowed distance for the same reason."""
    x = w.double()
    params, t = _grid_position(x, bits, symmetric)
    dist = _frac_to_boundary(t)
    u = torch.tensor(
        data.draw(st.lists(st.floats(-1.0, 1.0), min_size=x.numel(), max_size=x.numel())), dtype=torch.float64
    )
    dw = torch.where(dist > 1e-6, u.reshape(x.shape) * dist * params[0] * (1 - 1e-6), 0.0)
    assert torch.equal(
        rtn_codes(x + dw, bits, None, symmetric, params=params), rtn_codes(x, bits, None, symmetric, params=params)
    )
    assert torch.equal(
        rtn_quantize(x + dw, bits, None, symmetric, params=params),
        rtn_quantize(x, bits, None, symmetric, params=params),
    )


@given(weights(max_rows=1), bits_st, st.booleans())
def test_half_step_alone_is_not_sufficient(w: torch.Tensor, bits: int, symmetric: bool) -> None:
    """|dw| < s/2 does NOT keep the code: any weight off the grid can be pushed across its nearest
    boundary by less than half a step. Constructed for the weight farthest from a grid point."""
    x = w.double()
    (scale, zero), t = _grid_position(x, bits, symmetric)
    frac = t - torch.round(t)
    i = int(frac.abs().argmax())
    f = float(frac.flatten()[i])
    assume(abs(f) > 1e-3)  # the weight is off the grid, so some boundary is closer than s/2
    dw = torch.zeros_like(x)
    dw.view(-1)[i] = math.copysign(0.5 - abs(f) / 2, f) * float(scale)  # crosses the boundary by |f|/2 code units
    assert abs(float(dw.view(-1)[i])) < float(scale) / 2
    before = rtn_codes(x, bits, None, symmetric, params=(scale, zero))
    after = rtn_codes(x + dw, bits, None, symmetric, params=(scale, zero))
    assert int(after.view(-1)[i]) == int(before.view(-1)[i]) + int(math.copysign(1, f))


# --------------------------------------------------------------------------- applying to a model


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)


class _TinyStack(nn.Module):
    """Embedding -> blocks of nn.Linear named like a Llama -> lm_head; no transformers needed."""

    def __init__(self, vocab: int, width: int, depth: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(_Block(width) for _ in range(depth))
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        for block in self.layers:
            h = block.norm(h + block.v_proj(block.q_proj(h)))
        return self.lm_head(h)


def _stack(seed: int, width: int, depth: int, dtype: torch.dtype) -> LoadedModel:
    """A seeded stack (own generator: the global torch RNG is left alone)."""
    gen = torch.Generator().manual_seed(seed)
    model = _TinyStack(vocab=11, width=width, depth=depth)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    model = model.to(dtype).eval()
    return LoadedModel(model=model, tokenizer=None, path=f"stack-{seed}", fingerprint=f"{seed:064x}", dtype=str(dtype))


# Groups of <= 2 weights are lossless under asym RTN (min and max are on the grid), so a model
# quantized that way would rightly be refused as "took no effect"; the stack tests use larger groups.
stack_quantizers = st.tuples(bits_st, st.one_of(st.none(), st.integers(3, MAX_GROUP)), st.booleans())
stack_configs = st.tuples(
    st.integers(0, 2**16),
    st.integers(6, 12),
    st.integers(1, 3),
    st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)


@given(stack_configs, stack_quantizers, st.booleans())
def test_apply_restore_bit_exact(
    stack: tuple[int, int, int, torch.dtype], cfg: tuple[int, int | None, bool], fail: bool
) -> None:
    """Weights change inside quantized() and every tensor comes back bit for bit after it, also
    when the body raises."""
    loaded = _stack(*stack)
    bits, group, symmetric = cfg
    qid = f"rtn-w{bits}" + (f"g{group}" if group else "") + ("" if symmetric else "-asym")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    ids = torch.arange(11)[None]
    with torch.no_grad():
        logits = loaded.model(ids)

    class Boom(Exception):
        pass

    try:
        with quantized(loaded, qid) as q:
            inside = q.model.state_dict()
            assert any(not torch.equal(inside[k], before[k]) for k in before)
            if fail:
                raise Boom
    except Boom:
        pass
    after = loaded.model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), logits)


@given(stack_configs, stack_quantizers)
def test_skipped_modules_untouched(stack: tuple[int, int, int, torch.dtype], cfg: tuple[int, int | None, bool]) -> None:
    """lm_head and the embeddings keep their exact values while quantized; every other Linear is listed."""
    loaded = _stack(*stack)
    bits, group, symmetric = cfg
    qid = f"rtn-w{bits}" + (f"g{group}" if group else "") + ("" if symmetric else "-asym")
    head, embed = loaded.model.lm_head.weight.clone(), loaded.model.embed_tokens.weight.clone()
    linears = [n for n, m in loaded.model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    with quantized(loaded, qid) as q:
        assert torch.equal(q.model.lm_head.weight, head)
        assert torch.equal(q.model.embed_tokens.weight, embed)
        assert q.details.modules == linears
        assert q.details.n_weights == sum(loaded.model.get_submodule(n).weight.numel() for n in linears)
