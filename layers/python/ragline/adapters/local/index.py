"""The embedded hybrid index: BM25 (FTS5's tokenizer and formula, over postings in numpy;
see ``lexical.py``) plus exact vector search in numpy, in one SQLite file.

Why exact vectors: at the sizes one machine serves (up to a few hundred thousand chunks) a
matrix-vector product over one tenant's rows is a few milliseconds, needs no training or
tuning, has perfect recall, and makes the tenant/ACL filter trivially *inside* the search
(rows are grouped by tenant; ACL is a boolean mask before top-k). ``bench/`` measures it.

Visibility: ``stage`` writes chunks (text, vector, term ids and frequencies) with ``live = 0``;
``publish`` in one transaction flips the version's rows live and deletes every other version of
the document (and, when the same version was processed again, its earlier rows). Readers therefore see either the old version or the new
one, never a mix, and a crash between stage and publish leaves nothing visible.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DependencyUnavailable
from ...models import Chunk, SearchHit, SearchRequest, TenantScope
from ...retrieval.fusion import fuse
from . import lexical
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
  vector BLOB NOT NULL,
  lex_ids BLOB,
  lex_tf BLOB,
  lex_len INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(tenant, doc_id, version);
CREATE INDEX IF NOT EXISTS chunks_live ON chunks(live, tenant);
CREATE TABLE IF NOT EXISTS lex_terms (id INTEGER PRIMARY KEY, term TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tenant_gen (tenant TEXT PRIMARY KEY, gen INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', 0);
INSERT OR IGNORE INTO meta VALUES ('max_rowid', 0);
"""

# English stop words dropped from the lexical query: they only add OR-terms that match nearly
# every chunk without changing the ranking much.
STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves"]
)
_WORD = re.compile(r"\w+", re.UNICODE)
# suffix of a staged row whose chunk id is live already (see ``stage``); ``publish`` removes it
_STAGED = "#staged"
_GROUP_OK = re.compile(r"^[\w.:@/+-]{1,128}$")


def lexical_terms(text: str) -> list[str]:
    """Query words for the lexical leg: lower-cased words, stop words dropped, first
    occurrence order kept (``query_terms`` stems them as the index does)."""
    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS))


def query_terms(text: str) -> list[str]:
    """The index terms of a query: each kept word tokenized and stemmed like indexed text (at
    most 64 words, as the FTS5 query had)."""
    return [t for w in lexical_terms(text)[:64] for t in lexical.tokens(w)]


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
    postings: lexical.Postings = field(default_factory=lexical.Postings)
    centroid: np.ndarray | None = None  # mean of the live vectors, computed on first use

    def visible(self, groups: frozenset[str]) -> np.ndarray | None:
        """Boolean mask of the live rows the scope may see, or None when it may see all rows."""
        allowed = np.array(
            [(a == "" or any(f"|{g}|" in a for g in groups)) for a in self.acls], dtype=bool
        )
        mask = None if allowed.all() else (allowed[self.acl_ids] if len(self.acl_ids) else np.zeros(0, dtype=bool))
        alive = self.postings.alive  # rows replaced or deleted since the tenant was loaded
        if alive is not None:
            mask = alive if mask is None else mask & alive
        return mask


