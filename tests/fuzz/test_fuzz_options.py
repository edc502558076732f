"""Property fuzz of the option layer (issue 16): every ``--unlearn-*`` option and ini key, alone and
combined, with random strings, numbers and paths (good ones, missing ones, files, links, devices).

Whatever comes in, the plugin's configure path must end in one of two ways: accepted, or one
usage-error line (exit 4), never a traceback, an internal error or a model load. The in-process
property calls ``pytest_configure`` itself on a real pytest config (argparse and ini parsing
included), so it costs milliseconds per example; a smaller sample runs the whole ``pytest --co``
in-process and reads what the user would see. Derandomized in CI (the root conftest's profile).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from unlearn_assert.benchmark.registry import all_metric_names  # noqa: E402
from unlearn_assert.config import BUDGET_KEYS, OPTIONS, Option  # noqa: E402
from unlearn_assert.demo.family import DEMO_MODELS  # noqa: E402
from unlearn_assert.names import DTYPES  # noqa: E402
from unlearn_assert.variants.quantizers import known_ids  # noqa: E402

PATH_OPTIONS = tuple(o.name for o in OPTIONS if o.path)
#: placeholders for the paths the fixture lays out in the run's directory (see ``_layout``)
PLACES = (
    "@unlearned",
    "@target",
    "@data",
    "@calib",
    "@file",
    "@dir",
    "@loop",
    "@dangling",
    "@missing",
    "@devnull",
    "@link_target",
    "@out",
)

# any text, plus what argv and ini files can carry that ordinary text rarely does: an undecodable
# byte (argv gives it as a surrogate), separators of our own grammars, whitespace, a NUL byte
odd = st.sampled_from(
    ["\udcff", "\x00", "\t", " ", ",", ";", "=", "@", "-", "~", "/", ".", ":", "%", "'", '"', "\\", "é", "\u202e"]
)
text = st.text(alphabet=st.characters(exclude_categories=("Cs",)) | odd, max_size=24)
numbers = st.one_of(
    st.integers(-10, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0x10", "1_000", "٣", "", " 3 ", "+2"]),
)
quantizer_ids = (
    st.sampled_from(
        [
            *known_ids(),
            "rtn-w1",
            "rtn-w4g0",
            "rtn-w99",
            "bnb-fp5",
            "RTN-W8",
            "rtn-w8-sym",
            "gguf-q4_k_m",
            "hqq-w4",
            "fp",
        ]
    )
    | text
)
place = st.sampled_from(PLACES)
path_value = st.one_of(
    place,
    place.map(lambda p: p + "/sub"),
    text,
    text.map(lambda t: "demo:" + t),
    st.sampled_from(DEMO_MODELS).map(lambda n: "demo:" + n),
    text.map(lambda t: "hf:" + t),
    text.map(lambda t: "~/" + t),
    st.just(""),
)


def _joined(items: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.lists(items, max_size=4), st.sampled_from([",", " ", ", ", ",,", ";", "\t"])).map(
        lambda t: t[1].join(t[0])
    )


budget_token = st.one_of(
    st.tuples(
        st.sampled_from([*BUDGET_KEYS, *all_metric_names(), "forgetfulness", "", "recovery@"]),
        st.one_of(st.just(""), quantizer_ids.map(lambda q: "@" + q)),
        st.sampled_from(["=", "==", ":", ""]),
        numbers,
    ).map("".join),
    text,
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    **{name: path_value for name in PATH_OPTIONS},
    "quantizers": _joined(quantizer_ids) | st.sampled_from(["", " ", ","]),
    "budget": _joined(budget_token),
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:7", "mps", "gpu", "CPU", "cuda:", "cuda:-1", ""])
    | text,
    "dtype": st.sampled_from([*DTYPES, "fp16", "int8", ""]) | text,
    "devices": st.sampled_from(["0", "0,1", "1,1", "0,x", "-1", " 2 , 3 ", ""]) | numbers | text,
    "verdict": st.sampled_from(["point", "strict", "lenient", "STRICT", "loose", ""]) | text,
    "attacks": _joined(
        st.sampled_from(
            [
                "relearn-forget-50",
                "relearn-retain-5-lora",
                "relearn-forget-0",
                "relearn-forget-05",
                "relearn-sideways-3",
                "rtn-w8",
            ]
        )
    )
    | text,
    "confidence": st.sampled_from(["0.9", "0.95", "0.99", "95", "95%", "0.5", "1", ""]) | numbers | text,
    "device_map": st.sampled_from(["auto", "balanced", "sequential", "balanced_low_0", "everywhere", "AUTO", ""])
    | text,
    "batch_size": numbers | st.sampled_from(["auto", "AUTO", "many"]) | text,
    "max_samples": numbers | text,
    "overlong": st.sampled_from(["error", "truncate", "TRUNCATE", "cut", ""]) | text,
    "retrain_auc": numbers | st.sampled_from(["muse-news", "MUSE-BOOKS", "muse", "0.5", "1", "0"]) | text,
    "quantized": st.lists(
        st.tuples(
            st.sampled_from(["mine", "my_gptq", "fp", "a-b", ""]) | text, st.sampled_from(["=", ""]), path_value
        ).map("".join),
        max_size=3,
    ),
    "no_cache": st.booleans(),
    "allow_pickle": st.booleans(),
    # mc is left out: it builds lm-eval tasks (the lm-eval tests' business, as below)
    "benchmark": st.sampled_from(["auto", "muse", "tofu", "documents", "MUSE", "wmdp", "mc ", ""]) | text,
    "forget_split": st.sampled_from(["forget01", "forget05", "forget10", "forget11", "FORGET10", ""]) | text,
    "documents": st.sampled_from(
        ["", "seed=1", "chunk_words=50 gt_words=20", "seed=x", "words=3", "chunk_words=0", "seed"]
    )
    | text,
    # names that config refuses, and files that do not exist: what lm-eval would build (a name it must look up in its
    # index of ~15,000 task files, tens of seconds) is the lm-eval tests' business
    "utility_tasks": _joined(
        st.sampled_from(
            [
                "utility",
                "knowmem_r",
                "@missing.yaml",
                "@missing.jsonl",
                "@file",
                "a b.yaml",
                "forget_acc.yaml",
                "lm-eval:",
            ]
        )
        | text.map(lambda t: t + ".yaml")
    ),
}
INI_BOOLS = st.sampled_from(["true", "false", "1", "0", "yes", "off", "maybe", ""])


#: a valid value of every option: most examples break only one or two of them, so that the checks
#: behind the early ones (the files, the device, the cache dir) are reached too
VALID: dict[str, st.SearchStrategy[Any]] = {
    "model": st.just("@unlearned"),
    "target": st.just("@target"),
    "retrain": st.sampled_from(["@target", "@unlearned"]),
    "data": st.just("@data"),
    "calibration": st.just("@calib"),
    "json": st.just("@out/r.json"),
    "html": st.just("@out/r.html"),
    "cache_dir": st.sampled_from(["@out/cache", "@dir", "@out/new/deeper"]),
    "quantizers": _joined(st.sampled_from(["rtn-w8", "rtn-w4g128", "bnb-nf4", "gptq-w4g128", "hqq-w4g64"])).filter(
        lambda q: q.strip(" ,;\t")
    ),
    "budget": st.sampled_from(["", "recovery=0.2", "utility=0.8 knowmem_f@rtn-w8=0.1", "floor=3,privleak=10"]),
    "device": st.sampled_from(["auto", "cpu"]),
    "dtype": st.sampled_from(DTYPES),
    "batch_size": st.sampled_from(["auto", "1", "16"]),
    "devices": st.sampled_from(["", "0", "0,1"]),
    "device_map": st.sampled_from(["", "auto"]),
    "verdict": st.sampled_from(["point", "strict", "lenient"]),
    "confidence": st.sampled_from(["0.9", "0.95", "0.99"]),
    "attacks": st.just(""),
    "max_samples": st.sampled_from(["1", "3", "1000"]),
    "overlong": st.sampled_from(["error", "truncate"]),
    "retrain_auc": st.sampled_from(["0.5", "muse-news", "muse-books"]),
    "quantized": st.just([]),
    "no_cache": st.booleans(),
    "allow_pickle": st.booleans(),
    "utility_tasks": st.just(""),
    "lm_eval_include": st.sampled_from(["", "@dir"]),
    "benchmark": st.sampled_from(["auto", "muse"]),
    "forget_split": st.just("forget10"),
    "documents": st.just(""),
}


assert set(VALUES) == set(VALID) == {o.name for o in OPTIONS}, "every option is fuzzed"


@st.composite
def settings_of_a_run(draw: st.DrawFn) -> dict[str, tuple[str, Any]]:
    """option name -> (where: "cli" | "ini" | "both", value); unset options are absent. Usually a
    valid run with one or two values broken; sometimes anything at all."""
    chosen: dict[str, tuple[str, Any]] = {}
    anything = draw(st.integers(0, 3)) == 0
    broken = set(draw(st.lists(st.sampled_from([o.name for o in OPTIONS]), max_size=2)))
    for opt in OPTIONS:
        required = opt.name in ("model", "target", "data")
        where = draw(
            st.sampled_from(
                ["cli", "cli", "ini", "both"] if required and not anything else ["unset", "unset", "cli", "ini", "both"]
            )
        )
        if where == "unset":
            continue
        if not anything and opt.name not in broken:
            value: Any = draw(VALID[opt.name])
        elif opt.flag and where != "cli":
            value = draw(INI_BOOLS)
        else:
            value = draw(VALUES[opt.name])
        chosen[opt.name] = (where, value)
    return chosen


# --------------------------------------------------------------------------- the run's directory


def _layout(root: Path, unlearned: Path, target: Path, data: Path) -> dict[str, str]:
    """Real inputs (as links: a link to a model dir must work) and hostile ones, by placeholder."""
    (root / "unlearned").symlink_to(unlearned, target_is_directory=True)
    (root / "target").symlink_to(target, target_is_directory=True)
    (root / "data").symlink_to(data, target_is_directory=True)
    (root / "calib.txt").write_text("Calibration text, one document.\n", encoding="utf-8")
    (root / "plain.txt").write_text("not a directory\n", encoding="utf-8")
    (root / "empty").mkdir()
    (root / "out").mkdir()
    (root / "loop").symlink_to("loop")
    (root / "dangling").symlink_to(root / "gone")
    return {
        "@unlearned": str(root / "unlearned"),
        "@target": str(root / "target"),
        "@data": str(root / "data"),
        "@calib": str(root / "calib.txt"),
        "@file": str(root / "plain.txt"),
        "@dir": str(root / "empty"),
        "@loop": str(root / "loop"),
        "@dangling": str(root / "dangling"),
        "@missing": str(root / "missing" / "x"),
        "@devnull": os.devnull,
        "@link_target": "unlearned",
        "@out": str(root / "out"),
    }  # the last one relative: from the ini, to the ini's dir


def _resolve(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_resolve(v, places) for v in value]
    if isinstance(value, str):
        for key in sorted(places, key=len, reverse=True):
            value = value.replace(key, places[key])
    return value


def _command_line(chosen: dict[str, tuple[str, Any]], places: dict[str, str]) -> tuple[list[str], list[str]]:
    """(argv, ini lines) for the chosen settings."""
    by_name = {o.name: o for o in OPTIONS}
    args: list[str] = []
    ini: list[str] = []
    for name, (where, raw) in chosen.items():
        opt: Option = by_name[name]
        value = _resolve(raw, places)
        if where in ("cli", "both"):
            if opt.flag:
                args += [opt.cli] if value is True or where == "both" else []
            elif opt.multi:
                args += [f"{opt.cli}={v}" for v in value]
            else:
                args.append(f"{opt.cli}={value}")
        if where in ("ini", "both"):
            shown = (
                " ".join(value)
                if isinstance(value, list)
                else ("true" if value is True else "false" if value is False else value)
            )
            # an ini value is one line without NUL (the file format can carry nothing else)
            ini.append(f"{opt.ini} = " + " ".join(str(shown).replace("\x00", "").splitlines()))
    return args, ini


def _ini_text(lines: list[str]) -> str:
    return "[pytest]\n" + "".join(
        line.encode("utf-8", "surrogateescape").decode("utf-8", "replace") + "\n" for line in lines
    )


@pytest.fixture
def places(
    pytester: pytest.Pytester,
    tiny_unlearned_dir: Path,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """The run's directory, with every way to load a model (or build the demo) turned into a failure."""
    import transformers

    import unlearn_assert.demo.family as family
    import unlearn_assert.models as models

    def loaded(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model or tokenizer was loaded while the options were checked")

    for target, name in (
        (models, "load_model"),
        (models, "load_tokenizer"),
        (transformers.AutoModelForCausalLM, "from_pretrained"),
        (transformers.AutoTokenizer, "from_pretrained"),
    ):
        monkeypatch.setattr(target, name, loaded)
    real = family.resolve_demo
    monkeypatch.setattr(
        family, "resolve_demo", lambda spec, **kw: real(spec, **{**kw, "build": False})
    )  # never minutes of building
    yield _layout(pytester.path, tiny_unlearned_dir, tiny_model_dir, tiny_data_dir)


def _check_message(message: str, where: str) -> None:
    assert message.strip() and "\n" not in message, f"{where}: not one line: {message!r}"
    for raw in ("Traceback", "internal error", "INTERNALERROR", "Errno"):
        assert raw not in message, f"{where}: {raw} reached the user: {message!r}"


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def test_configure_accepts_or_gives_one_usage_line(
    pytester: pytest.Pytester, places: dict[str, str], record_property: Any
) -> None:
    """``pytest_configure`` on a real config from random argv + ini: accepted, or one UsageError line."""
    from unlearn_assert.plugin import pytest_configure, run_config_key

    tried = {"accepted": 0, "refused": 0}

    @FUZZ
    @given(chosen=settings_of_a_run())
    def configure(chosen: dict[str, tuple[str, Any]]) -> None:
        args, ini = _command_line(chosen, places)
        (pytester.path / "pytest.ini").write_text(_ini_text(ini), encoding="utf-8")
        config = pytester.parseconfig(*args)
        try:
            pytest_configure(config)
        except pytest.UsageError as exc:
            tried["refused"] += 1
            _check_message(str(exc), f"{args} {ini}")
        else:
            tried["accepted"] += 1
            run = config.stash[run_config_key]
            assert run.enabled == ("model" in chosen and bool(_resolve(chosen["model"][1], places)))

    configure()
    print(
        f"option fuzz: {sum(tried.values())} settings tried in-process ({tried['accepted']} accepted, "
        f"{tried['refused']} refused)"
    )
    record_property("option_fuzz_examples", sum(tried.values()))
    assert tried["accepted"] and tried["refused"], "the strategy must reach both outcomes"


def test_pytest_co_shows_accepted_or_one_error_line(
    pytester: pytest.Pytester, places: dict[str, str], record_property: Any
) -> None:
    """A sample through the whole ``pytest --co`` (in-process): what the user sees is accepted, or one ``ERROR:``
    line."""
    tried = {"n": 0}
    codes: dict[int, int] = {}

    @settings(FUZZ, max_examples=max(5, settings.default.max_examples // 8))
    @given(chosen=settings_of_a_run())
    def run(chosen: dict[str, tuple[str, Any]]) -> None:
        tried["n"] += 1
        args, ini = _command_line(chosen, places)
        (pytester.path / "pytest.ini").write_text(_ini_text(ini), encoding="utf-8")
        # --noconftest: in this checkout the suite sits beside the root conftest, whose profile set-up
        # must not run again inside @given (a user's installed suite has no conftest)
        result = pytester.runpytest_inprocess("--co", "-q", "-p", "no:cacheprovider", "--noconftest", *args)
        codes[int(result.ret)] = codes.get(int(result.ret), 0) + 1
        out = result.stdout.str() + result.stderr.str()
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED, pytest.ExitCode.USAGE_ERROR), (
            f"{args} {ini}: {out[-2000:]}"
        )
        assert "Traceback" not in out and "INTERNALERROR" not in out and "internal error" not in out, (
            f"{args} {ini}: {out[-2000:]}"
        )
        if result.ret == pytest.ExitCode.USAGE_ERROR:
            lines = [line for line in result.stderr.lines if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("ERROR: "), f"{args} {ini}: {lines}"

    run()
    print(f"option fuzz: {tried['n']} pytest --co runs, exit codes {codes}")
    record_property("option_fuzz_runs", tried["n"])
