"""Tune the fusion method and dense weight on SciFact's *train* split (never on test).

Indexes the corpus once into a persistent home (reused across runs), then scores the train
queries under each fusion setting. Prints a table and writes bench/results/tune_fusion.json.

    .venv/bin/python bench/tune_fusion.py [--data ../shared/data/beir_scifact] [--home /tmp/ragline-scifact]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ragline import factory
from ragline.evaluation.beir import TENANT, corpus_items, doc_ranking, load_beir, ndcg_at, recall_at
from ragline.models import SearchRequest, TenantScope
from ragline.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/beir_scifact")
    ap.add_argument("--split", default="train")
    ap.add_argument("--home", default="/tmp/ragline-scifact")
    ap.add_argument("--grid", default="zscore:0,zscore:0.3,zscore:0.4,zscore:0.5,zscore:0.6,zscore:0.7,zscore:1,"
                    "minmax:0.4,minmax:0.5,minmax:0.6,rrf:0.5", help="fusion:dense_weight,...")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "corpus.jsonl").exists():
        sys.exit(f"dataset not found at {data} (it is read from ../shared/data, never copied)")
    corpus, queries, qrels = load_beir(data, args.split)
    app = factory.build(Settings(home=Path(args.home)))
    t = time.time()
    n = sum(1 for _ in app.pipeline.ingest_many(corpus_items(corpus)))
    print(f"indexed/checked {n} docs in {time.time() - t:.1f}s", flush=True)
    scope = TenantScope(TENANT)
    vecs = {qid: app.retriever.embed(text) for qid, text in queries.items()}
    results = []
    # fusion:dense_weight[:bm25 title weight]
    grid = [(g.split(":")[0], float(g.split(":")[1]), float(g.split(":")[2]) if g.count(":") == 2 else 0.5)
            for g in args.grid.split(",")]
    for fusion, w, tw in grid:
        app.index.title_weight = tw
        nd, r100 = [], []
        for qid, text in queries.items():
            req = SearchRequest(text=text, vector=vecs[qid], top_k=200, candidates=200, dense_weight=w, fusion=fusion)
            ranked = doc_ranking(app.index.search(scope, req), 100)
            nd.append(ndcg_at(ranked, qrels[qid], 10))
            r100.append(recall_at(ranked, qrels[qid], 100))
        row = {"chunker": app.settings.chunker.fingerprint(), "fusion": fusion, "dense_weight": w, "title_weight": tw,
               "ndcg@10": round(float(np.mean(nd)), 4), "recall@100": round(float(np.mean(r100)), 4)}
        results.append(row)
        print(row, flush=True)
    out = Path(__file__).parent / "results" / "tune_fusion.json"
    out.parent.mkdir(exist_ok=True)
    previous = json.loads(out.read_text())["results"] if out.exists() else []
    default_fp = "tiktoken:cl100k_base/max256/overlap32"
    merged = {(r.get("chunker", default_fp), r["fusion"], r["dense_weight"], r.get("title_weight", 0.5)): r
              for r in previous + results}
    out.write_text(json.dumps({"split": args.split, "queries": len(queries),
                               "results": sorted(merged.values(), key=lambda r: (r.get("chunker", ""), r["fusion"], r["dense_weight"], r.get("title_weight", 0.5)))}, indent=2))


if __name__ == "__main__":
    main()
