"""unlearn-assert: a pytest release gate for "did the unlearning survive quantization?".

The public API is loaded lazily so that ``import unlearn_assert.plugin`` (which pytest does in every
run once the package is installed) imports neither torch nor transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .version import __version__

_LAZY = {
    "gate": "unlearn_assert.engine:gate",
    "Report": "unlearn_assert.engine:Report",
    "load_model": "unlearn_assert.models:load_model",
    "LoadedModel": "unlearn_assert.models:LoadedModel",
    "load_data": "unlearn_assert.data.muse:load_data",
    "MuseData": "unlearn_assert.data.muse:MuseData",
    "quantized": "unlearn_assert.quant:quantized",
    "Calibration": "unlearn_assert.quant.calibration:Calibration",
    "load_calibration": "unlearn_assert.quant.calibration:load_calibration_file",
    "calibration_from_data": "unlearn_assert.quant.calibration:calibration_from_data",
    "evaluate": "unlearn_assert.metrics:evaluate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'unlearn_assert' has no attribute '{name}'")
    module, attr = target.split(":")
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value
