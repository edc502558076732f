"""Scale-out: each row computed once per run under xdist (claims), the workers' thread budget and
GPU assignment, where the rows go (one worker for small models, spread for large ones or one GPU per
worker), and the same numbers as a serial run."""

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
from unlearn_assert.scaleout.placement import CROSSOVER_FLOPS, cuda_visible, decide, is_suite_item, visible_gpus
from unlearn_assert.scaleout.workers import apply_thread_budget, thread_budget, worker_device, worker_index

QUANTIZERS = "rtn-w4g64,rtn-w8,bnb-fp4"


def test_thread_budget_divides_the_cores() -> None:
    assert (
        thread_budget(2, 2) == 1 and thread_budget(2, 16) == 8 and thread_budget(3, 2) == 1 and thread_budget(1, 4) == 4
    )


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
    for bad, message in (
        ("0,x", "not a comma-separated list of GPU indices"),
        ("1,1", "names a GPU twice"),
        ("-1", "not a comma-separated list"),
    ):
        with pytest.raises(ConfigError, match=message):
            run(devices=bad)
    with pytest.raises(ConfigError, match="--unlearn-device is 'cpu'; use --unlearn-device=auto or cuda"):
        run(devices="0", device="cpu")


def test_small_rows_share_one_worker_and_large_ones_are_spread() -> None:
    small, large = CROSSOVER_FLOPS / 100, CROSSOVER_FLOPS * 2
    one = decide(2, "no", 0, small)
    assert (one.mode, one.row_workers, one.scheduled, one.dist) == ("one worker", 1, True, "load")
    assert "crossover" in one.reason
    spread = decide(2, "no", 0, large)
    assert (spread.mode, spread.row_workers, spread.scheduled) == ("spread", 2, False)
    assert "parallel rows win" in spread.reason
    assert decide(4, "no", 1, small).mode == "one worker"  # fewer GPUs than workers: the cost decides
    gpus = decide(2, "no", 2, small)  # a GPU per worker: spread, as before
    assert (gpus.mode, gpus.row_workers, gpus.scheduled) == ("spread", 2, False) and "one GPU per worker" in gpus.reason
    assert decide(2, "loadgroup", 0, small).scheduled  # the user's loadgroup: the suite is one group of it
    for dist in ("load", "worksteal", "each"):  # given explicitly: theirs
        theirs = decide(2, dist, 0, small)
        assert (theirs.mode, theirs.scheduled, theirs.dist) == ("spread", False, dist) and dist in theirs.reason
    for dist in ("loadscope", "loadfile"):  # one module on one worker already
        assert (decide(2, dist, 0, large).mode, decide(2, dist, 0, large).row_workers) == ("one worker", 1)
    assert decide(0, "no", 0, large).mode == "serial" and decide(1, "no", 0, large).row_workers == 1
    assert decide(2, "no", 0, None).mode == "one worker"  # nothing counted: the cheap choice
    assert decide(2, "no", 0, small).to_dict()["gflop"] == round(small / 1e9, 1)


def test_the_built_in_suite_is_told_apart_by_node_id() -> None:
    assert is_suite_item("suites/test_budget.py::test_budget[rtn-w8-knowmem_f]")
    assert is_suite_item("::test_budget[fp-verbmem_f]")  # pytest 9: a module outside the rootdir
    assert not is_suite_item("tests/test_mine.py::test_budget_is_fine")
    assert not is_suite_item("tests/test_mine.py::test_budget[x]")
    assert not is_suite_item("suites/test_budget.py::test_other[x]")


def test_gpus_are_counted_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert visible_gpus("cpu", ()) == 0 and visible_gpus("auto", (0, 3)) == 2 and visible_gpus("cuda:1", ()) == 1
    assert cuda_visible(4, None) == 4 and cuda_visible(4, "1,2") == 2 and cuda_visible(4, "") == 0
    assert cuda_visible(4, "0,-1,2") == 1 and cuda_visible(0, "0,1") == 0 and cuda_visible(2, "0,1,2,3") == 2
    monkeypatch.delitem(sys.modules, "torch")  # the controller has not imported torch: the driver's list decides
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("auto", ()) == 0


def test_claims_are_exclusive_and_die_with_their_holder(tmp_path: Path) -> None:
    claims = RowClaims(tmp_path, poll=0.01)
    key = "ab" * 32
    assert claims.try_claim(key) and not claims.try_claim(key)
    claims.release(key)
    assert claims.try_claim(key)
    claims.release(key)
    # a holder that died (a process of this host that no longer exists) leaves a claim anyone may break
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
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


def _heap_at_exit():  # after pytest's last hook: did the process that computed rows freeze its heap?
    import gc

    with open(os.environ["UNLEARN_ROW_LOG"] + ".exit", "a") as fh:
        fh.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}:{gc.get_freeze_count() > 0}\\n")


import atexit

