"""The vocabulary of unlearn-assert, defined once: every other module imports these names.

Why one module: the same words (the metric keys, the model roles, the checks, the dtypes) appear in
the option parser, the engine, the metrics, the reports and the tests; a second definition of any of
them drifts. This module imports nothing, so every layer may import it.
"""

from __future__ import annotations

import re
from typing import Final, Literal

#: The variant name of a model in full precision (no quantizer, no attack).
FP: Final = "fp"

#: The three models of a gate: U (the unlearned model under test), T (the model it was unlearned
#: from) and R (retrained without the forget data; optional, the privleak reference).
Role = Literal["unlearned", "target", "retrain"]
ROLES: Final[tuple[Role, ...]] = ("unlearned", "target", "retrain")

#: MUSE's metric keys, in report order (what :func:`unlearn_assert.metrics.evaluate` computes; a benchmark's
#: metrics and their roles are :mod:`unlearn_assert.benchmark`'s).
METRICS: Final = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")

#: How an item is judged (``--unlearn-verdict``): ``point`` on the estimate, ``strict`` on the whole
#: interval within budget, ``lenient`` failing only when the whole interval is beyond it.
VERDICT_POLICIES: Final = ("point", "strict", "lenient")
#: Confidence levels of the paired bootstrap intervals (``--unlearn-confidence``).
CONFIDENCES: Final = (0.9, 0.95, 0.99)

#: Outcomes of a budget item (pytest's), and the status of a row.
OUTCOMES: Final = ("passed", "failed", "skipped")
ROW_STATUSES: Final = ("ok", "skipped")

#: Weight dtypes a model may be loaded in (``auto``: the policy of :func:`unlearn_assert.models.resolve_dtype`).
DTYPES: Final = ("auto", "float32", "bfloat16", "float16")
#: Weight dtypes an unlearning run may train in.
TRAIN_DTYPES: Final = ("float32", "bfloat16")

#: Names of ``--unlearn-quantized NAME=DIR`` artifacts: no '-', so a name never reads as a quantizer
#: id (every id has one), and test items stay unambiguous (``test_budget[NAME-knowmem_f]``).
ARTIFACT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+]*")


def item_id(variant: str, check: str) -> str:
    """The parameter id of a budget item, e.g. ``rtn-w4g128-knowmem_f``."""
    return f"{variant}-{check}"


def item_name(variant: str, check: str) -> str:
    """The test item name, e.g. ``test_budget[rtn-w4g128-knowmem_f]``."""
    return f"test_budget[{item_id(variant, check)}]"
