"""Helpers shared by the benchmarks: where the data is, and how results are written."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RAGLINE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results"


def need(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"benchmark data not found: {path}\n(read from ../shared/data; it is never copied into the project)")
    return path


def write(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **result}
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"-> {out.relative_to(REPO)}")
    return out


def percentiles(xs: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.array(xs)
    return {f"p{p}_ms": round(float(np.percentile(a, p)), 2) for p in (50, 95, 99)}
