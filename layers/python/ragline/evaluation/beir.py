"""BEIR-format retrieval evaluation through the real pipeline and the real retrieval path.

nDCG@k as trec_eval computes it (``ndcg_cut``): graded gains equal to the judged relevance,
log2(rank + 1) discount, ideal ranking from all judged-relevant documents of the query.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..ingest.pipeline import IngestItem
from ..models import TenantScope

TENANT = "eval"


def load_beir(data_dir: Path, split: str) -> tuple[Path, dict[str, str], dict[str, dict[str, int]]]:
    data_dir = Path(data_dir)
    corpus = data_dir / "corpus.jsonl"
    queries_path = data_dir / "queries.jsonl"
    qrels_path = data_dir / "qrels" / f"{split}.tsv"
    for p in (corpus, queries_path, qrels_path):
        if not p.exists():
            raise FileNotFoundError(f"not a BEIR folder: {p} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not parts[2].lstrip("-").isdigit():
                continue  # header
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries: dict[str, str] = {}
    with queries_path.open(encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries[str(q["_id"])] = q["text"]
    return corpus, queries, qrels


def corpus_items(corpus: Path, tenant: str = TENANT) -> Iterator[IngestItem]:
    """Each BEIR document as a small Markdown file (title as its heading) through ingestion."""
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            title = (d.get("title") or "").strip().replace("\n", " ")
            text = d.get("text") or ""
            body = f"# {title}\n\n{text}" if title else text
            yield IngestItem(tenant=tenant, key=f"{d['_id']}.md", data=body.encode("utf-8"))


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def doc_ranking(hits, limit: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for h in hits:
        d = h.source_key.removesuffix(".md")
        if d not in seen:
            seen.add(d)
            out.append(d)
            if len(out) >= limit:
                break
    return out


def evaluate(data_dir: Path, split: str = "test", *, settings=None, home: Path | None = None,
             progress: Callable[[str, int, int], None] | None = None, app=None,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from .. import factory
    from ..settings import Settings

    corpus, queries, qrels = load_beir(data_dir, split)
    tmp = None
    if app is None:
        if home is None:
            tmp = tempfile.TemporaryDirectory(prefix="ragline-eval-")
            home = Path(tmp.name)
        settings = (settings or Settings()).model_copy(update={"home": Path(home)})
        app = factory.build(settings, **(overrides or {}))
    try:
        n_docs = count_lines(corpus)
        t0 = time.perf_counter()
        statuses: dict[str, int] = {}
        for done, out in enumerate(app.pipeline.ingest_many(corpus_items(corpus)), start=1):
            statuses[out.status] = statuses.get(out.status, 0) + 1
            if progress and done % 50 == 0:
                progress("index", done, n_docs)
        index_s = time.perf_counter() - t0
        scope = TenantScope(TENANT)
        lat: list[float] = []
        ndcg, r10, r100 = [], [], []
        for i, (qid, text) in enumerate(queries.items()):
            t = time.perf_counter()
            hits, _ = app.retriever.search(scope, text, top_k=200)
            lat.append((time.perf_counter() - t) * 1000)
            ranked = doc_ranking(hits, 100)
            ndcg.append(ndcg_at(ranked, qrels[qid], 10))
            r10.append(recall_at(ranked, qrels[qid], 10))
            r100.append(recall_at(ranked, qrels[qid], 100))
            if progress and (i + 1) % 25 == 0:
                progress("query", i + 1, len(queries))
        arr = np.array(lat) if lat else np.zeros(1)
        return {
            "dataset": str(data_dir), "split": split, "documents": n_docs, "queries": len(queries),
            "ingest_statuses": statuses,
            "ndcg@10": round(float(np.mean(ndcg)) if ndcg else 0.0, 4),
            "recall@10": round(float(np.mean(r10)) if r10 else 0.0, 4),
            "recall@100": round(float(np.mean(r100)) if r100 else 0.0, 4),
            "index_s": round(index_s, 2),
            "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p95_ms": round(float(np.percentile(arr, 95)), 2),
            "p99_ms": round(float(np.percentile(arr, 99)), 2),
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
