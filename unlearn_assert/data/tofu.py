"""TOFU data as users hold it: detection, loading, validation and a content hash that is the same in every form.

TOFU (Maini et al. 2024, ``locuslab/TOFU``) is question answering about 200 fictitious authors, 20
questions each, in this order; the forget splits ``forget01/05/10`` are the last 2/10/20 authors. The
evaluation reads (as open-unlearning's ``configs/eval/tofu_metrics/`` do):

* ``<forget>_perturbed`` (e.g. ``forget10_perturbed``): the forget set, each record with ``question``,
  ``answer``, ``paraphrased_answer``, ``perturbed_answer`` (a list of wrong answers, 5 in TOFU) and
  ``paraphrased_question``;
* ``retain_perturbed``: the same fields, for 400 retain questions;
* ``real_authors_perturbed`` and ``world_facts_perturbed``: ``question``, ``answer``, ``perturbed_answer``.

Read when present, never required: ``<forget>`` and the matching ``retain90/95/99`` (the QA the
models were fine-tuned and unlearned on, for unlearning, calibration and relearning) and
``holdout01/05/10`` (authors never trained on).

Forms (see :func:`load_tofu`): TOFU's files as the dataset ships them (``<config>.json``, JSON lines
or a JSON array; ``.jsonl`` too); the Hugging Face forms (a parquet conversion ``<config>/train/*.parquet``
or ``<config>/*.parquet``, ``save_to_disk`` directories ``<config>/``, a Dataset or a DatasetDict with
a ``train`` split); and ``hf:locuslab/TOFU`` from the local hub cache. Every form is validated by the
same code and hashes the same.

Why strict: third-party copies of TOFU rename keys (``original_answer``...) or change the number of
wrong answers, and open-unlearning would then compute other numbers (or none). We accept the
dataset's own schema and refuse anything else with one :class:`DataError` line that names the fix.
Why cheap: no torch, no transformers; pyarrow and datasets only for those forms.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..fs import user_path
from ..plain import Digest, digest
from .muse import QAItem, json_type

__all__ = [
    "DEFAULT_FORGET_SPLIT",
    "FORGET_SPLITS",
    "QUESTIONS_PER_AUTHOR",
    "TofuData",
    "TofuItem",
    "detect_tofu",
    "evaluated_configs",
    "load_tofu",
]

#: The forget splits TOFU ships, and the default (open-unlearning's ``eval.tofu.forget_split``).
FORGET_SPLITS: tuple[str, ...] = ("forget01", "forget05", "forget10")
DEFAULT_FORGET_SPLIT = "forget10"
#: TOFU's questions per fictitious author, consecutive in every split (relearning holds out by author).
QUESTIONS_PER_AUTHOR = 20
#: The retain training split that goes with each forget split (TOFU: retain = full minus forget).
_RETAIN_TRAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}

RETAIN = "retain_perturbed"
REAL_AUTHORS = "real_authors_perturbed"
WORLD_FACTS = "world_facts_perturbed"
_FULL_KEYS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
_OPTION_KEYS = ("question", "answer", "perturbed_answer")
_QA_KEYS = ("question", "answer")
_FINGERPRINT_VERSION = "tofu-data:v1"
_EXTENSIONS = (".json", ".jsonl")
_REPO = "locuslab/TOFU"
_SCHEMA_FIX = (
    f"use the files as {_REPO} ships them (hf download {_REPO} --repo-type dataset); "
    "copies that rename TOFU's keys are not read"
)


def evaluated_configs(forget_split: str = DEFAULT_FORGET_SPLIT) -> tuple[str, ...]:
    """The configs the metrics read, in order: forget, retain, real authors, world facts."""
    return (f"{_check_split(forget_split)}_perturbed", RETAIN, REAL_AUTHORS, WORLD_FACTS)


def _check_split(forget_split: str) -> str:
    if forget_split not in FORGET_SPLITS:
        raise ConfigError(
            f"unknown TOFU forget split {forget_split!r}; choose one of {', '.join(FORGET_SPLITS)} "
            f"(default {DEFAULT_FORGET_SPLIT})"
        )
    return forget_split


@dataclass(frozen=True)
class TofuItem:
    """One evaluated TOFU question: the gold ``answer``, the wrong ``perturbed_answers`` and, for the
    forget and retain sets, the ``paraphrased_answer`` the truth ratio takes as the correct one."""

    question: str
    answer: str
    perturbed_answers: tuple[str, ...]
    paraphrased_answer: str | None = None
    paraphrased_question: str | None = None


@dataclass(frozen=True)
class TofuData:
    """A validated TOFU data set; immutable, so it can be shared across rows and workers.

    ``forget``/``retain``/``real_authors``/``world_facts``: the evaluated splits (see the module
    docstring). ``forget_train``/``retain_train``/``holdout``: TOFU's plain QA splits when present
    (None otherwise). ``fingerprint``: sha256 of the content read (see :func:`content_fingerprint`), the
    same in every form. ``questions_per_author``: consecutive questions per author (TOFU: 20).
    """

    path: str
    forget_split: str
    forget: tuple[TofuItem, ...]
    retain: tuple[TofuItem, ...]
    real_authors: tuple[TofuItem, ...]
    world_facts: tuple[TofuItem, ...]
    fingerprint: str
    forget_train: tuple[QAItem, ...] | None = None
    retain_train: tuple[QAItem, ...] | None = None
    holdout: tuple[QAItem, ...] | None = None
    questions_per_author: int = QUESTIONS_PER_AUTHOR
    form: str = "files"
    location: str = ""
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def splits(self) -> dict[str, tuple[TofuItem, ...]]:
        """The evaluated splits by their short names (``forget``, ``retain``, ``real_authors``, ``world_facts``)."""
        return {
            "forget": self.forget,
            "retain": self.retain,
            "real_authors": self.real_authors,
            "world_facts": self.world_facts,
        }

    def counts(self) -> dict[str, int]:
        out = {name: len(items) for name, items in self.splits().items()}
        for name in ("forget_train", "retain_train", "holdout"):
            value = getattr(self, name)
            if value is not None:
                out[name] = len(value)
        return out

    @property
    def raw_retain_docs(self) -> tuple[str, ...]:
        """The retain questions and answers as text ("Question: q\nAnswer: a" per item, TOFU's training form
        without a chat template), one document per author: what relearn-retain trains on and GPTQ/AWQ
        calibrate on (the retain training split when given, else the evaluated retain split)."""
        items = self.retain_train if self.retain_train else self.retain
        return _by_author([(i.question, i.answer) for i in items], self.questions_per_author)

    def forget_documents(self) -> tuple[str, ...]:
        """The forget questions and answers, one document per author (relearn-forget trains on some of them)."""
        return _by_author([(i.question, i.answer) for i in self.forget], self.questions_per_author)

    def authors(self, split: str = "forget") -> list[int]:
        """The author index of every item of ``split`` (TOFU's questions come in consecutive blocks of
        :attr:`questions_per_author`), for holding out whole authors (relearning attacks)."""
        return [i // self.questions_per_author for i in range(len(self.splits()[split]))]

    def limited(self, max_samples: int | None) -> TofuData:
        """At most ``max_samples`` items of every evaluated split; the fingerprint then becomes
        a digest of the fingerprint and N (unchanged when nothing is cut, so the cache still hits)."""
        if max_samples is None:
            return self
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigError(
                f"max_samples must be a positive integer or None, got {max_samples!r}; "
                "pass e.g. --unlearn-max-samples 32"
            )
        if all(len(items) <= max_samples for items in self.splits().values()):
            return self
        n = max_samples
        return replace(
            self,
            forget=self.forget[:n],
            retain=self.retain[:n],
            real_authors=self.real_authors[:n],
            world_facts=self.world_facts[:n],
            fingerprint=digest({"data": self.fingerprint, "max_samples": n}),
        )


def _by_author(pairs: Sequence[tuple[str, str]], per_author: int) -> tuple[str, ...]:
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in pairs]
    return tuple("\n\n".join(texts[i : i + per_author]) for i in range(0, len(texts), per_author))


# --------------------------------------------------------------------------- fingerprint


def _strings(item: Any) -> list[str | None]:
    if isinstance(item, TofuItem):
        return [
            item.question,
            item.answer,
            item.paraphrased_answer,
            item.paraphrased_question,
            str(len(item.perturbed_answers)),
            *item.perturbed_answers,
        ]
    return [item.question, item.answer]


def content_fingerprint(forget_split: str, values: Mapping[str, Sequence[Any] | None]) -> str:
    """sha256 over the forget split's name and every split's items (length-prefixed UTF-8, absent
    optional fields and splits marked), in a fixed order. Paths, file formats, JSON layout and extra
    keys do not enter: the same data in any form hits the same cache entries."""
    content = Digest().text(f"{_FINGERPRINT_VERSION}\0{forget_split}\0")
    for name in ("forget", "retain", "real_authors", "world_facts", "forget_train", "retain_train", "holdout"):
        items = values.get(name)
        if items is None:
            content.text(f"{name}:absent;")
            continue
        content.text(f"{name}:{len(items)}:")
        for item in items:
            for text in _strings(item):
                if text is None:
                    content.data(b"-;")
                    continue
                data = text.encode("utf-8")
                content.text(f"{len(data)}:").data(data)
    return content.hexdigest()


# --------------------------------------------------------------------------- detection


def _is_saved(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _config_form(directory: Path, config: str) -> str | None:
    """Which form ``config`` is in under ``directory`` (files, parquet, save_to_disk), or None."""
    if any((directory / f"{config}{ext}").is_file() for ext in _EXTENSIONS):
        return "files"
    if (directory / f"{config}.parquet").is_file():
        return "parquet"
    cdir = directory / config
    if cdir.is_dir():
        if any(cdir.glob("*.parquet")) or any((cdir / "train").glob("*.parquet")):
            return "parquet"
        if _is_saved(cdir):
            return "save_to_disk"
    return None


def detect_tofu(path: str | os.PathLike[str]) -> str | None:
    """The form of a TOFU data directory (``files``, ``parquet``, ``save_to_disk``), or None when
    ``path`` holds none of TOFU's evaluation splits. Looks at names only (cheap: ``auto`` detection
    runs before any model loads). ``hf:locuslab/TOFU`` specs are resolved first."""
    spec = os.fspath(path)
    if isinstance(spec, str) and spec.startswith("hf:"):
        try:
            directory = _resolve_hf(spec)
        except DataError:
            return None
    else:
        directory = Path(spec)
        if not directory.is_dir():
            return None
    names = [RETAIN, REAL_AUTHORS, WORLD_FACTS, *(f"{s}_perturbed" for s in FORGET_SPLITS)]
    forms = [form for form in (_config_form(directory, name) for name in names) if form]
    return forms[0] if forms else None


# --------------------------------------------------------------------------- reading


def _where(config: str, rel: str, label: str) -> str:
    return f"split '{config}' ({rel}) in {label}"


def _read_records_file(directory: Path, rel: str, where: str) -> list[Any]:
    """A JSON array of records or JSON lines (TOFU's own files are JSON lines named .json)."""
    try:
        raw = (directory / rel).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {where} ({exc.strerror or exc}); check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not valid UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8") from None
    stripped = text.strip()
    if not stripped:
        raise DataError(f"{where} is empty; it needs one JSON record per line ({_SCHEMA_FIX})")
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); "
                "it must be a JSON array of records or JSON lines"
            ) from None
        return list(value)
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}, line {number} is not valid JSON ({exc.msg}: column {exc.colno}); "
                "TOFU's files hold one JSON record per line"
            ) from None
    return records


