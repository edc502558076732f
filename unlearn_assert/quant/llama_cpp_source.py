"""Where llama.cpp's own HF-to-GGUF converter comes from, and which architectures it converts. Pure Python.

The ``gguf-*`` quantizers convert a model with llama.cpp's ``convert_hf_to_gguf.py`` (maintained by the
people who define the format, over a hundred architectures) instead of a converter of ours. The
llama-cpp-python wheel does not ship it, but its sdist vendors the llama.cpp it binds, converter included;
so the converter used is the one of **the llama.cpp that quantizes and runs the file**:

* ``$UNLEARN_LLAMA_CPP``: a llama.cpp source tree (``convert_hf_to_gguf.py``, ``conversion/``,
  ``gguf-py/``), for users who build llama.cpp themselves; else
* ``~/.cache/unlearn-assert/llama.cpp/llama-cpp-python-VERSION`` (``$XDG_CACHE_HOME`` if set), which
  ``unlearn-assert llama-cpp-converter`` fills from the sdist of the installed llama-cpp-python version
  (``pip download --no-binary :all: --no-deps llama-cpp-python==VERSION``, or ``--sdist FILE`` offline).

Why not the registry package ``convert-hf-to-gguf`` (0.1.1): it is a one-person repackaging of one
llama.cpp snapshot (not ggml-org's; two releases), older than the llama.cpp in llama-cpp-python 0.3.36 (it
lacks ten of that converter's model modules), and it installs its own copy of the ``gguf`` package over
the registry's ``gguf`` and a top-level package named ``conversion`` (docs/quantizers.md has the details).

Option time needs no torch, numpy or gguf: :func:`converted_architectures` reads the converter's
architecture table (``TEXT_MODEL_MAP`` in ``conversion/__init__.py``) with :mod:`ast`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENV = "UNLEARN_LLAMA_CPP"
SETUP = "unlearn-assert llama-cpp-converter"
#: What a llama.cpp source tree must hold for the converter to run (relative paths).
NEEDED = ("convert_hf_to_gguf.py", "conversion/__init__.py", "conversion/base.py", "gguf-py/gguf/__init__.py")
#: What is taken from the sdist's ``vendor/llama.cpp`` (with its licence).
EXTRACTED = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
SOURCE_FILE = "SOURCE.json"


def installed_version() -> str | None:
    """The installed llama-cpp-python version, or None."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def default_dir(version: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "unlearn-assert" / "llama.cpp" / f"llama-cpp-python-{version}"


def missing(root: Path) -> list[str]:
    return [n for n in NEEDED if not (root / n).is_file()]


def find_converter() -> tuple[Path | None, str]:
    """(the llama.cpp tree to convert with, "") or (None, one line saying how to get one)."""
    env = os.environ.get(ENV)
    if env:
        root = Path(env).expanduser()
        lack = missing(root)
        if lack:
            return None, (
                f"${ENV}={env} is not a llama.cpp source tree (it has no {lack[0]}); "
                "point it at a llama.cpp checkout, or unset it"
            )
        return root, ""
    version = installed_version()
    if version is None:
        return None, "llama-cpp-python is not installed; install it with: pip install 'unlearn-assert[gguf]'"
    root = default_dir(version)
    if missing(root):
        return None, (
            f"llama.cpp's converter (convert_hf_to_gguf.py of llama-cpp-python {version}) is not set up; "
            f"run: {SETUP} (or set ${ENV} to a llama.cpp checkout)"
        )
    return root, ""


@lru_cache(maxsize=8)
def _architecture_table(init_file: str, mtime: float) -> frozenset[str]:
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign):
            target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(value, ast.Dict):
            return frozenset(k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return frozenset()


def converted_architectures(root: Path) -> frozenset[str]:
    """The Hugging Face architectures (``Gemma3ForCausalLM``...) the converter in ``root`` converts."""
    init = root / "conversion" / "__init__.py"
    return _architecture_table(str(init), init.stat().st_mtime)


def describe(root: Path) -> str:
    """ "llama.cpp 0c1e57098 (llama-cpp-python 0.3.36)" for a tree this module extracted, else its path."""
    try:
        source = json.loads((root / SOURCE_FILE).read_text(encoding="utf-8"))
        return f"llama.cpp {source['llama_cpp_commit']} (llama-cpp-python {source['llama_cpp_python']})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"llama.cpp at {root}"


# --------------------------------------------------------------------------- setup from the sdist


def _download_sdist(version: str, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "-q",
        "-d",
        str(into),
        f"llama-cpp-python=={version}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob(f"llama_cpp_python-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"could not download the llama-cpp-python {version} sdist ({last}); pass --sdist FILE")
    return found[0]


def install_from_sdist(sdist: Path, dest: Path) -> dict[str, Any]:
    """Extract llama.cpp's converter from a llama-cpp-python sdist into ``dest``; return what SOURCE.json says."""
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        prefix = f"{top}/vendor/llama.cpp/"
        match = re.fullmatch(r"llama_cpp_python-(.+)", top)
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix)
            and m.name[len(prefix) :].split("/")[0] in EXTRACTED
            and (m.isfile() or m.isdir())
        ]
        changelog = tar.extractfile(f"{top}/CHANGELOG.md") if f"{top}/CHANGELOG.md" in names else None
        commit = "unknown"
        if changelog is not None and match:
            text = changelog.read().decode("utf-8", errors="replace")
            section = text.split(f"## [{match[1]}]", 1)[-1].split("\n## [", 1)[0]
            found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section)
            commit = found[1] if found else commit
        tmp = Path(tempfile.mkdtemp(prefix="unlearn-assert-llama-cpp-"))
        try:
            for m in members:
                m.name = m.name[len(prefix) :]
                tar.extract(m, tmp, filter="data")
            lack = missing(tmp)
            if lack:
                raise ConfigError(f"'{sdist}' has no vendor/llama.cpp/{lack[0]}; pass a llama-cpp-python sdist")
            source = {
                "llama_cpp_python": match[1] if match else "unknown",
                "llama_cpp_commit": commit,
                "sdist": sdist.name,
                "sdist_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest(),
            }
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp), str(dest))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return source


def _cmd(args: argparse.Namespace) -> int:
    version = installed_version()
    if version is None:
        raise ConfigError(
            "llama-cpp-python is not installed; install it first with: pip install 'unlearn-assert[gguf]'"
        )
    dest = default_dir(version)
    if not missing(dest) and not args.force and args.sdist is None:
        print(f"llama.cpp's converter is already set up in {dest}: {describe(dest)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="unlearn-assert-sdist-") as tmp:
        sdist = Path(args.sdist) if args.sdist else _download_sdist(version, Path(tmp))
        source = install_from_sdist(sdist, dest)
    if source["llama_cpp_python"] != version:
        print(
            f"warning: the sdist is llama-cpp-python {source['llama_cpp_python']} but {version} is installed",
            file=sys.stderr,
        )
    print(f"llama.cpp's converter set up in {dest}: {describe(dest)}")
    return 0


def add_parser(sub: Any) -> None:
    """``unlearn-assert llama-cpp-converter``: the converter of the installed llama-cpp-python, from its sdist."""
    cmd = sub.add_parser(
        "llama-cpp-converter",
        help="set up llama.cpp's convert_hf_to_gguf.py (for gguf-* ids) from the llama-cpp-python sdist",
    )
    cmd.add_argument(
        "--sdist",
        help="a llama-cpp-python sdist (.tar.gz) to take it from, instead of downloading the installed version's",
    )
    cmd.add_argument("--force", action="store_true", help="set it up again even if it is there")
    cmd.set_defaults(func=_cmd)
