"""Calibration text for the quantizers that need activations (GPTQ, AWQ): where it comes from,
how it is cut into samples, and its content hash.

Pure Python (no torch): the plugin validates ``--unlearn-calibration`` while it parses options, so
a missing or malformed file is a usage error before anything is loaded.

Why these rules:

* **Source.** ``--unlearn-calibration=FILE`` if given; otherwise the *retain* text of the data dir
  (its raw retain documents: MUSE's ``raw/retain1`` then ``raw/retain2``, as .json lists or .txt, or
  ``raw/retain.txt``, or the same splits of its Hugging Face form; else the privleak retain texts).
  A .json list keeps MUSE's document boundaries, so each document ends with EOS. Retain text is what the provider is
  allowed
  to keep, and calibrating on forget text would hand GPTQ/AWQ exactly the activations the gate is
  meant to probe. A data dir with neither and no ``--unlearn-calibration`` is a usage error.
* **Samples.** The documents are tokenized, joined with the tokenizer's EOS token (when it has
  one) into one stream, and cut into consecutive windows of :data:`SEQ_LEN` tokens (capped by the
  model's context), at most :data:`N_SAMPLES` of them, in file order. A last window shorter than
  the others is kept when it is at least a quarter of the length, so a short retain text still
  calibrates with all of its tokens. GPTQ's paper uses 128 random windows of 2048 tokens; windows
  taken in order instead of at random make the result deterministic without a seed, and a
  512-token window fits every model this gate meets (tiny test models included).
* **Hash.** :attr:`Calibration.fingerprint` covers the documents and the sample settings, so a
  cached GPTQ/AWQ result is reused only with the same calibration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..fs import user_path
from ..plain import Digest, digest

#: At most this many calibration windows (GPTQ's paper: 128).
N_SAMPLES = 128
#: Tokens per window, capped by the model's ``max_position_embeddings``.
SEQ_LEN = 512
#: A shorter last window is kept when it has at least this share of ``SEQ_LEN`` tokens.
MIN_LAST = 0.25
#: Calibration files larger than this are refused (a mistake, e.g. a checkpoint passed by accident).
MAX_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class Calibration:
    """Calibration documents and how they become samples (see the module docstring)."""

    texts: tuple[str, ...]
    source: str
    n_samples: int = N_SAMPLES
    seq_len: int = SEQ_LEN

    @property
    def fingerprint(self) -> str:
        texts = [Digest().text(text).hexdigest() for text in self.texts]
        return digest({"calibration": 2, "n_samples": self.n_samples, "seq_len": self.seq_len, "texts": texts})

    def summary(self) -> dict[str, Any]:
        """What the report records: where the text came from, how it was sampled, its hash."""
        return {
            "source": self.source,
            "documents": len(self.texts),
            "n_samples": self.n_samples,
            "seq_len": self.seq_len,
            "fingerprint": self.fingerprint,
        }

    def windows(self, tokenizer: Any, max_positions: int | None = None) -> list[list[int]]:
        """Token-id windows for this tokenizer (deterministic; see the module docstring)."""
        length = min(self.seq_len, max_positions) if max_positions else self.seq_len
        eos = getattr(tokenizer, "eos_token_id", None)
        stream: list[int] = []
        budget = self.n_samples * length
        for text in self.texts:
            # never tokenize more than the windows can use: a token is at least one character, and
            # 16 characters per token is far above any tokenizer's average
            ids = tokenizer(text[: (budget - len(stream)) * 16], add_special_tokens=False)["input_ids"]
            stream.extend(ids)
            if eos is not None:
                stream.append(int(eos))
            if len(stream) >= budget:
                break
        stream = stream[:budget]
        out = [stream[i : i + length] for i in range(0, len(stream), length)]
        if len(out) > 1 and len(out[-1]) < MIN_LAST * length:
            out.pop()
        if not out or not out[0]:
            raise ConfigError(
                f"calibration text from {self.source} gives no tokens; pass --unlearn-calibration=FILE with retain text"
            )
        return out


def _documents(value: Any, where: str) -> tuple[str, ...]:
    """A JSON value as documents: a list of strings or of objects with a string ``text``."""
    if not isinstance(value, list):
        raise ConfigError(
            f"{where}: expected a JSON list of strings (or of objects with a 'text' field), got {type(value).__name__}"
        )
    docs: list[str] = []
    for i, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ConfigError(
                f"{where}: item {i} is not a string or an object with a string 'text' field; fix or remove it"
            )
        if text.strip():
            docs.append(text)
    return tuple(docs)


def load_calibration_file(path: str | Path) -> Calibration:
    """Read ``FILE`` as calibration text: ``.txt`` (one document), ``.json`` (a list) or
    ``.jsonl`` (one string or ``{"text": ...}`` per line). Any problem is one ConfigError line."""
    where = f"--unlearn-calibration: '{path}'"
    p = user_path(path)
    if not p.is_file():
        raise ConfigError(f"{where} is not a file; pass a .txt, .json or .jsonl file of calibration text")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(
            f"{where} is larger than {MAX_FILE_BYTES >> 20} MiB; pass a text sample, not a corpus or a checkpoint"
        )
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            docs = _documents(json.loads(raw), where)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{where} is not valid JSON (line {exc.lineno}: {exc.msg}); fix the file or use a .txt file"
            ) from None
    elif suffix == ".jsonl":
        values = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    values.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(
                        f"{where}: line {n} is not valid JSON ({exc.msg}); fix it or use a .txt file"
                    ) from None
        docs = _documents(values, where)
    else:
        docs = (raw,) if raw.strip() else ()
    if not docs:
        raise ConfigError(f"{where} has no text; pass a file with retain-like text")
    return Calibration(texts=docs, source=str(p))


def calibration_from_data(data: Any) -> Calibration | None:
    """The default calibration: the data dir's retain text, or None when it has none.

    The raw retain documents (``raw_retain_docs``) when the data has them, else its raw retain text
    as one document, else the privleak retain texts; the source names the file(s) or split(s) read."""
    sources = getattr(data, "sources", None) or {}
    docs = tuple(t for t in (getattr(data, "raw_retain_docs", None) or ()) if t.strip())
    raw = getattr(data, "raw_retain", None)
    if not docs and raw and raw.strip():
        docs = (raw,)
    if docs:
        return Calibration(texts=docs, source=f"{sources.get('raw_retain_docs', 'raw/retain.txt')} of {data.path}")
    docs = tuple(t for t in (getattr(data, "privleak_retain", None) or ()) if t.strip())
    if docs:
        return Calibration(
            texts=docs, source=f"{sources.get('privleak_retain', 'privleak/retain.json')} of {data.path}"
        )
    return None


def resolve_calibration(path: str | None, data: Any) -> Calibration | None:
    """``--unlearn-calibration`` if given, else the data dir's retain text (None if it has none)."""
    return load_calibration_file(path) if path else calibration_from_data(data)


def needs_calibration(quantizers: Sequence[str]) -> list[str]:
    """The ids among ``quantizers`` whose backend calibrates on text (gptq, awq)."""
    from ..variants.quantizers import BACKENDS, parse_quantizer_id

    return [q for q in quantizers if BACKENDS[parse_quantizer_id(q).backend].calibrated]
