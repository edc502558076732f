"""Run settings and budgets: one table of options, parsing, and validation.

Pure Python on purpose: pytest imports the plugin (and so this module) in every run, and ``--help``
and ``--co`` must stay instant. Every value is validated here, once, whether it came from the
command line, ``[tool.pytest.ini_options]`` or the library API, and every problem is a one-line
:class:`~unlearn_assert.errors.ConfigError` that names the option and the fix.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .benchmark.registry import AUTO, BENCHMARKS, TOFU_FORGET_SPLITS, all_metric_names
from .errors import ConfigError, QuantizerError
from .fs import user_path
from .names import ARTIFACT_NAME_RE, CONFIDENCES, DTYPES, FP, VERDICT_POLICIES
from .variants import validate_variant_list

DEFAULT_QUANTIZERS = "rtn-w4g128,rtn-w8"
DEVICES_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
#: accelerate's named device maps (``from_pretrained(device_map=...)``)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Option:
    """One ``--unlearn-<name>`` flag, mirrored by the ini key ``unlearn_<name>``."""

    name: str
    help: str
    default: Any = None
    metavar: str | None = None
    flag: bool = False  # store_true option; ini value parsed as a boolean
    multi: bool = False  # repeatable option (a list); ini value split on whitespace
    #: a file or directory: in an ini file it is relative to that file (the plugin resolves it), and an
    #: empty value is unset
    path: bool = False

    @property
    def cli(self) -> str:
        return "--unlearn-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "unlearn_" + self.name

    @property
    def dest(self) -> str:
        return "unlearn_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        "Unlearned model to gate: a local Hugging Face directory. Enables the plugin; without it nothing is loaded.",
        None,
        "DIR",
        path=True,
    ),
    Option("target", "Target (original) model the unlearned model was made from.", None, "DIR", path=True),
    Option(
        "retrain", "Optional model retrained without the forget data (reference for privleak).", None, "DIR", path=True
    ),
    Option(
        "data",
        "MUSE data: a directory in MUSE's layout (verbmem/, knowmem/, privleak/, raw/) or its Hugging Face form "
        "(parquet or save_to_disk), or hf:OWNER/NAME from the local Hugging Face cache; or multiple-choice "
        "questions in WMDP's form (a directory with forget.jsonl|.json|.parquet and optionally utility.*), "
        "an lm-eval task as lm-eval:NAME (lm-eval:wmdp_bio, from the local cache) or a task YAML, scored by "
        "lm-eval.",
        None,
        "DIR",
        path=True,
    ),
    Option(
        "benchmark",
        "What the data measures: auto (detected from the data's layout, named in the header), muse, tofu, "
        "documents (a provider's own forget/ and holdout/ documents) or mc (multiple-choice questions scored by "
        "lm-eval).",
        "auto",
        "NAME",
    ),
    Option("forget_split", "TOFU's forget split: forget01, forget05 or forget10.", "forget10", "SPLIT"),
    Option(
        "documents",
        "How MUSE-style items are derived from your own documents, as KEY=VALUE pairs: seed, chunk_words, "
        "prompt_words, gt_words, verbmem_items, privleak_items, icl_pairs (words; defaults are MUSE-News' medians).",
        "",
        "EXPR",
    ),
    Option(
        "utility_tasks",
        "lm-eval tasks measured as more utility checks beside the benchmark's own, "
        "comma-separated: task, group or tag names (mmlu, arc_easy; their data must be in the local Hugging "
        "Face cache), task YAML paths or WMDP-form files. Each is judged by its accuracy's ratio to the "
        "target's; its budget key is its name (arc_easy=0.95; a YAML or file: its file name without the "
        "suffix). Needs the [lmeval] extra.",
        None,
        "TASKS",
    ),
    Option(
        "lm_eval_include",
        "A folder of your own lm-eval task YAMLs (lm-eval's --include_path), for the names in "
        "--unlearn-utility-tasks and --unlearn-data=lm-eval:NAME.",
        None,
        "DIR",
        path=True,
    ),
    Option(
        "quantizers",
        "Comma-separated quantizer ids to apply, e.g. rtn-w4g128,rtn-w8 (attack ids such as relearn-forget-50 "
        "are accepted too).",
        DEFAULT_QUANTIZERS,
        "IDS",
    ),
    Option(
        "attacks",
        "Comma-separated attack ids, gated like quantizers after them: relearn-forget-<steps>, "
        "relearn-retain-<steps>, optionally -lora (e.g. relearn-forget-50).",
        None,
        "IDS",
    ),
    Option(
        "budget",
        "Budget as KEY=VALUE pairs; keys recovery, utility, privleak, floor, or a metric's name "
        "(verbmem_f, knowmem_f, forget_acc, a --unlearn-utility-tasks task such as arc_easy), each optionally "
        "KEY@QUANTIZER, e.g. 'recovery=0.2 knowmem_f@bnb-fp4=0.1 arc_easy=0.95'. "
        "Default: recovery=0.25 utility=0.9 privleak=25 floor=5.",
        "",
        "EXPR",
    ),
    Option(
        "verdict",
        "How an item is judged against its budget: point (the estimate), strict (the whole "
        "interval within budget) or lenient (fails only when the whole interval is beyond it).",
        "point",
        "POLICY",
    ),
    Option("confidence", "Confidence level of the paired bootstrap intervals: 0.9, 0.95 or 0.99.", 0.95, "LEVEL"),
    Option(
        "calibration",
        "Calibration text for GPTQ/AWQ: a .txt, .json or .jsonl file (default: the data's "
        "raw retain text, MUSE's raw/retain1 + raw/retain2 or raw/retain.txt, else privleak/retain.json).",
        None,
        "FILE",
        path=True,
    ),
    Option(
        "quantized",
        "A checkpoint you already quantized, NAME=DIR (compressed-tensors, bitsandbytes, GPTQ or AWQ; "
        "repeatable): gated as one more quantizer row named NAME.",
        None,
        "NAME=DIR",
        multi=True,
    ),
    Option("json", "Write the JSON report to this path.", None, "PATH", path=True),
    Option("html", "Write the self-contained HTML report to this path.", None, "PATH", path=True),
    Option("device", "Device to evaluate on: auto, cpu, cuda or cuda:N.", "auto", "DEVICE"),
    Option(
        "devices",
        "GPU indices for pytest-xdist workers, e.g. 0,1: worker i uses cuda:<the i-th, cyclically> (default with "
        "--unlearn-device=auto and several GPUs: worker i uses GPU i).",
        None,
        "IDS",
    ),
    Option(
        "device_map",
        "Load the unlearned and target models across devices with accelerate's device map, for models larger "
        "than one GPU: auto (shards on the GPUs, the rest on CPU), balanced or sequential. rtn-* quantizers run on "
        "such a model.",
        None,
        "MAP",
    ),
    Option("dtype", "Weight dtype to load models in: auto (as saved), float32, bfloat16, float16.", "auto", "DTYPE"),
    Option("batch_size", "Generation batch size, or auto (bounded by memory).", "auto", "N"),
    Option("max_samples", "Evaluate only the first N items of every split (smoke runs).", None, "N"),
    Option(
        "overlong",
        "An item longer than the model's context window (its prompt plus the tokens generated after "
        "it): error (one line before anything loads, naming the item) or truncate (as MUSE and lm-eval: a prompt "
        "keeps its end, next to the continuation; a scored text its first tokens; recorded per item in the report).",
        "error",
        "MODE",
    ),
    Option(
        "retrain_auc",
        "Reference privleak AUC when no retrain model is given: a number (0 < AUC <= 1), or muse-news / "
        "muse-books for MUSE's published retrain AUCs.",
        None,
        "AUC",
    ),
    Option("cache_dir", "Directory for cached results (default: the pytest cache dir).", None, "DIR", path=True),
    Option("no_cache", "Do not read or write cached results.", False, flag=True),
    Option("allow_pickle", "Allow pickle weights (*.bin, *.pt): they can run code when loaded.", False, flag=True),
)
OPTION_BY_NAME = {o.name: o for o in OPTIONS}


# --------------------------------------------------------------------------- budgets

BUDGET_KEYS = {
    "recovery": "max share of the forgetting that may come back under a quantizer (0..1)",
    "utility": "min knowmem_r of the quantized model as a fraction of the target's (0..1)",
    "privleak": "max |privleak| in percent (needs a reference AUC)",
    "floor": "min drop m(T) - m(U) in metric points for unlearning to count as working in full precision",
}
_BUDGET_RANGES = {"recovery": (0.0, 1.0), "utility": (0.0, 1.0), "privleak": (0.0, 1000.0), "floor": (0.0, 100.0)}


@dataclass(frozen=True)
class Budget:
    """Thresholds for the verdicts; ``overrides`` maps (key, variant or None) to a value, where
    key is a budget key or a recovery metric (``knowmem_f@bnb-fp4=0.1``)."""

    recovery: float = 0.25
    utility: float = 0.9
    privleak: float = 25.0
    floor: float = 5.0
    overrides: tuple[tuple[str, str | None, float], ...] = ()
    #: metric names a budget key may name beyond the benchmarks' own (the run's --unlearn-utility-tasks)
    metrics: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def recovery_for(self, metric: str, variant: str) -> float:
        return self.value_of((metric, "recovery"), variant)

    def value(self, key: str, variant: str | None = None) -> float:
        return self.value_of((key,), variant)

    def value_of(self, keys: tuple[str, ...], variant: str | None, default: float | None = None) -> float:
        """The budget of ``keys`` (most specific first: a metric, then its budget key) for ``variant``: the most
        specific override wins (metric@variant, key@variant, metric, key), else the first key's base value
        (recovery, utility, privleak, floor), else ``default``."""
        for want in (variant, None) if variant else (None,):
            for key in keys:
                for k, q, v in self.overrides:
                    if k == key and q == want:
                        return v
        base = next((getattr(self, key) for key in keys if key in BUDGET_KEYS), default)
        if base is None:
            raise KeyError(f"no budget for {'/'.join(keys)}")
        return float(base)

    def with_overrides(self, extra: str | Mapping[str, Any], where: str = "unlearn_budget marker") -> Budget:
        """This budget with ``extra`` (a budget expression or mapping) taking precedence."""
        parsed = parse_budget(extra, where, metrics=self.metrics)
        explicit = _explicit_keys(extra)
        base = {k: getattr(parsed, k) for k in BUDGET_KEYS if k in explicit}
        return replace(self, **base, overrides=parsed.overrides + self.overrides)

    def to_dict(self) -> dict[str, Any]:
        skip = ("overrides", "metrics")
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["overrides"] = [{"key": k, "quantizer": q, "value": v} for k, q, v in self.overrides]
        return out


def _explicit_keys(extra: str | Mapping[str, Any]) -> set[str]:
    if isinstance(extra, Mapping):
        return {str(k) for k in extra}
    return {tok.split("=", 1)[0].strip() for tok in re.split(r"[\s,;]+", extra.strip()) if "=" in tok}


def _budget_number(key: str, raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{where}: '{key}={raw}' is not a number; write e.g. {key}=0.25") from None
    base = key if key in _BUDGET_RANGES else "recovery"
    lo, hi = _BUDGET_RANGES[base]
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{where}: '{key}={raw}' is out of range; {base} must be between {lo:g} and {hi:g}")
    return value


def parse_budget(
    text: str | Mapping[str, Any] | None, where: str = "--unlearn-budget", *, metrics: tuple[str, ...] = ()
) -> Budget:
    """Parse ``'recovery=0.25 utility=0.9 knowmem_f@bnb-fp4=0.1'`` (or a mapping of the same). ``metrics``: metric
    names a key may name beyond the benchmarks' own (the run's lm-eval utility tasks)."""
    if text is None or text == "":
        return Budget(metrics=metrics)
    items: list[tuple[str, str]]
    if isinstance(text, Mapping):
        items = [(str(k), str(v)) for k, v in text.items()]
    else:
        items = []
        for token in re.split(r"[\s,;]+", text.strip()):
            if not token:
                continue
            if "=" not in token:
                raise ConfigError(f"{where}: '{token}' is not KEY=VALUE; write e.g. recovery=0.25 utility=0.9")
            k, v = token.split("=", 1)
            items.append((k.strip(), v.strip()))
    base: dict[str, float] = {}
    overrides: list[tuple[str, str | None, float]] = []
    known = sorted(BUDGET_KEYS) + [m for m in dict.fromkeys(all_metric_names() + metrics) if m not in BUDGET_KEYS]
    for key, raw in items:
        name, _, quantizer = key.partition("@")
        if name not in known:
            raise ConfigError(
                f"{where}: unknown budget key '{name}'; known keys: {', '.join(known)} (optionally KEY@QUANTIZER)"
            )
        value = _budget_number(name, raw, where)
        if quantizer:
            # a quantizer id always has a '-'; a name without one is a --unlearn-quantized checkpoint
            # (build_run_config checks that it exists)
            if "-" in quantizer or not ARTIFACT_NAME_RE.fullmatch(quantizer):
                try:
                    validate_variant_list(quantizer)
                except QuantizerError as exc:
                    raise ConfigError(f"{where}: in '{key}': {exc}") from None
            overrides.append((name, quantizer, value))
        elif name not in BUDGET_KEYS:  # a metric's own budget: an override of its kind's key
            overrides.append((name, None, value))
        else:
            base[name] = value
    return Budget(**base, overrides=tuple(overrides), metrics=metrics)


#: an lm-eval task, group or tag name as --unlearn-utility-tasks takes it (and a metric name made of a file name)
TASK_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
#: what --unlearn-data=lm-eval:NAME and --unlearn-utility-tasks=lm-eval:NAME start with
LM_EVAL_PREFIX = "lm-eval:"
_TASK_FILES = (".yaml", ".yml", ".jsonl", ".json", ".parquet")


def utility_task_metric(spec: str) -> str:
    """The metric (and budget key, and item check) name of one --unlearn-utility-tasks entry: a task name itself, a
    task YAML's or WMDP-form file's name without its suffix (known without reading the file)."""
    text = spec.removeprefix(LM_EVAL_PREFIX)
    lower = text.lower()
    if lower.endswith(_TASK_FILES):
        return os.path.basename(text).rsplit(".", 1)[0]
    return text


def parse_utility_tasks(raw: Any) -> tuple[str, ...]:
    """``--unlearn-utility-tasks mmlu,arc_easy,tasks/legal.yaml``: each entry once, each named by a metric name that
    no benchmark's metric and no budget key has (the name is its budget key and its items' check)."""
    cli = "--unlearn-utility-tasks"
    if raw in (None, ""):
        return ()
    items = [str(v) for v in raw] if isinstance(raw, (list, tuple)) else str(raw).split(",")
    specs = tuple(s.strip() for s in items if s.strip())
    taken = {m: "a metric of the benchmarks" for m in all_metric_names()} | {k: "a budget key" for k in BUDGET_KEYS}
    seen: dict[str, str] = {}
    for spec in specs:
        name = utility_task_metric(spec)
        is_file = spec.lower().endswith(_TASK_FILES)
        if not TASK_NAME_RE.fullmatch(name):
            what = "the file name" if is_file else "the task name"
            raise ConfigError(
                f"{cli}: '{spec}': {what} '{name}' must be letters, digits, '_', '.' or '-' "
                "(it names the task's budget key and items); rename it"
            )
        if name in taken:
            fix = "rename the file" if is_file else "name it through a task YAML of another file name"
            raise ConfigError(f"{cli}: '{spec}' would be named '{name}', which is {taken[name]}; {fix}")
        if seen.get(name) == spec:
            raise ConfigError(f"{cli}: '{spec}' is given twice; name each task once")
        if name in seen:
            raise ConfigError(f"{cli}: '{seen[name]}' and '{spec}' are both named '{name}'; name each task once")
        seen[name] = spec
    return specs


def parse_benchmark(raw: Any) -> str:
    """``--unlearn-benchmark``: auto (default) or a registered benchmark's name."""
    name = str(raw if raw not in (None, "") else AUTO).strip().lower()
    if name != AUTO and name not in BENCHMARKS:
        raise ConfigError(
            f"--unlearn-benchmark: '{raw}' is not a benchmark; use {AUTO} or one of {', '.join(BENCHMARKS)}"
        )
    return name


