"""Score fusion for hybrid retrieval: pure functions over the two legs' scores.

Both legs are scored on the *union* of their candidates (an index adapter fills the score a
leg did not return, e.g. BM25 0 for a chunk without query terms), then each leg is normalised
over that union and the two are mixed with ``dense_weight``.
"""

from __future__ import annotations

import numpy as np


def normalise(scores: np.ndarray, method: str) -> np.ndarray:
    if scores.size == 0:
        return scores
    if method == "minmax":
        lo, hi = float(scores.min()), float(scores.max())
        return (scores - lo) / (hi - lo) if hi > lo else np.zeros_like(scores)
    if method == "zscore":
        sd = float(scores.std())
        return (scores - float(scores.mean())) / sd if sd > 1e-12 else np.zeros_like(scores)
    raise ValueError(f"unknown normalisation {method!r}")


def rank_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal-rank contribution 1/(k + rank) of each score in its leg (rank from 1)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(1, len(scores) + 1)
    return 1.0 / (k + ranks)


def fuse(lexical: np.ndarray, dense: np.ndarray, *, method: str, dense_weight: float, rrf_k: int = 60) -> np.ndarray:
    """Fused scores of the union candidates. ``lexical`` and ``dense`` are aligned arrays."""
    lexical = np.asarray(lexical, dtype=np.float64)
    dense = np.asarray(dense, dtype=np.float64)
    w = float(dense_weight)
    if method == "rrf":
        return (1 - w) * rank_scores(lexical, rrf_k) + w * rank_scores(dense, rrf_k)
    return (1 - w) * normalise(lexical, method) + w * normalise(dense, method)
