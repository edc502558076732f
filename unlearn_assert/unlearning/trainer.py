"""The unlearning loop: settings, data chunking, deterministic batches, AdamW, optional SURE mask.

Why it is written out by hand instead of using ``transformers.Trainer``: the quantity the gate
tests (do near-zero weight changes survive 4-bit rounding?) depends on details a Trainer hides:
the weights' dtype during the update, which parameters the optimizer sees, the exact data order.
Here each is explicit and recorded in ``unlearn_run.json``.

Decisions (each documented because results depend on it):

* Data: the raw forget text (and the raw retain text for GDR / KLR; see :func:`unlearn_assert.data.muse.raw_files`:
  MUSE's ``raw/forget``, ``raw/retain1`` + ``raw/retain2`` as .json or .txt, or ``raw/retain.txt``, or the
  same splits of the Hugging Face form), its documents joined with ``"\\n\\n"`` exactly as MUSE's .txt
  twins (and MUSE's own trainer reads those), is tokenized as one continuous text without special
  tokens, cut into fixed, non-overlapping chunks of ``max_length - 1`` tokens,
  and each chunk gets the tokenizer's BOS in front (``max_length`` tokens in all; without a BOS
  token the chunks are ``max_length`` long). The last, shorter chunk is right-padded and masked.
* Batches: each epoch is a permutation of the chunks drawn from a ``torch.Generator`` seeded with
  ``seed`` (forget) and ``seed + 1`` (retain); the last batch of an epoch may be smaller. Retain
  batches are cycled independently of the forget epochs. ``epochs=E`` means
  ``E * ceil(n_forget_chunks / batch_size)`` steps.
* Precision: ``dtype="bfloat16"`` means bf16 *weights*: every weight holds a bf16 value after
  every step, so an update smaller than half a bf16 step is lost and a small learning rate only
  moves near-zero weights (the regime in which quantization recovers knowledge). On CUDA the
  parameters themselves are bf16 (pure bf16). On CPU the storage is emulated on every CPU alike:
  float32 parameters holding bf16 values, float32 compute and AdamW state, and after each
  optimizer step every trained weight is rounded to the nearest bf16 (what a bf16 ``add`` does);
  the model is handed back in bf16. Why: without native bf16 (AVX2-only CPUs) torch emulates bf16
  matmuls, 28x slower per step, and one code path keeps the result independent of the CPU kind.
  ``"float32"`` trains fp32 weights. The losses are computed from float32 up-cast logits either way.
* Optimizer: AdamW, constant learning rate, ``weight_decay`` 0.0 by default (as HF's Trainer).
* Reference model (NPO, KLR): a frozen deep copy of the starting weights in the compute dtype
  (bf16 values in float32 under the CPU emulation), eval mode, ``requires_grad=False``, run under ``torch.no_grad``,
  once per chunk: what the losses use of it is kept per chunk (:class:`ReferenceCache`).
* A target given as a LoadedModel is deep-copied, never modified; a target given as a path is
  loaded and trained in place (saves one copy of the weights).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.muse import RAW_FORGET_HINT, RAW_RETAIN_HINT, MuseData, load_data
from ..errors import DataError, UnlearnAssertError
from ..fs import user_path
from ..metrics.progress import StepLog
from ..models import LoadedModel, load_model, quiet_transformers, resolve_device
from .losses import LossInputs, Method, RefOutputs, forget_loss, method_loss, parse_method, shift_for_lm
from .settings import UnlearnSettings
from .sure import SureSelection, apply_mask, candidate_modules, compute_saliency, select_modules

__all__ = ["Chunks", "UnlearnResult", "UnlearnSettings", "chunk_text", "compute_dtype", "save_unlearned", "unlearn"]

RUN_FILE = "unlearn_run.json"


# --------------------------------------------------------------------------- data


@dataclass
class Chunks:
    """Fixed-length token chunks of one text: ``input_ids`` / ``attention_mask`` of shape [N, L]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, index: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[index].to(device), self.attention_mask[index].to(device)


