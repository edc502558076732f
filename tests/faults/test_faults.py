"""Faults around a run (issue 16): a full disk while writing a report or a cache entry, a run killed
mid-write, a read-only model directory, and an internal error. Each gives at most one line, keeps
no partial file, and leaves the next run working."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from unlearn_assert.cache import ResultCache, atomic_write_text, cache_key

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

#: a conftest for a pytester run: every fsync fails as on a full disk (the data written before it
#: never reaches the disk, so this is where ENOSPC surfaces on a delayed-allocation filesystem)
FULL_DISK_CONFTEST = """
import errno, os

def _full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

os.fsync = _full
"""

#: a conftest that SIGKILLs the run inside its second result-row cache write, after the temp file
#: is written and before it replaces the entry (fingerprint entries are let through)
KILL_CONFTEST = """
import os, signal
import unlearn_assert.cache as cache

_real, _rows = cache.atomic_write_text, []

def _write(path, text):
    if '"sha256"' not in text:
        _rows.append(path)
        if len(_rows) == 2:
            os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
    return _real(path, text)

cache.atomic_write_text = _write
"""


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _args(unlearned: Path, target: Path, data: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"--unlearn-model={unlearned}",
        f"--unlearn-target={target}",
        f"--unlearn-data={data}",
        "--unlearn-quantizers=rtn-w8",
        f"--unlearn-cache-dir={cache}",
        "-p",
        "no:cacheprovider",
        "-k",
        "fp-verbmem_f",
        *extra,
    ]


# --------------------------------------------------------------------------- full disk


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "r.json"
    atomic_write_text(old, "previous")

    def full(fd: int) -> None:
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", full)
    for path in (old, tmp_path / "new.json"):
        with pytest.raises(OSError) as info:
            atomic_write_text(path, "x" * 10_000)
        assert info.value.errno == errno.ENOSPC
    assert _files(tmp_path) == ["r.json"] and old.read_text() == "previous"


def test_result_cache_on_a_full_disk_warns_once_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", full)
    seen: list[str] = []
    cache = ResultCache(tmp_path, on_write_error=seen.append)
    for n in range(3):
        cache.put(cache_key({"n": n}), {"values": {"knowmem_f": 1.0}})
    assert len(seen) == 1 and "\n" not in seen[0] and seen[0] == cache.write_error
    assert "No space left on device" in seen[0] and "--unlearn-no-cache" in seen[0]
    assert _files(tmp_path) == []
    assert cache.get(cache_key({"n": 0})) is None
    with pytest.warns(RuntimeWarning, match="results are not cached"):  # library use, no callback: a warning
        ResultCache(tmp_path / "other").put("k" * 64, {})


def test_full_disk_during_a_run_gives_one_line_each_and_no_partial_file(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makeconftest(FULL_DISK_CONFTEST)
    cache, report = pytester.path / "cache", pytester.path / "out" / "r.json"
    report.parent.mkdir()
    result = pytester.runpytest_subprocess(
        *_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, cache, f"--unlearn-json={report}")
    )
    out = result.stdout.str() + result.stderr.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out[-3000:]
    result.assert_outcomes(**({"passed": 1} if result.ret == 0 else {"failed": 1}), deselected=5)
    cache_lines = [line for line in result.stdout.lines if "could not write the result cache entry" in line]
    report_lines = [line for line in result.stdout.lines if f"could not write {report}" in line]
    assert len(cache_lines) == 1 and "No space left on device" in cache_lines[0], out[-3000:]
    assert len(report_lines) == 1 and "No space left on device" in report_lines[0], out[-3000:]
    assert "Traceback" not in out and "internal error" not in out
    assert _files(report.parent) == [] and (not cache.exists() or _files(cache) == [])


# --------------------------------------------------------------------------- killed run


def test_a_run_killed_mid_write_leaves_a_cache_the_next_run_uses(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    cache = pytester.path / "cache"
    conftest = pytester.makeconftest(KILL_CONFTEST)
    killed = pytester.runpytest_subprocess(*_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, cache))
    assert killed.ret == -9, killed.stdout.str()[-2000:]
    entries = [p for p in cache.rglob("*.json")]
    temps = [p for p in cache.rglob("*.tmp")]
    assert temps, "the kill was meant to land between the temp file and its rename"
    conftest.unlink()
    rerun = pytester.runpytest_subprocess(
        *_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, cache, "--unlearn-json=r.json")
    )
    out = rerun.stdout.str() + rerun.stderr.str()
    assert rerun.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out[-3000:]
    assert "Traceback" not in out and "target fp: cached result" in out
    rows = {(r["model"], r["quantizer"]): r for r in json.loads((pytester.path / "r.json").read_text())["rows"]}
    assert rows[("target", "fp")]["cached"] and not rows[("unlearned", "fp")]["cached"]
    assert len(list(cache.rglob("*.json"))) > len(entries)  # the interrupted entry is written now


# --------------------------------------------------------------------------- read-only models


def test_a_read_only_model_directory_works_and_is_left_untouched(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    dirs = {name: pytester.path / name for name in ("unlearned", "target")}
    shutil.copytree(tiny_unlearned_dir, dirs["unlearned"])
    shutil.copytree(tiny_model_dir, dirs["target"])
    for d in dirs.values():
        for p in [*d.iterdir(), d]:
            p.chmod(
                stat.S_IRUSR
                | stat.S_IRGRP
                | stat.S_IROTH
                | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if p.is_dir() else 0)
            )
    before = {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for d in dirs.values() for p in [d, *d.iterdir()]}
    try:
        result = pytester.runpytest_subprocess(
            *_args(dirs["unlearned"], dirs["target"], tiny_data_dir, pytester.path / "cache")
        )
        after = {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for d in dirs.values() for p in [d, *d.iterdir()]}
    finally:
        for d in dirs.values():
            for p in [d, *d.iterdir()]:
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out[-3000:]
    result.assert_outcomes(**({"passed": 1} if result.ret == 0 else {"failed": 1}), deselected=5)
    assert "Traceback" not in out
    assert after == before, "nothing may be written into a model directory"


# --------------------------------------------------------------------------- internal errors

ITEM_BUG_CONFTEST = """
import unlearn_assert.engine.runner as runner

