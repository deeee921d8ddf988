"""Semantic-cache entries in SQLite with exact cosine search in numpy, per tenant and ACL key."""

from __future__ import annotations

import json
import time
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
    """

    def __init__(self, path, dimensions: int):
        super().__init__(path)
        self.dim = dimensions

    def put(self, entry: dict[str, Any], vector: Any) -> None:
        vec = np.asarray(vector, dtype=np.float32)
        now = time.time()
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO cache_entries (tenant, acl_key, created, expires, entry, vector) VALUES (?,?,?,?,?,?)",
                (entry["tenant"], entry["acl_key"], now, now + float(entry.get("ttl_s", 86400)),
                 json.dumps(entry, default=str), vec.tobytes()),
            )
            eid = cur.lastrowid
            c.executemany(
                "INSERT INTO cache_docs (entry_id, tenant, doc_id, version) VALUES (?,?,?,?)",
                [(eid, entry["tenant"], d, v) for d, v in entry.get("doc_versions", {}).items()],
            )

    def nearest(self, tenant: str, acl_key: str, vector: Any, k: int) -> list[tuple[dict[str, Any], float]]:
        now = time.time()
        c = self.conn()
        # vectors only for the scan; the (larger) entry JSON is read for the top k alone
        rows = c.execute(
            "SELECT id, vector FROM cache_entries WHERE tenant=? AND acl_key=? AND expires>?",
            (tenant, acl_key, now),
        ).fetchall()
        if not rows:
            return []
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        sims = mat @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-sims)[:k]
        out = []
        for i in order:
            entry = c.execute("SELECT entry FROM cache_entries WHERE id=?", (rows[i][0],)).fetchone()
            if entry is not None:  # removed since the scan: skip it
                out.append((json.loads(entry[0]) | {"entry_id": rows[i][0]}, float(sims[i])))
        return out

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