def parse_forget_split(raw: Any) -> str:
    """``--unlearn-forget-split``: one of TOFU's forget splits (forget10 by default)."""
    split = str(raw if raw not in (None, "") else "forget10").strip().lower()
    if split not in TOFU_FORGET_SPLITS:
        raise ConfigError(
            f"--unlearn-forget-split: '{raw}' is not a TOFU forget split; use one of {', '.join(TOFU_FORGET_SPLITS)}"
        )
    return split


def parse_documents(raw: Any) -> tuple[tuple[str, int], ...]:
    """``--unlearn-documents 'seed=1 prompt_words=300'``: the derivation settings of a documents dir, each a known
    key with a whole number, checked together (a prompt and its reference must fit in a chunk)."""
    from .data.documents import DerivationSettings

    if raw in (None, ""):
        return ()
    known = [f.name for f in fields(DerivationSettings)]
    pairs: list[tuple[str, int]] = []
    for token in re.split(r"[\s,;]+", str(raw).strip()):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep or key not in known:
            raise ConfigError(
                f"--unlearn-documents: '{token}' is not KEY=VALUE with a key of {', '.join(known)}; "
                "write e.g. --unlearn-documents 'seed=1 prompt_words=300'"
            )
        try:
            pairs.append((key, int(value)))
        except ValueError:
            raise ConfigError(f"--unlearn-documents: '{token}': {key} must be a whole number") from None
    DerivationSettings(**dict(pairs))  # one line for values that do not fit together
    return tuple(pairs)


