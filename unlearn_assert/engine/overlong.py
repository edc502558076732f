"""Items beyond the model's context window, found when the options are read, before anything loads.

Why: one pasted document of 120,000 tokens in a data set kept a gate on a model with a 4,096-token window
busy for 8.5 minutes before it reported the prompt as over the context (issue 31); on a 7B model that is
hours, or running out of memory. So every sequence a benchmark's metrics will feed a model
(:meth:`unlearn_assert.benchmark.base.Benchmark.contexts`: the prompt and the tokens generated after it, or
a text scored whole) is counted against the smallest context window of the run's models (their config.json)
when the options are read. ``--unlearn-overlong=error`` (the default) refuses the first one too long in one
line that names its split, item, length and the window; ``truncate`` lets the metrics cut it (a prompt keeps
its end, next to the continuation; a scored text its start) and record the cut per item.

Counting without torch: transformers' ``AutoTokenizer`` imports torch (seconds, and on the xdist controller
for nothing else), so the model's ``tokenizer.json`` is read with the ``tokenizers`` library (what
transformers' fast tokenizers run) through :class:`FileTokenizer`. transformers can still change the special
tokens it adds (from tokenizer_config.json), so those counts decide only where they are clearly on one side
of the window: when any sequence is within :data:`MARGIN` tokens of it, every sequence is counted again with
the tokenizer the metrics use (:func:`unlearn_assert.models.load_tokenizer`), and that count decides.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import OPTION_BY_NAME, RunConfig
from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..benchmark.base import Benchmark, Context

__all__ = [
    "MARGIN",
    "ContextCheck",
    "FileTokenizer",
    "check_contexts",
    "context_window_of",
    "counting_tokenizer",
    "run_window",
]

#: Tokens either side of the window within which a count from tokenizer.json alone is not trusted to decide
#: (special tokens transformers adds or drops: one or two per sequence; the rest is headroom).
MARGIN = 16


def context_window_of(directory: str | Path) -> tuple[int | None, str | None]:
    """The context window a model's config.json gives, and the key it came from (None, None when it gives none)."""
    from ..metrics.generation import CONTEXT_WINDOW_KEYS

    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(config, dict):
        return None, None
    for key in CONTEXT_WINDOW_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return value, key
    return None, None


def run_window(run: RunConfig) -> tuple[int | None, str]:
    """The smallest context window of the run's models, and where it is written (for messages)."""
    best: tuple[int | None, str] = (None, "")
    for name in ("target", "model", "retrain"):
        directory = getattr(run, name)
        if directory is None:
            continue
        window, key = context_window_of(directory)
        if window is not None and (best[0] is None or window < best[0]):
            best = (window, f"{key} in {Path(directory) / 'config.json'}")
    return best


def _special_token(directory: Path, name: str) -> str | None:
    """A special token's text from tokenizer_config.json or special_tokens_map.json (None when neither names it)."""
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            value = json.loads((directory / file).read_text(encoding="utf-8")).get(name)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def has_chat_template(directory: Path) -> bool:
    """True when the tokenizer has a chat template (TOFU's prompts then need transformers to apply it)."""
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


class FileTokenizer:
    """A model directory's tokenizer.json, called as transformers' tokenizer is (``tokenizer(texts)["input_ids"]``,
    ``truncation=True, max_length=N`` keeping the first N ids, ``eos_token_id``), to count tokens without torch."""

    #: only directories without a chat template are counted this way (see :func:`counting_tokenizer`)
    chat_template = None

    def __init__(self, directory: str | Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(directory)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_truncation()  # transformers sets both per call; a saved setting must not cut our counts
        self._tokenizer.no_padding()
        eos = _special_token(folder, "eos_token")
        self.eos_token_id = self._tokenizer.token_to_id(eos) if eos is not None else None

    def __call__(
        self,
        texts: str | Sequence[str],
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool = False,
        **_: Any,
    ) -> dict[str, Any]:
        single = isinstance(texts, str)
        batch = [texts] if isinstance(texts, str) else list(texts)
        ids = [e.ids for e in self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)]
        if truncation and max_length is not None:
            ids = [x[:max_length] for x in ids]
        return {"input_ids": ids[0] if single else ids}


