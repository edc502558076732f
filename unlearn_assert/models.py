"""Safe loading of local Hugging Face causal-LM directories, fingerprints, and pairing checks.

Why so careful: a release gate runs on the checkpoint a provider is about to publish, in CI, with
whatever is in the directory. So we only read safetensors (pickle executes code on load), never
set ``trust_remote_code``, never touch the hub, never write into the model directory, and turn
every way a directory can be wrong into one line that says what to do about it.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ModelError
from .fs import link_problem, user_path
from .names import DTYPES
from .plain import Digest

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Files that define a model's behaviour besides its weights; all that exist go into the fingerprint.
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class LoadedModel:
    """A model and tokenizer in memory, with where they came from.

    ``fingerprint`` is the sha256 of the directory's content (config, tokenizer, weights), so cached
    results stay valid when a checkpoint is copied and become invalid when one byte changes.
    ``dtype`` is the compute dtype actually used (see :func:`resolve_dtype`); the checkpoint's own is
    ``info["checkpoint_dtype"]``.
    """

    model: Any
    tokenizer: Any
    path: str
    fingerprint: str
    device: str = "cpu"
    dtype: str = "float32"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).name


# --------------------------------------------------------------------------- directory checks


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.safetensors") if p.is_file())


def _pickle_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def _check_links(directory: Path, path: str | os.PathLike[str]) -> None:
    """Name a symbolic link among the model's files that leads nowhere (a loop, a deleted target):
    otherwise it reads as a missing file, or a shard silently drops out of the weights."""
    names = [*CONFIG_FILES, *TOKENIZER_FILES, "model.safetensors.index.json"]
    for entry in [directory / n for n in names] + sorted(directory.glob("*.safetensors")):
        problem = link_problem(entry)
        if problem is not None:
            raise ModelError(
                f"model directory '{path}': {problem}; replace the link with the file itself or fix its target"
            )
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"'{index}' is not a valid safetensors index ({type(exc).__name__}); re-save the model with "
                "model.save_pretrained(DIR)"
            ) from None
        missing = sorted(str(s) for s in shards if not (directory / str(s)).is_file())
        if missing:
            raise ModelError(
                f"model directory '{path}' lacks the weight shard {missing[0]} that model.safetensors.index.json "
                "lists; "
                "copy every shard, or re-save the model with model.save_pretrained(DIR)"
            )


def check_model_dir(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Path:
    """Validate the shape of a model directory without loading it (cheap; used at option parse time)."""
    directory = user_path(path)
    problem = link_problem(directory)
    if problem is not None:
        raise ModelError(f"model path {problem}; pass a local Hugging Face model directory")
    if not directory.exists():
        raise ModelError(
            f"model path '{path}' does not exist; pass a local Hugging Face model directory (config.json + "
            "*.safetensors)"
        )
    if not directory.is_dir():
        raise ModelError(
            f"model path '{path}' is not a directory; pass the directory that holds config.json and the *.safetensors "
            "files"
        )
    _check_links(directory, path)
    if not (directory / "config.json").is_file():
        raise ModelError(f"model directory '{path}' has no config.json; save the model with model.save_pretrained(DIR)")
    if not weight_files(directory):
        pickles = _pickle_files(directory)
        if pickles and not allow_pickle:
            raise ModelError(
                f"model directory '{path}' has only pickle weights ({pickles[0].name}), which can run code when "
                "loaded; "
                "convert them with model.save_pretrained(DIR, safe_serialization=True) or pass --unlearn-allow-pickle "
                "if you trust them"
            )
        if not pickles:
            raise ModelError(
                f"model directory '{path}' has no weight files (*.safetensors); save the model with "
                "model.save_pretrained(DIR)"
            )
    return directory


def check_safetensors_file(file: Path) -> dict[str, Any]:
    """Parse a safetensors header and check that the file is complete; returns the header.

    A truncated upload or a partial copy is the common failure in CI; the safetensors library reports
    it late and obscurely, so we compare the header's byte ranges against the file size up front.
    """
    size = file.stat().st_size
    try:
        with file.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) != 8:
                raise ValueError("shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header length {header_len} exceeds the file size {size}")
            header = json.loads(fh.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = 0
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            begin, stop = meta["data_offsets"]
            if not (isinstance(begin, int) and isinstance(stop, int) and 0 <= begin <= stop):
                raise ValueError(f"tensor '{name}' has invalid offsets")
            shape = meta["shape"]  # read_weight_headers and the pairing check rely on it
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise ValueError(f"tensor '{name}' has an invalid shape")
            if not isinstance(meta.get("dtype"), str):
                raise ValueError(f"tensor '{name}' has no dtype")
            end = max(end, stop)
        if 8 + header_len + end != size:
            raise ValueError(f"expected {8 + header_len + end} bytes, found {size} (truncated or padded)")
        return header
    except OSError as exc:
        raise ModelError(
            f"weight file '{file}' cannot be read ({exc.strerror or exc}); check that it is a readable file"
        ) from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:  # json errors are ValueErrors
        raise ModelError(
            f"weight file '{file}' is corrupt or truncated ({exc}); re-download or re-save the checkpoint"
        ) from None


#: The file sets from which ``AutoTokenizer`` can build a tokenizer without remote code: a fast
#: tokenizer, a SentencePiece model, a byte-level BPE vocabulary, a WordPiece vocabulary.
TOKENIZER_SETS: tuple[tuple[str, ...], ...] = (
    ("tokenizer.json",),
    ("tokenizer.model",),
    ("vocab.json", "merges.txt"),
    ("vocab.txt",),
)


def check_tokenizer_files(directory: Path) -> None:
    """Refuse a model directory whose tokenizer ``AutoTokenizer`` cannot load, from the file names
    (and tokenizer_config.json) alone: without it the run fails at test time with transformers'
    message instead of a usage error that names the missing files."""
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ModelError(
                f"'{config}' cannot be read as JSON ({type(exc).__name__}); re-save the tokenizer with "
                "tokenizer.save_pretrained(DIR)"
            ) from None
        if not isinstance(value, dict):
            raise ModelError(
                f"'{config}' is not a JSON object; re-save the tokenizer with tokenizer.save_pretrained(DIR)"
            )
    have = {n for n in TOKENIZER_FILES if (directory / n).is_file()}
    if any(all(n in have for n in group) for group in TOKENIZER_SETS) or any(directory.glob("*.model")):
        return
    pair = [n for n in ("vocab.json", "merges.txt") if n in have]
    found = (
        f"{pair[0]} is there without {({'vocab.json', 'merges.txt'} - set(pair)).pop()}"
        if len(pair) == 1
        else f"only {', '.join(sorted(have))} is there"
        if have
        else "none of them is there"
    )
    raise ModelError(
        f"model directory '{directory}' has no tokenizer that AutoTokenizer can load: it needs tokenizer.json, or "
        "tokenizer.model, "
        f"or vocab.json + merges.txt ({found}); save them next to the model with tokenizer.save_pretrained(DIR)"
    )


def read_weight_headers(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from every safetensors header (validating each file); no torch needed."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(directory):
        for name, meta in check_safetensors_file(file).items():
            if name != "__metadata__":
                shapes[name] = tuple(meta["shape"])
    return shapes


def read_model_files(path: str, where: str, fix: str) -> tuple[Path, dict[str, Any], dict[str, tuple[int, ...]]]:
    """(directory, config.json, {tensor name: shape}) of a Hugging Face model directory, from its files
    alone (no torch): the option-time read of ``--unlearn-quantized NAME=DIR`` (:mod:`.quant.artifact`)
    and of the target a ``NAME=FILE.gguf`` is checked against (:mod:`.quant.gguf_header`). Every problem
    is one :class:`ConfigError` line starting with ``where``: the directory's shape, a truncated or
    corrupt safetensors file (as for ``--unlearn-model``), an unreadable config.json (ending with ``fix``)."""
    try:
        directory = check_model_dir(path)
        weights = read_weight_headers(directory)
    except ModelError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read config.json ({exc}); {fix}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: config.json is not a JSON object; {fix}")
    return directory, config, weights


def _vocab_from_files(directory: Path) -> dict[str, int] | None:
    """The tokenizer vocabulary read straight from tokenizer.json / vocab.json (None if neither)."""
    try:
        if (directory / "tokenizer.json").is_file():
            data = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
            vocab = dict(data.get("model", {}).get("vocab") or {})
            for tok in data.get("added_tokens", []):
                vocab[tok["content"]] = tok["id"]
            return vocab
        if (directory / "vocab.json").is_file():
            return dict(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"tokenizer files in '{directory}' are malformed ({exc}); re-save them with tokenizer.save_pretrained(DIR)"
        ) from None
    return None


def _architecture(directory: Path) -> str:
    try:
        cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(
            f"'{directory / 'config.json'}' is not valid JSON ({exc}); fix or re-save config.json"
        ) from None
    if not isinstance(cfg, dict):
        raise ModelError(
            f"'{directory / 'config.json'}' is not a JSON object; re-save it with model.save_pretrained(DIR)"
        )
    archs = cfg.get("architectures") or [cfg.get("model_type", "?")]
    if not isinstance(archs, list) or not isinstance(archs[0], str):  # transformers reads a list of class names
        raise ModelError(
            f"'{directory / 'config.json'}' has architectures {json.dumps(archs)[:80]}, not a list of class names such "
            "as "
            '["LlamaForCausalLM"]; re-save it with model.save_pretrained(DIR)'
        )
    return archs[0]


def precheck_pair(target: str | os.PathLike[str], other: str | os.PathLike[str], *, role: str = "unlearned") -> None:
    """The checks of :func:`check_compatible`, from the files alone (config.json, safetensors
    headers, tokenizer.json): cheap enough for option parsing, so a mismatch is a usage error
    before anything is loaded. Pickle-only directories are checked at load time instead."""
    t_dir, o_dir = Path(target), Path(other)
    t_arch, o_arch = _architecture(t_dir), _architecture(o_dir)
    if t_arch != o_arch:
        raise ModelError(
            f"{role} model '{other}' is a {o_arch} but the target '{target}' is a {t_arch}; pass the target the {role} "
            "model was made from"
        )
    if weight_files(t_dir) and weight_files(o_dir):
        t_shapes, o_shapes = read_weight_headers(t_dir), read_weight_headers(o_dir)
        if t_shapes != o_shapes:
            diff = sorted(set(t_shapes) ^ set(o_shapes)) or sorted(n for n in t_shapes if t_shapes[n] != o_shapes[n])
            raise ModelError(
                f"{role} model '{other}' does not match the target's parameters ({diff[0]}: {t_shapes.get(diff[0])} vs "
                f"{o_shapes.get(diff[0])}); pass the target the {role} model was made from"
            )
    t_vocab, o_vocab = _vocab_from_files(t_dir), _vocab_from_files(o_dir)
    if t_vocab is not None and o_vocab is not None and t_vocab != o_vocab:
        raise ModelError(
            f"{role} model '{other}' has a different tokenizer vocabulary than the target '{target}'; save both with "
            "the same tokenizer"
        )


# --------------------------------------------------------------------------- fingerprint


def fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 over config, tokenizer and weight files (names and bytes), streamed in 1 MiB chunks."""
    directory = Path(path)
    names = [n for n in CONFIG_FILES + TOKENIZER_FILES if (directory / n).is_file()]
    names += [p.name for p in weight_files(directory) or _pickle_files(directory)]
    content = Digest()
    for name in sorted(set(names)):
        content.text(name).data(b"\0").file(directory / name).data(b"\0")
    return content.hexdigest()


