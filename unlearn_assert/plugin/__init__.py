"""pytest hooks of unlearn-assert, and nothing else.

pytest loads this module in every run once the package is installed, so it must stay cheap: it
imports neither torch nor transformers, and it does nothing at all unless ``--unlearn-model`` (or
the ini key ``unlearn_model``) is set. State lives in an ``UnlearnSession`` in ``config.stash``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..config import OPTIONS, Budget, Option, RunConfig, build_run_config
from ..errors import ConfigError, UnlearnAssertError
from ..fs import user_path
from ..names import item_id
from .channel import PAYLOAD_ATTR
from .internal import internal_error
from .session import UnlearnSession, is_xdist_worker

run_config_key = pytest.StashKey[RunConfig]()
session_key = pytest.StashKey[UnlearnSession]()
verdict_key = pytest.StashKey[Any]()
#: the ``--dist`` the user gave ("no": none), read before pytest-xdist turns ``-n`` alone into ``load``
user_dist_key = pytest.StashKey[str]()
SUITE_MODULE = "test_budget.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unlearn", "unlearning release gate (unlearn-assert)")
    for opt in OPTIONS:
        default_text = f" Default: {opt.default!r}." if opt.default not in (None, "") else ""
        if opt.flag:
            group.addoption(opt.cli, action="store_true", dest=opt.dest, default=None, help=opt.help + default_text)
            parser.addini(opt.ini, help=opt.help, type="bool", default=False)
        elif opt.multi:
            group.addoption(
                opt.cli, action="append", dest=opt.dest, default=None, metavar=opt.metavar, help=opt.help + default_text
            )
            parser.addini(opt.ini, help=opt.help, type="args", default=[])
        else:
            group.addoption(
                opt.cli, action="store", dest=opt.dest, default=None, metavar=opt.metavar, help=opt.help + default_text
            )
            # the option's own default when the key is absent, so an explicitly empty key ("") is told apart
            parser.addini(
                opt.ini, help=opt.help, type="string", default=opt.default if isinstance(opt.default, str) else ""
            )


#: options whose explicitly empty value (``--unlearn-quantizers=``, ``unlearn_quantizers = ""``) is passed on
#: as empty, for build_run_config to refuse, instead of falling back to the default
EMPTY_IS_A_VALUE = frozenset({"quantizers"})


def _ini_path(config: pytest.Config, text: str) -> str:
    """A path written in the ini file: absolute (or ~) as written, else relative to the ini file's directory."""
    text = text.strip()
    if user_path(text).is_absolute():
        return text
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    return str(base / text)


def _effective(config: pytest.Config, opt: Option) -> Any:
    """Command line over ini over the option's default. Relative paths from the command line are
    relative to the working directory; from the ini file, to the ini file's directory (so a
    pyproject's settings work from any directory)."""
    value = config.getoption(opt.dest)
    if value not in (None, "") or (value == "" and opt.name in EMPTY_IS_A_VALUE):
        return value
    try:
        ini = config.getini(opt.ini)
    except (pytest.UsageError, ValueError) as exc:  # pytest's own check of the ini type (a bool): name the key
        raise ConfigError(f"ini key {opt.ini}: {exc}; {'use true or false' if opt.flag else 'fix its value'}") from None
    if ini == "" and opt.name in EMPTY_IS_A_VALUE:
        return ini
    if opt.multi:  # NAME=DIR entries: DIR relative to the ini file
        out = []
        for entry in ini or []:
            name, sep, path = str(entry).partition("=")
            out.append(f"{name}{sep}{_ini_path(config, path)}" if sep and path else str(entry))
        return out or opt.default
    if ini not in (None, "") and not (opt.flag and ini is False):
        if opt.path and not str(ini).startswith(("demo:", "hf:", "lm-eval:")):
            return _ini_path(config, str(ini))
        return ini
    return opt.default


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Remember the ``--dist`` the user gave before pytest-xdist fills in its default (see :func:`_placement`)."""
    dist = getattr(config.option, "dist", "no") or "no"
    config.stash[user_dist_key] = "load" if getattr(config.option, "distload", False) else str(dist)


def _run_config(config: pytest.Config) -> tuple[RunConfig, Any]:
    """The validated run config of this pytest run and what its rows cost (a Footprint; None without
    ``--unlearn-model``); with ``--unlearn-model``, every input is also checked from its files (nothing
    loads; an xdist worker leaves the item lengths to its controller). ``demo:NAME`` is resolved to the demo
    family's directories first (building the family once, minutes, then cached), so config.py stays pure."""
    raw = {opt.name: _effective(config, opt) for opt in OPTIONS}
    spec = raw["model"] if isinstance(raw["model"], str) and raw["model"].startswith("demo:") else None
    if spec is not None:
        from ..demo.family import resolve_demo

        build_run_config(
            lambda opt: spec[len("demo:") :] if opt.name == "model" else raw[opt.name]
        )  # every other value first
        demo = resolve_demo(spec)
        raw["model"] = demo["model"]
        for name in ("target", "retrain", "data"):
            raw[name] = raw[name] or demo[name]
    run = build_run_config(lambda opt: raw[opt.name], model_spec=spec)
    if not run.enabled:
        return run, None
    from ..engine.inputs import precheck

    return run, precheck(run, windows=not is_xdist_worker(config))