def chunk_text(tokenizer: Any, text: str, max_length: int) -> Chunks:
    """Tokenize ``text`` continuously and cut it into BOS-prefixed chunks of ``max_length`` tokens."""
    ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    bos = tokenizer.bos_token_id
    prefix = [] if bos is None else [int(bos)]
    span = max_length - len(prefix)
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None)
    rows: list[list[int]] = []
    masks: list[list[int]] = []
    for start in range(0, len(ids), span):
        row = prefix + ids[start : start + span]
        if len(row) < 2:  # no token to predict
            continue
        masks.append([1] * len(row) + [0] * (max_length - len(row)))
        rows.append(row + [int(pad)] * (max_length - len(row)))
    return Chunks(
        torch.tensor(rows, dtype=torch.long).reshape(-1, max_length),
        torch.tensor(masks, dtype=torch.long).reshape(-1, max_length),
    )


class BatchCycler:
    """Endless, seeded batches of chunk indices: one permutation per epoch, consecutive slices."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._pending: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self._pending:
            self._pending = list(torch.randperm(self.n, generator=self.generator).split(self.batch_size))
        return self._pending.pop(0)


def _raw_text(data: MuseData, which: str, why: str) -> str:
    """The raw forget or retain text, or a DataError that lists the files that would provide it."""
    text = data.raw_forget if which == "forget" else data.raw_retain
    if text is None:
        hint = RAW_FORGET_HINT if which == "forget" else RAW_RETAIN_HINT
        raise DataError(
            f"data dir '{data.path}' has no raw {which} text (looked for {hint}, or raw/{which}* splits of the "
            f"Hugging Face form); {why}"
        )
    return text


def _raw_source(data: MuseData, which: str) -> str:
    return data.sources.get(f"raw_{which}_docs", f"raw {which} text")


# --------------------------------------------------------------------------- result


@dataclass
class UnlearnResult:
    """The unlearned model in memory, with what happened: loss curve, SURE selection, provenance."""

    model: Any
    tokenizer: Any
    settings: UnlearnSettings
    curve: list[dict[str, Any]]
    sure: SureSelection | None
    steps: int
    n_forget_chunks: int
    n_retain_chunks: int
    target: dict[str, Any]
    data: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)
    compute_dtype: str = ""
    #: --quant-aware: per quantizer, the tensors simulated and their kinds (None without it)
    quant_aware: dict[str, Any] | None = None

    @property
    def selected_modules(self) -> list[dict[str, Any]]:
        """SURE's selected modules with their saliency (empty without SURE)."""
        return [] if self.sure is None else self.sure.selected_with_scores()

    def to_json(self) -> dict[str, Any]:
        import transformers

        from ..version import __version__

        return {
            "schema_version": 1,
            "unlearn_assert": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "settings": asdict(self.settings),
            "compute_dtype": self.compute_dtype or self.settings.dtype,
            "target": self.target,
            "data": self.data,
            "chunks": {
                "forget": self.n_forget_chunks,
                "retain": self.n_retain_chunks,
                "max_length": self.settings.max_length,
            },
            "steps": self.steps,
            "seconds": self.seconds,
            "sure": None if self.sure is None else self.sure.to_dict(),
            "selected_modules": self.selected_modules,
            "curve": self.curve,
            "notes": self.notes,
            **({} if self.quant_aware is None else {"quant_aware": self.quant_aware}),
        }


# --------------------------------------------------------------------------- the loop


#: The most memory one chunk set's cached reference log-distributions (KLR) may take; beyond it the reference runs
#: on every batch, as without a cache. A fixed bound, so whether a run caches depends on its data and model only.
REF_CACHE_BYTES = 256 << 20


