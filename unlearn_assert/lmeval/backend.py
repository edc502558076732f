"""The lm-eval model backend ``unlearn-assert``: any lm-eval task on any variant this package makes.

    lm-eval run --model unlearn-assert --model_args pretrained=DIR,variant=rtn-w4g128 --tasks mmlu

``variant`` is what a gate row measures: ``fp`` (the model as loaded, the default), a quantizer id
(``rtn-w4g128``, ``bnb-nf4``, ``hqq-w4g64``, ``gguf-q4_k_m``, ``gptq-w4g128``...), a relearning attack
(``relearn-forget-50``, with ``data=`` a MUSE-layout directory whose forget text it trains on), or
the user's own quantized artifact (``quantized=NAME=PATH``: a quantized checkpoint directory or a
``.gguf`` file of ``pretrained``). The variant is made by the gate's own sources
(:func:`unlearn_assert.engine.sources.source_for` on a :class:`~unlearn_assert.config.RunConfig`
built and validated by :func:`~unlearn_assert.config.build_run_config`), so a number lm-eval prints
here is the number of the same model a gate row measures.

Other ``model_args``: ``target=DIR`` (the model ``pretrained`` was unlearned from: the quantizer's
report then has code agreement, as a gate row's; it does not change the variant's weights),
``calibration=FILE`` (GPTQ/AWQ text; default: ``data``'s retain text), ``dtype`` (auto, float32,
bfloat16, float16), ``device_map``, ``allow_pickle``, ``cache_dir`` / ``no_cache`` (the fingerprint
cache), and HFLM's own evaluation arguments (``max_length``, ``logits_cache``, ``add_bos_token``,
``softmax_dtype``...). lm-eval's ``--device`` and ``--batch_size`` apply; a CUDA device on a machine
without one falls back as lm-eval's ``hf`` backend does (to the CPU).

**lm-eval's conventions.** The class subclasses lm-eval's ``HFLM`` (as lm-eval's docs advise for a
backend that differs only in how the model is made) and hands it the variant as an already loaded
model; it is registered with ``@register_model("unlearn-assert")``. lm-eval 0.4.13, the released
version, does not look for other packages' backends: :func:`unlearn_assert.lmeval.register` adds a
lazy entry (``unlearn-assert lm-eval ...`` calls it; so can Python code before ``simple_evaluate``),
and the package declares the ``lm_eval.models`` entry point of lm-eval's plugin proposal for the
versions that discover them.

The variant stays applied while the object lives (an in-place quantizer keeps the loaded weights
quantized): call :meth:`UnlearnAssertLM.close`, or use it as a context manager, to release it.
"""

from __future__ import annotations

import inspect
import logging
from contextlib import ExitStack
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..config import OPTIONS, Option, RunConfig, build_run_config
from ..engine.inputs import Inputs
from ..errors import ConfigError
from ..names import FP, Role
from . import MODEL_NAME
from .evaluate import keep_ties, quiet_lm_eval

__all__ = ["UnlearnAssertLM"]

eval_logger = logging.getLogger(__name__)

#: HFLM arguments for loading a model from a path, which mean nothing for a model made here
_PATH_ONLY = frozenset(
    {
        "backend",
        "revision",
        "subfolder",
        "tokenizer",
        "trust_remote_code",
        "use_fast_tokenizer",
        "parallelize",
        "max_memory_per_gpu",
        "max_cpu_memory",
        "offload_folder",
        "tp_plan",
        "peft",
        "delta",
        "autogptq",
        "gptqmodel",
        "gguf_file",
    }
)
#: model_args names of our options where they differ from the option's name
_ARG_NAMES = {"model": "pretrained", "quantizers": "variant"}


def _hf_arg_names() -> set[str]:
    params = inspect.signature(HFLM.__init__).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD} - {
        "self",
        "pretrained",
    }


