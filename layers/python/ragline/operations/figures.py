"""The operating figures of the local store — what CloudWatch shows from the EMF metrics in
AWS — computed from the query log, the cost ledger and the document registry: latency
percentiles, empty-result, "I don't know", cache-hit and feedback rates, documents by status,
tokens and cost per tenant and day, evaluation scores of the sample, and drift."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from ..evaluation.online import score_sample, summarise
from ..evaluation.ragas import ApproxScorer

EVAL_MAX = 200  # most recent sampled answers scored for the figures


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def tenants_of(app, entries: list[dict[str, Any]]) -> list[str]:
    known = set(getattr(app.registry, "tenants", list)())
    return sorted(known | {e["tenant"] for e in entries if e.get("tenant")})


def figures(app, tenant: str | None = None, *, days: int = 7, limit: int = 50000, scorer: Any | None = None,
            now: float | None = None) -> dict[str, Any]:
    """``tenant=None`` means every tenant (an operator's or admin's view)."""
    now = time.time() if now is None else now
    since = now - days * 86400
    entries = [e for e in app.query_log.recent(tenant, limit) if float(e.get("ts", 0)) >= since]
    tenants = [tenant] if tenant else tenants_of(app, entries)
    out: dict[str, Any] = {"tenant": tenant or "*", "days": days, "generated_at": now}
    out["queries"] = summarise(entries)
    n = len(entries)
    out["queries"]["idk_rate"] = round(
        sum(1 for e in entries if e.get("empty") or str(e.get("answer", "")).startswith("I don't know")) / n, 4) if n else None
    per_day: dict[str, dict[str, Any]] = defaultdict(lambda: {"queries": 0, "cache_hits": 0, "latency": []})
    for e in entries:
        d = per_day[_day(float(e["ts"]))]
        d["queries"] += 1
        d["cache_hits"] += 1 if e.get("cached") else 0
        d["latency"].append(float(e.get("latency_ms", 0.0)))
    import numpy as np

    out["latency_by_day"] = [
        {"day": day, "queries": d["queries"], "cache_hit_rate": round(d["cache_hits"] / d["queries"], 4),
         "p50_ms": round(float(np.percentile(d["latency"], 50)), 2), "p95_ms": round(float(np.percentile(d["latency"], 95)), 2),
         "p99_ms": round(float(np.percentile(d["latency"], 99)), 2)}
        for day, d in sorted(per_day.items())
    ]
    docs: dict[str, dict[str, int]] = {}
    for t in tenants:
        counts: dict[str, int] = {}
        for r in app.registry.list(t):
            if r.status.value != "deleted":  # tombstones of deleted documents
                counts[r.status.value] = counts.get(r.status.value, 0) + 1
        docs[t] = counts
    out["documents"] = docs
    queries_by = defaultdict(int)
    for e in entries:
        queries_by[(e["tenant"], _day(float(e["ts"])))] += 1
    cost = []
    for t in tenants:
        agg: dict[str, dict[str, Any]] = {}
        for r in app.ledger.totals(t, days):
            a = agg.setdefault(r["day"], {"tenant": t, "day": r["day"], "input_tokens": 0, "output_tokens": 0,
                                          "cost_usd": 0.0, "calls": 0, "by_purpose": {}})
            a["input_tokens"] += r["input_tokens"]
            a["output_tokens"] += r["output_tokens"]
            a["cost_usd"] += r["cost_usd"]
            a["calls"] += r["calls"]
            a["by_purpose"][r["purpose"]] = round(a["by_purpose"].get(r["purpose"], 0.0) + r["cost_usd"], 6)
        for day in sorted(set(agg) | {d for (tt, d) in queries_by if tt == t}):
            a = agg.get(day) or {"tenant": t, "day": day, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
                                 "calls": 0, "by_purpose": {}}
            q = queries_by.get((t, day), 0)
            a["queries"] = q
            a["cost_usd"] = round(a["cost_usd"], 6)
            a["cost_per_query_usd"] = round(a["cost_usd"] / q, 8) if q else None
            a["tokens_per_query"] = round((a["input_tokens"] + a["output_tokens"]) / q, 2) if q else None
            cost.append(a)
    out["cost"] = cost
    sampled = [e for e in entries if e.get("sampled")][:EVAL_MAX]
    out["evaluation"] = score_sample(sampled, scorer or ApproxScorer(app.retriever.embedder)) if sampled else {"sampled": 0}
    from ..operations.drift import report

    out["drift"] = {t: {k: v for k, v in report(entries, tenant=t, now=now, psi_alarm=app.settings.drift_psi_alarm,
                                                    ks_alpha=app.settings.drift_ks_alpha).items() if k != "window" and k != "baseline"}
                    for t in tenants}
    return out