#: ``--unlearn-overlong``: what happens to an item beyond the model's context window
OVERLONG_MODES = ("error", "truncate")


def parse_overlong(raw: Any) -> str:
    """``--unlearn-overlong``: error (default) or truncate."""
    mode = str(raw if raw not in (None, "") else "error").strip().lower()
    if mode not in OVERLONG_MODES:
        raise ConfigError(
            f"--unlearn-overlong: '{raw}' is not a mode; use error (refuse an item beyond the context "
            "window) or truncate (cut it as MUSE and lm-eval do)"
        )
    return mode


def parse_verdict(raw: Any) -> str:
    """``--unlearn-verdict``: point (default), strict or lenient."""
    policy = str(raw if raw not in (None, "") else "point").strip().lower()
    if policy not in VERDICT_POLICIES:
        raise ConfigError(
            f"--unlearn-verdict: '{raw}' is not a verdict policy; use one of {', '.join(VERDICT_POLICIES)}"
        )
    return policy


def parse_confidence(raw: Any) -> float:
    """``--unlearn-confidence``: 0.9, 0.95 (default) or 0.99 (also written 90, 95, 99 or 95%)."""
    text = str(raw if raw not in (None, "") else "0.95").strip().rstrip("%")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value > 1:
        value /= 100.0
    level = next((c for c in CONFIDENCES if math.isclose(value, c)), None)
    if level is None:
        raise ConfigError(
            f"--unlearn-confidence: '{raw}' is not a supported level; use one of {', '.join(map(str, CONFIDENCES))}"
        )
    return level


