"""Scheduled evaluation over the query log: the figures computable without gold answers.

- latency percentiles, empty-result rate ("I don't know" rate), cache hit rate;
- feedback rate and share of positive feedback;
- grounding: the share of the answer's content words found in the passages it cited (a
  deterministic approximation of faithfulness, labelled as such).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..generation.extractive import NOTICE

_WORD = re.compile(r"\w+")
_STOP = frozenset("the a an of to and or in on for is are was were be by with as at it that this from".split())


def grounding(answer: str, passages: list[str]) -> float | None:
    body = answer.replace(NOTICE, "")
    body = re.sub(r"\[\d+\]", " ", body)
    words = [w for w in _WORD.findall(body.lower()) if w not in _STOP]
    if not words or not passages:
        return None
    vocab = set(_WORD.findall(" ".join(passages).lower()))
    return sum(w in vocab for w in words) / len(words)


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(entries)
    if n == 0:
        return {"queries": 0}
    lat = np.array([e.get("latency_ms", 0.0) for e in entries])
    rated = [e for e in entries if e.get("rating") in (1, -1)]
    grounded = [
        g for g in (grounding(e.get("answer", ""), [p.get("text", "") for p in e.get("passages", [])]) for e in entries)
        if g is not None
    ]
    return {
        "queries": n,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "empty_result_rate": round(sum(1 for e in entries if e.get("empty")) / n, 4),
        "cache_hit_rate": round(sum(1 for e in entries if e.get("cached")) / n, 4),
        "feedback_rate": round(len(rated) / n, 4),
        "positive_feedback_rate": round(sum(1 for e in rated if e["rating"] == 1) / len(rated), 4) if rated else None,
        "grounding_approx": round(float(np.mean(grounded)), 4) if grounded else None,
    }


def evaluate_recent(app, *, limit: int = 500, tenant: str | None = None) -> dict[str, Any]:
    from ..observability import metric

    entries = app.query_log.recent(tenant, limit)
    out = summarise(entries)
    units = {"p50_ms": "Milliseconds", "p95_ms": "Milliseconds", "p99_ms": "Milliseconds"}
    for k, v in out.items():
        if isinstance(v, (int, float)) and k != "queries":
            metric(f"Eval_{k}", float(v), units.get(k, "None"))
    metric("Eval_queries", float(out["queries"]))
    return out