atexit.register(_heap_at_exit)
"""


@pytest.mark.parametrize("cache", ["shared-cache", "no-cache"])
def test_xdist_computes_each_row_once_with_the_serial_numbers(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    cache: str,
    tiny_unlearned_dir: Path,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
) -> None:
    """``-n 2`` on the tiny pair puts every row on one worker (the rows are far below the crossover), with all the
    cores' threads; ``--dist load`` spreads them, each row computed once (claims); both give the serial numbers."""
    pytester.makeconftest(COUNTING_CONFTEST)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # let the workers take their thread budget
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):  # this test's own worker's, under -n
        monkeypatch.delenv(name, raising=False)
    base = [
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        f"--unlearn-quantizers={QUANTIZERS}",
        "--unlearn-max-samples=4",
        "--unlearn-device=cpu",
        "-p",
        "no:randomly",
    ]
    modes = {"serial": [], "spread": ["-n", "2", "--dist", "load"]}
    if cache == "no-cache":
        modes["grouped"] = ["-n", "2"]
    runs = {}
    exits: dict[str, dict[str, str]] = {}
    for mode, extra in modes.items():
        log = pytester.path / f"{mode}.log"
        monkeypatch.setenv("UNLEARN_ROW_LOG", str(log))
        extra = extra + (
            ["--unlearn-no-cache"] if cache == "no-cache" else [f"--unlearn-cache-dir={pytester.path / mode}"]
        )
        result = pytester.runpytest_subprocess(*base, *extra, f"--unlearn-json={mode}.json")
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-2000:]
        runs[mode] = (json.loads((pytester.path / f"{mode}.json").read_text()), log.read_text().split())
        exits[mode] = dict(line.split(":") for line in Path(f"{log}.exit").read_text().split())
    serial, serial_rows = runs["serial"]
    cores = len(os.sched_getaffinity(0))
    for mode, (report, rows) in runs.items():
        assert sorted(rows) == sorted(serial_rows) and len(set(rows)) == len(rows) == 8  # 2 fp + 3 x (q(T), q(U))
        assert {(r["model"], r["quantizer"]): r["values"] for r in report["rows"]} == {
            (r["model"], r["quantizer"]): r["values"] for r in serial["rows"]
        }, mode
        assert [(v["item"], v["outcome"], v["message"]) for v in report["verdicts"]] == [
            (v["item"], v["outcome"], v["message"]) for v in serial["verdicts"]
        ], mode
        assert all(not r["cached"] for r in report["rows"])  # each row as computed by the worker that computed it
        # the machine facts are those of a process that computed rows (the controller never imports torch for them),
        # and the record they travelled in is the report's execution entry without them
        execution = report["provenance"]["execution"]
        assert all("machine" not in w for w in execution)
        assert report["provenance"]["machine"]["cpu"]["threads"] in {w["threads"]["intra_op"] for w in execution}
        # every process that computed rows froze its heap for a fast exit; the others (controller, idle worker) not
        computed = {w["worker"] for w in execution}
        assert {who for who, frozen in exits[mode].items() if frozen == "True"} == computed, exits[mode]
    assert serial["provenance"]["execution"][0]["worker"] == "main"
    assert serial["provenance"]["execution"][0]["placement"]["mode"] == "serial"
    spread = runs["spread"][0]["provenance"]["execution"]
    assert sorted(w["worker"] for w in spread) == ["gw0", "gw1"]
    assert all(
        w["threads"]["intra_op"] == max(1, cores // 2) and w["threads"]["set_by"].startswith("unlearn-assert")
        for w in spread
    )
    assert all(w["placement"]["mode"] == "spread" and "--dist load" in w["placement"]["reason"] for w in spread)
    if "grouped" in runs:
        grouped = runs["grouped"][0]["provenance"]["execution"]
        assert len(grouped) == 1, grouped  # one worker computed every row
        placement = grouped[0]["placement"]
        assert placement["mode"] == "one worker" and placement["scheduled"] and placement["row_workers"] == 1
        assert placement["footprint"]["rows"] == 8 and 0 < placement["gflop"] < CROSSOVER_FLOPS / 1e9
        assert grouped[0]["threads"]["set_by"] == "torch's default"  # all the cores, as a serial run


def test_a_worker_computes_what_no_other_holds_before_waiting(
    tmp_path: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """Two spread workers whose first items both need T and U in full precision: while another process holds T's
    row, this one computes U's instead of waiting (``Gate.prefetch``), and then reads T's once it is stored."""
    from unlearn_assert.cache import ResultCache
    from unlearn_assert.config import run_config
    from unlearn_assert.engine import Gate
    from unlearn_assert.engine.rows import row_key

    run = run_config(
        model=tiny_unlearned_dir,
        target=tiny_model_dir,
        data=tiny_data_dir,
        quantizers=("rtn-w8",),
        device="cpu",
        max_samples=2,
        no_cache=True,
    )
    shared = tmp_path / "run"
    with Gate(run, ResultCache(None, enabled=False), shared=shared) as gate:
        assert gate.claims is not None
        other = RowClaims(shared / "claims")  # "another worker" (this process: alive, so its claim holds)
        target_key = row_key("target", None, gate.inputs)
        assert other.try_claim(target_key)
        import threading

        worker = threading.Thread(target=gate.prefetch, args=([("target", "fp"), ("unlearned", "fp")],), daemon=True)
        worker.start()
        worker.join(timeout=120)  # a prefetch that waited for T's claim would never return: fail, do not hang
        assert not worker.is_alive(), "prefetch waited for a row another process holds"
        assert set(gate.rows) == {("unlearned", "fp")}  # T is held elsewhere: skipped, not waited for
        with Gate(run, ResultCache(None, enabled=False)) as alone:  # the other worker's result, stored where it goes
            gate.store.put(target_key, alone.row("target").to_dict())
        other.release(target_key)
        verdict = gate.check("fp", "verbmem_f")
        assert verdict.outcome in ("passed", "failed") and set(gate.rows) == {("unlearned", "fp"), ("target", "fp")}
        assert gate.rows[("target", "fp")].cached  # read from the store, not computed a second time
