"""BM25 for the embedded index: FTS5's tokenizer and scoring, over impact postings in numpy.

Why not SQLite FTS5 itself (the first version used it): FTS5 has no top-k pruning, so an OR
query computes ``bm25()`` for every chunk that holds any query term, one row at a time through
the auxiliary-function API, and hands every row back to Python. At 200k chunks a query matched
~60k of them and the lexical leg alone cost 60-200 ms. Here the same scores come from
per-tenant postings held in memory as flat numpy arrays (term -> chunk positions, each posting
carrying its precomputed BM25 impact), so a query is a few array slices and one ``bincount``.

Why by hand: ``bm25s`` (numpy/scipy BM25) builds a static index from a whole corpus and has no
per-field weights; this index changes one document at a time (stage, publish, delete in SQLite
transactions) and keeps FTS5's title weighting. So each chunk's term ids and per-field term
frequencies are stored with the chunk row, in the same transaction, and the postings are built
per tenant when the tenant's rows are loaded -- the lifecycle the vector matrix already has.

Parity with what FTS5 computed (``porter unicode61 remove_diacritics 2`` and
``bm25(chunks_fts, 1.0, title_weight)``): tokens are maximal runs of Unicode letters and digits,
case-folded, diacritics removed, Porter-stemmed when 3 to 64 characters long; a chunk's
frequency of a term is ``tf(text) + title_weight * tf(title)``, its length the token count of
both fields; ``idf = ln((N - n + 0.5) / (n + 0.5))`` floored at 1e-6; k1 = 1.2, b = 0.75. One
deliberate difference: N, n and the average length are the tenant's own (FTS5's were the whole
file's), so one tenant's documents no longer shift another tenant's scores -- a side channel
that is now closed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

K1 = 1.2
B = 0.75
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


@lru_cache(maxsize=1)
def _stemmer():
    """PyStemmer's Porter stemmer (the algorithm FTS5's ``porter`` tokenizer applies); None when
    PyStemmer is missing, in which case tokens are not stemmed (index and queries alike)."""
    try:
        import Stemmer
    except ImportError:  # pragma: no cover - PyStemmer comes with the local extra
        return None
    return Stemmer.Stemmer("porter")


def tokens(text: str) -> list[str]:
    """The index terms of ``text``, in order (duplicates kept)."""
    if not text:
        return []
    text = text.lower()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    words = _TOKEN.findall(text)
    st = _stemmer()
    if st is None:
        return words
    stems = st.stemWords(words)
    return [s if 3 <= len(w) <= 64 else w for w, s in zip(words, stems)]


def chunk_terms(text: str, title: str) -> tuple[dict[str, tuple[int, int]], int]:
    """``{term: (tf in text, tf in title)}`` and the chunk's length in tokens (both fields)."""
    body, head = tokens(text), tokens(title)
    tf_body, tf_head = Counter(body), Counter(head)
    terms = {t: (tf_body.get(t, 0), tf_head.get(t, 0)) for t in {*tf_body, *tf_head}}
    return terms, len(body) + len(head)


def encode(term_ids: Sequence[int], freqs: Sequence[tuple[int, int]]) -> tuple[bytes, bytes]:
    """Storage form: int32 term ids and uint16 (text, title) frequency pairs."""
    ids = np.asarray(term_ids, dtype=np.int32)
    tf = np.minimum(np.asarray(freqs, dtype=np.int64).reshape(-1, 2), 65535).astype(np.uint16)
    return ids.tobytes(), tf.tobytes()


@dataclass
class Postings:
    """One tenant's postings: for term ``terms[j]``, the chunk positions ``pos[start[j]:start[j+1]]``
    (positions index the tenant's rows, the same order as its vector matrix) with their BM25
    impacts ``impact[...]`` (the score without the idf factor)."""

    n: int = 0
    terms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    start: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    impact: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    @classmethod
    def build(cls, id_blobs: Sequence[bytes], tf_blobs: Sequence[bytes], lengths: Sequence[int],
              title_weight: float) -> Postings:
        n = len(id_blobs)
        if n == 0:
            return cls()
        counts = np.fromiter((len(b) // 4 for b in id_blobs), dtype=np.int64, count=n)
        ids = np.frombuffer(b"".join(id_blobs), dtype=np.int32)
        tf = np.frombuffer(b"".join(tf_blobs), dtype=np.uint16).reshape(-1, 2)
        rows = np.repeat(np.arange(n, dtype=np.int32), counts)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        rows = rows[order]
        tf = tf[order]
        freq = tf[:, 0].astype(np.float32) + np.float32(title_weight) * tf[:, 1].astype(np.float32)
        dl = np.asarray(lengths, dtype=np.float32)
        avgdl = float(dl.mean()) or 1.0
        norm = np.float32(K1) * (np.float32(1 - B) + np.float32(B / avgdl) * dl[rows])
        impact = freq * np.float32(K1 + 1) / (freq + norm)
        terms, first = np.unique(ids, return_index=True)
        start = np.append(first, len(ids)).astype(np.int64)
        return cls(n=n, terms=terms, start=start, pos=rows, impact=impact.astype(np.float32))

    def doc_freq(self, term_ids: Sequence[int]) -> np.ndarray:
        """How many of the tenant's chunks hold each term (0 for unknown ids)."""
        q = np.asarray(term_ids, dtype=np.int32)
        if not len(self.terms) or not len(q):
            return np.zeros(len(q), dtype=np.int64)
        at = np.minimum(np.searchsorted(self.terms, q), len(self.terms) - 1)
        hit = self.terms[at] == q
        return np.where(hit, self.start[at + 1] - self.start[at], 0)

    def scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """BM25 of every tenant chunk for the query terms (a term given twice counts twice, as
        two FTS5 phrases did); 0 where no term matches."""
        out_pos, out_w = [], []
        q = np.asarray(term_ids, dtype=np.int32)
        if len(self.terms) and len(q):
            at = np.minimum(np.searchsorted(self.terms, q), len(self.terms) - 1)
            for j, t in zip(at, q):
                if self.terms[j] != t:
                    continue
                s, e = self.start[j], self.start[j + 1]
                df = e - s
                idf = np.log((self.n - df + 0.5) / (df + 0.5))
                idf = idf if idf > 0 else 1e-6
                out_pos.append(self.pos[s:e])
                out_w.append(self.impact[s:e] * np.float32(idf))
        if not out_pos:
            return np.zeros(self.n, dtype=np.float64)
        return np.bincount(np.concatenate(out_pos), weights=np.concatenate(out_w), minlength=self.n)