# --------------------------------------------------------------------------- loading


def checkpoint_dtype(config_dtype: Any) -> torch.dtype:
    """The dtype a checkpoint's config names (``torch_dtype`` / ``dtype``), float32 if none."""
    import torch

    if isinstance(config_dtype, torch.dtype):
        return config_dtype
    if isinstance(config_dtype, str) and isinstance(getattr(torch, config_dtype, None), torch.dtype):
        return getattr(torch, config_dtype)
    return torch.float32


def resolve_dtype(dtype: str | None, config_dtype: Any, device: str | None = "cpu") -> torch.dtype:
    """The compute dtype: an explicit ``dtype`` always wins; ``auto`` (or None) keeps the
    checkpoint's dtype on an accelerator, and on CPU computes in float32 unless the checkpoint is
    bf16 and this CPU runs bf16 natively (see :mod:`unlearn_assert.hardware`). Why: without native
    bf16, torch emulates every bf16 matmul (4x the gate's time measured on an AVX2-only CPU), and
    upcasting bf16 or fp16 weights to float32 is exact."""
    import torch

    if dtype in (None, "auto"):
        stored = checkpoint_dtype(config_dtype)
        if device is None or not str(device).startswith("cpu"):
            return stored
        if stored == torch.bfloat16:
            from .hardware import native_bf16

            return torch.bfloat16 if native_bf16() else torch.float32
        return torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' was requested but CUDA is not available; use --unlearn-device=cpu")
    return device


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars while we load or save (CI logs stay readable); restores
    the caller's setting afterwards."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_tokenizer(directory: Path) -> Any:
    check_tokenizer_files(directory)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a missing/broken tokenizer
        raise ModelError(
            f"cannot load the tokenizer from '{directory}' ({type(exc).__name__}: {exc}); save it next to the model "
            "with tokenizer.save_pretrained(DIR)"
        ) from None
    if tok.pad_token is None:
        # Batched generation needs a pad token; reuse EOS as every HF generation recipe does.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def check_finite(model: Any, path: str) -> None:
    """Refuse NaN/Inf weights: they make every metric meaningless and every quantizer undefined."""
    import torch

    for name, param in model.named_parameters():
        if param.device.type == "meta":  # offloaded to disk by a device map: read when its layer runs
            continue
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            raise ModelError(
                f"model '{path}' has NaN or Inf values in '{name}'; the checkpoint is broken, re-export it"
            )