class ReferenceCache:
    """The frozen reference model's outputs on one chunk set (forget or retain), per chunk, computed the
    first time a batch draws the chunk.

    Why: the reference never changes and each chunk is drawn once per epoch, so a 900-step run over
    132 forget and 147 retain chunks ran the reference 27 and 24 times on each: a quarter of every
    step's compute (demo, measured). NPO keeps one number per chunk (always cached); KLR a
    [length - 1, vocab] log-distribution per chunk, cached while the chunk set's whole cache fits in
    :data:`REF_CACHE_BYTES` (a 7B model's vocabulary and context do not: its reference runs per batch).
    A row of a batch does not depend on the other rows (causal attention, its own padding mask), so a
    cached chunk's outputs are those the step would compute; on CPU they are the same bits (measured
    on both kernel paths: a chunk alone, in a batch of 4 and in another batch give identical logits).
    """

    def __init__(self, ref: Any, chunks: Chunks, device: str, *, npo: bool, klr: bool) -> None:
        self.ref, self.chunks, self.device, self.npo, self.klr = ref, chunks, device, npo, klr
        n, length = chunks.input_ids.shape
        vocab = int(getattr(getattr(ref, "config", None), "vocab_size", 0) or 0)
        self.keep_logp = klr and 0 < n * (length - 1) * vocab * 4 <= REF_CACHE_BYTES
        self.cached = torch.zeros(n, dtype=torch.bool)
        self.seq_logprob: torch.Tensor | None = None
        self.logp: torch.Tensor | None = None

    def _run(self, index: torch.Tensor) -> RefOutputs:
        ids, mask = self.chunks.batch(index, self.device)
        with torch.no_grad():
            logits = self.ref(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1, :]
        _, targets, target_mask = shift_for_lm(logits, ids, mask)
        return RefOutputs.from_logits(logits, targets, target_mask, npo=self.npo, klr=self.klr)

    def outputs(self, index: torch.Tensor) -> RefOutputs:
        """The reference's outputs on the chunks ``index`` (a batch), running it on those not cached yet."""
        if self.klr and not self.keep_logp:  # the log-distributions are not kept: run the whole batch
            return self._run(index)
        missing = index[~self.cached[index]]
        if len(missing):
            out = self._run(missing)
            if out.seq_logprob is not None:  # NPO's part (from_logits computed what was asked)
                if self.seq_logprob is None:
                    self.seq_logprob = torch.zeros(len(self.chunks), dtype=out.seq_logprob.dtype, device=self.device)
                self.seq_logprob[missing.to(self.device)] = out.seq_logprob
            if out.logp is not None:
                if self.logp is None:
                    shape = (len(self.chunks), *out.logp.shape[1:])
                    self.logp = torch.zeros(shape, dtype=out.logp.dtype, device=self.device)
                self.logp[missing.to(self.device)] = out.logp
            self.cached[missing] = True
        at = index.to(self.device)
        return RefOutputs(
            None if self.seq_logprob is None else self.seq_logprob[at], None if self.logp is None else self.logp[at]
        )


def _forward(model: Any, chunks: Chunks, index: torch.Tensor, device: str, refs: ReferenceCache | None) -> LossInputs:
    """The model's forward on the chunks ``index``, aligned for the losses, with the reference's outputs (``refs``)."""
    ids, mask = chunks.batch(index, device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    aligned, targets, target_mask = shift_for_lm(logits, ids, mask)
    return LossInputs(aligned, targets, target_mask, None if refs is None else refs.outputs(index))


def compute_dtype(s: UnlearnSettings) -> str:
    """The dtype the training computes in: ``s.dtype``, except bf16 weights on CPU, which are
    emulated in float32 (see the module docstring)."""
    return "float32" if s.dtype == "bfloat16" and resolve_device(s.device).startswith("cpu") else s.dtype


def round_to_bf16_(params: Sequence[torch.Tensor]) -> None:
    """Round float32 parameters to the nearest bf16 value in place (round-half-to-even, as a bf16
    tensor op rounds its float32 result): the bf16 storage of the CPU emulation."""
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(torch.bfloat16))


def _prepare_model(target: LoadedModel | str | os.PathLike[str], s: UnlearnSettings) -> tuple[Any, Any, dict[str, Any]]:
    compute = compute_dtype(s)
    if isinstance(target, LoadedModel):
        model = copy.deepcopy(target.model)
        loaded = target
    else:
        loaded = load_model(target, device=s.device, dtype=compute)
        model = loaded.model
    if compute != s.dtype:  # bf16 storage emulated: start from the bf16 values of the weights
        model.to(device=s.device, dtype=getattr(torch, s.dtype))
    model.to(device=s.device, dtype=getattr(torch, compute))
    return model, loaded.tokenizer, {"path": loaded.path, "fingerprint": loaded.fingerprint}


