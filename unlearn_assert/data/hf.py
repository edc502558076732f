"""MUSE in its Hugging Face forms: parquet snapshots, ``save_to_disk`` directories, the local hub cache.

Why a module of its own: ``pyarrow`` and ``datasets`` are an optional extra (``[hf]``) and slow to
import, so they are imported here, inside the functions that read, and only for data in these
forms. Validation is not done here: rows go back to :mod:`unlearn_assert.data.muse`, which applies the
same checks (and the same one-line messages) as to MUSE's JSON files.

Why offline only: a CI gate must not depend on the hub being reachable, and a data set that
silently changes under a cache key would defeat the cache. ``hf:OWNER/NAME`` is therefore resolved
from the local hub cache, exactly where ``hf download`` and ``datasets.load_dataset`` put the
files; when it is not there, one line says how to get it and where it would go.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = [
    "PARQUET",
    "SAVE_TO_DISK",
    "detect_form",
    "download_hint",
    "hub_cache_dir",
    "read_split",
    "resolve_hf_spec",
    "split_hint",
]

PARQUET = "parquet"
SAVE_TO_DISK = "save_to_disk"
#: the configs read; MUSE's scal, sust and train configs are accepted and ignored
CONFIGS = ("verbmem", "knowmem", "privleak", "raw")
INSTALL = "pip install 'unlearn-assert[hf]'"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SPLITS_TEXT = (
    "verbmem/forget, knowmem/{forget_qa,retain_qa,forget_qa_icl,retain_qa_icl} and privleak/{forget,holdout} "
    "(privleak/retain and raw/{forget,retain1,retain2} are optional)"
)


def split_hint(form: str) -> str:
    """What a directory in ``form`` must hold (the tail of a missing-split message)."""
    if form == PARQUET:
        return (
            f"a parquet snapshot holds <config>/<split>-*.parquet (or <config>/<split>.parquet) for {_SPLITS_TEXT}, "
            "as muse-bench/MUSE-News has them on the hub"
        )
    return (
        "a save_to_disk form holds <config>/<split>/ (a datasets save_to_disk directory with state.json) for "
        f"{_SPLITS_TEXT}, "
        "e.g. load_dataset('muse-bench/MUSE-News', 'knowmem').save_to_disk('DIR/knowmem')"
    )


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def detect_form(directory: Path) -> str | None:
    """PARQUET, SAVE_TO_DISK, or None when ``directory`` holds neither under any MUSE config."""
    for config in CONFIGS:
        cdir = directory / config
        if not cdir.is_dir():
            continue
        if any(cdir.glob("*.parquet")):
            return PARQUET
        if (cdir / "dataset_dict.json").is_file() or any(_is_saved_dataset(p) for p in cdir.iterdir() if p.is_dir()):
            return SAVE_TO_DISK
    return None


def _parquet_files(directory: Path, config: str, split: str) -> list[str]:
    """Shards ``<split>-*.parquet`` in name order (the hub's ``-00000-of-0000N``), else ``<split>.parquet``."""
    cdir = directory / config
    shards = sorted(p.name for p in cdir.glob(f"{glob.escape(split)}-*.parquet")) if cdir.is_dir() else []
    if not shards and (cdir / f"{split}.parquet").is_file():
        shards = [f"{split}.parquet"]
    return [f"{config}/{name}" for name in shards]


def _check_columns(columns_present: list[str], columns: tuple[str, ...], where: str, config: str) -> None:
    missing = [c for c in columns if c not in columns_present]
    if missing:
        want = " and ".join(f"'{c}'" for c in columns)
        raise DataError(
            f"{where} has no column {', '.join(repr(c) for c in missing)} (it has "
            f"{', '.join(columns_present) or 'none'}); "
            f"MUSE's {config} splits have the column(s) {want}"
        )


def read_split(
    directory: Path, form: str, config: str, split: str, columns: tuple[str, ...], label: str
) -> tuple[list[dict[str, Any]], str, str] | None:
    """The rows of ``config/split`` (only ``columns``, as dicts), where to point an error at, and the
    source to record; None when the split is absent."""
    if form == PARQUET:
        rels = _parquet_files(directory, config, split)
        if not rels:
            return None
        where = f"split '{config}/{split}' ({', '.join(rels)}) in {label}"
        pa, pq = _pyarrow(label)
        rows: list[dict[str, Any]] = []
        for rel in rels:
            try:
                table = pq.read_table(directory / rel)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(
                    f"cannot read {where}: {type(exc).__name__}: {exc}; re-download or re-write the file"
                ) from None
            _check_columns(table.column_names, columns, where, config)
            rows.extend(table.select(list(columns)).to_pylist())
        return rows, where, " + ".join(rels)
    path = directory / config / split
    if not path.exists():
        return None
    rel = f"{config}/{split}/"
    where = f"split '{config}/{split}' ({rel}) in {label}"
    if not _is_saved_dataset(path):
        raise DataError(
            f"{where} is not a datasets save_to_disk directory (no state.json and dataset_info.json); "
            "write it with Dataset.save_to_disk or remove it"
        )
    datasets = _datasets(label)
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a broken directory
        raise DataError(f"cannot read {where}: {type(exc).__name__}: {exc}; write it again with save_to_disk") from None
    if not isinstance(ds, datasets.Dataset):
        raise DataError(
            f"{where} holds a DatasetDict, not one split; save each split to <config>/<split>/ "
            f"(DatasetDict.save_to_disk('DIR/{config}') does)"
        )
    _check_columns(list(ds.column_names), columns, where, config)
    table = ds.select_columns(list(columns)).to_dict()
    return [dict(zip(columns, values)) for values in zip(*(table[c] for c in columns))], where, rel


def _pyarrow(label: str) -> Any:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise DataError(f"{label} needs pyarrow to read parquet files, which is not installed; {INSTALL}") from None
    return pa, pq


def _datasets(label: str) -> Any:
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:
        raise DataError(
            f"{label} needs the datasets library to read save_to_disk directories, which is not installed; {INSTALL}"
        ) from None
    return datasets


# --------------------------------------------------------------------------- hf:OWNER/NAME


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE,
    HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub), read now, without importing it."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def download_hint(spec: str) -> str:
    """How to put ``hf:OWNER/NAME[@REVISION]`` into the local cache, and where it goes (the tail of a message)."""
    repo, _, revision = spec[3:].strip().partition("@")
    repo_dir = hub_cache_dir() / ("datasets--" + repo.replace("/", "--"))
    option = f" --revision {revision}" if revision and revision != "main" else ""
    return (
        f"download it once with `hf download {repo} --repo-type dataset{option}` (pip install huggingface_hub; "
        f"it goes to {repo_dir}, or under $HF_HUB_CACHE if set), then rerun: unlearn-assert never downloads"
    )


