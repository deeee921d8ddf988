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
    grid = [("zscore", w) for w in (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)] + [("minmax", w) for w in (0.4, 0.5, 0.6)] + [("rrf", 0.5)]
    for fusion, w in grid:
        nd, r100 = [], []
        for qid, text in queries.items():
            req = SearchRequest(text=text, vector=vecs[qid], top_k=200, candidates=200, dense_weight=w, fusion=fusion)
            ranked = doc_ranking(app.index.search(scope, req), 100)
            nd.append(ndcg_at(ranked, qrels[qid], 10))
            r100.append(recall_at(ranked, qrels[qid], 100))
        row = {"fusion": fusion, "dense_weight": w, "ndcg@10": round(float(np.mean(nd)), 4), "recall@100": round(float(np.mean(r100)), 4)}
        results.append(row)
        print(row, flush=True)
    out = Path(__file__).parent / "results" / "tune_fusion.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"split": args.split, "queries": len(queries), "results": results}, indent=2))


if __name__ == "__main__":
    main()
