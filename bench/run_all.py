"""Runs every benchmark once, in order, each in its own process (so one's memory and threads
do not colour the next). `make bench` calls this; `make bench-scifact` runs the long one alone.

    .venv/bin/python bench/run_all.py [--skip-scifact]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
QUICK = ["layer_size.py", "ask_startup.py", "ingest_throughput.py", "scale_latency.py", "cold_start.py", "cache_hit_latency.py"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-scifact", action="store_true")
    args = ap.parse_args()
    scripts = [s for s in QUICK if (HERE / s).exists()]
    if not args.skip_scifact:
        scripts.append("retrieval_scifact.py")
    failed = []
    for s in scripts:
        print(f"== {s}", flush=True)
        if subprocess.run([sys.executable, str(HERE / s)], cwd=HERE.parent, check=False).returncode != 0:
            failed.append(s)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
