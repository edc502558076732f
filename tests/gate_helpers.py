"""Arguments and outcomes of a gate run through pytester, shared by the end-to-end tests of every folder."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

QUANTIZERS = "rtn-w4g128,rtn-w8"


def gate_args(model: Path, target: Path, data: Path, *extra: str, cache: Path | None = None) -> list[str]:
    args = [
        f"--unlearn-model={model}",
        f"--unlearn-target={target}",
        f"--unlearn-data={data}",
        f"--unlearn-quantizers={QUANTIZERS}",
        "-p",
        "no:randomly",
    ]
    if cache is not None:
        args.append(f"--unlearn-cache-dir={cache}")
    return args + list(extra)


def outcomes(junit: Path) -> dict[str, str]:
    """item id -> outcome, from a JUnit XML file (the terminal interleaves progress lines)."""
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if name.startswith("test_budget["):
            state = (
                "failed"
                if case.find("failure") is not None
                else "skipped"
                if case.find("skipped") is not None
                else "passed"
            )
            out[name[len("test_budget[") : -1]] = state
    return out
