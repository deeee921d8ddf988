"""Drift of what retrieval sees, per tenant and day.

Three signals are logged with every answered query (:func:`retrieval_signals`): the top-1 and
the mean top-k dense similarity of the retrieved passages, and the query embedding's cosine
distance to the tenant's corpus centroid. A window (the last day by default) is compared with
a baseline (the days before it) per signal with the population stability index (10 quantile
bins of the baseline) and the two-sample Kolmogorov-Smirnov test (scipy). PSI at or over the
alarm threshold (0.2 by default: the usual "significant shift") or a KS p-value under alpha is
drift; the result names the signal, the direction and the size of the move.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..observability import logger, metric

SIGNALS: dict[str, str] = {
    "top1": "top-1 similarity",
    "mean_topk": "mean top-k similarity",
    "centroid_distance": "query distance to the corpus centroid",
}
MIN_SAMPLES = 20
DAY_S = 86400.0


def retrieval_signals(index: Any, tenant: str, vector: Any, hits: list | None) -> dict[str, Any]:
    """The drift signals of one query, for its query-log entry (never raises)."""
    out: dict[str, Any] = {}
    try:
        if hits:
            dense = [float(h.dense_score if h.dense_score is not None else h.score) for h in hits]
            out["retrieval"] = {"top1": round(max(dense), 6), "mean_topk": round(float(np.mean(dense)), 6),
                                "k": len(dense)}
        centroid_of = getattr(index, "centroid", None)
        if vector is not None and centroid_of is not None:
            c = centroid_of(tenant)
            if c is not None:
                v = np.asarray(vector, dtype=np.float32)
                denom = float(np.linalg.norm(v) * np.linalg.norm(c))
                if denom > 0:
                    out["centroid_distance"] = round(1.0 - float(v @ c) / denom, 6)
    except Exception:  # noqa: BLE001 - drift bookkeeping never fails an answer
        logger().debug("drift signals skipped", exc_info=True)
    return out


def signal_value(entry: dict[str, Any], signal: str) -> float | None:
    if signal == "centroid_distance":
        v = entry.get("centroid_distance")
    else:
        v = (entry.get("retrieval") or {}).get(signal)
    return float(v) if isinstance(v, (int, float)) else None


def psi(baseline: np.ndarray, current: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index with quantile bins of the baseline."""
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant baseline: any different value is a full shift
        same = float(np.mean(current == baseline[0]))
        return 0.0 if same == 1.0 else float((1 - same) * np.log((1 - same + eps) / eps))
    edges[0], edges[-1] = -np.inf, np.inf
    b = np.histogram(baseline, edges)[0] / len(baseline)
    c = np.histogram(current, edges)[0] / len(current)
    b, c = np.clip(b, eps, None), np.clip(c, eps, None)
    return float(np.sum((c - b) * np.log(c / b)))


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def daily(entries: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per day and signal: n, p10, p50, p90 (what the ops page charts)."""
    by_day: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        for s in SIGNALS:
            v = signal_value(e, s)
            if v is not None:
                by_day[_day(float(e.get("ts", 0)))][s].append(v)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for day in sorted(by_day):
        out[day] = {}
        for s, vals in by_day[day].items():
            a = np.array(vals)
            out[day][s] = {"n": len(a), "p10": round(float(np.percentile(a, 10)), 4),
                           "p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4)}
    return out


def compare(baseline: list[float], current: list[float], signal: str, *, psi_alarm: float, ks_alpha: float) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    name = SIGNALS[signal]
    res: dict[str, Any] = {"signal": signal, "label": name, "baseline_n": len(baseline), "window_n": len(current)}
    if len(baseline) < MIN_SAMPLES or len(current) < MIN_SAMPLES:
        res.update(status="insufficient_data",
                   message=f"{name}: too few queries to compare ({len(baseline)} baseline, {len(current)} in the window; "
                           f"at least {MIN_SAMPLES} each needed)")
        return res
    b, c = np.array(baseline), np.array(current)
    p = psi(b, c)
    ks = ks_2samp(b, c)
    mb, mc = float(np.median(b)), float(np.median(c))
    drifted = p >= psi_alarm or float(ks.pvalue) < ks_alpha
    direction = "rose" if mc > mb else "fell" if mc < mb else "kept its median"
    res.update(
        status="drift" if drifted else "stable", psi=round(p, 4), ks_statistic=round(float(ks.statistic), 4),
        ks_pvalue=float(ks.pvalue), baseline_median=round(mb, 4), window_median=round(mc, 4),
        message=(f"{name} {direction}: median {mb:.3f} -> {mc:.3f} (PSI {p:.2f}, KS D={ks.statistic:.2f}, p={ks.pvalue:.2g})"
                 if drifted else f"{name} stable: median {mb:.3f} -> {mc:.3f} (PSI {p:.2f}, KS p={ks.pvalue:.2g})"),
    )
    return res


def report(entries: list[dict[str, Any]], *, tenant: str, now: float | None = None, window_days: float = 1.0,
           baseline_days: float = 7.0, psi_alarm: float = 0.2, ks_alpha: float = 0.01, emit: bool = False) -> dict[str, Any]:
    """Compare the last ``window_days`` with the ``baseline_days`` before them for one tenant."""
    now = time.time() if now is None else now
    w0 = now - window_days * DAY_S
    b0 = w0 - baseline_days * DAY_S
    mine = [e for e in entries if e.get("tenant") == tenant and not e.get("cached")]
    window = [e for e in mine if w0 <= float(e.get("ts", 0)) <= now]
    base = [e for e in mine if b0 <= float(e.get("ts", 0)) < w0]
    signals = []
    for s in SIGNALS:
        bv = [v for v in (signal_value(e, s) for e in base) if v is not None]
        cv = [v for v in (signal_value(e, s) for e in window) if v is not None]
        signals.append(compare(bv, cv, s, psi_alarm=psi_alarm, ks_alpha=ks_alpha))
    drifted = [s for s in signals if s["status"] == "drift"]
    out = {
        "tenant": tenant, "window": {"from": w0, "to": now, "days": window_days},
        "baseline": {"from": b0, "to": w0, "days": baseline_days}, "signals": signals,
        "drift": bool(drifted), "daily": daily(mine),
        "message": "; ".join(s["message"] for s in drifted) if drifted else "no drift detected",
    }
    if emit:
        for s in signals:
            if "psi" in s:
                metric("DriftPSI", s["psi"], "None", {"signal": s["signal"]})
        metric("DriftDetected", 1 if drifted else 0)
        if drifted:
            logger().warning("retrieval drift", extra={"tenant": tenant, "alarm": "RetrievalDrift", "drift": out["message"]})
    return out
