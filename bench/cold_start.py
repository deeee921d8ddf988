"""Cold start of the four Lambda handlers with ``backend=aws``: the time to import
``functions/<name>/handler.py`` and build the service (``ragline.factory.default()``), each run
in a fresh interpreter, as a new Lambda container would.

Every run is a subprocess with AWS settings in the environment, dummy credentials, and the
socket layer patched before anything is imported: ``connect``/``connect_ex``/``getaddrinfo``
record the attempt and fail at once. A cold start must not touch the network (clients are built
lazily), and the child asserts it did not. Interpreter start-up is reported separately: Lambda
pays it in its runtime init, before the handler module is imported.

    .venv/bin/python bench/cold_start.py [--runs 5] [--target-ms 500]

Prints a table and writes bench/results/cold_start.json. Target: query <= 500 ms (median wall
time). On a shared machine wall time is inflated by other processes, so each run's own CPU time
is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HANDLERS = ("ingest", "query", "cache", "evaluate")

# Runs inside the fresh interpreter. Only the standard library is imported before the clock
# starts; the socket layer is patched before any project or SDK module is loaded.
CHILD = r"""
import json, socket, sys, time
attempts = []

def _refuse(kind):
    def refuse(*args, **kwargs):
        attempts.append([kind, repr(args[1:] if kind != "getaddrinfo" else args[:2])])
        raise OSError(f"network disabled for the cold-start benchmark ({kind})")
    return refuse

socket.socket.connect = _refuse("connect")
socket.socket.connect_ex = _refuse("connect_ex")
socket.getaddrinfo = _refuse("getaddrinfo")

import importlib.util
name, handler_path, layer = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, layer)
modules_before = len(sys.modules)
t0, c0 = time.perf_counter(), time.process_time()
spec = importlib.util.spec_from_file_location("handler", handler_path)
module = importlib.util.module_from_spec(spec)
sys.modules["handler"] = module
spec.loader.exec_module(module)
t1 = time.perf_counter()
from ragline import factory
app = factory.default()
t2, c2 = time.perf_counter(), time.process_time()
assert app.settings.backend == "aws", app.settings.backend
assert not attempts, f"the cold start attempted network access: {attempts}"
heavy = sorted(m for m in ("numpy", "opensearchpy", "torch", "sentence_transformers", "tiktoken", "fitz", "pypdf",
                            "docx", "bs4", "lxml", "fastapi", "uvicorn", "requests", "aws_xray_sdk")
               if m in sys.modules)
print(json.dumps({"import_ms": (t1 - t0) * 1000, "init_ms": (t2 - t1) * 1000, "total_ms": (t2 - t0) * 1000,
                  "cpu_ms": (c2 - c0) * 1000, "modules_loaded": len(sys.modules) - modules_before, "heavy_modules": heavy,
                  "network_attempts": len(attempts)}))
"""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAGLINE_", "POWERTOOLS_"))}
    env.update(
        RAGLINE_BACKEND="aws",
        RAGLINE_REGION="eu-west-1",
        RAGLINE_DOCUMENTS_BUCKET="ragline-documents-123456789012",
        RAGLINE_REGISTRY_TABLE="ragline-registry",
        RAGLINE_LEDGER_TABLE="ragline-ledger",
        RAGLINE_QUERY_LOG_TABLE="ragline-query-log",
        RAGLINE_IDEMPOTENCY_TABLE="ragline-idempotency",
        RAGLINE_OPENSEARCH_ENDPOINT="https://example.invalid",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_REGION="eu-west-1",
        # any request that slipped through would fail at once, locally
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",
        HF_HUB_OFFLINE="1",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        # as in a Lambda without active tracing; metrics stay on, as deployed
        AWS_LAMBDA_FUNCTION_NAME="ragline-cold-start",
        POWERTOOLS_TRACE_DISABLED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_once(name: str, env: dict[str, str]) -> dict:
    handler = REPO / "functions" / name / "handler.py"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(handler), str(REPO / "layers" / "python")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    wall = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the cold start failed\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_ms"] = wall
    return result


def write_result(name: str, result: dict) -> Path:
    """bench/_common.py's ``write`` when the project has it; otherwise the same JSON shape."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from _common import write
    except ImportError:
        import platform

        out = REPO / "bench" / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **result}
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"-> {out.relative_to(REPO)}")
        return out
    return write(name, result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--target-ms", type=float, default=500.0, help="median target for the query handler")
    ap.add_argument("--handlers", nargs="+", choices=HANDLERS, default=list(HANDLERS))
    args = ap.parse_args()
    env = child_env()
    load_before = os.getloadavg()
    rows = {}
    for name in args.handlers:
        runs = [run_once(name, env) for _ in range(args.runs)]
        med = {k: round(statistics.median(r[k] for r in runs), 1)
               for k in ("import_ms", "init_ms", "total_ms", "cpu_ms", "process_ms")}
        rows[name] = {
            "median_import_ms": med["import_ms"],
            "median_init_ms": med["init_ms"],
            "median_total_ms": med["total_ms"],
            "median_cpu_ms": med["cpu_ms"],
            "median_process_ms": med["process_ms"],
            "runs_total_ms": [round(r["total_ms"], 1) for r in runs],
            "modules_loaded": runs[-1]["modules_loaded"],
            "heavy_modules": runs[-1]["heavy_modules"],
            "network_attempts": sum(r["network_attempts"] for r in runs),
        }

    print(f"\ncold start, backend=aws, median of {args.runs} fresh interpreters (ms)")
    print(f"{'handler':<10}{'import':>9}{'init':>8}{'total':>8}{'cpu':>8}{'process':>9}  modules  heavy modules loaded")
    for name, r in rows.items():
        print(f"{name:<10}{r['median_import_ms']:>9.1f}{r['median_init_ms']:>8.1f}{r['median_total_ms']:>8.1f}"
              f"{r['median_cpu_ms']:>8.1f}{r['median_process_ms']:>9.1f}  {r['modules_loaded']:>7}  "
              f"{', '.join(r['heavy_modules']) or '-'}")
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} cpus "
          "(wall times on a shared machine are inflated by the load; cpu is this process's own time)")
    if "query" not in rows:
        return
    query_ok = rows["query"]["median_total_ms"] <= args.target_ms
    print(f"query target <= {args.target_ms:.0f} ms (median wall): {'met' if query_ok else 'MISSED'}"
          f"; median cpu {rows['query']['median_cpu_ms']:.0f} ms")
    write_result("cold_start", {
        "what": "import functions/<name>/handler.py + ragline.factory.default(), backend=aws, fresh interpreter "
                "per run, network refused at the socket layer (process_ms adds interpreter start-up)",
        "runs": args.runs,
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "target": {"handler": "query", "median_total_ms": args.target_ms, "met": query_ok},
        "handlers": rows,
    })


if __name__ == "__main__":
    main()
