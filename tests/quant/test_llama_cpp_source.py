"""Where llama.cpp's converter comes from (``unlearn-assert llama-cpp-converter``), read without importing it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from unlearn_assert.errors import ConfigError
from unlearn_assert.quant import llama_cpp_source as src

INIT = """from __future__ import annotations
TEXT_MODEL_MAP: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Gemma3ForCausalLM": "gemma",
}
MMPROJ_MODEL_MAP: dict[str, str] = {"LlavaForConditionalGeneration": "llava"}
"""


def _sdist(path: Path, version: str = "9.9.9", commit: str = "abc1234", *, skip: str = "") -> Path:
    """A llama-cpp-python-shaped sdist holding the converter's files (and others that must not be taken)."""
    top = f"llama_cpp_python-{version}"
    changelog = (
        f"# Changelog\n\n## [{version}]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@{commit}\n\n"
        "## [9.9.8]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@0000000\n"
    )
    files = {
        f"{top}/CHANGELOG.md": changelog,
        f"{top}/vendor/llama.cpp/convert_hf_to_gguf.py": "print('converter')\n",
        f"{top}/vendor/llama.cpp/conversion/__init__.py": INIT,
        f"{top}/vendor/llama.cpp/conversion/base.py": "\n",
        f"{top}/vendor/llama.cpp/gguf-py/gguf/__init__.py": "\n",
        f"{top}/vendor/llama.cpp/LICENSE": "MIT\n",
        f"{top}/vendor/llama.cpp/src/llama.cpp": "// not taken\n",
        f"{top}/llama_cpp/__init__.py": "# not taken\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            if skip and name.endswith(skip):
                continue
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_converter_is_taken_from_the_sdist_with_its_source(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "llama-cpp-python-9.9.9"
    source = src.install_from_sdist(_sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz"), dest)
    assert source["llama_cpp_python"] == "9.9.9"
    assert source["llama_cpp_commit"] == "abc1234"  # this version's changelog line, not 9.9.8's
    taken = sorted(p.name for p in dest.iterdir())
    assert taken == ["LICENSE", "SOURCE.json", "conversion", "convert_hf_to_gguf.py", "gguf-py"]
    assert json.loads((dest / "SOURCE.json").read_text())["sdist_sha256"] == source["sdist_sha256"]
    assert src.missing(dest) == [] and src.describe(dest) == "llama.cpp abc1234 (llama-cpp-python 9.9.9)"
    assert src.converted_architectures(dest) == {"LlamaForCausalLM", "Gemma3ForCausalLM"}  # text models only


def test_an_sdist_without_the_converter_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no vendor/llama.cpp/conversion/base.py; pass a llama-cpp-python sdist"):
        src.install_from_sdist(_sdist(tmp_path / "s.tar.gz", skip="conversion/base.py"), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_where_the_converter_is_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(src.ENV, str(tmp_path / "nowhere"))
    root, reason = src.find_converter()
    assert root is None
    nowhere = tmp_path / "nowhere"
    assert reason.startswith(f"${src.ENV}={nowhere} is not a llama.cpp source tree (it has no convert_hf_to_gguf.py)")
    src.install_from_sdist(_sdist(tmp_path / "s.tar.gz"), tmp_path / "tree")
    monkeypatch.setenv(src.ENV, str(tmp_path / "tree"))
    assert src.find_converter() == (tmp_path / "tree", "")
    monkeypatch.delenv(src.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(src, "installed_version", lambda: "9.9.9")
    root, reason = src.find_converter()
    assert root is None
    assert reason == (
        "llama.cpp's converter (convert_hf_to_gguf.py of llama-cpp-python 9.9.9) is not set up; "
        f"run: {src.SETUP} (or set ${src.ENV} to a llama.cpp checkout)"
    )
    src.install_from_sdist(_sdist(tmp_path / "s.tar.gz"), src.default_dir("9.9.9"))
    assert src.find_converter() == (tmp_path / "xdg" / "unlearn-assert" / "llama.cpp" / "llama-cpp-python-9.9.9", "")


def test_the_command_sets_it_up_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from unlearn_assert.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(src, "installed_version", lambda: "9.9.9")
    sdist = _sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz")
    assert main(["llama-cpp-converter", "--sdist", str(sdist)]) == 0
    assert "llama.cpp's converter set up in" in capsys.readouterr().out
    monkeypatch.setattr(src, "_download_sdist", lambda *a: pytest.fail("downloaded although it is set up"))
    assert main(["llama-cpp-converter"]) == 0
    assert "is already set up in" in capsys.readouterr().out
