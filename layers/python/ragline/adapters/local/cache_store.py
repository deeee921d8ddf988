"""Semantic-cache entries in SQLite with exact cosine search in numpy, per tenant and ACL key.

The lookup is on every question's path, so the (tenant, ACL key) vector matrix is kept in memory
instead of being read from SQLite on every call (that read was ~2 ms of a ~3 ms cache hit at 500
entries). It stays exact and immediate: triggers on ``cache_entries`` count, per tenant, every
change and every removal (any writer: this process, another process, an operator's SQL) in
``cache_epoch``, and each lookup reads that one row first. No change: the matrix is used as is.
Only additions: the new rows (ids above the last one seen) are appended. Any removal or update
(an invalidation, a clear, an expiry rewrite): the matrix is reloaded. Expiry is checked against
the in-memory ``expires`` at every lookup, and the top entries' JSON is still read from SQLite,
so an entry deleted between the epoch read and that read is skipped.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sqlite import SqliteStore


class SqliteCacheStore(SqliteStore):
    schema = """
    CREATE TABLE IF NOT EXISTS cache_entries (
      id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, acl_key TEXT NOT NULL, created REAL NOT NULL,
      expires REAL NOT NULL, entry TEXT NOT NULL, vector BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cache_scope ON cache_entries(tenant, acl_key);
    CREATE TABLE IF NOT EXISTS cache_docs (
      entry_id INTEGER NOT NULL, tenant TEXT NOT NULL, doc_id TEXT NOT NULL, version TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cache_docs_doc ON cache_docs(tenant, doc_id);
    CREATE TABLE IF NOT EXISTS cache_epoch (
      tenant TEXT PRIMARY KEY, changes INTEGER NOT NULL DEFAULT 0, removals INTEGER NOT NULL DEFAULT 0
    );
    CREATE TRIGGER IF NOT EXISTS cache_epoch_insert AFTER INSERT ON cache_entries BEGIN
      INSERT INTO cache_epoch (tenant, changes, removals) VALUES (NEW.tenant, 1, 0)
        ON CONFLICT(tenant) DO UPDATE SET changes = changes + 1;
    END;
    CREATE TRIGGER IF NOT EXISTS cache_epoch_delete AFTER DELETE ON cache_entries BEGIN
      INSERT INTO cache_epoch (tenant, changes, removals) VALUES (OLD.tenant, 1, 1)
        ON CONFLICT(tenant) DO UPDATE SET changes = changes + 1, removals = removals + 1;
    END;
    CREATE TRIGGER IF NOT EXISTS cache_epoch_update AFTER UPDATE ON cache_entries BEGIN
      INSERT INTO cache_epoch (tenant, changes, removals) VALUES (OLD.tenant, 1, 1)
        ON CONFLICT(tenant) DO UPDATE SET changes = changes + 1, removals = removals + 1;
      INSERT INTO cache_epoch (tenant, changes, removals) VALUES (NEW.tenant, 1, 1)
        ON CONFLICT(tenant) DO UPDATE SET changes = changes + 1, removals = removals + 1;
    END;
    """

    def __init__(self, path, dimensions: int):
        super().__init__(path)
        self.dim = dimensions
        # the exact-repeat key (added after the first release: older homes get the column here)
        with self.tx() as c:
            if "qkey" not in {r[1] for r in c.execute("PRAGMA table_info(cache_entries)")}:
                c.execute("ALTER TABLE cache_entries ADD COLUMN qkey TEXT")
            c.execute("CREATE INDEX IF NOT EXISTS cache_qkey ON cache_entries(tenant, acl_key, qkey)")
        self._scopes: dict[tuple[str, str], _Scope] = {}
        self._scopes_lock = threading.Lock()

    def put(self, entry: dict[str, Any], vector: Any) -> None:
        vec = np.asarray(vector, dtype=np.float32)
        now = time.time()
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO cache_entries (tenant, acl_key, created, expires, entry, vector, qkey) "
                "VALUES (?,?,?,?,?,?,?)",
                (entry["tenant"], entry["acl_key"], now, now + float(entry.get("ttl_s", 86400)),
                 json.dumps(entry, default=str), vec.tobytes(), entry.get("question_key")),
            )
            eid = cur.lastrowid
            c.executemany(
                "INSERT INTO cache_docs (entry_id, tenant, doc_id, version) VALUES (?,?,?,?)",
                [(eid, entry["tenant"], d, v) for d, v in entry.get("doc_versions", {}).items()],
            )

    def nearest(self, tenant: str, acl_key: str, vector: Any, k: int) -> list[tuple[dict[str, Any], float]]:
        c = self.conn()
        scope = self._scope(c, tenant, acl_key)
        if not len(scope.ids):
            return []
        sims = scope.matrix @ np.asarray(vector, dtype=np.float32)
        sims[scope.expires <= time.time()] = -np.inf
        live = int(np.count_nonzero(np.isfinite(sims)))
        if live == 0:
            return []
        k = min(k, live)
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        ids = [int(scope.ids[i]) for i in top]
        # the (larger) entry JSON is read for the top k alone, in one statement
        rows = dict(c.execute(
            f"SELECT id, entry FROM cache_entries WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall())
        out = []
        for i, eid in zip(top, ids, strict=True):
            body = rows.get(eid)
            if body is not None:  # removed since the scan: skip it
                out.append((json.loads(body) | {"entry_id": eid}, float(sims[i])))
        return out

    def exact(self, tenant: str, acl_key: str, key: str) -> dict[str, Any] | None:
        """The newest live entry of this scope stored under this question key (one indexed read),
        with its stored query vector under ``vector`` (for the query log's drift signal)."""
        row = self.conn().execute(
            "SELECT id, entry, vector FROM cache_entries WHERE tenant=? AND acl_key=? AND qkey=? AND expires>? "
            "ORDER BY id DESC LIMIT 1", (tenant, acl_key, key, time.time())).fetchone()
        if row is None:
            return None
        return json.loads(row[1]) | {"entry_id": row[0], "vector": np.frombuffer(row[2], dtype=np.float32)}

    def _scope(self, c, tenant: str, acl_key: str) -> _Scope:
        """The scope's vectors, current as of this call (see the module docstring)."""
        row = c.execute("SELECT changes, removals FROM cache_epoch WHERE tenant=?", (tenant,)).fetchone()
        changes, removals = (row[0], row[1]) if row else (0, 0)
        key = (tenant, acl_key)
        cached = self._scopes.get(key)
        if cached is not None and cached.changes == changes and cached.removals == removals:
            return cached
        with self._scopes_lock:
            cached = self._scopes.get(key)
            if cached is not None and cached.changes == changes and cached.removals == removals:
                return cached
            if cached is not None and cached.removals == removals:
                after = int(cached.ids[-1]) if len(cached.ids) else 0
                fresh = self._load(c, tenant, acl_key, after)
                scope = _Scope(changes, removals, np.concatenate([cached.ids, fresh.ids]),
                               np.concatenate([cached.expires, fresh.expires]),
                               np.vstack([cached.matrix, fresh.matrix]))
            else:
                loaded = self._load(c, tenant, acl_key, 0)
                scope = _Scope(changes, removals, loaded.ids, loaded.expires, loaded.matrix)
            self._scopes[key] = scope
            return scope

    def _load(self, c, tenant: str, acl_key: str, after_id: int) -> _Scope:
        rows = c.execute(
            "SELECT id, expires, vector FROM cache_entries WHERE tenant=? AND acl_key=? AND id>? ORDER BY id",
            (tenant, acl_key, after_id),
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        expires = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        matrix = (np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
                  if rows else np.zeros((0, self.dim), dtype=np.float32))
        return _Scope(0, 0, ids, expires, matrix)

    def invalidate_document(self, tenant: str, doc_id: str) -> int:
        with self.tx() as c:
            ids = [r[0] for r in c.execute("SELECT entry_id FROM cache_docs WHERE tenant=? AND doc_id=?", (tenant, doc_id))]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            c.execute(f"DELETE FROM cache_entries WHERE id IN ({marks})", ids)
            c.execute(f"DELETE FROM cache_docs WHERE entry_id IN ({marks})", ids)
        return len(ids)

    def clear(self, tenant: str) -> int:
        with self.tx() as c:
            n = c.execute("DELETE FROM cache_entries WHERE tenant=?", (tenant,)).rowcount
            c.execute("DELETE FROM cache_docs WHERE tenant=?", (tenant,))
        return n


@dataclass(frozen=True, slots=True)
class _Scope:
    """One (tenant, ACL key)'s live vectors as of the epoch counters it was read at. Replaced,
    never mutated, so a reader in another thread always sees a consistent one."""

    changes: int
    removals: int
    ids: np.ndarray  # int64, ascending
    expires: np.ndarray  # float64 epoch seconds
    matrix: np.ndarray  # (n, dim) float32