def _as_model_args(exc: ConfigError) -> ConfigError:
    """Our options' messages, in the words of model_args (``--unlearn-quantizers`` is ``variant``)."""
    text = str(exc)
    for opt in sorted(OPTIONS, key=lambda o: -len(o.cli)):
        text = text.replace(opt.cli, f"model_args {_ARG_NAMES.get(opt.name, opt.name)}")
    return ConfigError(text)


def _device(device: str | None) -> str:
    """lm-eval's device argument as our ``--unlearn-device``: CUDA asked for on a machine without it is
    the CPU, as lm-eval's hf backend does; unset is ``auto``."""
    if device in (None, ""):
        return "auto"
    text = str(device).strip()
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            eval_logger.info(
                "device '%s' requested, but CUDA is not available: using the CPU (as lm-eval's hf backend does)", text
            )
            return "auto"
    return text


class _BackendInputs(Inputs):
    """The run's inputs with one model directory for both roles when no target is given (it is loaded
    once), and the calibration file read without a data directory."""

    def __init__(self, run: RunConfig, **kwargs: Any) -> None:
        super().__init__(run, **kwargs)
        self._file_calibration: Any = None

    def model(self, role: Role) -> Any:
        if role != "target" and self.path(role) == self.path("target"):
            return super().model("target")
        return super().model(role)

    def calibration(self) -> Any:
        if self.run.data is not None:
            return super().calibration()
        if self._file_calibration is None and self.run.calibration is not None:
            from ..quant.calibration import load_calibration_file

            self._file_calibration = load_calibration_file(self.run.calibration)
        return self._file_calibration


def _precheck(run: RunConfig, variant: str) -> None:
    """What can be checked from files before anything loads, one line each (as the gate's precheck)."""
    from ..models import check_model_dir, check_tokenizer_files, precheck_pair, read_weight_headers
    from ..variants.attacks import is_attack_id

    for name in ("model", "target"):
        directory = check_model_dir(str(getattr(run, name)), allow_pickle=run.allow_pickle)
        read_weight_headers(directory)
        check_tokenizer_files(directory)
    if run.target != run.model:
        precheck_pair(str(run.target), str(run.model), role="unlearned")
    artifact = run.artifact(variant)
    if artifact is not None:
        if artifact.path.lower().endswith(".gguf"):
            from ..quant.gguf_header import check_gguf_file

            check_gguf_file(artifact.name, artifact.path, run.target)
        else:
            from ..quant.artifact import read_artifact

            read_artifact(artifact.name, artifact.path, run.target)
        return
    if is_attack_id(variant) and run.data is None:
        raise ConfigError(
            f"variant '{variant}' fine-tunes on the text of a MUSE-layout data directory; "
            "pass it in model_args as data=DIR"
        )
    from ..quant.calibration import needs_calibration

    if (
        variant != FP
        and not is_attack_id(variant)
        and needs_calibration([variant])
        and run.calibration is None
        and run.data is None
    ):
        raise ConfigError(
            f"variant '{variant}' calibrates on text; pass calibration=FILE "
            "(or data=DIR, whose retain text is used) in model_args"
        )