def _bug(*args, **kwargs):
    raise RuntimeError("forced internal error\\nsecond line of it")

runner.compute_row = _bug
"""

CONFIGURE_BUG_CONFTEST = """
import unlearn_assert.engine.inputs as inputs

def _bug(run, **kwargs):
    raise KeyError("forced internal error")

inputs.precheck = _bug
"""


def test_an_internal_error_in_an_item_is_one_line_naming_the_row(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makeconftest(ITEM_BUG_CONFTEST)
    args = _args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, pytester.path / "cache")
    args.remove("no:cacheprovider")
    args.remove("-p")  # the log goes to pytest's cache dir
    result = pytester.runpytest_subprocess(*args)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    lines = [line for line in result.stdout.lines if "internal error" in line and not line.startswith("FAILED")]
    assert len(lines) == 1, out[-3000:]
    line = lines[0]
    assert line.startswith(
        "unlearn-assert: internal error while computing the row target fp for test_budget[fp-verbmem_f]"
    )
    assert "(RuntimeError: forced internal error second line of it)" in line
    assert "this is a bug in unlearn-assert; please report it with the JSON report" in line
    assert "Traceback" not in out and "second line of it\n" not in out
    log = Path(line.split("full traceback in ")[1].split(" (or rerun with -v)")[0])
    assert "Traceback (most recent call last)" in log.read_text() and "forced internal error" in log.read_text()
    verbose = pytester.runpytest_subprocess(*args, "-v")
    assert "Traceback (most recent call last)" in verbose.stdout.str() and "in _bug" in verbose.stdout.str()


def test_an_internal_error_while_checking_options_is_one_line(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tiny_unlearned_dir: Path,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
) -> None:
    # while options are checked pytest's cache is not set up yet, so the traceback goes to the temp dir: this test's own
    temp = pytester.path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    pytester.makeconftest(CONFIGURE_BUG_CONFTEST)
    result = pytester.runpytest_subprocess(
        *_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, pytester.path / "cache")
    )
    lines = [line for line in result.stderr.lines if line.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "ERROR: unlearn-assert: internal error while checking the options and inputs (KeyError: 'forced internal "
        "error')"
    )
    assert "this is a bug in unlearn-assert" in lines[0] and "Traceback" not in result.stdout.str()
    log = temp / "internal-errors.log"
    assert f"full traceback in {log}" in lines[0] and "KeyError: 'forced internal error'" in log.read_text()