# --------------------------------------------------------------------------- run config


@dataclass(frozen=True)
class Artifact:
    """The user's own quantized checkpoint of U, one ``--unlearn-quantized NAME=DIR|FILE.gguf``, gated as the
    variant ``NAME`` (the one word for it: *artifact*). Only the syntax is checked here;
    :func:`unlearn_assert.engine.inputs.precheck` reads the directory or file (format, headers, architecture)
    before anything loads."""

    name: str
    path: str


def parse_artifacts(values: Any) -> tuple[Artifact, ...]:
    """``NAME=DIR`` entries (a list: one entry per item; or a whitespace-separated string) ->
    artifacts with unique, valid names."""
    if values in (None, "", []):
        return ()
    # a list (command line, ini) holds one entry per item, paths possibly with spaces; a plain
    # string (library use) is split on whitespace
    items = [str(v) for v in values] if isinstance(values, (list, tuple)) else str(values).split()
    out: list[Artifact] = []
    for entry in items:
        if not entry.strip():
            continue
        name, sep, path = entry.strip().partition("=")
        if not sep or not name or not path:
            raise ConfigError(
                f"--unlearn-quantized: '{entry}' is not NAME=DIR; write e.g. --unlearn-quantized my_gptq=out/model-gptq"
            )
        if not ARTIFACT_NAME_RE.fullmatch(name) or name == FP:
            raise ConfigError(
                f"--unlearn-quantized {name}={path}: NAME must be letters, digits, '.', '_' or '+' (not 'fp', no '-'), "
                "e.g. my-gptq is written my_gptq"
            )
        if any(c.name == name for c in out):
            raise ConfigError(
                f"--unlearn-quantized: the name '{name}' is given twice; give each checkpoint its own name"
            )
        out.append(Artifact(name=name, path=str(user_path(path))))
    return tuple(out)