class LocalHybridIndex:
    def __init__(self, path: Path, dimensions: int, *, bm25_title_weight: float = 0.5):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dimensions
        self.title_weight = bm25_title_weight
        self.max_terms = 12  # the rarest 12 (SciFact train: 0.7431 vs 0.7426 with all)
        self.max_df = 0.3  # drop lexical query terms found in more than this share of chunks (tuned: SciFact train -0.0004 nDCG@10, 200k chunks -35% latency)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._tenants: dict[str, tuple[int, _TenantVectors]] = {}  # tenant -> (its generation, its rows)
        self._tenant_locks: dict[str, threading.Lock] = {}
        # a publish refreshes a loaded tenant in place of a reload (see _refresh) when the tenant
        # has at least this many rows; dead plus appended rows beyond this share, or more
        # segments than this, make compaction due (a full load, see _compact_later)
        self.refresh_min_rows = 5000
        self.refresh_max_share = 0.25
        self.refresh_max_segments = 8
        # compaction runs on a background thread: the query that finds it due is served from the
        # refreshed rows, and the fully loaded rows replace them when ready. Only past twice
        # these limits (compaction fell behind a stream of publishes) does a query load in line.
        self.background_compaction = True
        self._compactor = None  # a one-thread executor, made on first use
        self._compacting: dict[str, object] = {}  # tenant -> its pending compaction (a Future)
        self._term_ids: dict[str, int] = {}  # committed lex_terms rows (ids never change)
        c = self._conn()
        c.executescript(_SCHEMA)
        cols = {r[1] for r in c.execute("PRAGMA table_info(chunks)")}
        if "token_count" not in cols:  # index files written before token counts were stored
            c.execute("ALTER TABLE chunks ADD COLUMN token_count INTEGER")
        for col, kind in (("lex_ids", "BLOB"), ("lex_tf", "BLOB"), ("lex_len", "INTEGER")):
            if col not in cols:  # index files written when BM25 came from an FTS5 table
                c.execute(f"ALTER TABLE chunks ADD COLUMN {col} {kind}")
        self._migrate_lexical(c)

    def _migrate_lexical(self, c: sqlite3.Connection) -> None:
        """Files from the FTS5 days: compute the term postings of rows that lack them (from the
        stored text, in batches, each batch one transaction) and drop the FTS5 tables. Done once:
        the meta row ``lexical_postings`` records it, so opening a migrated file scans nothing."""
        if c.execute("SELECT 1 FROM meta WHERE key='lexical_postings'").fetchone():
            return
        todo = c.execute("SELECT count(*) FROM chunks WHERE lex_ids IS NULL").fetchone()[0]
        if todo:
            from ...observability import logger

            logger().warning("upgrading the local index to BM25 postings (once; about 3 s per 10,000 chunks)",
                             extra={"index": str(self.path), "chunks": todo})
        last = -1
        while True:
            with self._write_lock:
                rows = c.execute(
                    "SELECT rowid, text, coalesce(title, '') || ' ' || coalesce(heading, '') FROM chunks "
                    "WHERE rowid > ? AND lex_ids IS NULL ORDER BY rowid LIMIT 2000", (last,)
                ).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                c.execute("BEGIN IMMEDIATE")
                try:
                    done = self._lexical_rows(c, [(r[1], r[2]) for r in rows])
                    c.executemany("UPDATE chunks SET lex_ids=?, lex_tf=?, lex_len=? WHERE rowid=?",
                                  [(*d, r[0]) for d, r in zip(done, rows)])
                    self._bump(c)
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    self._term_ids.clear()  # ids of the rolled-back inserts are not committed
                    raise
        if c.execute("SELECT 1 FROM sqlite_master WHERE name='chunks_fts'").fetchone():
            with self._write_lock:
                c.execute("DROP TABLE IF EXISTS chunks_vocab")
                c.execute("DROP TABLE IF EXISTS chunks_fts")
        c.execute("INSERT OR IGNORE INTO meta VALUES ('lexical_postings', 1)")

    def _lexical_rows(self, c: sqlite3.Connection, texts: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes, int]]:
        """(term ids, frequencies, length) of each (text, title); unknown terms are added to
        ``lex_terms`` inside the caller's transaction."""
        parsed = [lexical.chunk_terms(text, title) for text, title in texts]
        new = sorted({t for terms, _ in parsed for t in terms if t not in self._term_ids})
        fresh: dict[str, int] = {}
        if new:
            c.executemany("INSERT OR IGNORE INTO lex_terms (term) VALUES (?)", [(t,) for t in new])
            for i in range(0, len(new), 500):
                part = new[i:i + 500]
                fresh.update(c.execute(
                    f"SELECT term, id FROM lex_terms WHERE term IN ({','.join('?' * len(part))})", part))
        known = self._term_ids
        out = []
        for terms, length in parsed:
            keys = list(terms)
            ids = [known[t] if t in known else fresh[t] for t in keys]
            out.append((*lexical.encode(ids, [terms[t] for t in keys]), length))
        self._term_ids.update(fresh)  # the caller rolls back -> it clears this cache
        return out

    def _lookup_terms(self, c: sqlite3.Connection, terms: Sequence[str]) -> list[int | None]:
        known = self._term_ids
        missing = [t for t in dict.fromkeys(terms) if t not in known]
        extra = dict(c.execute(
            f"SELECT term, id FROM lex_terms WHERE term IN ({','.join('?' * len(missing))})", missing)) if missing else {}
        return [known.get(t, extra.get(t)) for t in terms]

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

    def _bump(self, c: sqlite3.Connection, tenant: str | None = None) -> None:
        """Mark the index changed: for one tenant (its loaded vectors and postings are rebuilt
        at its next query; other tenants' stay loaded), or for every tenant (``None``)."""
        c.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        if tenant is None:
            c.execute("UPDATE tenant_gen SET gen = gen + 1")
        else:
            c.execute("INSERT INTO tenant_gen VALUES (?, 1) ON CONFLICT(tenant) DO UPDATE SET gen = gen + 1", (tenant,))

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
        # the title field BM25 weighs is the title and the heading, as the FTS5 table had it
        texts = [(ch.text, f"{ch.title or ''} {ch.heading or ''}") for ch in chunks]
        with self._write_lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                lex = self._lexical_rows(c, texts)
                # a staging is the whole new processing of its version: rows an earlier attempt
                # staged for it (more ordinals, an older ACL or redaction) go, or publish would
                # make them live beside these
                for key in dict.fromkeys((ch.tenant, ch.doc_id, ch.version) for ch in chunks):
                    self._delete_where(c, "tenant=? AND doc_id=? AND version=? AND live=0", key)
                # Staging the same chunk ids again (a retried delivery) replaces the staged rows.
                # An id that is live already (the same content version processed again: other
                # groups, PII policy, chunker) is staged beside it under a "#staged" id, so the
                # live row keeps serving until publish swaps in the new text and ACL (and, being
                # a new row, a new rowid: a loaded tenant never keeps the old ACL in memory)
                live = self._live_ids(c, [r[0] for r in rows])
                # a staged-beside row left by an earlier attempt whose live row is gone since
                # would clash with this one at publish
                self._delete_ids(c, [r[0] + _STAGED for r in rows if r[0] not in live], live=0)
                if live:
                    rows = [(r[0] + _STAGED if r[0] in live else r[0], *r[1:]) for r in rows]
                # rowids are never reused: a loaded tenant knows its rows by rowid (see _refresh),
                # and a deleted row's rowid coming back live with another text and ACL before the
                # tenant was refreshed would be taken for the old row (its vector and ACL)
                first = self._next_rowid(c, len(rows))
                c.executemany(
                    """INSERT INTO chunks (rowid, chunk_id, tenant, doc_id, version, ordinal, source_key, title, page,
                       heading, acl, flags, token_count, text, vector, lex_ids, lex_tf, lex_len)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT(chunk_id) DO UPDATE SET text=excluded.text, vector=excluded.vector,
                       acl=excluded.acl, flags=excluded.flags, title=excluded.title, page=excluded.page,
                       heading=excluded.heading, token_count=excluded.token_count, lex_ids=excluded.lex_ids,
                       lex_tf=excluded.lex_tf, lex_len=excluded.lex_len WHERE chunks.live = 0""",
                    [(first + i, *r, *x) for i, (r, x) in enumerate(zip(rows, lex))],
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                self._term_ids.clear()  # ids inserted by the rolled-back transaction do not exist
                raise

    def publish(self, tenant: str, doc_id: str, version: str) -> int:
        """Make the staged rows of ``version`` the document's only rows; returns how many rows
        were made live (0: nothing was staged, e.g. a concurrent attempt's publish or delete
        removed them, which the pipeline checks)."""
        made_live = 0
        with self._write_lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                staged = c.execute(
                    "SELECT 1 FROM chunks WHERE tenant=? AND doc_id=? AND version=? AND live=0 LIMIT 1",
                    (tenant, doc_id, version),
                ).fetchone()
                if staged:
                    # the staged rows are the whole new processing of the version: every live row
                    # of the document goes, those of the same version processed earlier (old ACL,
                    # old redaction, ordinals the new chunking no longer makes) included
                    self._delete_where(c, "tenant=? AND doc_id=? AND live=1", (tenant, doc_id))
                    made_live = c.execute(
                        "UPDATE chunks SET live=1, chunk_id = CASE WHEN substr(chunk_id, -?) = ? "
                        "THEN substr(chunk_id, 1, length(chunk_id) - ?) ELSE chunk_id END "
                        "WHERE tenant=? AND doc_id=? AND version=? AND live=0",
                        (len(_STAGED), _STAGED, len(_STAGED), tenant, doc_id, version),
                    ).rowcount
                self._delete_where(c, "tenant=? AND doc_id=? AND version<>?", (tenant, doc_id, version))
                self._bump(c, tenant)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return made_live

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
                self._bump(c, tenant)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return n

    @staticmethod
    def _next_rowid(c: sqlite3.Connection, n: int) -> int:
        """The first of ``n`` rowids above every rowid the file ever had (inside the caller's
        transaction); the high-water mark is kept in ``meta``."""
        mark = c.execute("SELECT value FROM meta WHERE key='max_rowid'").fetchone()
        top = max(int(mark[0]) if mark else 0, int(c.execute("SELECT coalesce(max(rowid), 0) FROM chunks").fetchone()[0]))
        c.execute("INSERT INTO meta VALUES ('max_rowid', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                  (top + n,))
        return top + 1

    @staticmethod
    def _live_ids(c: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            part = list(ids[i:i + 500])
            found.update(r[0] for r in c.execute(
                f"SELECT chunk_id FROM chunks WHERE live=1 AND chunk_id IN ({','.join('?' * len(part))})", part))
        return found

    @staticmethod
    def _delete_ids(c: sqlite3.Connection, ids: Sequence[str], *, live: int) -> None:
        for i in range(0, len(ids), 500):
            part = list(ids[i:i + 500])
            c.execute(f"DELETE FROM chunks WHERE live=? AND chunk_id IN ({','.join('?' * len(part))})", [live, *part])

    @staticmethod
    def _delete_where(c: sqlite3.Connection, where: str, args: tuple) -> int:
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
        n = len(tv.rowids)
        if not n:
            return []
        # both legs see exactly the tenant's live rows the scope may read: the tenant's rows are
        # the only ones loaded, and the ACL mask applies before anything is ranked
        mask = tv.visible(scope.groups)
        # dense leg: exact inner product over this tenant's rows
        dense_top: np.ndarray = np.zeros(0, dtype=np.int64)
        sims = None
        if req.vector is not None and tv.mat is not None:
            q = np.asarray(req.vector, dtype=np.float32)
            sims = tv.mat @ q
            ranked = np.where(mask, sims, -np.inf) if mask is not None else sims
            k = min(n_cand, n)
            dense_top = np.argpartition(-ranked, k - 1)[:k] if k < n else np.arange(n)
            dense_top = dense_top[np.isfinite(ranked[dense_top])]
        # lexical leg: BM25 of every visible chunk from the tenant's postings
        lex_top: np.ndarray = np.zeros(0, dtype=np.int64)
        bm25 = None
        ids = [i for i in self._lookup_terms(c, self._informative_terms(tv, req.text)) if i is not None]
        if ids:
            bm25 = tv.postings.scores(ids)
            if mask is not None:
                bm25 = np.where(mask, bm25, 0.0)
            matched = np.flatnonzero(bm25 > 0)
            if len(matched) > n_cand:
                matched = matched[np.argpartition(-bm25[matched], n_cand - 1)[:n_cand]]
            lex_top = matched[np.argsort(-bm25[matched], kind="stable")]
        union = np.array(list(dict.fromkeys([*lex_top.tolist(), *dense_top.tolist()])), dtype=np.int64)
        if not len(union):
            return []
        lex_scores = bm25[union] if bm25 is not None else np.zeros(len(union))
        dense_scores = sims[union].astype(np.float64) if sims is not None else np.zeros(len(union))
        fused = fuse(lex_scores, dense_scores, method=req.fusion, dense_weight=req.dense_weight, rrf_k=req.rrf_k)
        order = np.argsort(-fused, kind="stable")[: req.top_k]
        chosen = [int(tv.rowids[union[i]]) for i in order]
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
            r = meta.get(int(tv.rowids[union[i]]))
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
            alive = tv.postings.alive
            tv.centroid = (tv.mat if alive is None else tv.mat[alive]).mean(axis=0)
        return tv.centroid

    def _informative_terms(self, tv: _TenantVectors, text: str) -> list[str]:
        """Index terms of the query, without those in more than ``max_df`` of the tenant's chunks
        and at most the ``max_terms`` rarest (tuned on SciFact train when the lexical leg was
        FTS5, where each common term cost time; a common term's BM25 weight is near zero, and
        the rarest terms carry the ranking)."""
        terms = query_terms(text)
        total = tv.postings.n
        if len(terms) <= 1 or self.max_df >= 1.0 or total < 1000:
            return terms
        ids = self._lookup_terms(self._conn(), terms)
        df = tv.postings.doc_freq([-1 if i is None else i for i in ids]).tolist()
        kept = [t for t, d in zip(terms, df) if d <= self.max_df * total]
        if not kept:
            kept = [t for _, t in sorted(zip(df, terms))[:2]]
        if len(kept) > self.max_terms:
            rank = dict(zip(terms, df))
            kept = sorted(kept, key=lambda t: rank.get(t, 0))[: self.max_terms]
        return kept

    # ------------------------------------------------------------------ vector cache
    def _tenant_vectors(self, tenant: str) -> _TenantVectors:
        """The tenant's loaded rows, refreshed (or, for a small tenant, loaded again) when the
        tenant's generation moved (a publish or delete by any process). Per tenant: one tenant's
        ingestion never costs another tenant's queries anything. The generation is read before
        the rows, so a change that lands meanwhile only causes one more refresh, never a stale
        cache. When a refresh finds compaction due, a full load is started in the background."""
        gen = self._generation(tenant)
        with self._cache_lock:
            cached = self._tenants.get(tenant)
            if cached is not None and cached[0] == gen:
                return cached[1]
            lock = self._tenant_locks.setdefault(tenant, threading.Lock())
        with lock:  # one load per tenant at a time; other tenants' queries do not wait for it
            cached = self._tenants.get(tenant)
            if cached is None or cached[0] != gen:
                tv, compact = self._refresh(tenant, cached[1]) if cached is not None else (None, False)
                if tv is None:
                    tv = self._load_tenant(tenant)
                elif compact:
                    self._compact_later(tenant)
                cached = (gen, tv)
                with self._cache_lock:
                    self._tenants[tenant] = cached
            return cached[1]

    def _generation(self, tenant: str) -> int:
        row = self._conn().execute("SELECT gen FROM tenant_gen WHERE tenant=?", (tenant,)).fetchone()
        return int(row[0]) if row else 0

    def _compact_later(self, tenant: str) -> None:
        """Load the tenant fully on the compaction thread and install the result. Installing is
        always safe: the loaded rows are at least as new as the generation read before them and
        are stored under that generation, so a query that finds a newer one refreshes from them."""
        from concurrent.futures import ThreadPoolExecutor

        with self._cache_lock:
            if tenant in self._compacting:
                return
            if self._compactor is None:
                self._compactor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragline-compact")
            self._compacting[tenant] = self._compactor.submit(self._compact, tenant)

    def _compact(self, tenant: str) -> None:
        try:
            gen = self._generation(tenant)
            tv = self._load_tenant(tenant)
            with self._cache_lock:
                lock = self._tenant_locks.setdefault(tenant, threading.Lock())
            with lock, self._cache_lock:
                self._tenants[tenant] = (gen, tv)
        except Exception:  # noqa: BLE001 - a failed compaction leaves the refreshed rows serving
            from ...observability import logger

            logger().exception("background compaction of the local index failed", extra={"tenant": tenant})
        finally:
            with self._cache_lock:
                self._compacting.pop(tenant, None)
            self.close()  # this thread's SQLite connection

    def wait_for_compaction(self, timeout: float | None = None) -> None:
        """Block until pending background compactions finish (tests, benchmarks, shutdown)."""
        from concurrent.futures import wait

        with self._cache_lock:
            pending = list(self._compacting.values())
        wait(pending, timeout=timeout)  # type: ignore[arg-type]

    def _refresh(self, tenant: str, old: _TenantVectors) -> tuple[_TenantVectors | None, bool]:
        """The tenant's rows after a publish or delete, from the loaded ones: rows no longer live
        are marked dead, rows that became live are read and appended (their vectors to the
        matrix, their postings as a new segment). Milliseconds instead of the seconds a full
        load of a large tenant takes. Returns (rows, compaction due): rows None when a full load
        must happen now: a small tenant, a dead row's id live again (SQLite may reuse the largest
        rowid), or compaction due with background compaction off or already twice overdue."""
        if not len(old.rowids) or len(old.rowids) < self.refresh_min_rows:
            return None, False
        c = self._conn()
        cur = np.fromiter((r[0] for r in c.execute(
            "SELECT rowid FROM chunks WHERE live=1 AND tenant=? ORDER BY rowid", (tenant,))), dtype=np.int64)
        order = np.argsort(old.rowids, kind="stable")
        known = old.rowids[order]
        at = np.minimum(np.searchsorted(known, cur), len(known) - 1)
        found = known[at] == cur
        pos = order[at[found]]
        was_alive = old.postings.alive
        if was_alive is not None and not was_alive[pos].all():
            return None, False
        still = np.zeros(len(old.rowids), dtype=bool)
        still[pos] = True
        dead = ~still if was_alive is None else (was_alive & ~still)
        added = cur[~found]
        if not dead.any() and not len(added):
            return old, False
        n_dead = int((~still).sum())  # dead before this refresh or by it
        appended = len(old.rowids) - old.postings.base_rows + len(added)
        churn = (n_dead + appended) / (len(old.rowids) + len(added))
        segments = len(old.postings.segments)
        compact = segments >= self.refresh_max_segments or churn > self.refresh_max_share
        if compact and (not self.background_compaction or segments >= 2 * self.refresh_max_segments
                        or churn > min(1.0, 2 * self.refresh_max_share)):
            return None, False
        rows = []
        for i in range(0, len(added), 500):
            part = added[i:i + 500].tolist()
            rows += c.execute(
                f"SELECT rowid, acl, vector, lex_ids, lex_tf, lex_len FROM chunks WHERE live=1 AND tenant=? "
                f"AND rowid IN ({','.join('?' * len(part))}) ORDER BY rowid", [tenant, *part]).fetchall()
        tv = _TenantVectors()
        tv.rowids = np.concatenate([old.rowids, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))])
        new_mat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        tv.mat = new_mat if old.mat is None else np.concatenate([old.mat, new_mat])
        acl_index = {a: i for i, a in enumerate(old.acls)}
        new_acl = np.fromiter((acl_index.setdefault(r[1], len(acl_index)) for r in rows), dtype=np.int32, count=len(rows))
        tv.acl_ids = np.concatenate([old.acl_ids, new_acl])
        tv.acls = list(acl_index)
        tv.postings = old.postings.extended(dead, [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows],
                                            self.title_weight)
        return tv, compact

    def _load_tenant(self, tenant: str) -> _TenantVectors:
        rows = self._conn().execute(
            "SELECT rowid, acl, vector, lex_ids, lex_tf, lex_len FROM chunks WHERE live=1 AND tenant=? ORDER BY rowid",
            (tenant,),
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
        tv.postings = lexical.Postings.build([r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows],
                                             self.title_weight)
        return tv