def counting_tokenizer(directory: str | Path) -> tuple[Any, bool]:
    """A tokenizer to count with, and whether its counts are exact: :class:`FileTokenizer` when the directory has
    a tokenizer.json and no chat template (counts to be confirmed near the window), else the one the metrics use."""
    folder = Path(directory)
    if (folder / "tokenizer.json").is_file() and not has_chat_template(folder):
        try:
            return FileTokenizer(folder), False
        except Exception:  # noqa: BLE001 - a file the tokenizers library cannot read: transformers may, and says why
            pass
    return _exact_tokenizer(folder), True


def _exact_tokenizer(folder: Path) -> Any:
    from ..errors import ModelError
    from ..models import load_tokenizer

    try:
        return load_tokenizer(folder)
    except ModelError as exc:
        raise ConfigError(f"{OPTION_BY_NAME['target'].cli}: {exc}") from None


@dataclass(frozen=True)
class ContextCheck:
    """What the option-time check found: the window (None: no config gives one, nothing was checked), every
    sequence with its length, and those beyond the window (``truncate`` cuts them)."""

    window: int | None
    contexts: tuple[Context, ...]
    over: tuple[Context, ...]

    @property
    def tokens(self) -> int:
        """Positions one row feeds the model, each sequence counted up to the window (what truncation leaves)."""
        return sum(c.length if self.window is None else min(c.length, self.window) for c in self.contexts)


def _describe(c: Context) -> str:
    return f"{c.split} item {c.item}"


def _problem(c: Context, window: int, where: str) -> str:
    """One line for the first sequence too long."""
    if c.new_tokens:
        length = (
            f"is {c.tokens:,} tokens, and with the {c.new_tokens} tokens generated after it that is beyond "
            f"the model's context window of {window:,} tokens ({where})"
        )
        if c.new_tokens >= window:
            return (
                f"{_describe(c)} {length}; the window cannot even hold the generated tokens, so no truncation "
                "helps: use a model with a longer context window"
            )
        fix = (
            f"or pass --unlearn-overlong=truncate to keep its last {window - c.new_tokens:,} tokens (as MUSE and "
            "lm-eval cut a prompt)"
        )
    else:
        length = f"is {c.tokens:,} tokens, beyond the model's context window of {window:,} tokens ({where})"
        end = "first" if c.keep == "start" else "last"
        fix = f"or pass --unlearn-overlong=truncate to score its {end} {window:,} tokens"
    return f"{_describe(c)} {length}; shorten or remove it, {fix}"


def check_contexts(run: RunConfig, benchmark: Benchmark, data: Any) -> ContextCheck:
    """Count every sequence of ``data`` (the evaluated items) against the run's smallest context window (see the
    module docstring); under ``--unlearn-overlong=error`` a sequence too long is one :class:`ConfigError` line."""
    window, where = run_window(run)
    tokenizer, exact = counting_tokenizer(str(run.target))
    contexts = benchmark.contexts(data, tokenizer)
    if window is None:
        return ContextCheck(None, tuple(contexts), ())
    if not exact and any(window - MARGIN < c.length <= window + MARGIN for c in contexts):
        # near the edge: the count of the tokenizer the metrics use decides
        contexts = benchmark.contexts(data, _exact_tokenizer(Path(str(run.target))))
    over = tuple(c for c in contexts if c.length > window)
    hopeless = [c for c in over if c.new_tokens >= window]
    if over and (run.overlong == "error" or hopeless):
        first = (hopeless or list(over))[0]
        rest = [c for c in over if c is not first]
        named = ", ".join(_describe(c) for c in rest[:3]) + (", ..." if len(rest) > 3 else "")
        others = f" ({len(rest)} more too long: {named})" if rest else ""
        raise ConfigError(f"{OPTION_BY_NAME['data'].cli}: {_problem(first, window, where)}{others}")
    return ContextCheck(window, tuple(contexts), over)