#: set only while :func:`build_run_config` constructs a RunConfig (see :meth:`RunConfig.__post_init__`)
_BUILDING: ContextVar[bool] = ContextVar("unlearn_assert_building_run_config", default=False)


@dataclass(frozen=True)
class RunConfig:
    """Validated settings of one gate run (from options, ini or the API).

    Made only by :func:`build_run_config` (options) or :func:`run_config` (keyword settings), which validate
    every value once; direct construction and ``dataclasses.replace`` are refused, so every RunConfig in a
    run is a valid one."""

    model: str | None = None
    target: str | None = None
    retrain: str | None = None
    data: str | None = None
    #: ``--unlearn-benchmark``: ``auto`` or a name of :data:`unlearn_assert.benchmark.registry.BENCHMARKS`
    benchmark: str = AUTO
    #: ``--unlearn-forget-split``: TOFU's forget split
    forget_split: str = "forget10"
    #: ``--unlearn-documents``: the derivation settings of a documents dir, as (key, value) pairs
    documents: tuple[tuple[str, int], ...] = ()
    #: ``--unlearn-utility-tasks``: lm-eval task specs measured as more utility metrics (names, YAML paths, files)
    utility_tasks: tuple[str, ...] = ()
    #: ``--unlearn-lm-eval-include``: the folder of the user's lm-eval task YAMLs
    lm_eval_include: str | None = None
    #: quantizer and attack ids of --unlearn-quantizers / --unlearn-attacks, as written, in order
    variant_ids: tuple[str, ...] = tuple(DEFAULT_QUANTIZERS.split(","))
    calibration: str | None = None
    artifacts: tuple[Artifact, ...] = ()  # each --unlearn-quantized NAME=DIR, in order
    budget: Budget = field(default_factory=Budget)
    verdict: str = "point"  # --unlearn-verdict: one of names.VERDICT_POLICIES
    confidence: float = 0.95  # --unlearn-confidence: one of names.CONFIDENCES
    json: str | None = None
    html: str | None = None
    device: str = "auto"
    devices: tuple[int, ...] = ()  # GPU indices for xdist workers (--unlearn-devices)
    device_map: str | None = None  # accelerate's device map for U and T (--unlearn-device-map)
    dtype: str = "auto"
    batch_size: int | None = None
    max_samples: int | None = None
    overlong: str = "error"  # --unlearn-overlong: one of OVERLONG_MODES
    retrain_auc: float | None = None
    retrain_auc_source: str | None = None  # where a named --unlearn-retrain-auc came from (None for a plain number)
    cache_dir: str | None = None
    no_cache: bool = False
    allow_pickle: bool = False
    #: what the user wrote for --unlearn-model when it was resolved to ``model`` (``demo:NAME``)
    model_spec: str | None = None

    def __post_init__(self) -> None:
        if not _BUILDING.get():
            raise TypeError(
                "a RunConfig is made by unlearn_assert.config.run_config(**settings) or build_run_config(), "
                "which validate every value; it cannot be constructed directly or with dataclasses.replace"
            )

    @property
    def enabled(self) -> bool:
        return self.model is not None

    @property
    def variants(self) -> tuple[str, ...]:
        """Every variant the run gates besides fp, in the rows' order: the quantizer and attack ids, then the
        names of the user's artifacts."""
        return self.variant_ids + tuple(a.name for a in self.artifacts)

    def artifact(self, name: str) -> Artifact | None:
        """The --unlearn-quantized artifact named ``name``, or None when ``name`` is a quantizer or attack id."""
        return next((a for a in self.artifacts if a.name == name), None)


