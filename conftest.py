"""Test-only setup for this repository (not shipped): Hypothesis profiles.

pytester is enabled with ``-p pytester`` in addopts rather than ``pytest_plugins`` here: in a
development checkout the plugin collects ``suites/`` from this tree, and pytest refuses
``pytest_plugins`` in a conftest that is not at the rootdir of the run doing the collecting.
"""

from __future__ import annotations

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev extra; the property tests importorskip it
    pass
else:
    # CI is derandomized (same examples every run, no example database); locally, explore more.
    settings.register_profile(
        "unlearn-ci",
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        max_examples=100,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("unlearn-dev", deadline=None, max_examples=200)
    settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE") or ("unlearn-ci" if os.environ.get("CI") else "unlearn-dev")
    )
