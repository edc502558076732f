"""One test item per (variant, check): ``test_budget[rtn-w4g128-knowmem_f]``.

The plugin parametrizes ``budget_check`` from the run config at collection (nothing is loaded
then); running an item computes only the rows it needs, through the cache.
"""

from __future__ import annotations

from typing import Any

import pytest

from unlearn_assert.errors import UnlearnAssertError
from unlearn_assert.plugin import verdict_key


def test_budget(request: pytest.FixtureRequest, unlearn_session: Any, budget_check: tuple[str, str]) -> None:
    variant, check = budget_check
    try:
        verdict = unlearn_session.check(variant, check)
    except UnlearnAssertError as exc:  # bad input found only at load time (e.g. NaN weights): one line
        failure = str(exc)
    except Exception as exc:  # none of ours: a bug, one line naming the row (the traceback in a log, or with -v)
        failure = unlearn_session.internal_error(exc, request.node.name)
    else:
        failure = None
    if failure is not None:  # outside the handler, so pytest shows no chained exception
        pytest.fail(failure, pytrace=False)
    request.node.stash[verdict_key] = verdict
    if verdict.outcome == "skipped":
        pytest.skip(verdict.message)
    if verdict.outcome == "failed":
        pytest.fail(verdict.message, pytrace=False)
