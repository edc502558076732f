"""Scale-out: each row computed once per run under xdist (claims), the workers' thread budget and
GPU assignment, and the same numbers as a serial run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unlearn_assert.config import build_run_config
from unlearn_assert.errors import ConfigError
from unlearn_assert.scaleout.claims import RowClaims
from unlearn_assert.scaleout.workers import apply_thread_budget, thread_budget, worker_device, worker_index

QUANTIZERS = "rtn-w4g64,rtn-w8,bnb-fp4"


def test_thread_budget_divides_the_cores() -> None:
    assert thread_budget(2, 2) == 1 and thread_budget(2, 16) == 8 and thread_budget(3, 2) == 1 and thread_budget(1, 4) == 4


def test_a_user_set_thread_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    info = apply_thread_budget(4)
    assert info["set_by"] == "OMP_NUM_THREADS=1" and torch.get_num_threads() == before
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert apply_thread_budget(1)["set_by"] == "torch's default"  # a serial run is left alone
    assert torch.get_num_threads() == before


def test_one_gpu_per_worker_with_a_stubbed_device_count() -> None:
    assert worker_index("gw3") == 3 and worker_index(None) is None and worker_index("master") is None
    assert [worker_device("auto", (), i, 4) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    assert [worker_device("auto", (2, 5), i, 8) for i in range(3)] == ["cuda:2", "cuda:5", "cuda:2"]
    assert worker_device("auto", (), 1, 1) == "auto"  # one GPU (or none): everyone on the default device
    assert worker_device("auto", (), 1, 0) == "auto"
    assert worker_device("cuda:1", (), 0, 4) == "cuda:1"  # an explicit device wins
    assert worker_device("auto", (0, 1), None, 2) == "auto"  # a serial run has no worker index


def test_devices_option_is_validated_at_parse_time() -> None:
    def run(**options: object) -> object:
        return build_run_config(lambda opt: options.get(opt.name, opt.default))

    assert run(devices="0, 2").devices == (0, 2)  # type: ignore[attr-defined]
    for bad, message in (("0,x", "not a comma-separated list of GPU indices"), ("1,1", "names a GPU twice"),
                         ("-1", "not a comma-separated list")):
        with pytest.raises(ConfigError, match=message):
            run(devices=bad)
    with pytest.raises(ConfigError, match="--unlearn-device is 'cpu'; use --unlearn-device=auto or cuda"):
        run(devices="0", device="cpu")


def test_claims_are_exclusive_and_die_with_their_holder(tmp_path: Path) -> None:
    claims = RowClaims(tmp_path, poll=0.01)
    key = "ab" * 32
    assert claims.try_claim(key) and not claims.try_claim(key)
    claims.release(key)
    assert claims.try_claim(key)
    claims.release(key)
    # a holder that died (a process of this host that no longer exists) leaves a claim anyone may break
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    lock = tmp_path / key[:2] / f"{key}.lock"
    lock.write_text(json.dumps({"host": claims.host, "pid": int(dead.stdout), "since": time.time()}))
    assert claims.try_claim(key)
    claims.release(key)
    # a holder elsewhere that stopped renewing its claim: abandoned after the expiry
    lock.write_text(json.dumps({"host": "another-host", "pid": 1, "since": 0}))
    assert not RowClaims(tmp_path).try_claim(key)
    old = time.time() - 10
    os.utime(lock, (old, old))
    assert RowClaims(tmp_path, expiry=5).try_claim(key)


def test_waiting_for_a_claimed_row_returns_its_result(tmp_path: Path) -> None:
    claims = RowClaims(tmp_path, poll=0.01)
    key = "cd" * 32
    assert claims.try_claim(key)
    results = iter([None, None, {"row": 1}])
    assert claims.wait(key, lambda: next(results)) == {"row": 1}
    with claims.holding(key):
        assert (tmp_path / key[:2] / f"{key}.lock").exists()
    assert not (tmp_path / key[:2] / f"{key}.lock").exists()
    assert claims.wait(key, lambda: None) is None  # released without a result: the caller claims it


COUNTING_CONFTEST = """
import os
import unlearn_assert.engine.runner as runner

_real = runner.compute_row

def _counting(role, source, inputs, handoff=None):
    with open(os.environ["UNLEARN_ROW_LOG"], "a") as fh:
        fh.write(f"{role}:{source.variant if source is not None else 'fp'}\\n")
    return _real(role, source, inputs, handoff)

runner.compute_row = _counting
"""


@pytest.mark.parametrize("cache", ["shared-cache", "no-cache"])
def test_xdist_computes_each_row_once_with_the_serial_numbers(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cache: str,
        tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    pytester.makeconftest(COUNTING_CONFTEST)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # let the workers take their thread budget
    base = [f"--unlearn-model={tiny_unlearned_dir}", f"--unlearn-target={tiny_model_dir}", f"--unlearn-data={tiny_data_dir}",
            f"--unlearn-quantizers={QUANTIZERS}", "--unlearn-max-samples=4", "--unlearn-device=cpu", "-p", "no:randomly"]
    runs = {}
    for mode in ("serial", "dist"):
        log = pytester.path / f"{mode}.log"
        monkeypatch.setenv("UNLEARN_ROW_LOG", str(log))
        extra = ["--unlearn-no-cache"] if cache == "no-cache" else [f"--unlearn-cache-dir={pytester.path / mode}"]
        if mode == "dist":
            extra += ["-n", "2"]
        result = pytester.runpytest_subprocess(*base, *extra, f"--unlearn-json={mode}.json")
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-2000:]
        computed = log.read_text().split()
        runs[mode] = (json.loads((pytester.path / f"{mode}.json").read_text()), computed)
    (serial, serial_rows), (dist, dist_rows) = runs["serial"], runs["dist"]
    assert sorted(dist_rows) == sorted(serial_rows) and len(set(dist_rows)) == len(dist_rows) == 8  # 2 fp + 3 x (q(T), q(U))
    assert {(r["model"], r["quantizer"]): r["values"] for r in dist["rows"]} == {(r["model"], r["quantizer"]): r["values"] for r in serial["rows"]}
    assert [(v["item"], v["outcome"], v["message"]) for v in dist["verdicts"]] == [(v["item"], v["outcome"], v["message"]) for v in serial["verdicts"]]
    assert all(not r["cached"] for r in dist["rows"])  # each row as computed by the worker that computed it
    workers = dist["provenance"]["execution"]
    assert sorted(w["worker"] for w in workers) == ["gw0", "gw1"]
    cores = len(os.sched_getaffinity(0))
    assert all(w["threads"]["intra_op"] == max(1, cores // 2) and w["threads"]["set_by"].startswith("unlearn-assert") for w in workers)
    assert serial["provenance"]["execution"][0]["worker"] == "main"
