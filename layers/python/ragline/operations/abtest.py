"""A/B report: compare an experiment's variants on feedback, evaluation scores and latency.

- feedback: share of thumbs-up among rated answers, with a bootstrap 95% interval per variant
  and for the difference with the control (the first variant in the configuration);
- evaluation: RAGAS-style scores of the variant's sampled answers (the scorer the backend
  offers; the labelled approximation locally), with their bootstrap interval;
- latency, the guard metric: mean and p95, and Welch's t-test (scipy) on the difference of
  means with its 95% interval; a treatment significantly slower than the control is flagged.

Below ``min_rated`` rated answers (or ``min_queries`` answers) in any arm the report says the
sample is too small to conclude, and does not pick a winner. Bootstraps use a fixed seed, so
the same log gives the same report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_RATED = 30
MIN_QUERIES = 30
RESAMPLES = 2000


def _boot_mean(x: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    if len(x) < 2:
        return None
    means = rng.choice(x, size=(RESAMPLES, len(x)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _boot_diff(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    if len(a) < 2 or len(b) < 2:
        return None
    da = rng.choice(a, size=(RESAMPLES, len(a)), replace=True).mean(axis=1)
    db = rng.choice(b, size=(RESAMPLES, len(b)), replace=True).mean(axis=1)
    d = db - da
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def _r(x: float | None, n: int = 4):
    return None if x is None else round(float(x), n)


def report(entries: list[dict[str, Any]], experiment: str, variants: list[str] | None = None, *,
           scorer: Any | None = None, min_rated: int = MIN_RATED, min_queries: int = MIN_QUERIES) -> dict[str, Any]:
    from scipy.stats import ttest_ind

    from ..evaluation.online import score_sample

    rng = np.random.default_rng(0)
    arms: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        v = (e.get("experiments") or {}).get(experiment)
        if v is not None:
            arms.setdefault(v, []).append(e)
    order = [v for v in (variants or []) if v in arms] + sorted(v for v in arms if v not in (variants or []))
    out: dict[str, Any] = {"experiment": experiment, "variants": {}, "comparisons": []}
    if not order:
        out["conclusion"] = f"no logged queries carry experiment {experiment!r}"
        return out
    data = {}
    for v in order:
        es = arms[v]
        lat = np.array([float(e.get("latency_ms", 0.0)) for e in es])
        ratings = np.array([1.0 if e["rating"] == 1 else 0.0 for e in es if e.get("rating") in (1, -1)])
        ci = _boot_mean(ratings, rng)
        row: dict[str, Any] = {
            "queries": len(es), "rated": len(ratings),
            "thumbs_up_rate": _r(ratings.mean()) if len(ratings) else None,
            "thumbs_up_ci95": [_r(ci[0]), _r(ci[1])] if ci else None,
            "latency_mean_ms": _r(lat.mean(), 2), "latency_p95_ms": _r(np.percentile(lat, 95), 2),
        }
        if scorer is not None:
            row["evaluation"] = score_sample(es, scorer)
        out["variants"][v] = row
        data[v] = (lat, ratings)
    control = order[0]
    small = [v for v in order if out["variants"][v]["rated"] < min_rated or out["variants"][v]["queries"] < min_queries]
    verdicts = []
    for v in order[1:]:
        (lat_c, rat_c), (lat_t, rat_t) = data[control], data[v]
        diff = _boot_diff(rat_c, rat_t, rng)
        welch = ttest_ind(lat_t, lat_c, equal_var=False) if len(lat_t) > 1 and len(lat_c) > 1 else None
        lat_ci = welch.confidence_interval(0.95) if welch is not None else None
        cmp = {
            "control": control, "variant": v,
            "thumbs_up_diff": _r(rat_t.mean() - rat_c.mean()) if len(rat_t) and len(rat_c) else None,
            "thumbs_up_diff_ci95": [_r(diff[0]), _r(diff[1])] if diff else None,
            "latency_diff_ms": _r(lat_t.mean() - lat_c.mean(), 2),
            "latency_diff_ci95": [_r(lat_ci.low, 2), _r(lat_ci.high, 2)] if lat_ci is not None else None,
            "latency_pvalue": _r(welch.pvalue, 6) if welch is not None else None,
        }
        guard = bool(welch is not None and welch.pvalue < 0.05 and cmp["latency_diff_ms"] > 0)
        cmp["latency_guard_breached"] = guard
        if small:
            cmp["verdict"] = "too_small"
        elif diff and diff[0] > 0:
            cmp["verdict"] = "better" if not guard else "better_but_slower"
        elif diff and diff[1] < 0:
            cmp["verdict"] = "worse"
        else:
            cmp["verdict"] = "no_difference_detected"
        out["comparisons"].append(cmp)
        verdicts.append(f"{v} vs {control}: {cmp['verdict'].replace('_', ' ')}"
                        + (f" (thumbs-up {cmp['thumbs_up_diff']:+.3f}, 95% CI {cmp['thumbs_up_diff_ci95']})"
                           if cmp["thumbs_up_diff"] is not None and cmp["thumbs_up_diff_ci95"] else "")
                        + (f"; latency {cmp['latency_diff_ms']:+.1f} ms slower, guard breached" if guard else ""))
    if small:
        counts = ", ".join(f"{v}: {out['variants'][v]['rated']} rated of {out['variants'][v]['queries']}" for v in order)
        out["conclusion"] = (f"sample too small to conclude: each variant needs at least {min_rated} rated answers "
                             f"and {min_queries} queries ({counts})")
    else:
        out["conclusion"] = "; ".join(verdicts) or "only one variant has traffic"
    out["too_small"] = bool(small)
    return out
