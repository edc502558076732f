"""``unlearn-assert lm-eval ARGS...``: lm-eval's own command line, with the ``unlearn-assert`` backend registered.

Why a wrapper and not only the entry point: lm-eval 0.4.13 (the released version) finds backends
only in its own registry; this registers ours (:func:`unlearn_assert.lmeval.register`) and then runs
lm-eval's ``cli_evaluate`` with ``ARGS`` unchanged, so every lm-eval option, subcommand (``run``,
``ls``, ``validate``) and output is lm-eval's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import register

__all__ = ["run_lm_eval"]


def run_lm_eval(args: Sequence[str]) -> int:
    """Run ``lm-eval ARGS`` in this process with the backend registered; lm-eval's exit status."""
    register()
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    except SystemExit as exc:  # argparse and lm-eval exit through SystemExit; keep their status
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0
