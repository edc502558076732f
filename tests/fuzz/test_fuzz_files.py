"""Mutation fuzz of the input files (issue 16): byte flips, truncations, inserted bytes, deleted and
retyped fields in ``config.json``, the tokenizer files, the safetensors header and every MUSE data
file, each run through :func:`~unlearn_assert.engine.inputs.precheck` and then the loader
(``load_model`` on the tiny model, ``load_data``).

Every outcome must be a successful load or one :class:`~unlearn_assert.errors.UnlearnAssertError`
line; anything else (a KeyError from a header, a tokenizer panic, a traceback) is a bug. Derandomized
in CI by the root conftest's profile; ``UNLEARN_FUZZ_EXAMPLES=2000`` runs longer locally. The number
of mutations tried is printed (``-rP``) and recorded as a JUnit property.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import copy_tiny_inputs

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from unlearn_assert.errors import UnlearnAssertError  # noqa: E402

EXAMPLES = int(os.environ.get("UNLEARN_FUZZ_EXAMPLES", "0")) or settings.default.max_examples
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")
#: values a field may be swapped for: every JSON type, and numbers a model config should never hold
ODD_VALUES: tuple[Any, ...] = (None, 0, -1, 3.5, 10**30, True, "x", "", [], {}, [1, 2], {"a": 1})


@pytest.fixture(scope="module")
def work(
    tmp_path_factory: pytest.TempPathFactory, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> Path:
    """Private copies to mutate (each mutation is undone right after its example)."""
    return copy_tiny_inputs(tmp_path_factory.mktemp("mutate"), tiny_unlearned_dir, tiny_model_dir, tiny_data_dir)


def _json_paths(value: Any, prefix: tuple[Any, ...] = (), limit: int = 3000) -> Iterator[tuple[Any, ...]]:
    """Every key / index path inside a JSON value (breadth first, at most ``limit``)."""
    queue = [(prefix, value)]
    count = 0
    while queue and count < limit:
        path, node = queue.pop(0)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            count += 1
            yield (*path, key)
            queue.append(((*path, key), child))


def _edit(value: Any, path: tuple[Any, ...], replacement: Any, delete: bool) -> Any:
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return value


def _split_safetensors(data: bytes) -> tuple[bytes, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + n], data[8 + n :]


@st.composite
def mutation(draw: st.DrawFn, original: bytes, is_json: bool, safetensors: bool) -> tuple[str, bytes]:
    """(description, mutated bytes) of one file. In a safetensors file the flips, inserts and field
    edits stay in the 8-byte length and the JSON header (the weights' bytes are not a header)."""
    kinds = ["flip", "truncate", "insert"] + (["delete-field", "retype-field"] if is_json or safetensors else [])
    kind = draw(st.sampled_from(kinds))
    head_end = 8 + len(_split_safetensors(original)[0]) if safetensors else len(original)
    if kind == "flip":
        at, xor = draw(st.integers(0, max(0, head_end - 1))), draw(st.integers(1, 255))
        data = bytearray(original)
        data[at] ^= xor
        return f"flip byte {at} ^ {xor:#04x}", bytes(data)
    if kind == "truncate":
        at = draw(st.integers(0, max(0, len(original) - 1)))
        return f"truncate to {at} bytes", original[:at]
    if kind == "insert":
        at, extra = draw(st.integers(0, head_end)), draw(st.binary(min_size=1, max_size=8))
        return f"insert {extra!r} at {at}", original[:at] + extra + original[at:]
    header, body = _split_safetensors(original) if safetensors else (original, b"")
    value = json.loads(header)
    paths = list(_json_paths(value))
    if not paths:
        return "truncate to 0 bytes", b""
    path = draw(st.sampled_from(paths))
    replacement = draw(st.sampled_from(ODD_VALUES))
    edited = json.dumps(_edit(value, path, replacement, delete=kind == "delete-field")).encode()
    what = f"delete {list(path)}" if kind == "delete-field" else f"set {list(path)} = {replacement!r}"
    return what, (struct.pack("<Q", len(edited)) + edited + body) if safetensors else edited


def _one_line(exc: UnlearnAssertError, what: str) -> None:
    message = str(exc)
    assert message.strip() and "\n" not in message, f"{what}: not one line: {message!r}"
    assert "Traceback" not in message, f"{what}: {message!r}"


def _fuzz(work: Path, files: list[Path], record_property: Any, name: str, load: Any) -> None:
    from unlearn_assert.config import build_run_config
    from unlearn_assert.engine.inputs import precheck

    settings_ = {
        "model": str(work / "unlearned"),
        "target": str(work / "target"),
        "data": str(work / "data"),
        "quantizers": "rtn-w8",
        "no_cache": True,
    }
    run = build_run_config(lambda opt: settings_.get(opt.name, opt.default))
    originals = {f: f.read_bytes() for f in files}
    tried: Counter[str] = Counter()

    @FUZZ
    @given(st.data())
    def mutate(data: st.DataObject) -> None:
        file = data.draw(st.sampled_from(files), label="file")
        original = originals[file]
        what, mutated = data.draw(
            mutation(original, file.suffix == ".json", file.suffix == ".safetensors"), label="mutation"
        )
        what = f"{file.relative_to(work)}: {what}"
        file.write_bytes(mutated)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # as a user's run shows them; this repository's pytest makes them errors
                precheck(run)
                load(work)
            tried["loaded"] += 1
        except UnlearnAssertError as exc:
            tried["refused"] += 1
            _one_line(exc, what)
        except Exception as exc:  # noqa: BLE001 - named in the failure: this is what the fuzz looks for
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
        finally:
            file.write_bytes(original)

    mutate()
    total = sum(tried.values())
    print(f"{name}: {total} mutations tried ({tried['refused']} refused with one line, {tried['loaded']} loaded)")
    record_property(f"{name}_mutations", total)
    assert tried["refused"], "the mutations must break something"


def test_mutated_model_files_load_or_give_one_line(work: Path, record_property: Any) -> None:
    from unlearn_assert.models import load_model

    def load(root: Path) -> None:
        load_model(root / "unlearned", device="cpu")

    _fuzz(work, [work / "unlearned" / n for n in MODEL_FILES], record_property, "model_file_fuzz", load)


def test_mutated_data_files_load_or_give_one_line(work: Path, record_property: Any) -> None:
    from unlearn_assert.data.muse import load_data

    def load(root: Path) -> None:
        data = load_data(root / "data")
        data.limited(1)

    files = sorted(p for p in (work / "data").rglob("*") if p.is_file())
    assert len(files) >= 10  # every MUSE file of the fixture, raw text included
    _fuzz(work, files, record_property, "data_file_fuzz", load)


def test_every_header_field_deleted_or_retyped_prechecks_cleanly(work: Path, record_property: Any) -> None:
    """The deterministic complement of the random fuzz: every top-level field of config.json and
    tokenizer_config.json, and every field of one tensor's safetensors header entry, deleted and set
    to each odd value, through precheck alone (milliseconds each)."""
    from unlearn_assert.config import build_run_config
    from unlearn_assert.engine.inputs import precheck

    settings_ = {
        "model": str(work / "unlearned"),
        "target": str(work / "target"),
        "data": str(work / "data"),
        "quantizers": "rtn-w8",
        "no_cache": True,
    }
    run = build_run_config(lambda opt: settings_.get(opt.name, opt.default))
    tried: Counter[str] = Counter()
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        file = work / "unlearned" / name
        original = file.read_bytes()
        header, body = _split_safetensors(original) if name.endswith(".safetensors") else (original, b"")
        value = json.loads(header)
        tensor = next((k for k in value if k != "__metadata__"), None) if body else None
        paths = [(tensor, field) for field in value[tensor]] + [("__metadata__",)] if tensor else [(k,) for k in value]
        for path in paths:
            for delete, replacement in [(True, None), *((False, v) for v in ODD_VALUES)]:
                edited = json.dumps(_edit(json.loads(header), path, replacement, delete)).encode()
                file.write_bytes(struct.pack("<Q", len(edited)) + edited + body if body else edited)
                what = f"{name}: {'delete' if delete else 'set'} {list(path)}{'' if delete else f' = {replacement!r}'}"
                try:
                    precheck(run)
                    tried["accepted"] += 1
                except UnlearnAssertError as exc:
                    tried["refused"] += 1
                    _one_line(exc, what)
                except Exception as exc:  # noqa: BLE001 - named in the failure
                    raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
                finally:
                    file.write_bytes(original)
    print(
        f"header field sweep: {sum(tried.values())} mutations tried ({tried['refused']} refused, {tried['accepted']} "
        "accepted)"
    )
    record_property("header_field_sweep_mutations", sum(tried.values()))
    assert tried["refused"] and tried["accepted"]