@register_model(MODEL_NAME)
class UnlearnAssertLM(HFLM):  # type: ignore[misc]  # lm-eval is untyped
    """lm-eval's HFLM on a variant made by unlearn-assert (see the module docstring)."""

    def __init__(
        self,
        pretrained: str,
        variant: str | None = None,
        target: str | None = None,
        data: str | None = None,
        calibration: str | None = None,
        quantized: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | None = None,
        allow_pickle: bool = False,
        cache_dir: str | None = None,
        no_cache: bool = False,
        batch_size: int | str = 1,
        max_batch_size: int | None = 64,
        **hf_args: Any,
    ) -> None:
        if not isinstance(pretrained, str) or not pretrained.strip():
            raise ConfigError("the unlearn-assert backend needs pretrained=DIR, a local Hugging Face model directory")
        misplaced = sorted(set(hf_args) & _PATH_ONLY)
        if misplaced:
            raise ConfigError(
                f"model_args {', '.join(misplaced)}: lm-eval's hf backend options for loading a model from a path; "
                "the unlearn-assert backend loads pretrained=DIR itself (use dtype=, device_map=, allow_pickle=)"
            )
        unknown = sorted(set(hf_args) - _hf_arg_names())
        if unknown:
            raise ConfigError(
                f"unknown model_args {', '.join(unknown)} for the unlearn-assert backend; it takes pretrained, "
                "variant, target, data, calibration, quantized, dtype, device_map, allow_pickle, cache_dir, no_cache "
                "and HFLM's evaluation arguments (max_length, logits_cache, add_bos_token, softmax_dtype...)"
            )
        name = variant.strip() if isinstance(variant, str) and variant.strip() else None
        artifact = str(quantized).strip() if quantized not in (None, "") else None
        if artifact is not None:
            artifact_name = artifact.partition("=")[0]
            if name not in (None, artifact_name):
                raise ConfigError(
                    f"model_args variant={name} and quantized={artifact}: the artifact's variant is its NAME, "
                    f"{artifact_name}; leave variant out or make them agree"
                )
            name = artifact_name
        name = name or FP
        values: dict[str, Any] = {
            "model": pretrained,
            "target": target or pretrained,
            "data": data,
            "calibration": calibration,
            "quantizers": name if name != FP and artifact is None else None,
            "quantized": [artifact] if artifact else None,
            "dtype": dtype,
            "device": _device(device),
            "device_map": device_map,
            "allow_pickle": allow_pickle,
            "cache_dir": cache_dir,
            "no_cache": no_cache,
        }

        def get(option: Option) -> Any:
            return values.get(option.name)

        try:
            run = build_run_config(get)
            if name != FP and run.artifact(name) is None:
                name = run.variant_ids[0]  # the canonical spelling
            _precheck(run, name)
        except ConfigError as exc:
            raise _as_model_args(exc) from None
        from ..cache import ResultCache
        from ..engine.sources import source_for
        from ..version import __version__

        self._stack = ExitStack()
        inputs = _BackendInputs(
            run, cache=ResultCache(run.cache_dir, enabled=not run.no_cache), progress=eval_logger.info
        )
        self._stack.callback(inputs.close)
        role: Role = "unlearned"
        details: dict[str, Any] = {}
        try:
            if name == FP:
                view: Any = inputs.model("unlearned")
            else:
                source = source_for(name, run)
                if "target" in source.roles and (target is None or "unlearned" not in source.roles):
                    role = "target"  # no separate target: the model itself, without code agreement
                applied = self._stack.enter_context(source.apply(role, inputs))
                view, details = applied.view, applied.details
            with keep_ties(view.model), quiet_lm_eval():
                super().__init__(
                    pretrained=view.model,
                    tokenizer=view.tokenizer,
                    batch_size=batch_size,
                    max_batch_size=64 if max_batch_size is None else max_batch_size,
                    **hf_args,
                )
        except BaseException:
            self._stack.close()
            raise
        #: what was evaluated: lm-eval writes it into its results' ``config`` (:meth:`get_model_info`)
        self.unlearn_info: dict[str, Any] = {
            "unlearn_assert": __version__,
            "pretrained": run.model,
            "target": run.target if target else None,
            "data": run.data,
            "variant": name,
            "role": role,
            "fingerprint": view.fingerprint,
            "dtype": view.dtype,
            "device": str(view.device),
            "details": details,
        }

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info without its hub lookup (there is no hub repo), plus what was evaluated."""
        model = self._model
        return {
            "model_num_parameters": sum(p.numel() for p in model.parameters()),
            "model_dtype": str(getattr(model, "dtype", "")),
            "model_revision": "",
            "model_sha": "",
            "unlearn_assert": self.unlearn_info,
        }

    def close(self) -> None:
        """Undo the variant (an in-place quantizer restores the loaded weights) and release the models."""
        self._stack.close()

    def __enter__(self) -> UnlearnAssertLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