def resolve_hf_spec(spec: str) -> Path:
    """``hf:OWNER/NAME[@REVISION]`` -> the cached snapshot directory (parquet form); never touches the network."""
    repo, _, revision = spec[3:].strip().partition("@")
    if not _REPO_RE.match(repo):
        raise DataError(f"data spec '{spec}' is not hf:OWNER/NAME[@REVISION]; pass e.g. hf:muse-bench/MUSE-News")
    revision = revision or "main"
    cache = hub_cache_dir()
    repo_dir = cache / ("datasets--" + repo.replace("/", "--"))
    download = download_hint(spec)
    if not repo_dir.is_dir():
        raise DataError(f"{spec} is not in the local Hugging Face cache {cache}; {download}")
    snapshot: Path | None = None
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
    elif (repo_dir / "snapshots" / revision).is_dir():
        snapshot = repo_dir / "snapshots" / revision
    if snapshot is None or not snapshot.is_dir():
        raise DataError(f"{spec}: the local cache {repo_dir} has no snapshot of revision '{revision}'; {download}")
    if detect_form(snapshot) != PARQUET:
        raise DataError(
            f"{spec}: the cached snapshot {snapshot} holds no MUSE parquet files (<config>/<split>-*.parquet); "
            f"{download}"
        )
    return snapshot