def unlearn(
    target: LoadedModel | str | os.PathLike[str],
    data: MuseData | str | os.PathLike[str],
    settings: UnlearnSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> UnlearnResult:
    """Unlearn ``data``'s raw forget text from ``target`` with ``settings``; returns the model in memory.

    ``progress`` receives one line per ``settings.log_every`` steps, at most one per 30 s once the run
    is expected to take longer (:class:`~unlearn_assert.metrics.progress.StepLog`), the last step's,
    and a few setup lines.
    """
    s = (settings or UnlearnSettings()).validated()
    method: Method = parse_method(s.method)
    say = progress or (lambda line: None)
    muse = data if isinstance(data, MuseData) else load_data(data)
    forget_text = _raw_text(muse, "forget", "unlearning trains on the forget set's raw text")
    retain_text = None
    if method.retain is not None:
        retain_text = _raw_text(
            muse,
            "retain",
            f"method '{method.name}' regularizes on the retain set's raw text (or use --method {method.forget})",
        )

    model, tokenizer, target_info = _prepare_model(target, s)
    compute = compute_dtype(s)
    forget = chunk_text(tokenizer, forget_text, s.max_length)
    retain = chunk_text(tokenizer, retain_text, s.max_length) if retain_text is not None else None
    if len(forget) == 0:
        raise DataError(
            f"{_raw_source(muse, 'forget')} in data dir '{muse.path}' has no tokens to train on; give it text"
        )
    if retain is not None and len(retain) == 0:
        raise DataError(
            f"{_raw_source(muse, 'retain')} in data dir '{muse.path}' has no tokens to train on; give it text"
        )
    steps = s.steps if s.steps is not None else s.epochs * math.ceil(len(forget) / s.batch_size)  # type: ignore[operator]
    retain_batch = s.retain_batch_size or s.batch_size

    torch.manual_seed(s.seed)
    ref = None
    forget_refs = retain_refs = None
    if method.needs_reference:
        ref = copy.deepcopy(model).eval()
        ref.requires_grad_(False)
        if method.forget == "npo":
            forget_refs = ReferenceCache(ref, forget, s.device, npo=True, klr=False)
        if retain is not None and method.retain == "klr":
            retain_refs = ReferenceCache(ref, retain, s.device, npo=False, klr=True)
    model.train()
    say(
        f"unlearning {target_info['path']} with {method.name}: {len(forget)} forget"
        + (f" / {len(retain)} retain" if retain is not None else "")
        + f" chunks of {s.max_length} tokens, {steps} steps, batch {s.batch_size}"
        + (f" (retain {retain_batch})" if retain is not None and retain_batch != s.batch_size else "")
        + f", lr {s.lr:g}, {s.dtype} weights"
        + (f" ({compute} compute, bf16 storage emulated)" if compute != s.dtype else "")
    )

    sure: SureSelection | None = None
    notes: list[str] = []
    if s.sure:
        sal_cycler = BatchCycler(len(forget), s.batch_size, s.seed)  # same seed: the first training batches
        sal_batches = [sal_cycler.next() for _ in range(s.sure_batches)]
        saliency, n = compute_saliency(
            model,
            lambda index: forget_loss(method.forget, _forward(model, forget, index, s.device, forget_refs), s.beta),  # noqa: F821 (del'd later)
            sal_batches,
            include_lm_head=s.sure_lm_head,
        )
        if s.sure_lm_head and "lm_head" not in candidate_modules(model, True):
            notes.append("lm_head shares its weight with the input embedding, so SURE never selects it")
        selected, rule = select_modules(saliency, top=s.sure_top, threshold=s.sure_threshold)
        sure = SureSelection(saliency, selected, rule, n, s.sure_lm_head, notes=list(notes))
        params = apply_mask(model, selected)
        say(f"SURE: {rule}: " + ", ".join(f"{m} ({saliency[m]:.3g})" for m in selected))
    else:
        params = [p for p in model.parameters()]
        for p in params:
            p.requires_grad_(True)

    qa = None
    if s.quant_aware:
        from .quant_aware import QuantAware

        qa = QuantAware.for_model(s.quant_aware, model, target_info["path"], s.quant_aware_weight)
        say(
            f"quantization-aware: the {method.name} loss also under {', '.join(s.quant_aware)} "
            f"(straight-through, weight {s.quant_aware_weight:g})"
        )
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    forget_cycler = BatchCycler(len(forget), s.batch_size, s.seed)
    retain_cycler = BatchCycler(len(retain), retain_batch, s.seed + 1) if retain is not None else None
    curve: list[dict[str, Any]] = []
    start = time.perf_counter()
    log = StepLog(steps, s.log_every)
    for step in range(1, steps + 1):
        f_index = forget_cycler.next()
        f_in = _forward(model, forget, f_index, s.device, forget_refs)
        r_in = r_index = None
        if retain is not None and retain_cycler is not None:
            r_index = retain_cycler.next()
            r_in = _forward(model, retain, r_index, s.device, retain_refs)
        parts = method_loss(method, f_in, r_in, alpha=s.alpha, beta=s.beta)
        total = float(parts.total.detach())
        if not math.isfinite(total):
            raise UnlearnAssertError(
                f"the {method.name} loss became {total} at step {step}; lower the learning rate (--lr)"
            )
        parts.total.backward()
        quantized = None
        if qa is not None:  # the same batches and reference outputs, on each fake-quantized model
            refs = (f_in.ref, None if r_in is None else r_in.ref)
            del f_in, r_in
            f_batch = forget.batch(f_index, s.device)
            r_batch = None if retain is None or r_index is None else retain.batch(r_index, s.device)
            quantized = qa.backward(model, method, f_batch, r_batch, *refs, alpha=s.alpha, beta=s.beta, step=step)
            del refs
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if compute != s.dtype:
            round_to_bf16_(params)
        record: dict[str, Any] = {
            "step": step,
            "forget_loss": float(parts.forget.detach()),
            "retain_loss": None if parts.retain is None else float(parts.retain.detach()),
            "total": total,
            "seconds": round(time.perf_counter() - start, 4),
        }
        if quantized is not None:
            mean_q = sum(float(q["total"] or 0.0) for q in quantized.values()) / len(quantized)
            record["quantized"] = quantized
            record["objective"] = total + s.quant_aware_weight * mean_q
        curve.append(record)
        if log.due(step):
            retain_txt = "" if record["retain_loss"] is None else f"  retain {record['retain_loss']:.4f}"
            q_txt = "".join(
                f"  [{q}: forget {v['forget_loss']:.4f}"
                + ("" if v["retain_loss"] is None else f" retain {v['retain_loss']:.4f}")
                + "]"
                for q, v in (quantized or {}).items()
            )
            say(
                f"step {step}/{steps}  forget {record['forget_loss']:.4f}{retain_txt}  total {total:.4f}{q_txt}  "
                f"({record['seconds']:.1f}s, {log.left(step)})"
            )

    model.eval()
    if compute != s.dtype:  # exact: every weight holds a bf16 value
        model.to(dtype=getattr(torch, s.dtype))
    for p in model.parameters():  # hand back an ordinary model (the mask was for training only)
        p.requires_grad_(True)
    del ref, forget_refs, retain_refs, optimizer
    return UnlearnResult(
        model=model,
        tokenizer=tokenizer,
        settings=s,
        curve=curve,
        sure=sure,
        steps=steps,
        n_forget_chunks=len(forget),
        n_retain_chunks=0 if retain is None else len(retain),
        target=target_info,
        data={
            "path": muse.path,
            "fingerprint": muse.fingerprint,
            "form": muse.form,
            "raw": {
                "forget": _raw_source(muse, "forget"),
                "retain": _raw_source(muse, "retain") if retain is not None else None,
            },
        },
        seconds=round(time.perf_counter() - start, 3),
        notes=notes,
        compute_dtype=compute,
        quant_aware=None if qa is None else qa.describe(),
    )


# --------------------------------------------------------------------------- saving


def check_out_dir(out_dir: str | os.PathLike[str], protect: list[str] | None = None) -> Path:
    """Refuse an output path that is a file, a non-empty directory, or inside a protected (target) dir."""
    out = user_path(out_dir)
    if out.exists() and not out.is_dir():
        raise UnlearnAssertError(f"output path '{out}' is a file; choose a new directory for the unlearned checkpoint")
    if out.is_dir() and any(out.iterdir()):
        raise UnlearnAssertError(
            f"output directory '{out}' is not empty; choose a new directory (files are never overwritten)"
        )
    resolved = out.resolve()
    for guarded in protect or []:
        g = Path(guarded).resolve()
        if resolved == g or g in resolved.parents:
            raise UnlearnAssertError(
                f"output directory '{out}' is inside the target model directory '{guarded}'; choose a directory "
                "outside it"
            )
    return out


def save_unlearned(result: UnlearnResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write the checkpoint (safetensors + tokenizer) and unlearn_run.json to a new directory.

    Written to a hidden sibling directory first and renamed into place, so an interrupted save never
    leaves something that looks like a checkpoint.
    """
    import json

    out = check_out_dir(out_dir, [result.target["path"]] if result.target.get("path") else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        with quiet_transformers():
            result.model.save_pretrained(str(tmp), safe_serialization=True)
        result.tokenizer.save_pretrained(str(tmp))
        (tmp / RUN_FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n")
        if out.is_dir():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