def _positive_int(opt: Option, raw: Any, allow_auto: bool = False) -> int | None:
    if raw is None or (allow_auto and str(raw).strip().lower() == "auto"):
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = 0
    if value < 1:
        hint = "a positive integer or auto" if allow_auto else "a positive integer"
        raise ConfigError(f"{opt.cli}: '{raw}' is not {hint}")
    return value


def _devices(raw: Any, device: str) -> tuple[int, ...]:
    """``--unlearn-devices 0,1`` -> (0, 1): GPU indices, each once, for a device of auto or cuda."""
    opt = OPTION_BY_NAME["devices"]
    if raw in (None, ""):
        return ()
    parts = [p.strip() for p in str(raw).split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"{opt.cli}: '{raw}' is not a comma-separated list of GPU indices; write e.g. {opt.cli}=0,1")
    indices = tuple(int(p) for p in parts)
    if len(set(indices)) != len(indices):
        raise ConfigError(f"{opt.cli}: '{raw}' names a GPU twice; list each GPU once")
    if device not in ("auto", "cuda"):
        raise ConfigError(
            f"{opt.cli} assigns GPUs to workers, but --unlearn-device is '{device}'; use --unlearn-device=auto or cuda "
            "with it"
        )
    return indices


def _as_bool(opt: Option, raw: Any) -> bool:
    if isinstance(raw, bool) or raw is None:  # None: unset
        return bool(raw)
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"ini key {opt.ini}: '{raw}' is not a boolean; use true or false")


