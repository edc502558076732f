"""GPTQ and AWQ through llm-compressor: ids ``gptq-w<bits>g<group>[-asym]`` and ``awq-w<bits>g<group>[-sym]``.

Why llm-compressor (not gptqmodel, auto-gptq or autoawq; measured in
``../shared/notes/libraries-on-cpu.md`` and docs/quantizers.md): it is maintained (vLLM's
quantization toolkit, the source of most GPTQ/AWQ checkpoints served with vLLM), it runs GPTQ and AWQ
on CPU and on CUDA with one API, it installs next to our torch pin (gptqmodel 7.7 needs a newer
torch; auto-gptq cannot quantize without CUDA and does not import with transformers 5; autoawq is
deprecated), and its result is a plain dense-weight model, which keeps evaluation identical across
backends. Its price: it pins transformers <= 5.17, so ``pip install unlearn-assert[gptq]`` resolves
transformers to 5.17 (the rest of unlearn-assert is tested with it).

What runs: ``oneshot`` on a **copy** of the model (one extra copy of the weights at a time; the
source is never written to) with

* GPTQ: ``GPTQModifier`` (library defaults: dampening 0.01, block size 128, ``actorder="static"``:
  columns visited in order of activation magnitude, group scales fixed beforehand), symmetric
  int grid by default (``-asym`` for a zero point), groups of ``g`` input columns;
* AWQ: ``AWQModifier()`` (the architecture's smoothing mappings, default grid search) followed by
  ``QuantizationModifier``, asymmetric by default as AutoAWQ checkpoints are (``-sym`` allowed);

both on every ``nn.Linear`` not matched by ``skip_modules`` (``lm_head`` by default), calibrated
on :class:`~unlearn_assert.quant.calibration.Calibration` windows, batch size 1, in order. After
calibration every quantized layer's weight is replaced by the library's own fake-quantized weight
(``compressed_tensors`` ``fake_quantize`` with the layer's scale and zero point, exactly what its
forward computes) and the library's forward wrapper and quantization parameters are removed, so
evaluation runs a plain model with the quantized weights (AWQ's rescaled norms included) at no
per-forward cost; a test checks the logits equal the library's own forward.

Report: ``changed_fraction`` compares the quantized weight with the source weight. Given the
target, T is quantized first the same way (its codes kept as int8, its copy dropped), and
``code_agreement`` is the share of weights whose integer code in q(U) equals the code in q(T).
``small_delta_fraction`` (``|U - T| < s_T / 2``, ``s_T`` T's step for the weight's group) is
reported for GPTQ, whose grid is over the original weights; for AWQ it is None, because AWQ rescales
each layer's input channels by factors computed from U's and T's own activations, so their grids
are in different coordinates. ``same_cell_fraction`` is None for both: their codes are not the
rounding of the original weight on a fixed grid (GPTQ moves later columns to compensate earlier
rounding errors; AWQ rescales first), which is what that fraction measures.
"""

from __future__ import annotations

import copy
import gc
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import fake_quantize, quantize
from torch import nn


def _import_llmcompressor() -> Any:
    """Import llm-compressor with its logging off unless the user configured it: on import it
    replaces every loguru handler with its own stdout logger and logs a warning on a CPU-only
    machine; set LLM_COMPRESSOR_LOG_DISABLED=false to see its log."""
    user = os.environ.get("LLM_COMPRESSOR_LOG_DISABLED")
    os.environ["LLM_COMPRESSOR_LOG_DISABLED"] = user if user is not None else "true"
    try:
        import llmcompressor
    finally:
        if user is None:
            del os.environ["LLM_COMPRESSOR_LOG_DISABLED"]
    from loguru import logger

    try:  # with logging disabled llm-compressor 0.14 skips registering its METRIC level, then logs at it
        logger.level("METRIC")
    except ValueError:
        logger.level("METRIC", no=38)
    return llmcompressor


_import_llmcompressor()
from llmcompressor import oneshot  # noqa: E402
from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier  # noqa: E402

from ..errors import QuantizerError  # noqa: E402
from ..variants.quantizers import QuantSpec  # noqa: E402
from .base import DEFAULT_SKIP, QuantDetails, layer_weight, skipped  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .calibration import Calibration