def _parquet_files(directory: Path, config: str) -> list[str]:
    cdir = directory / config
    for folder in (cdir / "train", cdir):
        if folder.is_dir():
            shards = sorted(p.name for p in folder.glob("*.parquet"))
            if shards:
                return [str((folder / name).relative_to(directory)) for name in shards]
    return [f"{config}.parquet"] if (directory / f"{config}.parquet").is_file() else []


def _read_config(directory: Path, config: str, label: str) -> tuple[list[Any], str, str] | None:
    """The records of ``config`` in whichever form it is, where to point an error at, and the source
    to record; None when it is absent."""
    form = _config_form(directory, config)
    if form is None:
        cdir = directory / config
        if cdir.is_dir():
            raise DataError(
                f"{_where(config, config + '/', label)} holds neither parquet files nor a datasets "
                "save_to_disk directory (state.json or dataset_dict.json); write it again or remove it"
            )
        return None
    if form == "files":
        rel = next(f"{config}{ext}" for ext in _EXTENSIONS if (directory / f"{config}{ext}").is_file())
        where = _where(config, rel, label)
        return _read_records_file(directory, rel, where), where, rel
    if form == "parquet":
        rels = _parquet_files(directory, config)
        if not rels:
            return None
        where = _where(config, ", ".join(rels), label)
        pa, pq = _pyarrow(label)
        rows: list[Any] = []
        for rel in rels:
            try:
                rows.extend(pq.read_table(directory / rel).to_pylist())
            except (OSError, pa.ArrowException) as exc:
                raise DataError(
                    f"cannot read {where}: {type(exc).__name__}: {exc}; re-download or re-write the file"
                ) from None
        return rows, where, " + ".join(rels)
    cdir = directory / config
    where = _where(config, f"{config}/", label)
    datasets = _datasets(label)
    try:
        ds = datasets.load_from_disk(str(cdir))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a broken directory
        raise DataError(f"cannot read {where}: {type(exc).__name__}: {exc}; write it again with save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise DataError(
                f"{where} holds a DatasetDict with splits {', '.join(ds)}; TOFU's configs have one "
                "split, 'train' (save load_dataset('locuslab/TOFU', CONFIG) as it comes)"
            )
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return list(ds.to_list()), where, f"{config}/"


