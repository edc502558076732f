"""The inputs of one gate run: the data, the calibration text, the models' fingerprints, and loading
and releasing the models; and :func:`precheck`, every input checked from its files before anything loads.

Memory rule: at most the unlearned and the target model are resident (plus, inside a source's
``with`` block, one variant of one of them); the retrain model is loaded only for its own row and
released right after (:meth:`Inputs.release`). Nothing is loaded while every needed row is cached.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import FingerprintCache, ResultCache
from ..config import OPTION_BY_NAME, RunConfig
from ..errors import ConfigError, DataError, ModelError
from ..fs import link_problem, user_path
from ..names import Role

if TYPE_CHECKING:  # pragma: no cover
    from ..benchmark.base import Benchmark
    from ..models import LoadedModel
    from ..quant.calibration import Calibration
    from .footprint import Footprint

__all__ = ["Inputs", "Progress", "precheck"]

#: Receives one short line per phase of the run (loading, quantizing, evaluating).
Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


class Inputs:
    """What the rows of one run are computed from, each resolved once and only when first needed."""

    def __init__(
        self, run: RunConfig, cache: ResultCache, progress: Progress | None = None, device: str | None = None
    ) -> None:
        if not run.enabled:
            raise ConfigError("a gate needs a model; pass --unlearn-model (or model= to unlearn_assert.gate)")
        self.run = run
        #: where models load: ``run.device``, or the device this process was given (one GPU per xdist worker);
        #: results do not depend on which GPU, so cache keys keep ``run.device``
        self.device = device or run.device
        self.progress = progress or _silent
        self._fingerprints = FingerprintCache(cache)
        self._fps: dict[str, str] = {}
        self._dtypes: dict[str, str] = {}
        self._models: dict[Role, LoadedModel] = {}
        self._benchmark: Benchmark | None = None
        self._full_data: Any = None
        self._data: Any = None
        self._calibration: Calibration | None = None

    def path(self, role: Role) -> str | None:
        return {"unlearned": self.run.model, "target": self.run.target, "retrain": self.run.retrain}[role]

    # ------------------------------------------------------------------ data

    @property
    def benchmark(self) -> Benchmark:
        """What the rows measure: the run's benchmark (``--unlearn-benchmark``, or detected from the data)."""
        if self._benchmark is None:
            from ..benchmark import benchmark_for

            self._benchmark = benchmark_for(self.run)
        return self._benchmark

    @property
    def full_data(self) -> Any:
        """The whole data set (calibration text is never cut by --unlearn-max-samples)."""
        if self._full_data is None:
            self._full_data = self.benchmark.load(str(self.run.data))
        return self._full_data

    @property
    def data(self) -> Any:
        """The evaluated data: the first --unlearn-max-samples items of every split."""
        if self._data is None:
            self._data = self.full_data.limited(self.run.max_samples)
        return self._data

    def calibration(self) -> Calibration | None:
        """Calibration text for GPTQ/AWQ (the option's file, else the data's retain text; None when
        neither exists, which :func:`precheck` refuses for a calibrated quantizer), read once."""
        if self._calibration is None:
            from ..quant.calibration import resolve_calibration

            self._calibration = resolve_calibration(self.run.calibration, self.full_data)
        return self._calibration

    # ------------------------------------------------------------------ fingerprints

    def fingerprint(self, role: Role) -> str:
        """The content hash of a model directory, computed once per run (and cached by file stats)."""
        if role not in self._fps:
            self._fps[role] = self._fingerprints.fingerprint(str(self.path(role)))
        return self._fps[role]

    def artifact_fingerprint(self, name: str, path: str) -> str:
        """The content hash of the user's quantized artifact ``name``, computed once per run (the
        on-disk fingerprint cache is off under --unlearn-no-cache, and an artifact is large)."""
        key = "artifact:" + name
        if key not in self._fps:
            self._fps[key] = self._fingerprints.fingerprint(path)
        return self._fps[key]

    def compute_dtype(self, role: Role) -> str:
        """The dtype ``role`` will be evaluated in, from its config alone (no load): what
        ``--unlearn-dtype auto`` resolves to on this machine (float32 on a CPU without native bf16).
        Part of the row's cache key, so a result computed in bf16 on one CPU never stands for the
        float32 result on another."""
        import json

        from ..models import resolve_device, resolve_dtype

        if role not in self._dtypes:
            try:
                config = json.loads((Path(str(self.path(role))) / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                config = {}
            stored = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
            device = self.device if self.device.startswith("cuda") else resolve_device(self.device)
            self._dtypes[role] = str(resolve_dtype(self.run.dtype, stored, device)).removeprefix("torch.")
        return self._dtypes[role]

    def fingerprints(self) -> dict[str, str]:
        """The models' fingerprints known so far, by role (for provenance)."""
        return {role: fp for role, fp in self._fps.items() if not role.startswith("artifact:")}

    # ------------------------------------------------------------------ models

    def model(self, role: Role) -> LoadedModel:
        """Load a model once; the unlearned and retrain models are checked against the target."""
        if role not in self._models:
            from ..models import check_compatible, load_model

            start = time.perf_counter()
            loaded = load_model(
                str(self.path(role)),
                device=self.device,
                dtype=self.run.dtype,
                allow_pickle=self.run.allow_pickle,
                known_fingerprint=self.fingerprint(role),
                device_map=self.run.device_map,
            )
            self._fps[role] = loaded.fingerprint
            if role != "target":
                check_compatible(self.model("target"), loaded, role=role)
            self._models[role] = loaded
            self.progress(f"loaded {role} model {loaded.path} ({time.perf_counter() - start:.1f} s)")
        return self._models[role]

    def release(self, role: Role) -> None:
        """Drop a loaded model (and give its GPU memory back)."""
        if self._models.pop(role, None) is not None:
            _give_back(always=True)

    def close(self) -> None:
        """Drop every model at the end of a run: one collection, and only where a GPU's memory must be given back
        (on CPU the process ends next, and each full collection over a heap with torch and transformers loaded
        costs about 0.25 s, on the critical path of every run)."""
        if self._models:
            self._models.clear()
            _give_back(always=False)


def _give_back(always: bool) -> None:
    """Collect the dropped models' cycles (``always``, or when CUDA holds memory) and return the GPU's cache."""
    import torch

    cuda = torch.cuda.is_available()
    if always or cuda:
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------- option-time checks


def _writable_file(option: str, raw: str) -> None:
    opt = OPTION_BY_NAME[option]
    path = user_path(raw)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(
            f"{opt.cli}: '{raw}' is a directory; give a file path such as {raw.rstrip('/')}/report.{opt.name}"
        )
    if path.exists() and not path.is_file():  # a report replaces its file: never a device (/dev/null), FIFO or socket
        raise ConfigError(
            f"{opt.cli}: '{raw}' is not a regular file; give the path of a report file to write, or leave the option "
            "out"
        )
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{opt.cli}: '{parent}' in '{raw}' is a file, not a directory; choose another path")
    if not parent.is_dir():
        raise ConfigError(f"{opt.cli}: the directory of '{raw}' does not exist; create it first or choose another path")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{opt.cli}: '{raw}' is not writable; choose a path you can write to")


def _check_device(device: str) -> None:
    """The requested device exists on this machine. torch is imported only for a device other than
    auto and cpu, so ``pytest --co`` without a GPU request stays torch-free."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no CUDA device is visible"
            raise ConfigError(
                f"--unlearn-device: '{device}' was requested but CUDA is not available ({build}); "
                "use --unlearn-device=cpu or auto, or run on a machine with a GPU"
            )
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"--unlearn-device: '{device}' does not exist; this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1} (check CUDA_VISIBLE_DEVICES)"
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "--unlearn-device: 'mps' was requested but Apple's MPS backend is not available; use --unlearn-device=cpu "
            "or auto"
        )


def _check_cache_dir(raw: str) -> None:
    """``--unlearn-cache-dir`` is a directory we can write, or one we can create (nothing is created here)."""
    cli = OPTION_BY_NAME["cache_dir"].cli
    path = user_path(raw)
    probe = path
    while not probe.exists() and probe != probe.parent:  # the nearest ancestor that exists
        problem = link_problem(probe)
        if problem is not None:
            raise ConfigError(f"{cli}: {problem}; pass a directory for cached results, or --unlearn-no-cache")
        probe = probe.parent
    if not probe.is_dir():
        where = f"'{raw}' is a file" if probe == path else f"'{probe}' (on the way to '{raw}') is a file"
        raise ConfigError(
            f"{cli}: {where}, not a directory; pass a directory for cached results (it is created if missing), or "
            "--unlearn-no-cache"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        verb = "written" if probe == path else f"created in '{probe}'"
        raise ConfigError(
            f"{cli}: '{raw}' cannot be {verb} (permission denied); choose a directory you can write to, or pass "
            "--unlearn-no-cache"
        )


def _precheck_relearn(run: RunConfig, benchmark: Any, data: Any) -> None:
    """Every attack of the run can run on ``data`` (cut to --unlearn-max-samples): the benchmark splits its forget
    items, the retain text exists, one device. One :class:`ConfigError` line otherwise (before any model loads)."""
    from ..data.muse import RAW_RETAIN_HINT
    from ..variants.attacks import is_attack_id, parse_attack_id

    attacks = [parse_attack_id(v) for v in run.variant_ids if is_attack_id(v)]
    if attacks and run.device_map is not None:
        raise ConfigError(
            f"--unlearn-quantizers: {attacks[0].id} fine-tunes a copy on one device; drop --unlearn-device-map for it"
        )
    for spec in attacks:
        try:
            if spec.corpus == "forget":
                benchmark.relearn_split(data.limited(run.max_samples))
            elif not any(d.strip() for d in getattr(data, "raw_retain_docs", None) or ()):
                raise DataError(
                    f"data dir '{data.path}' has no retain text to relearn on ({RAW_RETAIN_HINT}, or TOFU's "
                    "retain split)"
                )
        except DataError as exc:
            raise ConfigError(f"--unlearn-quantizers {spec.id}: {exc}") from None


def _precheck_budget(run: RunConfig, benchmark: Any) -> None:
    """A budget key that names a metric names one this run judges (a TOFU metric in a budget of a MUSE run is
    a typo, or the wrong data): one line that lists the run's."""
    judged = {m.name for m in benchmark.metrics if m.role != "reported"}
    from ..config import BUDGET_KEYS

    for key, variant, _ in run.budget.overrides:
        if key not in BUDGET_KEYS and key not in judged:
            where = f"{key}@{variant}" if variant else key
            raise ConfigError(
                f"--unlearn-budget: '{where}' names a metric the {benchmark.name} benchmark does not judge; "
                f"its metrics: {', '.join(sorted(judged))}"
            )


def precheck(run: RunConfig, *, windows: bool = True) -> Footprint:
    """Cheap checks of every input of ``run`` before any model loads, from headers only: the device,
    the cache dir, directory shape (links resolved), complete safetensors files, the tokenizer files,
    target/unlearned pairing from config, headers and tokenizer files, the whole data set, every evaluated
    item's length against the context window (:mod:`.overlong`; ``windows=False`` skips it, as a process
    whose controller checked it does), the calibration file, the user's quantized artifacts and the report
    paths. Every problem is one :class:`ConfigError` line (a pytest usage error, exit 4). Returns what the
    rows will cost (:class:`~.footprint.Footprint`)."""
    from ..data.muse import RAW_RETAIN_HINT
    from ..models import check_model_dir, check_tokenizer_files, precheck_pair, read_weight_headers, weight_files
    from ..quant.artifact import read_artifact
    from ..quant.calibration import calibration_from_data, load_calibration_file, needs_calibration
    from .footprint import Footprint, row_count
    from .overlong import check_contexts

    _check_device(run.device)
    if run.cache_dir is not None and not run.no_cache:
        _check_cache_dir(run.cache_dir)
    if run.calibration is not None:
        load_calibration_file(run.calibration)  # a missing or malformed file is a usage error now
    for artifact in run.artifacts:
        if artifact.path.lower().endswith(".gguf"):
            from ..quant.gguf_header import check_gguf_file

            check_gguf_file(artifact.name, artifact.path, run.target)  # the header only, in milliseconds
        else:
            read_artifact(artifact.name, artifact.path, run.target)
    params = weight_bytes = 0
    for name in ("model", "target", "retrain"):
        value = getattr(run, name)
        if value is None:
            if name == "target":
                raise ConfigError(
                    "--unlearn-target is required with --unlearn-model; pass the model the unlearned one was made from"
                )
            continue
        try:
            directory = check_model_dir(value, allow_pickle=run.allow_pickle)
            shapes = read_weight_headers(directory)
            if name == "target":
                params = sum(math.prod(shape) for shape in shapes.values())
                weight_bytes = sum(f.stat().st_size for f in weight_files(directory))
            check_tokenizer_files(directory)
        except ModelError as exc:
            raise ConfigError(f"{OPTION_BY_NAME[name].cli}: {exc}") from None
    for name, role in (("model", "unlearned"), ("retrain", "retrain")):
        value = getattr(run, name)
        if value is not None:
            try:
                precheck_pair(str(run.target), value, role=role)
            except ModelError as exc:
                raise ConfigError(f"{OPTION_BY_NAME[name].cli}: {exc}") from None
    from ..quant.support import check_families
    from ..variants.attacks import is_attack_id

    check_families(
        [q for q in run.variant_ids if not is_attack_id(q)], str(run.target)
    )  # a family a backend cannot gate
    if run.lm_eval_include is not None and not user_path(run.lm_eval_include).is_dir():
        raise ConfigError(
            f"--unlearn-lm-eval-include: '{run.lm_eval_include}' is not a directory; pass the folder that "
            "holds your lm-eval task YAMLs"
        )
    if run.data is None:
        raise ConfigError(
            "--unlearn-data is required with --unlearn-model; pass a data directory in a layout the gate "
            "reads (MUSE's, or hf:OWNER/NAME)"
        )
    from ..benchmark import benchmark_for

    try:
        benchmark = benchmark_for(run)
        data: Any = benchmark.load(run.data)
    except DataError as exc:
        raise ConfigError(f"--unlearn-data: {exc}") from None
    tokens = check_contexts(run, benchmark, data.limited(run.max_samples)).tokens if windows else None

    _precheck_relearn(run, benchmark, data)
    _precheck_budget(run, benchmark)
    calibrated = needs_calibration([q for q in run.variant_ids if not is_attack_id(q)])
    if calibrated and run.calibration is None and calibration_from_data(data) is None:
        raise ConfigError(
            f"--unlearn-quantizers: {', '.join(calibrated)} calibrate on text, and data dir '{run.data}' has no raw "
            "retain text "
            f"({RAW_RETAIN_HINT}) or privleak retain texts; pass --unlearn-calibration=FILE"
        )
    for name in ("json", "html"):
        value = getattr(run, name)
        if value is not None:
            _writable_file(name, value)
    return Footprint(params=params, weight_bytes=weight_bytes, rows=row_count(run), tokens=tokens)
