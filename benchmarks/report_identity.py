"""Are two JSON reports the same, all but timings and the version? For refactors that must not change numbers.

Two commands::

    python benchmarks/report_identity.py tiny OUT.json     # gate the tiny pair (built here, deterministic) into
    OUT.json
    python benchmarks/report_identity.py diff A.json B.json [C.json D.json ...]   # pairwise: identical or the paths
    that differ

``tiny`` builds the tests' tiny target, its perturbed "unlearned" copy and a retrain model (the same
recipes as ``tests/conftest.py``, so the same weights on the same kernel path), then runs
``unlearn_assert.gate`` with every quantizer family that runs on a CPU, a relearning attack and the
retrain model, with the result cache off. ``diff`` removes what legitimately changes between two runs
of the same numbers (wall times, the creation time, the package version, command line, cache flags,
machine load) and compares the rest exactly (floats included): a refactor passes only when it prints
``identical``. The demo family's reports come from ``unlearn-assert demo --out DIR`` with a fresh result
cache (``XDG_CACHE_HOME``), and are compared the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: keys whose values are timings or run facts, not results (removed wherever they occur, as is every ``seconds*`` key)
VOLATILE = frozenset(
    {
        "seconds",
        "created",
        "argv",
        "cached",
        "wall_seconds",
        "elapsed",
        "load_seconds",
        "train_seconds",
        "quantize_seconds",
        "execution",
        "cpu_count",
        "platform",
        "processor",
        "started",
        "finished",
    }
)
#: top-level provenance keys that name versions
VERSION_KEYS = ("unlearn_assert",)
TINY_VARIANTS = "rtn-w4g128,rtn-w8,bnb-nf4,bnb-int8,hqq-w4g64,gguf-q4_k_m,relearn-forget-5"


def normalized(report: Any) -> Any:
    """``report`` without timings, run facts and the package version."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if k not in VOLATILE and not k.startswith("seconds")}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    out = walk(report)
    for key in VERSION_KEYS:
        out.get("provenance", {}).pop(key, None)
    return out


def differences(a: Any, b: Any, path: str = "$") -> list[str]:
    """Every path at which ``a`` and ``b`` differ (exact equality; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'second' if k not in a else 'first'}")
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        return []
    return [f"{path}: {a!r} vs {b!r}"]


def build_tiny(root: Path) -> dict[str, Path]:
    """The tests' tiny target, unlearned and retrain models under ``root``."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import TINY_DATA, fixture_texts  # type: ignore[import-not-found]
    from unlearn_assert.testing import build_tiny_llama, perturb_copy

    target = build_tiny_llama(root / "target", fixture_texts(TINY_DATA))
    unlearned = perturb_copy(target, root / "unlearned", scale=2e-2)
    retrain = build_tiny_llama(root / "retrain", fixture_texts(TINY_DATA, forget=False), tokenizer_from=target)
    return {"target": target, "unlearned": unlearned, "retrain": retrain, "data": TINY_DATA}


def cmd_tiny(out: Path, variants: str) -> int:
    import torch

    import unlearn_assert as ua

    torch.set_num_threads(1)
    root = Path(tempfile.gettempdir()) / "unlearn-assert-report-identity"  # a fixed place: the report records the paths
    shutil.rmtree(root, ignore_errors=True)
    try:
        paths = build_tiny(root)
        report = ua.gate(
            paths["unlearned"],
            paths["target"],
            paths["data"],
            retrain=str(paths["retrain"]),
            quantizers=variants,
            no_cache=True,
        )
        out.write_text(json.dumps(report.to_dict(), indent=1, sort_keys=True, default=str))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {out}")
    return 0


def cmd_diff(files: list[Path]) -> int:
    if len(files) % 2:
        print("give pairs of reports: A.json B.json [C.json D.json ...]", file=sys.stderr)
        return 2
    status = 0
    for a, b in zip(files[::2], files[1::2]):
        diff = differences(normalized(json.loads(a.read_text())), normalized(json.loads(b.read_text())))
        if diff:
            status = 1
            print(f"{a} vs {b}: {len(diff)} difference(s)")
            for line in diff[:40]:
                print("  " + line)
        else:
            print(f"{a} vs {b}: identical (all but timings and the version)")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tiny = sub.add_parser("tiny", help="gate the tiny pair into a JSON report")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--variants", default=TINY_VARIANTS)
    diff = sub.add_parser("diff", help="compare reports pairwise")
    diff.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    return cmd_tiny(args.out, args.variants) if args.cmd == "tiny" else cmd_diff(args.files)


if __name__ == "__main__":
    raise SystemExit(main())
