"""lm-evaluation-harness as the scorer of multiple-choice benchmarks, and our variants as an lm-eval backend.

Why lm-eval itself: WMDP, MMLU, ARC, HellaSwag and users' own task YAMLs are reported through
lm-evaluation-harness; a gate's accuracy must be lm-eval's to the digit (its prompts, its
log-likelihood scoring, its ``acc`` / ``acc_norm``), so this package runs lm-eval and never rescores.

* :mod:`.wmdp`: WMDP-form files (``question``, ``choices``, ``answer``) and the task config that scores
  them as WMDP's own lm-eval task does;
* :mod:`.tasks`: :func:`.tasks.load_tasks` builds tasks (names, YAMLs, WMDP-form files) before any model loads;
* :mod:`.evaluate`: :func:`.evaluate.evaluate` runs ``simple_evaluate`` on an already loaded model (ours, a
  quantized or relearned view) and returns lm-eval's per-item results and aggregates;
* :mod:`.backend`: the lm-eval model backend ``unlearn-assert``
  (``--model unlearn-assert --model_args pretrained=DIR,variant=rtn-w4g128``), registered by
  :func:`register` (``unlearn-assert lm-eval ...`` does it) or found through the ``lm_eval.models``
  entry point by an lm-eval that discovers plugins.

Nothing here imports lm-eval, torch or transformers at import time.
"""

from __future__ import annotations

from ..errors import BackendUnavailable

__all__ = ["BACKEND_TARGET", "LMEVAL_INSTALL", "MODEL_NAME", "register", "require_lm_eval"]

LMEVAL_INSTALL = "pip install 'unlearn-assert[lmeval]'"
#: the backend's name in lm-eval's model registry (``--model unlearn-assert``)
MODEL_NAME = "unlearn-assert"
#: where the backend class lives: lm-eval's lazy "module:Object" registry entry and our entry point's value
BACKEND_TARGET = "unlearn_assert.lmeval.backend:UnlearnAssertLM"


def require_lm_eval() -> str:
    """lm-eval's version; :class:`BackendUnavailable` with the pip command when it is not installed."""
    try:
        import lm_eval
    except ImportError as exc:
        raise BackendUnavailable(
            f"lm-evaluation-harness is not installed ({exc}); install it with: {LMEVAL_INSTALL}", install=LMEVAL_INSTALL
        ) from None
    return str(lm_eval.__version__)


def register() -> None:
    """Add the ``unlearn-assert`` backend to lm-eval's model registry as a lazy entry (the backend module,
    with torch, is imported only when lm-eval asks for the model). Idempotent.

    lm-eval's built-in backends are registered first: ``get_model`` imports them only while the
    registry is empty, and an entry of ours alone would hide ``hf`` and the rest."""
    require_lm_eval()
    import lm_eval.models  # noqa: F401  registers the built-in backends (lazily)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=BACKEND_TARGET)