# --------------------------------------------------------------------------- validation


def _pyarrow(label: str) -> Any:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        from .hf import INSTALL

        raise DataError(f"{label} needs pyarrow to read parquet files, which is not installed; {INSTALL}") from None
    return pa, pq


def _datasets(label: str) -> Any:
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:
        from .hf import INSTALL

        raise DataError(
            f"{label} needs the datasets library to read save_to_disk directories, which is not installed; {INSTALL}"
        ) from None
    return datasets


def _string(value: Any, key: str, at: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{at} has '{key}' of type {json_type(value)}, expected a string; {_SCHEMA_FIX}")
    if not value.strip():
        raise DataError(f"{at} has an empty '{key}'; give it text or remove the item")
    return value


def _validated(records: Sequence[Any], keys: tuple[str, ...], where: str, config: str) -> tuple[Any, ...]:
    if not records:
        raise DataError(f"{where} has no records; TOFU's {config} has one record per question")
    wanted = " and ".join(f"'{k}'" for k in keys)
    out: list[Any] = []
    count: int | None = None
    for index, record in enumerate(records):
        at = f"{where}, item {index}"
        if not isinstance(record, dict):
            raise DataError(f"{at} is a JSON {json_type(record)}, expected an object with {wanted}; {_SCHEMA_FIX}")
        missing = [k for k in keys if k not in record]
        if missing:
            raise DataError(
                f"{at} has no key {', '.join(repr(k) for k in missing)} "
                f"(its keys: {', '.join(map(str, record)) or 'none'}); "
                f"TOFU's {config} records have {wanted}: not TOFU's own schema; {_SCHEMA_FIX}"
            )
        question, answer = _string(record["question"], "question", at), _string(record["answer"], "answer", at)
        if "perturbed_answer" not in keys:
            out.append(QAItem(question=question, answer=answer))
            continue
        wrong = record["perturbed_answer"]
        if not isinstance(wrong, list) or not wrong:
            raise DataError(
                f"{at} has 'perturbed_answer' of type {json_type(wrong)}{' (empty)' if wrong == [] else ''}, "
                f"expected a non-empty list of strings; {_SCHEMA_FIX}"
            )
        wrong_answers = tuple(_string(w, f"perturbed_answer[{j}]", at) for j, w in enumerate(wrong))
        if count is not None and len(wrong_answers) != count:
            raise DataError(
                f"{at} has {len(wrong_answers)} perturbed answers where the items before have {count}; "
                "every record of a TOFU split has the same number (open-unlearning batches them by position); "
                f"{_SCHEMA_FIX}"
            )
        count = len(wrong_answers)
        para = _string(record["paraphrased_answer"], "paraphrased_answer", at) if "paraphrased_answer" in keys else None
        para_q = record.get("paraphrased_question")
        if para_q is not None:
            para_q = _string(para_q, "paraphrased_question", at)
        out.append(
            TofuItem(
                question=question,
                answer=answer,
                perturbed_answers=wrong_answers,
                paraphrased_answer=para,
                paraphrased_question=para_q,
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- hf:OWNER/NAME


def _resolve_hf(spec: str) -> Path:
    """``hf:OWNER/NAME[@REVISION]`` -> the cached snapshot directory; never touches the network."""
    from .hf import download_hint, hub_cache_dir

    repo, _, revision = spec[3:].strip().partition("@")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$", repo):
        raise DataError(f"data spec '{spec}' is not hf:OWNER/NAME[@REVISION]; pass e.g. hf:{_REPO}")
    revision = revision or "main"
    cache = hub_cache_dir()
    repo_dir = cache / ("datasets--" + repo.replace("/", "--"))
    hint = download_hint(spec)
    if not repo_dir.is_dir():
        raise DataError(f"{spec} is not in the local Hugging Face cache {cache}; {hint}")
    ref = repo_dir / "refs" / revision
    snapshot = repo_dir / "snapshots" / (ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision)
    if not snapshot.is_dir():
        raise DataError(f"{spec}: the local cache {repo_dir} has no snapshot of revision '{revision}'; {hint}")
    return snapshot


# --------------------------------------------------------------------------- loading


def load_tofu(
    path: str | os.PathLike[str],
    forget_split: str = DEFAULT_FORGET_SPLIT,
    *,
    questions_per_author: int = QUESTIONS_PER_AUTHOR,
) -> TofuData:
    """Read and validate TOFU data (read-only); every problem is one DataError line.

    ``path``: a directory with TOFU's files, its parquet conversion or save_to_disk directories, or
    ``hf:locuslab/TOFU[@REVISION]`` from the local hub cache (no network). ``forget_split``: which
    forget set is evaluated (forget01, forget05 or forget10; default forget10).
    """
    _check_split(forget_split)
    if isinstance(questions_per_author, bool) or not isinstance(questions_per_author, int) or questions_per_author < 1:
        raise ConfigError(f"questions_per_author must be a positive integer, got {questions_per_author!r}")
    spec = os.fspath(path)
    if isinstance(spec, str) and spec.startswith("hf:"):
        directory, shown = _resolve_hf(spec), spec
    else:
        directory = user_path(path)
        if not directory.is_dir():
            state = "does not exist" if not directory.exists() else "is not a directory"
            raise DataError(
                f"TOFU data path '{path}' {state}; pass a directory with {forget_split}_perturbed.json, "
                f"{RETAIN}.json, {REAL_AUTHORS}.json and {WORLD_FACTS}.json (or hf:{_REPO})"
            )
        shown = str(directory)
    form = detect_tofu(directory) or "files"
    label = (
        f"data dir '{directory}' (TOFU{'' if form == 'files' else ' in ' + form + ' form'}"
        + ("" if shown == str(directory) else f", from {shown}")
        + ")"
    )
    configs = {
        "forget": (f"{forget_split}_perturbed", _FULL_KEYS, True),
        "retain": (RETAIN, _FULL_KEYS, True),
        "real_authors": (REAL_AUTHORS, _OPTION_KEYS, True),
        "world_facts": (WORLD_FACTS, _OPTION_KEYS, True),
        "forget_train": (forget_split, _QA_KEYS, False),
        "retain_train": (_RETAIN_TRAIN[forget_split], _QA_KEYS, False),
        "holdout": (f"holdout{forget_split[-2:]}", _QA_KEYS, False),
    }
    values: dict[str, tuple[Any, ...] | None] = {}
    sources: dict[str, str] = {}
    missing: list[str] = []
    for name, (config, keys, required) in configs.items():
        got = _read_config(directory, config, label)
        if got is None:
            values[name] = None
            if required:
                missing.append(config)
            continue
        records, where, source = got
        values[name] = _validated(records, keys, where, config)
        sources[name] = source
    if missing:
        present = sorted(s for s in FORGET_SPLITS if _config_form(directory, f"{s}_perturbed"))
        other = (
            f" (this directory has {', '.join(present)}: choose it with the forget split setting)" if present else ""
        )
        raise DataError(
            f"{label} is missing TOFU split(s) {', '.join(missing)}{other}; a TOFU data dir holds "
            f"<forget>_perturbed, {RETAIN}, {REAL_AUTHORS} and {WORLD_FACTS} as .json files (JSON lines), "
            f"parquet or save_to_disk, as {_REPO} ships them"
        )
    retain_text = sources.get("retain_train") or sources.get("retain", RETAIN)
    sources["raw_retain_docs"] = f"the questions and answers of {retain_text}"
    return TofuData(
        path=shown,
        forget_split=forget_split,
        forget=values["forget"] or (),
        retain=values["retain"] or (),
        real_authors=values["real_authors"] or (),
        world_facts=values["world_facts"] or (),
        forget_train=values["forget_train"],
        retain_train=values["retain_train"],
        holdout=values["holdout"],
        fingerprint=content_fingerprint(forget_split, values),
        questions_per_author=questions_per_author,
        form=form,
        location=str(directory),
        sources=sources,
    )
