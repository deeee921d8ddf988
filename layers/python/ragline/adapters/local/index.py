"""The embedded hybrid index: SQLite FTS5 (BM25, Porter stemming) plus exact vector search in
numpy, in one SQLite file.

Why exact vectors: at the sizes one machine serves (up to a few hundred thousand chunks) a
matrix-vector product over one tenant's rows is a few milliseconds, needs no training or
tuning, has perfect recall, and makes the tenant/ACL filter trivially *inside* the search
(rows are grouped by tenant; ACL is a boolean mask before top-k). ``bench/`` measures it.

Visibility: ``stage`` writes chunks with ``live = 0`` and keeps them out of the FTS table;
``publish`` in one transaction adds the version's rows to FTS, flips them live and deletes
every other version of the document. Readers therefore see either the old version or the new
one, never a mix, and a crash between stage and publish leaves nothing visible.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import DependencyUnavailable
from ...models import Chunk, SearchHit, SearchRequest, TenantScope
from ...retrieval.fusion import fuse
from .blas import one_blas_thread

_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS chunks (
  rowid INTEGER PRIMARY KEY,
  chunk_id TEXT UNIQUE NOT NULL,
  tenant TEXT NOT NULL,
  doc_id TEXT NOT NULL,
  version TEXT NOT NULL,
  live INTEGER NOT NULL DEFAULT 0,
  ordinal INTEGER NOT NULL,
  source_key TEXT NOT NULL,
  title TEXT,
  page INTEGER,
  heading TEXT,
  acl TEXT NOT NULL DEFAULT '',
  flags TEXT NOT NULL DEFAULT '',
  token_count INTEGER,
  text TEXT NOT NULL,
  vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(tenant, doc_id, version);
CREATE INDEX IF NOT EXISTS chunks_live ON chunks(live, tenant);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
  text, title, tenant UNINDEXED, acl UNINDEXED,
  tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', 0);
"""

# English stop words dropped from the lexical query: they only add OR-terms that match nearly
# every chunk and slow FTS5 down without changing the ranking much.
STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves"]
)
_WORD = re.compile(r"\w+", re.UNICODE)
_GROUP_OK = re.compile(r"^[\w.:@/+-]{1,128}$")


def lexical_terms(text: str) -> list[str]:
    """Query terms for the lexical leg: lower-cased words, stop words dropped, first
    occurrence order kept (FTS5 applies the same Porter stemming as at index time)."""
    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS))


def fts_query(text: str | list[str]) -> str | None:
    terms = lexical_terms(text) if isinstance(text, str) else text
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms[:64])


@lru_cache(maxsize=1)
def _porter():
    """The Porter stemmer FTS5's ``porter`` tokenizer applies (PyStemmer's "porter" matches it
    on 99.6% of SciFact's words); None when PyStemmer is not installed."""
    try:
        import Stemmer
    except ImportError:  # pragma: no cover - PyStemmer comes with the local extra
        return None
    return Stemmer.Stemmer("porter")


def _acl_text(groups: Sequence[str]) -> str:
    for g in groups:
        if not _GROUP_OK.match(g):
            raise ValueError(f"invalid group name {g!r}")
    return "|" + "|".join(sorted(set(groups))) + "|" if groups else ""


@dataclass
class _TenantVectors:
    rowids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mat: np.ndarray | None = None
    acls: list[str] = field(default_factory=list)  # distinct acl strings
    acl_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    pos: dict[int, int] = field(default_factory=dict)
    centroid: np.ndarray | None = None  # mean of the live vectors, computed on first use

    def visible(self, groups: frozenset[str]) -> np.ndarray | None:
        """Boolean mask of rows the scope may see, or None when it may see all of them."""
        allowed = np.array(
            [(a == "" or any(f"|{g}|" in a for g in groups)) for a in self.acls], dtype=bool
        )
        if allowed.all():
            return None
        return allowed[self.acl_ids] if len(self.acl_ids) else np.zeros(0, dtype=bool)


