"""Fusion and BEIR metrics: pure functions checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragline.evaluation.beir import ndcg_at, recall_at
from ragline.retrieval.fusion import fuse, normalise, rank_scores


def test_minmax_and_zscore():
    s = np.array([1.0, 2.0, 3.0])
    assert normalise(s, "minmax").tolist() == [0.0, 0.5, 1.0]
    z = normalise(s, "zscore")
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert normalise(np.array([5.0, 5.0]), "minmax").tolist() == [0.0, 0.0]


def test_fuse_weights_the_legs():
    lex = np.array([10.0, 0.0, 5.0])
    dense = np.array([0.1, 0.9, 0.5])
    only_lex = fuse(lex, dense, method="minmax", dense_weight=0.0)
    only_dense = fuse(lex, dense, method="minmax", dense_weight=1.0)
    assert int(np.argmax(only_lex)) == 0 and int(np.argmax(only_dense)) == 1
    mixed = fuse(lex, dense, method="minmax", dense_weight=0.5)
    assert mixed.tolist() == pytest.approx([0.5, 0.5, 0.5 * 0.5 + 0.5 * 0.5])


def test_rrf():
    r = rank_scores(np.array([3.0, 1.0, 2.0]), 60)
    assert r.tolist() == pytest.approx([1 / 61, 1 / 63, 1 / 62])


def test_ndcg_graded_as_trec_eval():
    rels = {"a": 2, "b": 1, "c": 0}
    ranked = ["b", "x", "a"]
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, rels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], rels, 10) == pytest.approx(1.0)
    assert ndcg_at(["c"], rels, 10) == 0.0
    assert ndcg_at(["x", "a"], rels, 1) == 0.0


def test_recall():
    rels = {"a": 1, "b": 2, "c": 0}
    assert recall_at(["a", "x"], rels, 10) == 0.5
    assert recall_at(["x", "a", "b"], rels, 2) == 0.5
    assert recall_at([], {}, 10) == 0.0
