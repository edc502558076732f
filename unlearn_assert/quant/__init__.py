"""Quantize a loaded model for the duration of a ``with`` block, and prove that it took effect.

``quantized(u, "rtn-w4g128", target=t)`` yields a :class:`QuantizedModel` that the metrics use
like a :class:`~unlearn_assert.models.LoadedModel`, plus a :class:`QuantDetails` with the numbers
that show the quantizer really ran (changed fraction) and, given the target, the paper's mechanism
(code agreement: how many weights of U land on the same code as T's).

No torch import at module level: the plugin imports this package while parsing options, and
backends are imported only when one of their quantizers is used (see :data:`BACKENDS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, cast

from ..errors import BackendUnavailable, QuantizerError
from ..plain import digest
from ..variants.quantizers import BACKENDS, BackendEntry, QuantSpec, known_ids, parse_quantizer_id
from .base import DEFAULT_SKIP, Backend, QuantDetails

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .calibration import Calibration

__all__ = [
    "BACKENDS",
    "DEFAULT_SKIP",
    "Backend",
    "BackendEntry",
    "QuantDetails",
    "QuantSpec",
    "QuantizedModel",
    "get_backend",
    "known_ids",
    "parse_quantizer_id",
    "quantized",
]


@dataclass
class QuantizedModel:
    """A quantized view of a :class:`LoadedModel`, usable wherever one is (``.model``, ``.tokenizer``...).

    With in-place backends (rtn) ``model`` is the source's own module, quantized until the ``with``
    block ends: do not use the source model concurrently inside the block.
    """

    model: Any
    tokenizer: Any
    path: str
    fingerprint: str
    source: LoadedModel
    spec: QuantSpec
    #: what the quantizer did: changed fraction, code agreement with T's codes, bits, group size
    details: QuantDetails
    backend: Backend

    @property
    def device(self) -> str:
        return self.source.device

    @property
    def dtype(self) -> str:
        return self.source.dtype

    @property
    def info(self) -> dict[str, Any]:
        return {**self.source.info, "quantizer": self.spec.id}

    @property
    def name(self) -> str:
        return f"{self.source.name}@{self.spec.id}"


def _as_spec(qid_or_spec: str | QuantSpec) -> QuantSpec:
    return qid_or_spec if isinstance(qid_or_spec, QuantSpec) else parse_quantizer_id(qid_or_spec)


def get_backend(spec: str | QuantSpec) -> Backend:
    """Import the spec's backend module now and build its backend object.

    A missing third-party library becomes :class:`BackendUnavailable` carrying the pip command;
    an ImportError inside unlearn_assert itself is a bug and propagates unchanged.
    """
    spec = _as_spec(spec)
    entry = BACKENDS.get(spec.backend)
    if entry is None:  # a hand-built QuantSpec; parse_quantizer_id already refuses these
        raise QuantizerError(
            f"quantizer '{spec.id}' needs backend '{spec.backend}', which is not registered; known: "
            f"{', '.join(known_ids())}"
        )
    module_name, _, factory = entry.factory.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing == "unlearn_assert" or missing.startswith("unlearn_assert."):
            raise
        raise BackendUnavailable(
            f"quantizer '{spec.id}' needs {missing or module_name}, which is not installed ({exc}); install it with: "
            f"{entry.install}",
            install=entry.install,
        ) from None
    return cast(Backend, getattr(module, factory)(spec))


def _check_placement(loaded: LoadedModel, spec: QuantSpec) -> None:
    """A model dispatched over several devices (``--unlearn-device-map``) only takes backends that
    quantize each weight where it lies, and none of them can quantize a weight offloaded to disk."""
    from ..models import is_dispatched

    model = loaded.model
    if not is_dispatched(model):
        return
    able = [name for name, entry in BACKENDS.items() if entry.dispatched]
    if not BACKENDS[spec.backend].dispatched:
        raise QuantizerError(
            f"quantizer '{spec.id}' cannot run on a model dispatched across devices (--unlearn-device-map): it builds "
            f"a quantized copy on one device; use {', '.join(f'{n}-*' for n in able)} there, or load the model on one "
            "device"
        )
    if any(p.device.type == "meta" for p in model.parameters()):
        raise QuantizerError(
            f"quantizer '{spec.id}' needs every weight in memory, but the device map offloaded part of '{loaded.path}' "
            "to disk; give the GPUs and CPU enough memory for the whole model"
        )


def quant_fingerprint(
    source_fingerprint: str,
    spec: QuantSpec,
    skip_modules: Sequence[str] = DEFAULT_SKIP,
    calibration: Calibration | None = None,
) -> str:
    """The fingerprint of the quantized model: the source's and the quantizer's, a cache key for its results.

    The canonical id is used (``rtn-w8-sym`` is ``rtn-w8``); non-default ``skip_modules`` change
    the weights, so they are part of the key, and so does the calibration text of a calibrated
    backend (GPTQ, AWQ). The target only changes the report, not the model.
    """
    parts: dict[str, Any] = {"model": source_fingerprint, "quantizer": spec.canonical_id}
    if tuple(skip_modules) != DEFAULT_SKIP:
        parts["skip"] = list(skip_modules)
    if calibration is not None and BACKENDS[spec.backend].calibrated:
        parts["calibration"] = calibration.fingerprint
    return digest(parts)


@contextmanager
def quantized(
    loaded: LoadedModel,
    qid_or_spec: str | QuantSpec,
    target: LoadedModel | None = None,
    *,
    skip_modules: Sequence[str] = DEFAULT_SKIP,
    calibration: Calibration | None = None,
    target_codes: Any = None,
) -> Iterator[QuantizedModel]:
    """Quantize ``loaded`` with a quantizer id for the ``with`` block; yield a :class:`QuantizedModel`.

    With ``target`` (the model U was unlearned from), the report also carries code agreement and
    the small-delta fraction. GPTQ and AWQ need ``calibration`` (see
    :mod:`unlearn_assert.quant.calibration`); other backends ignore it. A quantizer that changed no
    weight raises :class:`QuantizerError`: "nothing recovered" from a model that was never
    quantized must not read as a pass.

    ``target_codes``: T's codes from an earlier ``quantized(T, same id, calibration)`` block
    (``q.backend.codes``), so a backend that declares ``takes_target_codes`` (GPTQ, AWQ) does not
    run on T a second time for U's code agreement (see :mod:`.base`); the engine hands them from the
    q(T) row to the q(U) row. Backends that do not take them ignore both keywords.
    """
    spec = _as_spec(qid_or_spec)
    skip = (skip_modules,) if isinstance(skip_modules, str) else tuple(skip_modules)
    _check_placement(loaded, spec)
    backend = get_backend(spec)
    codes = target_codes if backend.takes_target_codes else None
    with backend.apply(loaded, target=target, skip_modules=skip, calibration=calibration, target_codes=codes) as (
        model,
        details,
    ):
        if details.n_weights == 0 or details.changed_fraction == 0:
            raise QuantizerError(
                f"quantizer '{spec.id}' took no effect on '{loaded.path}': {details.n_weights} weights in "
                f"{len(details.modules)} layers, none changed (skip_modules={list(skip)}); check the model and "
                "skip_modules"
            )
        yield QuantizedModel(
            model=model,
            tokenizer=getattr(loaded, "tokenizer", None),
            path=loaded.path,
            fingerprint=quant_fingerprint(loaded.fingerprint, spec, skip, calibration),
            source=loaded,
            spec=spec,
            details=details,
            backend=backend,
        )