def _import_torch_internals_quietly() -> None:
    """Import ``torch.utils.mkldnn`` once with one warning ignored.

    torch 2.13's own ``torch.utils.mkldnn`` decorates its classes with its deprecated
    ``torch.jit.script_method``. transformers imports it on the first model load, so every gate run
    listed 14 DeprecationWarnings that no user can act on. Importing it here, with only that message
    ignored, leaves every other warning alone, including this one from anyone else's code."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script_method` is deprecated", category=DeprecationWarning
        )
        import torch.utils.mkldnn  # noqa: F401


def load_model(
    path: str | os.PathLike[str],
    device: str | None = "cpu",
    dtype: str | None = None,
    *,
    allow_pickle: bool = False,
    known_fingerprint: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
) -> LoadedModel:
    """Load a local causal LM and its tokenizer, safely (see the module docstring).

    ``known_fingerprint``: the directory's content hash when the caller already has it (the
    engine's fingerprint cache), so a large checkpoint is not hashed a second time.
    ``device_map`` (and ``max_memory``): accelerate's dispatch, for a model larger than one device
    (:func:`dispatch`); ``device`` is then where its inputs go."""
    directory = check_model_dir(path, allow_pickle=allow_pickle)
    files = weight_files(directory)
    for file in files:
        check_safetensors_file(file)
    _import_torch_internals_quietly()
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise ModelError(
            f"cannot read '{directory / 'config.json'}' ({type(exc).__name__}: {exc}); fix or re-save config.json"
        ) from None
    stored_dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, stored_dtype, dev)
    tokenizer = load_tokenizer(directory)
    placement = dispatch(device_map, max_memory) if device_map is not None else {}
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                str(directory),
                config=config,
                dtype=torch_dtype,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=not (allow_pickle and not files),
                **placement,
            )
    except Exception as exc:
        raise ModelError(
            f"cannot load the model from '{directory}' ({type(exc).__name__}: {exc}); check that it is a causal-LM "
            "checkpoint"
        ) from None
    if placement:
        import shutil
        import weakref

        weakref.finalize(model, shutil.rmtree, placement["offload_folder"], ignore_errors=True)
        dev = str(input_device(model))
    else:
        model.to(dev)  # type: ignore[arg-type]  # transformers types .to() through a decorator mypy misreads
    model.eval()
    check_finite(model, str(directory))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=str(directory),
        fingerprint=known_fingerprint or fingerprint(directory),
        device=dev,
        dtype=str(torch_dtype).removeprefix("torch."),
        info={
            "architecture": (config.architectures or [config.model_type])[0],
            "model_type": config.model_type,
            "checkpoint_dtype": str(checkpoint_dtype(stored_dtype)).removeprefix("torch."),
            **({"device_map": dict(getattr(model, "hf_device_map", {}))} if placement else {}),
        },
    )


def dispatch(device_map: str | dict[str, Any], max_memory: dict[Any, Any] | None) -> dict[str, Any]:
    """``from_pretrained`` arguments for accelerate's dispatch: shards on the GPUs, the rest on CPU,
    and what still does not fit offloaded to a temporary folder (never the model's own directory,
    which is only read), removed with the model."""
    import tempfile

    try:
        import accelerate  # noqa: F401  transformers' device_map needs it
    except ImportError:
        raise ModelError(
            "--unlearn-device-map needs accelerate, which is not installed; install it with: pip install accelerate"
        ) from None
    out: dict[str, Any] = {
        "device_map": device_map,
        "offload_folder": tempfile.mkdtemp(prefix="unlearn-assert-offload-"),
    }
    if max_memory is not None:
        out["max_memory"] = max_memory
    return out


def input_device(model: Any) -> torch.device:
    """Where a model's inputs go: its first parameter's device, or for a model dispatched by
    accelerate the device of its first placed module (offloaded modules compute on the CPU)."""
    import torch

    placed = getattr(model, "hf_device_map", None)
    if placed:
        first = next(iter(placed.values()))
        return torch.device(
            f"cuda:{first}" if isinstance(first, int) else "cpu" if first in ("cpu", "disk") else str(first)
        )
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def is_dispatched(model: Any) -> bool:
    """True when accelerate spread the model over more than one device, or parts of it over disk."""
    placed = set((getattr(model, "hf_device_map", None) or {}).values())
    return len(placed) > 1 or "disk" in placed


# --------------------------------------------------------------------------- pairing checks


def check_compatible(reference: LoadedModel, other: LoadedModel, *, role: str = "unlearned") -> None:
    """Refuse to compare models that cannot be compared: recovery and code agreement need the same
    architecture, the same parameter names and shapes, and the same tokenizer vocabulary."""
    if reference.info.get("architecture") != other.info.get("architecture"):
        raise ModelError(
            f"{role} model '{other.path}' is a {other.info.get('architecture')} but the target '{reference.path}' is a "
            f"{reference.info.get('architecture')}; pass the target the {role} model was made from"
        )
    ref_shapes = {n: tuple(p.shape) for n, p in reference.model.named_parameters()}
    oth_shapes = {n: tuple(p.shape) for n, p in other.model.named_parameters()}
    if ref_shapes != oth_shapes:
        missing = sorted(set(ref_shapes) ^ set(oth_shapes))
        diff = missing[0] if missing else next(n for n in ref_shapes if ref_shapes[n] != oth_shapes[n])
        detail = f"{diff}: {ref_shapes.get(diff)} vs {oth_shapes.get(diff)}"
        raise ModelError(
            f"{role} model '{other.path}' does not match the target's parameters ({detail}); pass the target the "
            f"{role} model was made from"
        )
    if reference.tokenizer.get_vocab() != other.tokenizer.get_vocab():
        raise ModelError(
            f"{role} model '{other.path}' has a different tokenizer vocabulary than the target '{reference.path}'; "
            "save both with the same tokenizer"
        )