#: Attributes compressed-tensors attaches to a quantized module (removed after materializing).
_LC_ATTRS = ("quantization_scheme", "quantization_status", "quantization_enabled")
_LC_PARAMS = ("weight_scale", "weight_zero_point", "weight_g_idx", "weight_global_scale")


def _scheme(spec: QuantSpec, targets: list[str]) -> QuantizationScheme:
    weights = QuantizationArgs(
        num_bits=spec.bits, type="int", symmetric=spec.symmetric, strategy="group", group_size=spec.group_size
    )
    return QuantizationScheme(targets=targets, weights=weights)


@contextmanager
def _quiet() -> Iterator[None]:
    """llm-compressor logs every stage and draws tqdm bars on stderr, and torch.fx warns while
    tracing layers: keep the user's terminal and pytest's captured output clean. Exceptions still
    propagate unchanged. (Its log is left on when it was configured on before we ran.)"""
    lc_logging = sys.modules["llmcompressor.logger"]  # the package re-exports a loguru object under that name

    fx_logger = logging.getLogger("torch.fx._symbolic_trace")
    level = fx_logger.level
    fx_logger.setLevel(logging.ERROR)
    lc_on = not lc_logging.LOGGER_CONFIG.disabled and os.environ.get("LLM_COMPRESSOR_LOG_DISABLED") is None
    if lc_on:
        lc_logging.logger.disable("llmcompressor")
    try:
        with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        fx_logger.setLevel(level)
        if lc_on:
            lc_logging.logger.enable("llmcompressor")


@contextmanager
def _no_lingering_references() -> Iterator[None]:
    """llm-compressor keeps the last model alive after ``oneshot``: its global session holds it, and
    its layer tracing registers the generated code's globals (which hold the model) in torch.fx's
    module-level patch table. Both are undone here, so a quantized copy is freed when dropped
    (otherwise every GPTQ/AWQ row would leak two models; a test checks with weak references)."""
    import torch.fx._symbolic_trace as fx_trace
    from llmcompressor.core import active_session

    table: dict[Any, Any] = getattr(fx_trace, "_wrapped_fns_to_patch", {})
    before = set(table)
    try:
        yield
    finally:
        for key in [k for k in table if k not in before]:
            del table[key]
        active_session().reset()


