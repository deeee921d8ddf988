"""Ingestion throughput vs the raw embedding model on the same texts.

Takes the first N SciFact abstracts, runs them through the real pipeline (extract, sanitise,
chunk, embed, stage, publish, registry) into a temp store, and separately times the raw
model (sentence-transformers ``encode`` with the same batch size) on exactly the texts the
pipeline embedded. Both run in this one process, alternating, so machine noise hits both.

    .venv/bin/python bench/ingest_throughput.py [--docs 600]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from _common import DATA, need, write

from ragline import factory
from ragline.evaluation.beir import corpus_items
from ragline.settings import Settings


class Recorder:
    """Wraps the embedder to keep the texts the pipeline embeds (and time spent in the model)."""

    def __init__(self, inner):
        self.inner = inner
        self.model_id = inner.model_id
        self.dimensions = inner.dimensions
        self.texts: list[str] = []
        self.seconds = 0.0

    def embed_documents(self, texts):
        self.texts.extend(texts)
        t = time.perf_counter()
        out = self.inner.embed_documents(texts)
        self.seconds += time.perf_counter() - t
        return out

    def embed_query(self, text):
        return self.inner.embed_query(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    corpus = need(DATA / "beir_scifact" / "corpus.jsonl")
    from ragline.adapters.local.embedder import MiniLMEmbedder

    base = MiniLMEmbedder(engine="torch")
    base.embed_documents(["warm up"])  # load the model outside the timings
    st = base._torch()
    pipe_s, raw_s, chunks = [], [], 0
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rec = Recorder(base)
            app = factory.build(Settings(home=Path(tmp)), embedder=rec)
            items = list(itertools.islice(corpus_items(corpus), args.docs))
            t = time.perf_counter()
            outs = list(app.pipeline.ingest_many(items))
            pipe_s.append(time.perf_counter() - t)
            assert all(o.status == "indexed" for o in outs)
            chunks = len(rec.texts)
            t = time.perf_counter()
            st.encode(rec.texts, batch_size=base.batch_size, normalize_embeddings=True, show_progress_bar=False)
            raw_s.append(time.perf_counter() - t)
    best_pipe, best_raw = min(pipe_s), min(raw_s)
    write("ingest_throughput", {
        "docs": args.docs, "chunks": chunks, "rounds": args.rounds,
        "pipeline_s": [round(x, 2) for x in pipe_s], "raw_model_s": [round(x, 2) for x in raw_s],
        "pipeline_chunks_per_s": round(chunks / best_pipe, 1), "raw_model_chunks_per_s": round(chunks / best_raw, 1),
        "ratio": round(best_raw / best_pipe, 3), "target": "ratio >= 0.85",
    })


if __name__ == "__main__":
    main()
