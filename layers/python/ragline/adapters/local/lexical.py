"""BM25 for the embedded index: FTS5's tokenizer and scoring, over postings in numpy.

Why not SQLite FTS5 itself (the first version used it): FTS5 has no top-k pruning, so an OR
query computes ``bm25()`` for every chunk that holds any query term, one row at a time through
the auxiliary-function API, and hands every row back to Python. At 200k chunks a query matched
~60k of them and the lexical leg alone cost 60-200 ms. Here the same scores come from
per-tenant postings held in memory as flat numpy arrays (term -> chunk positions and weighted
frequencies; the BM25 impact is computed for the query terms' postings only), so a query is a
few array slices, one vectorised formula and one ``bincount``.

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


@dataclass(frozen=True)
class Segment:
    """Postings of a batch of rows: for term ``terms[j]``, the row positions
    ``pos[start[j]:start[j+1]]`` (positions in the tenant's row space, the order of its vector
    matrix) and their weighted term frequencies ``freq[...]``."""

    terms: np.ndarray
    start: np.ndarray
    pos: np.ndarray
    freq: np.ndarray

    @classmethod
    def build(cls, id_blobs: Sequence[bytes], tf_blobs: Sequence[bytes], title_weight: float,
              offset: int = 0) -> Segment:
        n = len(id_blobs)
        counts = np.fromiter((len(b) // 4 for b in id_blobs), dtype=np.int64, count=n)
        ids = np.frombuffer(b"".join(id_blobs), dtype=np.int32)
        tf = np.frombuffer(b"".join(tf_blobs), dtype=np.uint16).reshape(-1, 2)
        rows = np.repeat(np.arange(offset, offset + n, dtype=np.int32), counts)
        order = np.argsort(ids, kind="stable")  # rows stay in order within a term
        ids = ids[order]
        tf = tf[order]
        freq = tf[:, 0].astype(np.float32)
        freq += np.float32(title_weight) * tf[:, 1].astype(np.float32)
        first = np.flatnonzero(np.diff(ids, prepend=np.int32(-1)))  # where each term's postings begin
        return cls(terms=ids[first], start=np.append(first, len(ids)).astype(np.int64), pos=rows[order], freq=freq)

    def find(self, term: int) -> tuple[int, int]:
        j = int(np.searchsorted(self.terms, term))
        if j >= len(self.terms) or self.terms[j] != term:
            return 0, 0
        return int(self.start[j]), int(self.start[j + 1])


_EMPTY_F = np.zeros(0, dtype=np.float32)
_EMPTY_P = np.zeros(0, dtype=np.int32)


@dataclass(frozen=True)
class Postings:
    """One tenant's BM25 state: segments of postings over its rows, each row's length, and which
    rows are still live (``alive``; None when all are). A publish adds a segment for the new rows
    and marks replaced or deleted rows dead instead of rebuilding everything (see
    ``LocalHybridIndex._refresh``); N, document frequencies and the average length count live
    rows only, so scores equal a fresh build's. Immutable: a refresh makes a new object, and a
    query holding the old one is not disturbed."""

    segments: tuple[Segment, ...] = ()
    lens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    alive: np.ndarray | None = None
    n: int = 0  # live rows
    total_len: float = 0.0  # their summed length
    base_rows: int = 0  # rows of the first segment (the rest were appended by refreshes)

    @classmethod
    def build(cls, id_blobs: Sequence[bytes], tf_blobs: Sequence[bytes], lengths: Sequence[int],
              title_weight: float) -> Postings:
        if not len(id_blobs):
            return cls()
        lens = np.asarray(lengths, dtype=np.float32)
        return cls(segments=(Segment.build(id_blobs, tf_blobs, title_weight),), lens=lens, n=len(lens),
                   total_len=float(lens.sum(dtype=np.float64)), base_rows=len(lens))

    @property
    def rows(self) -> int:
        return len(self.lens)

    def extended(self, dead: np.ndarray | None, id_blobs: Sequence[bytes], tf_blobs: Sequence[bytes],
                 lengths: Sequence[int], title_weight: float) -> Postings:
        """A new state: rows at positions ``dead`` (a boolean mask over the current rows) no
        longer live, and the given rows appended after the current ones."""
        alive = np.ones(self.rows, dtype=bool) if self.alive is None else self.alive.copy()
        if dead is not None:
            alive &= ~dead
        new_lens = np.asarray(lengths, dtype=np.float32)
        segments = self.segments
        if len(id_blobs):
            segments = (*segments, Segment.build(id_blobs, tf_blobs, title_weight, offset=self.rows))
        lens = np.concatenate([self.lens, new_lens])
        alive = np.concatenate([alive, np.ones(len(new_lens), dtype=bool)])
        live_lens = lens[alive]
        return Postings(segments=segments, lens=lens, alive=None if alive.all() else alive, n=int(alive.sum()),
                        total_len=float(live_lens.sum(dtype=np.float64)), base_rows=self.base_rows)

    def _term(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        pos, freq = [], []
        for seg in self.segments:
            s, e = seg.find(term)
            if e > s:
                pos.append(seg.pos[s:e])
                freq.append(seg.freq[s:e])
        if not pos:
            return _EMPTY_P, _EMPTY_F
        p = pos[0] if len(pos) == 1 else np.concatenate(pos)
        f = freq[0] if len(freq) == 1 else np.concatenate(freq)
        if self.alive is not None:
            keep = self.alive[p]
            p, f = p[keep], f[keep]
        return p, f

    def doc_freq(self, term_ids: Sequence[int]) -> np.ndarray:
        """How many of the tenant's live chunks hold each term (0 for unknown ids)."""
        return np.array([len(self._term(int(t))[0]) for t in term_ids], dtype=np.int64)

    def scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """BM25 of every row for the query terms (a term given twice counts twice, as two FTS5
        phrases did); 0 where no term matches and for dead rows."""
        out_pos, out_w = [], []
        avgdl = (self.total_len / self.n) if self.n else 1.0
        avgdl = avgdl or 1.0
        for t in term_ids:
            p, f = self._term(int(t))
            if not len(p):
                continue
            df = len(p)
            idf = np.log((self.n - df + 0.5) / (df + 0.5))
            idf = idf if idf > 0 else 1e-6
            norm = np.float32(K1) * (np.float32(1 - B) + np.float32(B / avgdl) * self.lens[p])
            out_pos.append(p)
            out_w.append(f * np.float32(K1 + 1) / (f + norm) * np.float32(idf))
        if not out_pos:
            return np.zeros(self.rows, dtype=np.float64)
        return np.bincount(np.concatenate(out_pos), weights=np.concatenate(out_w), minlength=self.rows)
