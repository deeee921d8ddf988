"""Question answering evaluation with gold answers (COVID-QA style JSON lines).

Each line: ``{"question": ..., "answers": [{"text": ..., "gold_paragraph": ...}, ...]}``. The
run goes through the real retrieval path (hybrid search, context selection) and the configured
answerer (the chat model, or the extractive answerer locally), then reports:

- ``support@k`` (k = 1, 3, 5): share of questions whose gold answer text occurs (case- and
  whitespace-insensitive) in one of the first k cited passages;
- ``answer_f1``: SQuAD token F1 of the answer against the best gold answer (for the extractive
  answerer, on the quoted sentences without the notice: ``ExtractiveAnswerer.quoted_text``);
- the RAGAS-style scores the backend offers (``ApproxScorer`` locally; a judge when given).

``--limit N`` takes a deterministic subset: the N questions with the smallest SHA-1 of their id.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..generation.extractive import ExtractiveAnswerer
from ..generation.prompt import SYSTEM, build_prompt
from ..ingest.pipeline import IngestItem
from ..models import TenantScope
from .beir import corpus_items
from .ragas import ApproxScorer, Sample, mean_scores

TENANT = "eval"
KS = (1, 3, 5)


def load_qa(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no QA file at {path}")
    items = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
            answers = [a for a in d.get("answers") or [] if isinstance(a, dict) and (a.get("text") or "").strip()]
            if not (d.get("question") or "").strip() or not answers:
                raise ValueError(f"{path}:{n}: each line needs a question and answers with text")
            d.setdefault("id", hashlib.sha1(d["question"].encode()).hexdigest()[:12])
            d["answers"] = answers
            items.append(d)
    return items


def subset(items: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    if not limit or limit >= len(items):
        return items
    return sorted(items, key=lambda d: hashlib.sha1(str(d["id"]).encode()).hexdigest())[:limit]


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g or same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def supports(passage: str, gold: str) -> bool:
    g = _squash(gold).strip(" .,;:")
    return bool(g) and g in _squash(passage)


def corpus_source(corpus: Path, tenant: str) -> Iterator[IngestItem]:
    """A BEIR corpus.jsonl (or a folder holding one), else a folder of documents."""
    corpus = Path(corpus)
    if corpus.is_file():
        yield from corpus_items(corpus, tenant)
    elif (corpus / "corpus.jsonl").is_file():
        yield from corpus_items(corpus / "corpus.jsonl", tenant)
    elif corpus.is_dir():
        for f in sorted(p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")):
            yield IngestItem(tenant=tenant, key=f.relative_to(corpus).as_posix(), loader=f.read_bytes)
    else:
        raise FileNotFoundError(f"no corpus at {corpus}")


def answer_text(gen) -> str:
    return ExtractiveAnswerer.quoted_text(gen.text) if not gen.generative else re.sub(r"\[\d+\]", "", gen.text).strip()


def run_questions(app, items: list[dict[str, Any]], *, tenant: str = TENANT, scorer: Any | None = None,
                  progress: Callable[[str, int, int], None] | None = None, max_passages: int | None = None,
                  context_budget: int | None = None) -> dict[str, Any]:
    """``max_passages`` and ``context_budget`` are the context packing a tier would use (default:
    retrieval's top 5 under ``retrieval.context_token_budget``), so runs can compare them."""
    scope = TenantScope(tenant)
    scorer = scorer or ApproxScorer(app.retriever.embedder)
    support = {k: 0 for k in KS}
    f1s, lat, rows, packed = [], [], [], []
    for i, d in enumerate(items):
        t0 = time.perf_counter()
        hits, _ = app.retriever.search(scope, d["question"], top_k=max(max(KS), max_passages or 0))
        context = app.retriever.select_context(hits[:max_passages] if max_passages else hits, context_budget)
        packed.append(len(context))
        if app.chat is not None and context:
            gen = app.chat.generate(SYSTEM, build_prompt(d["question"], context), max_tokens=512, timeout_s=None)
        else:
            gen = app.extractive.answer(d["question"], context)
        lat.append((time.perf_counter() - t0) * 1000)
        golds = [a["text"] for a in d["answers"]]
        for k in KS:
            if any(supports(h.text, g) for h in context[:k] for g in golds):
                support[k] += 1
        pred = answer_text(gen)
        f1s.append(max(token_f1(pred, g) for g in golds))
        s = Sample(question=d["question"], answer=gen.text, contexts=[h.text for h in context], reference=golds[0])
        rows.append(scorer.score(s, d["id"]) if hasattr(scorer, "chat") else scorer.score(s))
        if progress and (i + 1) % 10 == 0:
            progress("answer", i + 1, len(items))
    n = len(items)
    arr = np.array(lat) if lat else np.zeros(1)
    out: dict[str, Any] = {"questions": n}
    out.update({f"support@{k}": round(support[k] / n, 4) if n else 0.0 for k in KS})
    out["answer_f1"] = round(float(np.mean(f1s)), 4) if f1s else 0.0
    out["context"] = {"max_passages": max_passages or max(KS),
                      "token_budget": context_budget or app.retriever.settings.context_token_budget,
                      "mean_passages": round(float(np.mean(packed)), 3) if packed else 0.0}
    out["answerer"] = app.chat.model_id if app.chat is not None else app.extractive.model_id
    out["ragas"] = mean_scores(rows)
    out.update(p50_ms=round(float(np.percentile(arr, 50)), 2), p95_ms=round(float(np.percentile(arr, 95)), 2))
    return out


def evaluate_qa(data: Path, corpus: Path | None = None, *, limit: int | None = None, app=None, settings=None,
                tenant: str = TENANT, scorer: Any | None = None,
                progress: Callable[[str, int, int], None] | None = None, max_passages: int | None = None,
                context_budget: int | None = None) -> dict[str, Any]:
    """Ingest ``corpus`` (into a throwaway home unless ``app`` is given), then answer the
    questions of ``data`` and score them."""
    from .. import factory
    from ..settings import Settings

    items = subset(load_qa(data), limit)
    tmp = None
    if app is None and corpus is not None:
        tmp = tempfile.TemporaryDirectory(prefix="ragline-qa-")
        settings = (settings or Settings()).model_copy(update={"home": Path(tmp.name)})
        app = factory.build(settings)
    elif app is None:
        app = factory.default()
    try:
        out: dict[str, Any] = {"data": str(data), "corpus": str(corpus) if corpus else None, "limit": limit}
        if corpus is not None:
            t0 = time.perf_counter()
            statuses: dict[str, int] = {}
            for i, o in enumerate(app.pipeline.ingest_many(corpus_source(corpus, tenant)), start=1):
                statuses[o.status] = statuses.get(o.status, 0) + 1
                if progress and i % 10 == 0:
                    progress("index", i, 0)
            out.update(ingest_statuses=statuses, index_s=round(time.perf_counter() - t0, 2))
        out["embedding_model"] = app.retriever.embedder.model_id
        out.update(run_questions(app, items, tenant=tenant, scorer=scorer, progress=progress,
                                 max_passages=max_passages, context_budget=context_budget))
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()