#: MUSE's published retrain-model AUCs (Min-40%, forget vs holdout: the key its eval.py normalises privleak
#: with), from AUC_RETRAIN in constants.py of github.com/swj0419/muse_bench (commit 75d1762); see docs/metrics.md.
PUBLISHED_RETRAIN_AUCS: dict[str, tuple[float, str]] = {
    "muse-news": (0.4772, "MUSE AUC_RETRAIN[news][forget_holdout_Min-40%] (muse_bench constants.py)"),
    "muse-books": (0.5393, "MUSE AUC_RETRAIN[books][forget_holdout_Min-40%] (muse_bench constants.py)"),
}


#: The reference AUC privleak divides by, written once for the option, ``ua.evaluate`` and the retrain row:
#: any AUC above 0 (``privleak = (AUC - AUC_R) / AUC_R``); 1 is a valid, if extreme, AUC.
REFERENCE_AUC_RANGE = "(0, 1]"


def reference_auc_ok(value: float) -> bool:
    """True when ``value`` can be privleak's reference AUC (:data:`REFERENCE_AUC_RANGE`)."""
    return 0.0 < value <= 1.0


def parse_retrain_auc(raw: Any) -> tuple[float, str | None]:
    """``--unlearn-retrain-auc``: an AUC in :data:`REFERENCE_AUC_RANGE`, or the name of a published reference
    (muse-news, muse-books); returns the AUC and, for a name, its human-readable source."""
    text = str(raw).strip()
    if text.lower() in PUBLISHED_RETRAIN_AUCS:
        return PUBLISHED_RETRAIN_AUCS[text.lower()]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not reference_auc_ok(value):
        raise ConfigError(
            f"--unlearn-retrain-auc: '{raw}' is not an AUC in {REFERENCE_AUC_RANGE} or a published reference; "
            f"pass e.g. 0.48, or one of {', '.join(PUBLISHED_RETRAIN_AUCS)}"
        )
    return value, None


def _with_attacks(quantizers: tuple[str, ...], raw: Any) -> tuple[str, ...]:
    """``--unlearn-attacks``: attack ids only, appended to the quantizers (each variant once)."""
    from .variants.attacks import is_attack_id

    try:
        attacks = validate_variant_list(str(raw), "attack")
        combined = validate_variant_list(",".join(quantizers + attacks))
    except QuantizerError as exc:
        raise ConfigError(f"--unlearn-attacks: {exc}") from None
    wrong = [a for a in attacks if not is_attack_id(a)]
    if wrong:
        raise ConfigError(
            f"--unlearn-attacks: '{wrong[0]}' is a quantizer, not an attack; list it in --unlearn-quantizers"
        )
    return combined