def _placement(config: pytest.Config, run: RunConfig, footprint: Any) -> dict[str, Any]:
    """Where this run computes its rows (:mod:`unlearn_assert.scaleout.placement`): a worker reads the
    controller's decision; the controller (or a serial run) makes it."""
    from ..scaleout.placement import WORKERINPUT_KEY, decide, visible_gpus

    if is_xdist_worker(config):
        return dict(getattr(config, "workerinput", {}).get(WORKERINPUT_KEY) or {})
    dist = str(getattr(config.option, "dist", "no") or "no")
    workers = len(getattr(config.option, "tx", None) or []) if dist != "no" else 0
    placement = decide(
        workers,
        config.stash.get(user_dist_key, dist),
        visible_gpus(run.device, run.devices),
        footprint.flops if footprint is not None else None,
    )
    return {**placement.to_dict(), "footprint": footprint.to_dict() if footprint is not None else None}


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unlearn_budget(**budget): override the unlearning budget for this test")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    try:
        run, footprint = _run_config(config)
    except UnlearnAssertError as exc:
        raise pytest.UsageError(str(exc)) from None
    except pytest.UsageError:  # pytest's own, already one line
        raise
    except Exception as exc:  # none of ours: a bug, still one line (the traceback in a log file, or with -v)
        raise pytest.UsageError(internal_error(config, exc, "while checking the options and inputs")) from None
    config.stash[run_config_key] = run
    if not run.enabled:
        return
    session = UnlearnSession(config, run)
    session.placement = _placement(config, run, footprint)
    config.stash[session_key] = session
    if not is_xdist_worker(config):
        config.pluginmanager.register(_Receiver(session), "unlearn-assert-receiver")
    suite = str(suite_path())
    if not any(Path(a.split("::")[0]).resolve() == Path(suite).resolve() for a in config.args if a):
        config.args.append(suite)


def suite_path() -> Path:
    """The built-in suite, shipped inside the package (``unlearn_assert/suites``)."""
    from importlib.util import find_spec

    spec = find_spec("unlearn_assert.suites")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - broken install
        raise pytest.UsageError("unlearn-assert's built-in suite is missing; reinstall unlearn-assert")
    return Path(list(spec.submodule_search_locations)[0]) / SUITE_MODULE


def _session(config: pytest.Config) -> UnlearnSession | None:
    return config.stash.get(session_key, None)