class LocalHybridIndex:
    def __init__(self, path: Path, dimensions: int, *, bm25_title_weight: float = 0.5):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dimensions
        self.title_weight = bm25_title_weight
        self.lexical_depth = 1000  # BM25 scores kept for dense-only candidates (see _search)
        self.max_terms = 12  # the rarest 12 (SciFact train: 0.7431 vs 0.7426 with all)
        self.max_df = 0.3  # drop lexical query terms found in more than this share of chunks (tuned: SciFact train -0.0004 nDCG@10, 200k chunks -35% latency)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._generation = -1
        self._tenants: dict[str, _TenantVectors] = {}
        c = self._conn()
        c.executescript(_SCHEMA)
        cols = {r[1] for r in c.execute("PRAGMA table_info(chunks)")}
        if "token_count" not in cols:  # index files written before token counts were stored
            c.execute("ALTER TABLE chunks ADD COLUMN token_count INTEGER")

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise DependencyUnavailable(f"the local search index cannot be opened: {exc}") from None
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _bump(self, c: sqlite3.Connection) -> None:
        c.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    # ------------------------------------------------------------------ writes
    def stage(self, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        rows = []
        for ch in chunks:
            vec = np.asarray(ch.vector, dtype=np.float32)
            if vec.shape != (self.dim,):
                raise ValueError(f"chunk {ch.chunk_id} vector has shape {vec.shape}, index expects ({self.dim},)")
            rows.append(
                (ch.chunk_id, ch.tenant, ch.doc_id, ch.version, ch.ordinal, ch.source_key, ch.title, ch.page,
                 ch.heading, _acl_text(ch.groups), ",".join(ch.flags), ch.token_count or None, ch.text, vec.tobytes())
            )
        with self._write_lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                # staging the same chunk ids again (a retried delivery) replaces them; live rows
                # of the same id (same content version) are left alone
                c.executemany(
                    """INSERT INTO chunks (chunk_id, tenant, doc_id, version, ordinal, source_key, title, page,
                       heading, acl, flags, token_count, text, vector) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(chunk_id) DO UPDATE SET text=excluded.text, vector=excluded.vector,
                       acl=excluded.acl, flags=excluded.flags, title=excluded.title, page=excluded.page,
                       heading=excluded.heading, token_count=excluded.token_count WHERE chunks.live = 0""",
                    rows,
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def publish(self, tenant: str, doc_id: str, version: str) -> None:
        with self._write_lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    """INSERT INTO chunks_fts (rowid, text, title, tenant, acl)
                       SELECT rowid, text, coalesce(title, '') || ' ' || coalesce(heading, ''), tenant, acl
                       FROM chunks WHERE tenant=? AND doc_id=? AND version=? AND live=0""",
                    (tenant, doc_id, version),
                )
                c.execute(
                    "UPDATE chunks SET live=1 WHERE tenant=? AND doc_id=? AND version=? AND live=0",
                    (tenant, doc_id, version),
                )
                self._delete_where(c, "tenant=? AND doc_id=? AND version<>?", (tenant, doc_id, version))
                self._bump(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def discard(self, tenant: str, doc_id: str, version: str) -> None:
        with self._write_lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                self._delete_where(c, "tenant=? AND doc_id=? AND version=? AND live=0", (tenant, doc_id, version))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def delete_document(self, tenant: str, doc_id: str) -> int:
        with self._write_lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                n = self._delete_where(c, "tenant=? AND doc_id=?", (tenant, doc_id))
                self._bump(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return n

    @staticmethod
    def _delete_where(c: sqlite3.Connection, where: str, args: tuple) -> int:
        c.execute(f"DELETE FROM chunks_fts WHERE rowid IN (SELECT rowid FROM chunks WHERE live=1 AND {where})", args)
        return c.execute(f"DELETE FROM chunks WHERE {where}", args).rowcount

    # ------------------------------------------------------------------ reads
    def count(self, scope: TenantScope, doc_id: str | None = None) -> int:
        if not isinstance(scope, TenantScope):
            raise TypeError("count needs a TenantScope")
        where, args = self._acl_sql(scope, "acl")
        sql = f"SELECT count(*) FROM chunks WHERE live=1 AND tenant=? AND {where}"
        params = [scope.tenant, *args]
        if doc_id is not None:
            sql += " AND doc_id=?"
            params.append(doc_id)
        return int(self._conn().execute(sql, params).fetchone()[0])

    def live_chunk_ids(self, scope: TenantScope, doc_id: str) -> list[str]:
        where, args = self._acl_sql(scope, "acl")
        rows = self._conn().execute(
            f"SELECT chunk_id FROM chunks WHERE live=1 AND tenant=? AND doc_id=? AND {where} ORDER BY ordinal",
            [scope.tenant, doc_id, *args],
        )
        return [r[0] for r in rows]

    def all_chunk_ids(self, tenant: str, doc_id: str) -> list[str]:
        """Every row of a document, live or staged (for tests and operators)."""
        rows = self._conn().execute("SELECT chunk_id FROM chunks WHERE tenant=? AND doc_id=?", (tenant, doc_id))
        return [r[0] for r in rows]

    @staticmethod
    def _acl_sql(scope: TenantScope, col: str) -> tuple[str, list[str]]:
        if not scope.groups:
            return f"{col} = ''", []
        ors = " OR ".join(f"instr({col}, ?) > 0" for _ in scope.groups)
        return f"({col} = '' OR {ors})", [f"|{g}|" for g in sorted(scope.groups)]

    def search(self, scope: TenantScope, request: SearchRequest) -> list[SearchHit]:
        if not isinstance(scope, TenantScope):  # there is no unscoped search
            raise TypeError("search needs a TenantScope")
        try:
            with one_blas_thread():
                return self._search(scope, request)
        except sqlite3.DatabaseError as exc:  # locked, unreadable or not a database at all
            raise DependencyUnavailable(f"the local search index is unavailable: {exc}") from None

    def _search(self, scope: TenantScope, req: SearchRequest) -> list[SearchHit]:
        c = self._conn()
        tv = self._tenant_vectors(scope.tenant)
        n_cand = req.candidates
        # dense leg: exact inner product over this tenant's rows, ACL mask before top-k
        dense_ids: np.ndarray = np.zeros(0, dtype=np.int64)
        q = None
        if req.vector is not None and tv.mat is not None and len(tv.rowids):
            q = np.asarray(req.vector, dtype=np.float32)
            sims = tv.mat @ q
            mask = tv.visible(scope.groups)
            if mask is not None:
                sims = np.where(mask, sims, -np.inf)
            k = min(n_cand, len(sims))
            top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
            top = top[np.isfinite(sims[top])]
            dense_ids = tv.rowids[top]
        # lexical leg: FTS5 BM25 with the tenant and ACL filter in the same statement
        lex: dict[int, float] = {}
        match = fts_query(self._informative_terms(c, req.text))
        lex_scores_all: dict[int, float] = {}
        if match and len(tv.rowids):
            # FTS5 has no top-k pruning: one statement scores every chunk that matches. The
            # tenant and ACL filter is applied to that whole match set here, before anything is
            # ranked (filtering on the FTS table's UNINDEXED columns in SQL read each matching
            # row's content record: ~100 ms at 200k chunks). The visible rowids are the tenant's
            # live rows with an ACL the scope may see, the same set the dense leg searches.
            rows = c.execute(
                "SELECT rowid, -bm25(chunks_fts, 1.0, ?, 0.0, 0.0) FROM chunks_fts WHERE chunks_fts MATCH ?",
                [self.title_weight, match],
            ).fetchall()
            if rows:
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                scores = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
                mask = tv.visible(scope.groups)
                visible = tv.rowids if mask is None else tv.rowids[mask]
                at = np.minimum(np.searchsorted(visible, ids), max(len(visible) - 1, 0))
                keep = (visible[at] == ids) if len(visible) else np.zeros(len(ids), dtype=bool)
                ids, scores = ids[keep], scores[keep]
                # a deep list: the top `candidates` are the lexical leg, the rest give the BM25
                # of dense-only candidates (past it, a chunk's BM25 counts as 0)
                depth = min(len(ids), max(n_cand * 10, self.lexical_depth))
                top = np.argpartition(-scores, depth - 1)[:depth] if depth < len(ids) else np.arange(len(ids))
                top = top[np.argsort(-scores[top], kind="stable")]
                lex_scores_all = {int(i): float(sc) for i, sc in zip(ids[top], scores[top])}
                lex = {int(i): float(sc) for i, sc in zip(ids[top[:n_cand]], scores[top[:n_cand]])}
        union = list(dict.fromkeys([*lex.keys(), *(int(r) for r in dense_ids)]))
        if not union:
            return []
        lex_scores = np.array([lex_scores_all.get(r, 0.0) for r in union])
        if q is not None:
            pos = np.array([tv.pos.get(r, -1) for r in union])
            ok = pos >= 0
            dense_scores = np.full(len(union), float(np.min(tv.mat[pos[ok]] @ q)) if ok.any() else 0.0)
            if ok.any():
                dense_scores[ok] = tv.mat[pos[ok]] @ q
        else:
            dense_scores = np.zeros(len(union))
        fused = fuse(lex_scores, dense_scores, method=req.fusion, dense_weight=req.dense_weight, rrf_k=req.rrf_k)
        order = np.argsort(-fused, kind="stable")[: req.top_k]
        chosen = [union[i] for i in order]
        marks = ",".join("?" * len(chosen))
        meta = {
            int(r[0]): r
            for r in c.execute(
                f"""SELECT rowid, chunk_id, doc_id, version, text, source_key, title, page, heading, flags, token_count
                    FROM chunks WHERE rowid IN ({marks}) AND live=1 AND tenant=?""",
                [*chosen, scope.tenant],
            )
        }
        hits = []
        for i in order:
            r = meta.get(union[i])
            if r is None:  # published away between the two reads
                continue
            hits.append(
                SearchHit(
                    chunk_id=r[1], doc_id=r[2], version=r[3], text=r[4], source_key=r[5], title=r[6],
                    page=r[7], heading=r[8], flags=tuple(f for f in r[9].split(",") if f), token_count=r[10],
                    score=float(fused[i]), lexical_score=float(lex_scores[i]), dense_score=float(dense_scores[i]),
                )
            )
        return hits

    def centroid(self, tenant: str) -> np.ndarray | None:
        """Mean of a tenant's live chunk vectors (for drift of query embeddings); cached until
        the index changes."""
        tv = self._tenant_vectors(tenant)
        if tv.mat is None or not len(tv.rowids):
            return None
        if tv.centroid is None:
            tv.centroid = tv.mat.mean(axis=0)
        return tv.centroid

    def _informative_terms(self, c: sqlite3.Connection, text: str) -> list[str]:
        """Query terms for the lexical leg, without those in more than ``max_df`` of the chunks.

        FTS5 has no top-k pruning: an OR query scores every chunk holding any of its terms, so
        one very common word makes a query touch most of the index (at 200k chunks, hundreds
        of milliseconds). Such a word's BM25 weight is near zero anyway, so it is dropped; the
        rarest terms are kept when every term is common."""
        terms = lexical_terms(text)
        stemmer = _porter()
        if len(terms) <= 1 or stemmer is None or self.max_df >= 1.0:
            return terms
        total = self._live_rows(c)
        if total < 1000:  # small indexes are fast whatever the query
            return terms
        stems = stemmer.stemWords(terms)
        marks = ",".join("?" * len(set(stems)))
        df = dict(c.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", list(set(stems))).fetchall())
        kept = [t for t, st in zip(terms, stems) if df.get(st, 0) <= self.max_df * total]
        if not kept:
            kept = [t for _, t in sorted((df.get(st, 0), t) for t, st in zip(terms, stems))[:2]]
        if len(kept) > self.max_terms:  # the rarest carry the BM25 weight; common ones cost time
            rank = {t: df.get(st, 0) for t, st in zip(terms, stems)}
            kept = sorted(kept, key=lambda t: rank.get(t, 0))[: self.max_terms]
        return kept

    def _live_rows(self, c: sqlite3.Connection) -> int:
        gen = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        if getattr(self, "_rows_gen", None) != gen:
            self._rows = int(c.execute("SELECT count(*) FROM chunks WHERE live=1").fetchone()[0])
            self._rows_gen = gen
        return self._rows

    # ------------------------------------------------------------------ vector cache
    def _tenant_vectors(self, tenant: str) -> _TenantVectors:
        gen = int(self._conn().execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        with self._cache_lock:
            if gen != self._generation:
                self._tenants.clear()
                self._generation = gen
            tv = self._tenants.get(tenant)
            if tv is None:
                tv = self._load_tenant(tenant)
                self._tenants[tenant] = tv
            return tv

    def _load_tenant(self, tenant: str) -> _TenantVectors:
        rows = self._conn().execute(
            "SELECT rowid, acl, vector FROM chunks WHERE live=1 AND tenant=? ORDER BY rowid", (tenant,)
        ).fetchall()
        tv = _TenantVectors()
        if not rows:
            return tv
        tv.rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        buf = b"".join(r[2] for r in rows)
        tv.mat = np.frombuffer(buf, dtype=np.float32).reshape(len(rows), self.dim)
        acl_index: dict[str, int] = {}
        tv.acl_ids = np.fromiter((acl_index.setdefault(r[1], len(acl_index)) for r in rows), dtype=np.int32, count=len(rows))
        tv.acls = list(acl_index)
        tv.pos = {int(r): i for i, r in enumerate(tv.rowids)}
        return tv