def build_run_config(get: Callable[[Option], Any], *, model_spec: str | None = None) -> RunConfig:
    """Build and validate a RunConfig from option values alone (no file is read: see
    :func:`unlearn_assert.engine.inputs.precheck` for the inputs). ``get(option)`` returns the
    effective raw value of an option (command line over ini over default), or None when unset.
    ``demo:NAME`` must already be resolved to directories (the plugin and the CLI do it); pass what
    the user wrote as ``model_spec`` so the report can show it."""
    raw = {o.name: get(o) for o in OPTIONS}
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.path:
            v = raw[opt.name]
            values[opt.name] = str(v) if v not in (None, "") else None
    quantizers = DEFAULT_QUANTIZERS if raw["quantizers"] is None else str(raw["quantizers"])  # unset: the default
    if not quantizers.strip():  # set, but to nothing: a quantization gate with nothing to quantize
        raise ConfigError(
            "--unlearn-quantizers is empty, so the gate has no quantizer to test; pass ids such as "
            f"{DEFAULT_QUANTIZERS}, "
            "or leave the option out for that default"
        )
    try:
        values["variant_ids"] = validate_variant_list(quantizers)
    except QuantizerError as exc:
        raise ConfigError(f"--unlearn-quantizers: {exc}") from None
    if raw["attacks"] not in (None, ""):
        values["variant_ids"] = _with_attacks(values["variant_ids"], raw["attacks"])
    values["benchmark"] = parse_benchmark(raw["benchmark"])
    values["forget_split"] = parse_forget_split(raw["forget_split"])
    values["documents"] = parse_documents(raw["documents"])
    values["utility_tasks"] = parse_utility_tasks(raw["utility_tasks"])
    task_metrics = tuple(utility_task_metric(t) for t in values["utility_tasks"])
    values["budget"] = parse_budget(raw["budget"] or "", metrics=task_metrics)
    values["verdict"], values["confidence"] = parse_verdict(raw["verdict"]), parse_confidence(raw["confidence"])
    device = str(raw["device"] or "auto").strip()
    if not DEVICES_RE.match(device):
        raise ConfigError(f"--unlearn-device: '{device}' is not a device; use auto, cpu, cuda or cuda:N")
    values["device"] = device
    values["devices"] = _devices(raw["devices"], device)
    device_map = str(raw["device_map"] or "").strip() or None
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise ConfigError(
            f"--unlearn-device-map: '{device_map}' is not one of accelerate's device maps; use {', '.join(DEVICE_MAPS)}"
        )
    values["device_map"] = device_map
    dtype = str(raw["dtype"] or "auto").strip()
    if dtype not in DTYPES:
        raise ConfigError(f"--unlearn-dtype: '{dtype}' is not supported; use one of {', '.join(DTYPES)}")
    values["dtype"] = dtype
    values["batch_size"] = _positive_int(OPTION_BY_NAME["batch_size"], raw["batch_size"], allow_auto=True)
    values["max_samples"] = _positive_int(OPTION_BY_NAME["max_samples"], raw["max_samples"])
    values["overlong"] = parse_overlong(raw["overlong"])
    auc = raw["retrain_auc"]
    if auc not in (None, ""):
        values["retrain_auc"], values["retrain_auc_source"] = parse_retrain_auc(auc)
    for name in ("no_cache", "allow_pickle"):
        values[name] = _as_bool(OPTION_BY_NAME[name], raw[name])
    if values["model"] is not None and values["model"].startswith("demo:"):
        raise ConfigError(
            f"--unlearn-model: '{values['model']}' must be resolved to the demo family's directories before the run "
            "config is built; use the pytest plugin or unlearn_assert.demo.family.resolve_demo"
        )
    if values["model"] is not None:  # without --unlearn-model nothing is checked
        values["artifacts"] = parse_artifacts(raw["quantized"])
    values["model_spec"] = model_spec
    building = _BUILDING.set(True)
    try:
        cfg = RunConfig(**values)
    finally:
        _BUILDING.reset(building)
    names = {a.name for a in cfg.artifacts}
    for key, quantizer, _ in cfg.budget.overrides:
        if quantizer is not None and "-" not in quantizer and quantizer not in names:
            raise ConfigError(
                f"--unlearn-budget: '{key}@{quantizer}' names no quantizer id and no --unlearn-quantized checkpoint; "
                f"checkpoints: {', '.join(sorted(names)) or 'none'}"
            )
    return cfg


def run_config(*, model_spec: str | None = None, **settings: Any) -> RunConfig:
    """A validated RunConfig from keyword settings, the options' names without ``--unlearn-`` (``model``,
    ``quantizers``, ``budget``...), each validated as its option is; unset ones take the option's default.
    Paths may be :class:`os.PathLike`, id lists a string or a sequence of ids."""
    known = {o.name for o in OPTIONS}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown gate setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    def value(opt: Option) -> Any:
        v = settings.get(opt.name, opt.default)
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        if isinstance(v, (list, tuple)) and not opt.multi:
            return ",".join(str(x) for x in v)
        return v

    return build_run_config(value, model_spec=model_spec)
