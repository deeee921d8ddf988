"""Bounded load test of the local API on 127.0.0.1, with the real MiniLM embedder.

    .venv/bin/python bench/load_local_api.py [--users 20] [--duration 60] [--upload-share 0.2]

What it does: builds the factory default (local backend, MiniLM, temp RAGLINE_HOME), ingests
samples/, serves the API (``ragline.server.LocalApiServer``, the Lambda handler behind it) on
127.0.0.1 on a free port in a thread, then runs ``--users`` concurrent users for ``--duration``
seconds. Each user loops: with probability 1 - upload_share a query (POST /v1/query, half of
them allowed to use the semantic cache), else an upload (POST /v1/documents/upload-url, then
the document ingested through the pipeline under the returned key, as ``ragline ingest`` or the
ingest Lambda would do after the S3 PUT that has no local equivalent), with 0.1-0.5 s of think
time. It stops by itself, reports throughput and p50/p95/p99 per operation, writes
bench/results/load_local_api.json, and exits 1 on any error (non-2xx, timeout, exception).

Why a thread pool and not locust: locust monkey-patches the process with gevent, and the server
and the upload ingestion run in this process; MiniLM inference would block gevent's hub and
every simulated user with it, so latencies would measure the harness, not the API.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

# One BLAS thread per request: the server's concurrency comes from requests. With OpenBLAS's
# default thread pool, one MiniLM query embedding took ~650 ms instead of ~17 ms on this shared
# 2-core machine (threads spinning against each other and the other tenants of the CPU).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import requests

from ragline import factory
from ragline.auth import mint_token
from ragline.ingest.pipeline import IngestItem
from ragline.server import LocalApiServer
from ragline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How long do we keep invoices?", "What is the data retention period for payroll records?",
    "Can I expense a taxi to the airport?", "What is the limit for hotel expenses?",
    "Where are our offices?", "Which office is in Lisbon?", "What should I do on my first day?",
    "How do I get a laptop?", "How often must I change my password?", "Who do I report a security incident to?",
    "Is multi-factor authentication required?", "What happens to personal data after an employee leaves?",
    "Do I need a receipt for meals?", "Who approves travel?", "How do I request access to systems?",
]
TOPICS = ["parking", "canteen", "library", "bicycle storage", "printer", "visitor badge", "fire drill", "mail room"]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.cached = 0

    def ok(self, op: str, ms: float) -> None:
        with self.lock:
            self.samples.setdefault(op, []).append(ms)

    def fail(self, op: str, what: str) -> None:
        with self.lock:
            self.errors.append(f"{op}: {what}")


def user(uid: int, base: str, token: str, app, rec: Recorder, stop_at: float, upload_share: float) -> None:
    rng = random.Random(uid)
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        if rng.random() >= upload_share:
            body = {"question": rng.choice(QUESTIONS), "use_cache": rng.random() < 0.5}
            t0 = time.perf_counter()
            try:
                r = session.post(f"{base}/v1/query", json=body, timeout=30)
                ms = (time.perf_counter() - t0) * 1000
                if r.status_code == 200:
                    rec.ok("query", ms)
                    if r.json().get("cached"):
                        with rec.lock:
                            rec.cached += 1
                else:
                    rec.fail("query", f"HTTP {r.status_code} {r.text[:200]}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                rec.fail("query", f"{type(exc).__name__}: {exc}")
        else:
            topic = rng.choice(TOPICS)
            doc = (f"# Note {uid}-{n}: {topic}\n\nThe {topic} rules for team {uid} changed in week {n}. "
                   f"Ask the facilities desk about the {topic} before Friday.\n").encode()
            t0 = time.perf_counter()
            try:
                r = session.post(f"{base}/v1/documents/upload-url",
                                 json={"filename": f"note-{uid}-{n}.md", "size": len(doc)}, timeout=30)
                if r.status_code != 200:
                    rec.fail("upload", f"HTTP {r.status_code} {r.text[:200]}")
                else:
                    key = r.json()["key"]
                    app.blobs.put(key, doc, "text/markdown")  # the local stand-in for the S3 PUT
                    out = app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=doc))
                    ms = (time.perf_counter() - t0) * 1000
                    if out.status == "indexed":
                        rec.ok("upload", ms)
                    else:
                        rec.fail("upload", f"ingest ended {out.status}: {out.reason}")
            except Exception as exc:  # noqa: BLE001
                rec.fail("upload", f"{type(exc).__name__}: {exc}")
        time.sleep(rng.uniform(0.1, 0.5))
    session.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--upload-share", type=float, default=0.2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "load_local_api.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ragline-load-") as home:
        settings = Settings(home=Path(home))
        t_build = time.perf_counter()
        app = factory.build(settings)  # the factory default: local adapters, MiniLM
        corpus = [p for p in sorted((REPO / "samples").iterdir()) if p.is_file()]
        outs = list(app.pipeline.ingest_many(
            IngestItem(tenant="acme", key=f"tenants/acme/samples/{p.name}", data=p.read_bytes()) for p in corpus))
        if any(o.status != "indexed" for o in outs):
            print("samples did not index:", [o.as_dict() for o in outs], file=sys.stderr)
            return 1
        setup_s = time.perf_counter() - t_build
        factory.use(app)
        srv = LocalApiServer("127.0.0.1", 0)
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        assert urlsplit(base).hostname == "127.0.0.1"
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        token = mint_token(settings, "acme", "loadtest", ["admins"])  # uploads are the admins'
        rec = Recorder()
        print(f"setup {setup_s:.1f}s ({len(corpus)} sample docs, model {app.pipeline.embedder.model_id}); "
              f"{args.users} users for {args.duration:.0f}s against {base}", flush=True)
        started = time.monotonic()
        stop_at = started + args.duration
        threads = []
        for uid in range(args.users):
            t = threading.Thread(target=user, args=(uid, base, token, app, rec, stop_at, args.upload_share), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.2)  # ramp up: 5 users per second
        for t in threads:
            t.join(timeout=args.duration + 60)
        elapsed = time.monotonic() - started
        srv.shutdown()
        srv.server_close()
        factory.use(None)

    ops = {}
    total = 0
    for op, values in sorted(rec.samples.items()):
        total += len(values)
        ops[op] = {
            "requests": len(values), "throughput_rps": round(len(values) / elapsed, 2),
            "p50_ms": round(percentile(values, 50), 1), "p95_ms": round(percentile(values, 95), 1),
            "p99_ms": round(percentile(values, 99), 1), "mean_ms": round(statistics.fmean(values), 1),
            "max_ms": round(max(values), 1),
        }
    every = [v for values in rec.samples.values() for v in values]
    result = {
        "users": args.users, "duration_s": round(elapsed, 1), "upload_share": args.upload_share,
        "think_time_s": [0.1, 0.5], "target": "127.0.0.1 (ragline.server.LocalApiServer)",
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (local, CPU)", "cpu_count": os.cpu_count(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "requests": total, "errors": len(rec.errors), "error_samples": rec.errors[:10],
        "throughput_rps": round(total / elapsed, 2),
        "p50_ms": round(percentile(every, 50), 1), "p95_ms": round(percentile(every, 95), 1),
        "p99_ms": round(percentile(every, 99), 1), "query_cache_hits": rec.cached, "operations": ops,
        "note": "upload = POST upload-url + blob write + pipeline ingest of a ~200-byte Markdown note (no S3 PUT locally)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{total} requests in {elapsed:.1f}s: {result['throughput_rps']} req/s, errors {len(rec.errors)}")
    for op, m in ops.items():
        print(f"  {op:7} n={m['requests']:5}  {m['throughput_rps']:6.2f} req/s  p50 {m['p50_ms']:7.1f} ms  "
              f"p95 {m['p95_ms']:7.1f} ms  p99 {m['p99_ms']:7.1f} ms")
    print(f"  overall p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  p99 {result['p99_ms']} ms; wrote {out}")
    if rec.errors:
        print("errors:", *rec.errors[:10], sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
