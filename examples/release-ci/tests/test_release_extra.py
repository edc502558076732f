"""Your own checks beside the built-in budget items, using the plugin's fixtures."""

import pytest


@pytest.mark.unlearn_budget(recovery=0.1)
def test_fp4_is_strict(unlearn_session, unlearn_budget):
    """The paper's quantizer gets a stricter budget than the others."""
    verdict = unlearn_session.check("bnb-fp4", "knowmem_f", unlearn_budget)
    assert verdict.passed is not False, verdict.message


def test_target_still_knows_the_retain_set(muse, target_model):
    """Sanity: the target model answers retain questions at all (else utility checks are vacuous)."""
    assert muse(target_model).values["knowmem_r"] > 0
