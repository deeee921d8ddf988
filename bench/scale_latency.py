"""Retrieval latency at 200k chunks (synthetic): query embedding + hybrid search, p50/p95/p99.

The chunks are synthetic (Zipf-distributed words from a real vocabulary, random unit vectors):
embedding 200k real passages would take hours on this machine and the latency of the search
does not depend on what the vectors mean. Queries are real SciFact questions embedded by the
real model, so the query-embedding cost is real. Chunks are spread over 4 tenants (one holds
150k; a fifth of its documents are shared with group g1 only); the queries run as that tenant, with and without a group ACL.

    .venv/bin/python bench/scale_latency.py [--chunks 200000]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, need, percentiles, write

from ragline.adapters.local.embedder import MiniLMEmbedder
from ragline.adapters.local.index import LocalHybridIndex
from ragline.models import Chunk, TenantScope
from ragline.retrieval.service import Retriever
from ragline.settings import RetrievalSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--keep", help="build (or reuse) the index in this folder instead of a temporary one")
    args = ap.parse_args()
    sci = need(DATA / "beir_scifact")
    vocab_counts: dict[str, int] = {}
    with (sci / "corpus.jsonl").open() as f:
        for line in f:
            for w in re.findall(r"[a-z]{3,}", json.loads(line)["text"].lower()):
                vocab_counts[w] = vocab_counts.get(w, 0) + 1
    vocab = np.array(sorted(vocab_counts, key=vocab_counts.get, reverse=True))
    rng = np.random.default_rng(7)
    ranks = np.arange(1, len(vocab) + 1)
    probs = (1 / ranks) / (1 / ranks).sum()
    queries = [json.loads(l)["text"] for l in (sci / "queries.jsonl").open()][: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        reuse = (folder / "index.db").exists()
        index = LocalHybridIndex(folder / "index.db", 384)
        t0 = time.perf_counter()
        batch = 5000
        for start in range(0, 0 if reuse else args.chunks, batch):
            n = min(batch, args.chunks - start)
            words = vocab[rng.choice(len(vocab), size=(n, 120), p=probs)]
            vecs = rng.standard_normal((n, 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            chunks = []
            for i in range(n):
                gid = start + i
                doc = gid // 50  # 50 chunks per document; a quarter of the documents in 3 small tenants
                tenant = "big" if doc % 4 != 3 else ["t1", "t2", "t3"][doc % 3]
                chunks.append(Chunk(
                    chunk_id=f"c{gid}", tenant=tenant, doc_id=f"d{doc}", version="v1", ordinal=gid % 50,
                    text=" ".join(words[i]), source_key=f"s{doc}", groups=("g1",) if doc % 5 == 0 else (),
                    token_count=160, vector=vecs[i]))
            index.stage(chunks)
            for d in sorted({(c.tenant, c.doc_id) for c in chunks}):
                index.publish(d[0], d[1], "v1")
        build_s = None if reuse else time.perf_counter() - t0
        big = index.count(TenantScope("big", frozenset({"g1"})))
        retriever = Retriever(index, MiniLMEmbedder(engine="numpy"), RetrievalSettings())
        retriever.search(TenantScope("big"), "warm up the model and the vector cache")
        results = {}
        for label, scope in (("tenant", TenantScope("big")), ("tenant+acl", TenantScope("big", frozenset({"g1"})))):
            lat = []
            for q in queries:
                t = time.perf_counter()
                retriever.search(scope, q)
                lat.append((time.perf_counter() - t) * 1000)
            results[label] = percentiles(lat)
        # freshness: the first query after a publish pays for bringing the tenant's loaded rows
        # up to date (another tenant's publish costs it nothing; its own, a refresh that marks
        # the replaced version dead and appends the new rows). A new version of one document
        # per run, so a kept index stays the same size.
        def publish_one(tenant: str) -> None:
            v = rng.standard_normal(384).astype(np.float32)
            version = f"v{time.time_ns()}"
            ch = Chunk(chunk_id=f"refresh-{tenant}-{version}", tenant=tenant, doc_id=f"refresh-{tenant}",
                       version=version, ordinal=0, text="a freshly published chunk", source_key=f"refresh-{tenant}",
                       token_count=4, vector=v / np.linalg.norm(v))
            index.stage([ch])
            index.publish(tenant, ch.doc_id, version)

        after = {}
        for label, tenant in (("other_tenant_published", "t1"), ("same_tenant_published", "big")):
            publish_one(tenant)
            t = time.perf_counter()
            retriever.search(TenantScope("big"), queries[0])
            after[label] = round((time.perf_counter() - t) * 1000, 1)
        # compaction, made due at once (a segment limit of 1): in line (the query that finds it
        # due loads the tenant fully, as before background compaction) and in the background
        # (that query is served from the refreshed rows; the full load runs on the compaction
        # thread while more queries are served)
        index.refresh_max_segments = 1
        index.background_compaction = False
        publish_one("big")
        t = time.perf_counter()
        retriever.search(TenantScope("big"), queries[0])
        inline_ms = (time.perf_counter() - t) * 1000
        index.background_compaction = True
        publish_one("big")
        t = time.perf_counter()
        retriever.search(TenantScope("big"), queries[0])
        trigger_ms = (time.perf_counter() - t) * 1000
        t_c, during = time.perf_counter(), []
        while index._compacting:
            t = time.perf_counter()
            retriever.search(TenantScope("big"), queries[len(during) % len(queries)])
            during.append((time.perf_counter() - t) * 1000)
        index.wait_for_compaction()
        compaction = {
            "in_line_first_query_ms": round(inline_ms, 1), "background_first_query_ms": round(trigger_ms, 1),
            "background_load_s": round(time.perf_counter() - t_c, 2),
            "queries_served_during_background_load": {"n": len(during), **(percentiles(during) if during else {})},
        }
        index.refresh_max_segments = 8
        emb = []
        for q in queries[:100]:
            t = time.perf_counter()
            retriever.embed(q)
            emb.append((time.perf_counter() - t) * 1000)
    write("scale_latency", {
        "chunks": args.chunks, "tenant_chunks_visible": big, "queries": len(queries), "build_s": round(build_s, 1) if build_s is not None else "reused an index built earlier (--keep)",
        "latency_including_query_embedding": results, "query_embedding_only": percentiles(emb),
        "first_query_of_big_after_a_publish_ms": after,
        "compaction_of_big": compaction,
        "target": "p99 <= 100 ms at 200k chunks",
    })


if __name__ == "__main__":
    main()
