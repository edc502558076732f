"""pytest hooks of unlearn-assert, and nothing else.

pytest loads this module in every run once the package is installed, so it must stay cheap: it
imports neither torch nor transformers, and it does nothing at all unless ``--unlearn-model`` (or
the ini key ``unlearn_model``) is set. State lives in an ``UnlearnSession`` in ``config.stash``.
"""

from __future__ import annotations

from typing import Any

import pytest

from .config import OPTIONS, Option, RunConfig, build_run_config
from .errors import UnlearnAssertError

run_config_key = pytest.StashKey[RunConfig]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unlearn", "unlearning release gate (unlearn-assert)")
    for opt in OPTIONS:
        default_text = f" Default: {opt.default!r}." if opt.default not in (None, "") else ""
        if opt.flag:
            group.addoption(opt.cli, action="store_true", dest=opt.dest, default=None, help=opt.help + default_text)
            parser.addini(opt.ini, help=opt.help, type="bool", default=False)
        else:
            group.addoption(opt.cli, action="store", dest=opt.dest, default=None, metavar=opt.metavar, help=opt.help + default_text)
            parser.addini(opt.ini, help=opt.help, type="string", default="")


def _effective(config: pytest.Config, opt: Option) -> Any:
    """Command line over ini over the option's default."""
    value = config.getoption(opt.dest)
    if value not in (None, ""):
        return value
    ini = config.getini(opt.ini)
    if ini not in (None, "") and not (opt.flag and ini is False):
        return ini
    return opt.default


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unlearn_budget(**budget): override the unlearning budget for this test")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    try:
        run = build_run_config(lambda opt: _effective(config, opt))
    except UnlearnAssertError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[run_config_key] = run


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = config.stash.get(run_config_key, None)
    if run is None or not run.enabled:
        return None
    return [
        f"unlearn-assert: model={run.model} target={run.target} retrain={run.retrain or '-'} data={run.data}",
        f"unlearn-assert: quantizers={','.join(run.quantizers)} budget=recovery<={run.budget.recovery:g} "
        f"utility>={run.budget.utility:g} |privleak|<={run.budget.privleak:g}",
    ]