def _materialize(module: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace a calibrated layer's weight by its fake-quantized value and strip the library's
    state; return (codes as int8, dequantized weight, scale)."""
    args = module.quantization_scheme.weights
    scale, zero = module.weight_scale.detach(), getattr(module, "weight_zero_point", None)
    zero = None if zero is None else zero.detach()
    w = module.weight.detach()
    codes = quantize(w, scale, zero, args).to(torch.int8)
    w_hat = fake_quantize(w, scale, zero, args)
    module.weight.data = w_hat.to(w.dtype)
    module.__dict__.pop("forward", None)  # the instance-level wrapper set by set_forward_quantized
    for name in _LC_PARAMS:
        if hasattr(module, name):
            delattr(module, name)
    for name in _LC_ATTRS:
        module.__dict__.pop(name, None)
    return codes, module.weight.detach(), scale


def _grid(
    layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A model's codes (int8) and scales per layer, on the CPU: what U's code agreement needs of T."""
    return {name: (codes.cpu(), scale.cpu()) for name, (codes, _, scale) in layers.items()}


class LlmcBackend:
    """Shared GPTQ/AWQ machinery (see the module docstring); subclasses give the recipe."""

    name = ""
    #: GPTQ/AWQ take minutes per model: T's codes from its q(T) row are reused for U's (see :mod:`.base`)
    takes_target_codes = True
    #: ``|U - T| < s_T / 2`` is meaningful only where U and T share coordinates (not after AWQ's smoothing)
    reports_small_delta = False
    #: after ``apply`` without a target: {layer: (codes int8, scale)} of that model, on the CPU
    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    #: the model class being calibrated (set before the recipe is built; AWQ's mappings depend on it)
    architecture = ""

    def __init__(self, spec: QuantSpec) -> None:
        if spec.backend != self.name or spec.bits is None or spec.group_size is None:
            raise QuantizerError(
                f"{type(self).__name__} cannot run quantizer '{spec.id}'; use {self.name}-w<bits>g<group>"
            )
        self.spec = spec

    def recipe(self, targets: list[str]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextmanager
    def _library_fixes(self) -> Iterator[None]:
        """Workarounds a backend needs around ``oneshot`` only (none by default); undone afterwards."""
        yield

    def targets(self, model: nn.Module, skip_modules: Sequence[str]) -> dict[str, nn.Linear]:
        """Linear layers to quantize; a group size that does not divide a layer's input width (also
        one larger than it) is one clear error: compressed-tensors would stop on it after
        calibrating the earlier layers."""
        group = self.spec.group_size
        assert group is not None
        todo = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and not skipped(n, skip_modules)}
        bad = [f"{n} ({m.in_features})" for n, m in todo.items() if m.in_features % group]
        if bad:
            raise QuantizerError(
                f"quantizer '{self.spec.id}': group size {group} does not divide the input width of {len(bad)} "
                "layer(s), e.g. "
                f"{', '.join(bad[:3])}; GPTQ/AWQ kernels need whole groups: pick a group size that divides them or "
                "skip those modules"
            )
        return todo

    def _calibrate(self, model: nn.Module, tokenizer: Any, calibration: Calibration, names: list[str]) -> None:
        from datasets import Dataset

        max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        windows = calibration.windows(tokenizer, max_pos)
        ds = Dataset.from_list([{"input_ids": w, "attention_mask": [1] * len(w)} for w in windows])
        try:
            with _quiet(), _no_lingering_references(), self._library_fixes():
                oneshot(
                    model=cast(Any, model),
                    dataset=ds,
                    recipe=self.recipe(names),
                    num_calibration_samples=len(windows),
                    max_seq_length=max(len(w) for w in windows),
                    shuffle_calibration_samples=False,
                    batch_size=1,
                    processor=tokenizer,
                )
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # llm-compressor raises many types (tracing, mappings, shapes)
            arch = type(model).__name__
            raise QuantizerError(
                f"llm-compressor could not run {self.spec.id} on this {arch} ({type(exc).__name__}: {exc}); "
                f"try another quantizer id, or report the architecture"
            ) from exc

    def _quantize_copy(
        self, loaded: LoadedModel, calibration: Calibration, skip: Sequence[str]
    ) -> tuple[nn.Module, list[str]]:
        model = copy.deepcopy(loaded.model)
        # oneshot re-reads the config from name_or_path: make it the absolute local directory, so
        # a relative path (after a chdir) or an empty one never becomes a hub lookup
        model.config._name_or_path = str(Path(loaded.path).resolve())
        names = list(self.targets(model, skip))
        if not names:
            raise QuantizerError(
                f"quantizer '{self.spec.id}' found no linear layer in '{loaded.path}' outside skip_modules={list(skip)}"
            )
        model.eval()
        self.architecture = type(model).__name__
        self._calibrate(model, loaded.tokenizer, calibration, names)
        return model, names

    @staticmethod
    def _finish(
        model: nn.Module, names: list[str], device: Any
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Turn a calibrated copy into a plain model: undo llm-compressor's offloading dispatch
        (weights stay on their own device, then move to ``device``), materialize every quantized layer, drop the
        leftover instance-level forwards; return {layer: (codes, weight, scale)}."""
        from compressed_tensors.offload import remove_dispatch

        remove_dispatch(model, onload_tensors=False)  # tensors stay where they were offloaded (the source's device)
        out = {}
        for name in names:
            codes, w_hat, scale = _materialize(model.get_submodule(name))
            out[name] = (codes, w_hat, scale)
        for module in model.modules():
            bound = module.__dict__.get("forward")
            if getattr(bound, "__func__", None) is type(module).forward:
                del module.__dict__["forward"]
        model.to(device)
        return out

    @contextmanager
    def apply(
        self,
        loaded: LoadedModel,
        *,
        target: LoadedModel | None = None,
        skip_modules: Sequence[str] = DEFAULT_SKIP,
        calibration: Calibration | None = None,
        target_codes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> Iterator[tuple[Any, QuantDetails]]:
        """Quantize a copy of ``loaded.model`` for the block; yield (copy, report). Without a
        target the model's own codes stay in ``self.codes`` (for a later U's ``target_codes``)."""
        if calibration is None:
            raise QuantizerError(
                f"quantizer '{self.spec.id}' needs calibration text; pass --unlearn-calibration=FILE or a data dir "
                "with raw/retain.txt"
            )
        start = time.perf_counter()
        source = dict(loaded.model.named_modules())
        t_grid: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if target is not None:
            t_grid = dict(target_codes) if target_codes else {}
            if not t_grid:
                t_model, t_names = self._quantize_copy(target, calibration, skip_modules)
                t_grid = _grid(self._finish(t_model, t_names, target.device))
                del t_model
                gc.collect()
        model, names = self._quantize_copy(loaded, calibration, skip_modules)
        try:
            layers = self._finish(model, names, loaded.device)
            if target is None:  # this may be q(T): keep its codes for U's code agreement (see :mod:`.base`)
                self.codes = _grid(layers)
            target_modules = {} if target is None else dict(target.model.named_modules())
            totals = [0, 0, 0, 0, 0]  # n, changed, agree, small, same
            with torch.no_grad():
                for name in names:
                    codes, w_hat, _ = layers.pop(name)
                    w = source[name].weight.detach()
                    totals[0] += w.numel()
                    totals[1] += int((w_hat != w).sum())
                    if target is not None:
                        t_w = layer_weight(target, target_modules, name, w.shape)
                        t_codes, t_scale = t_grid.pop(name)
                        totals[2] += int((codes.cpu() == t_codes).sum())
                        if self.reports_small_delta:
                            group = int(self.spec.group_size or w.shape[1])  # GPTQ/AWQ ids always name a group
                            step = t_scale.float().to(w.device).repeat_interleave(group, dim=1)[:, : w.shape[1]]
                            totals[3] += int(((w.float() - t_w.float()).abs() < step / 2).sum())
            details = QuantDetails.from_counts(
                self.spec, self.name, names, totals, has_target=target is not None, seconds=time.perf_counter() - start
            )
            details.same_cell_fraction = None
            if not self.reports_small_delta:
                details.small_delta_fraction = None
            yield model, details
        finally:
            del model
            gc.collect()


class GptqBackend(LlmcBackend):
    """``gptq-w<bits>g<group>``: llm-compressor's GPTQModifier."""

    name = "gptq"
    reports_small_delta = True
    #: llm-compressor's default: ``H += dampening_frac * mean(diag(H)) * I`` before inverting. A huge
    #: value makes H a multiple of I, where GPTQ reduces to round-to-nearest (tested).
    dampening_frac = 0.01

    def recipe(self, targets: list[str]) -> Any:
        return GPTQModifier(
            config_groups={"group_0": _scheme(self.spec, targets)}, ignore=[], dampening_frac=self.dampening_frac
        )


class AwqBackend(LlmcBackend):
    """``awq-w<bits>g<group>``: llm-compressor's AWQModifier, then its QuantizationModifier."""

    name = "awq"

    #: architectures llm-compressor 0.14's AWQ registry lacks, -> the registered one with the same layer
    #: structure. Without an entry AWQ falls back to Llama's mappings (input_layernorm -> q/k/v), which
    #: fail on OLMo2's post-norm blocks; OLMo3 is OLMo2 plus sliding-window attention (v -> o, up -> down).
    MAPPING_ALIASES = {"Olmo2ForCausalLM": "Olmo3ForCausalLM"}

    def recipe(self, targets: list[str]) -> Any:
        from llmcompressor.modifiers.transform.awq import AWQModifier
        from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY

        alias = self.MAPPING_ALIASES.get(self.architecture)
        awq = AWQModifier(mappings=AWQ_MAPPING_REGISTRY[alias]) if alias else AWQModifier()
        return [awq, QuantizationModifier(config_groups={"group_0": _scheme(self.spec, targets)}, ignore=[])]

    @contextmanager
    def _library_fixes(self) -> Iterator[None]:
        """llm-compressor 0.14's AWQ pins its activation cache to page-locked memory, which a
        CPU-only torch refuses ("Cannot access accelerator device"); pinning only speeds up
        host-to-GPU copies, so without a GPU it is skipped, for this call only (the user's own
        llm-compressor use in the same process is left as it was)."""
        from llmcompressor.pipelines.cache import IntermediatesCache

        if torch.cuda.is_available():
            yield
            return
        original = IntermediatesCache.__dict__["pin_memory"]
        IntermediatesCache.pin_memory = lambda self, *a, **k: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            IntermediatesCache.pin_memory = original  # type: ignore[method-assign]
