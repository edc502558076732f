"""The built wheel, installed into a fresh venv, gates a model from an empty directory.

About two minutes (it installs torch and transformers into a new venv, from pip's cache where
possible); it proves the suite ships inside the wheel and the entry point works from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_in_fresh_venv(tmp_path: Path, tiny_model_dir: Path, tiny_in_cell_dir: Path, tiny_data_dir: Path) -> None:
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(dist.glob("unlearn_assert-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "unlearn_assert/suites/test_budget.py" in names and "unlearn_assert/render/templates/report.html.j2" in names
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    installed = _run(
        [str(py), "-m", "pip", "install", "-q", "-c", str(REPO / ".ci" / "constraints.txt"), str(wheel)], cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    result = _run(
        [
            str(py),
            "-m",
            "pytest",
            f"--unlearn-model={tiny_in_cell_dir}",
            f"--unlearn-target={tiny_model_dir}",
            f"--unlearn-data={tiny_data_dir}",
            "--unlearn-quantizers=rtn-w4g128,rtn-w8",
            "--unlearn-json=r.json",
            "-p",
            "no:cacheprovider",
            "--unlearn-cache-dir=cache",
        ],
        cwd=empty,
        env=env,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "test_budget[rtn-w4g128-verbmem_f]" in result.stdout and "unlearning budget summary" in result.stdout
    assert (empty / "r.json").is_file()
    assert (
        str(REPO)
        not in _run([str(py), "-c", "import unlearn_assert; print(unlearn_assert.__file__)"], cwd=empty).stdout
    )
    shutil.rmtree(env_dir)