def _is_suite_item(node: Any) -> bool:
    path = getattr(node, "path", None)
    return path is not None and path.name == SUITE_MODULE and path.parent.name == "suites"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "budget_check" not in metafunc.fixturenames or not _is_suite_item(metafunc.definition):
        return
    session = _session(metafunc.config)
    if session is None:
        metafunc.parametrize("budget_check", [])
        return
    from ..benchmark import benchmark_for, judged_metrics
    from ..engine.verdicts import plan_checks

    checks = plan_checks(session.run.variants, judged_metrics(benchmark_for(session.run)))
    metafunc.parametrize("budget_check", checks, ids=[item_id(q, c) for q, c in checks])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: give each worker the run's placement before it starts."""
    from ..scaleout.placement import WORKERINPUT_KEY

    session = _session(node.config)
    if session is not None and session.placement:
        node.workerinput[WORKERINPUT_KEY] = session.placement


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller: the built-in suite on one worker when the placement says so (None: xdist's own)."""
    session = _session(config)
    if session is None or not session.placement.get("scheduled"):
        return None
    from ..scaleout.placement import make_scheduler

    return make_scheduler(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``unlearn_budget`` marker up front: a typo in a budget is a usage error."""
    session = _session(config)
    for item in items:
        for mark in item.iter_markers("unlearn_budget"):
            if mark.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: unlearn_budget takes keyword arguments only, e.g. "
                    "@pytest.mark.unlearn_budget(recovery=0.1)"
                )
            try:
                (session.run.budget if session else Budget()).with_overrides(
                    dict(mark.kwargs), where=f"{item.nodeid}: unlearn_budget marker"
                )
            except ConfigError as exc:
                raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    session = _session(item.config)
    if session is not None:
        verdict = item.stash.get(verdict_key, None) if call.when == "call" else None
        payload = session.payload(verdict)
        if payload is not None:
            setattr(report, PAYLOAD_ATTR, payload)
    return report


class _Receiver:
    """Merges the rows and verdicts that test reports carry (from this process or from xdist
    workers); registered on the controller only, so worker-side logreport calls do not count."""

    def __init__(self, session: UnlearnSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session.receive(report)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    unlearn = _session(session.config)
    if unlearn is not None:
        try:
            unlearn.close()
            if not is_xdist_worker(session.config):  # only the controller writes
                unlearn.writer.write()
        except Exception as exc:  # noqa: BLE001 - a bug here must not turn the outcomes into an INTERNALERROR traceback
            unlearn.writer.warn(internal_error(session.config, exc, "while writing the reports"))
            session.exitstatus = session.exitstatus or pytest.ExitCode.INTERNAL_ERROR


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Let a process that computed rows exit in a fraction of a second instead of one or two: with torch,
    transformers and the quantization libraries loaded, the interpreter's last garbage collections at exit walk
    millions of objects (measured: 1.4 s of a 1.6 s exit, 0.2 s without them). Freezing the heap here, the last
    hook, leaves those objects to the operating system; what is still referenced is released as usual. Under
    xdist the controller waits for each worker's exit, so this is on every run's critical path."""
    session = _session(config)
    if session is not None and session.computed:
        import gc

        gc.freeze()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    unlearn = _session(config)
    if unlearn is not None and not is_xdist_worker(config):
        unlearn.writer.terminal_summary(terminalreporter)


# ---------------------------------------------------------------------- fixtures


def _require(request: pytest.FixtureRequest) -> UnlearnSession:
    session = _session(request.config)
    if session is None:
        pytest.skip("needs --unlearn-model (and --unlearn-target, --unlearn-data)")
    return session


@pytest.fixture(scope="session")
def unlearn_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> UnlearnSession:
    """The run's UnlearnSession (``.gate`` computes rows; ``.check(q, check)`` gives a Verdict)."""
    session = _require(request)
    if is_xdist_worker(request.config) and session.shared_dir is None:
        # xdist gives each worker <run's basetemp>/popen-gwN: the parent is this run's, shared by its workers
        # (pytest-xdist's documented way to share across workers); rows are claimed and stored there
        session.shared_dir = tmp_path_factory.getbasetemp().parent / "unlearn-assert-run"
    return session


@pytest.fixture
def unlearn_budget(request: pytest.FixtureRequest, unlearn_session: UnlearnSession) -> Any:
    """The run's Budget with this test's ``@pytest.mark.unlearn_budget(...)`` applied."""
    budget = unlearn_session.run.budget
    for mark in reversed(list(request.node.iter_markers("unlearn_budget"))):
        budget = budget.with_overrides(dict(mark.kwargs))
    return budget


@pytest.fixture(scope="session")
def unlearn_data(unlearn_session: UnlearnSession) -> Any:
    """The validated MUSE data (limited by --unlearn-max-samples)."""
    return unlearn_session.view.data


@pytest.fixture(scope="session")
def target_model(unlearn_session: UnlearnSession) -> Any:
    """The target model (LoadedModel), loaded once per session."""
    return unlearn_session.view.model("target")


@pytest.fixture(scope="session")
def unlearned_model(unlearn_session: UnlearnSession) -> Any:
    """The unlearned model (LoadedModel), checked against the target, loaded once per session."""
    return unlearn_session.view.model("unlearned")


@pytest.fixture(scope="session")
def retrain_model(unlearn_session: UnlearnSession) -> Any:
    """The retrain model, or a skip when --unlearn-retrain is not given."""
    if unlearn_session.run.retrain is None:
        pytest.skip("needs --unlearn-retrain")
    return unlearn_session.view.model("retrain")


@pytest.fixture(scope="session")
def quantized(unlearn_session: UnlearnSession) -> Iterator[Callable[..., Any]]:
    """Factory: ``quantized("rtn-w4g128")`` gives the unlearned model under that quantizer (or
    ``quantized(variant, role="target")``). One variant at a time: asking for another one restores the
    previous variant's weights first; the same id is returned from the session cache."""
    view = unlearn_session.view
    yield view.quantized
    view.close()


@pytest.fixture(scope="session")
def muse(unlearn_session: UnlearnSession) -> Callable[..., Any]:
    """``muse(model_or_view)`` evaluates the MUSE metrics on the run's data, cached by content hash."""
    return unlearn_session.view.measure


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = config.stash.get(run_config_key, None)
    if run is None or not run.enabled:
        return None
    from ..benchmark import benchmark_for

    benchmark = benchmark_for(run).name
    how = "detected from the data's layout" if run.benchmark == "auto" else "--unlearn-benchmark"
    return [
        f"unlearn-assert: model={run.model} target={run.target} retrain={run.retrain or '-'} data={run.data}",
        f"unlearn-assert: benchmark={benchmark} ({how})",
        f"unlearn-assert: quantizers={','.join(run.variants)} budget=recovery<={run.budget.recovery:g} "
        f"utility>={run.budget.utility:g} |privleak|<={run.budget.privleak:g}",
        f"unlearn-assert: verdict={run.verdict} on paired {run.confidence:.0%} intervals",
    ]
