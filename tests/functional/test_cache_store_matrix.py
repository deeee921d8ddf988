"""The local cache store's in-memory vector matrix stays exact (technique: the real SQLite cache
store, two store objects on one database file standing for two processes, and a hypothesis
state machine comparing every lookup with a brute-force scan of the table).

Proves: a put, an invalidation, a clear or an expiry rewrite made through *another* connection
(another process, an operator's SQL) is visible at the very next lookup; a row id reused after
the newest entry is deleted never pairs the old vector with the new entry; concurrent lookups
during writes never fail; and ranking, scoping and expiry equal a full scan.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ragline.adapters.local.cache_store import SqliteCacheStore

DIM = 8


def vec(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i * 3 + 1) % DIM] += 0.5 * ((i % 5) + 1) / 5
    return v / np.linalg.norm(v)


def entry(tenant: str, question: str, doc: str, acl: str = "all", ttl_s: float = 3600) -> dict:
    return {"tenant": tenant, "acl_key": acl, "question": question, "answer": {"answer": question},
            "doc_versions": {doc: "v1"}, "passages": [], "ttl_s": ttl_s}


def brute_force(store: SqliteCacheStore, tenant: str, acl: str, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """What the store returned before the in-memory matrix: a scan of the live rows."""
    import json

    rows = store.conn().execute(
        "SELECT entry, vector FROM cache_entries WHERE tenant=? AND acl_key=? AND expires>?", (tenant, acl, time.time())
    ).fetchall()
    scored = [(json.loads(r[0])["question"], float(np.frombuffer(r[1], dtype=np.float32) @ query)) for r in rows]
    return sorted(scored, key=lambda x: -x[1])[:k]


def test_changes_through_another_connection_are_seen_at_the_next_lookup(tmp_path):
    path = tmp_path / "cache.db"
    reader, writer = SqliteCacheStore(path, DIM), SqliteCacheStore(path, DIM)
    writer.put(entry("acme", "q1", "d1"), vec(1))
    assert [e["question"] for e, _ in reader.nearest("acme", "all", vec(1), 3)] == ["q1"]
    writer.put(entry("acme", "q2", "d2"), vec(2))  # an addition: appended
    assert reader.nearest("acme", "all", vec(2), 1)[0][0]["question"] == "q2"
    assert writer.invalidate_document("acme", "d2") == 1  # a removal: reloaded
    assert [e["question"] for e, _ in reader.nearest("acme", "all", vec(2), 3)] == ["q1"]
    with writer.tx() as c:  # an operator's SQL: expire everything
        c.execute("UPDATE cache_entries SET expires = ?", (time.time() - 1,))
    assert reader.nearest("acme", "all", vec(1), 3) == []
    writer.put(entry("acme", "q3", "d3"), vec(3))
    assert writer.clear("acme") == 2
    assert reader.nearest("acme", "all", vec(3), 3) == []


def test_a_reused_row_id_never_pairs_an_old_vector_with_a_new_entry(tmp_path):
    path = tmp_path / "cache.db"
    reader, writer = SqliteCacheStore(path, DIM), SqliteCacheStore(path, DIM)
    writer.put(entry("acme", "old", "d1"), vec(1))
    (old, _), = reader.nearest("acme", "all", vec(1), 1)
    writer.invalidate_document("acme", "d1")  # the newest row goes: SQLite may reuse its id
    writer.put(entry("acme", "new", "d2"), vec(2))
    (new, sim), = reader.nearest("acme", "all", vec(1), 1)
    assert new["entry_id"] == old["entry_id"]  # the id was indeed reused
    assert new["question"] == "new" and sim == float(vec(2) @ vec(1))


def test_lookups_during_concurrent_writes_never_fail_and_end_exact(tmp_path):
    path = tmp_path / "cache.db"
    store = SqliteCacheStore(path, DIM)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        try:
            while not stop.is_set():
                for e, s in store.nearest("acme", "all", vec(3), 3):
                    assert e["tenant"] == "acme" and -1.0001 <= s <= 1.0001
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(60):
        store.put(entry("acme", f"q{i}", f"d{i % 7}"), vec(i))
        if i % 10 == 9:
            store.invalidate_document("acme", f"d{i % 7}")
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    got = [(e["question"], round(s, 6)) for e, s in store.nearest("acme", "all", vec(3), 5)]
    want = [(q, round(s, 6)) for q, s in brute_force(store, "acme", "all", vec(3), 5)]
    assert sorted(got, key=lambda x: (-x[1], x[0])) == sorted(want, key=lambda x: (-x[1], x[0]))


@settings(max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck))
class CacheStoreMachine(RuleBasedStateMachine):
    """Random puts, invalidations, clears and expiries through two connections; every lookup of
    the reader equals a brute-force scan."""

    @initialize()
    def setup(self):
        import tempfile
        from pathlib import Path

        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "cache.db"
        self.reader, self.writer = SqliteCacheStore(path, DIM), SqliteCacheStore(path, DIM)
        self.n = 0

    def teardown(self):
        self.dir.cleanup()

    @rule(tenant=st.sampled_from(["acme", "globex"]), acl=st.sampled_from(["all", "hr"]), doc=st.integers(0, 4),
          via_reader=st.booleans())
    def put(self, tenant, acl, doc, via_reader):
        self.n += 1
        store = self.reader if via_reader else self.writer
        store.put(entry(tenant, f"{tenant}-q{self.n}", f"d{doc}", acl), vec(self.n))

    @rule(tenant=st.sampled_from(["acme", "globex"]), doc=st.integers(0, 4), via_reader=st.booleans())
    def invalidate(self, tenant, doc, via_reader):
        (self.reader if via_reader else self.writer).invalidate_document(tenant, f"d{doc}")

    @rule(tenant=st.sampled_from(["acme", "globex"]))
    def clear(self, tenant):
        self.writer.clear(tenant)

    @rule(doc=st.integers(0, 4))
    def expire(self, doc):
        with self.writer.tx() as c:
            c.execute("UPDATE cache_entries SET expires = ? WHERE id IN (SELECT entry_id FROM cache_docs WHERE doc_id=?)",
                      (time.time() - 1, f"d{doc}"))

    @invariant()
    def lookups_equal_a_full_scan(self):
        if not hasattr(self, "reader"):
            return
        for tenant in ("acme", "globex"):
            for acl in ("all", "hr"):
                for q in (1, 4, 6):
                    got = [(e["question"], round(s, 5)) for e, s in self.reader.nearest(tenant, acl, vec(q), 3)]
                    want = [(qq, round(s, 5)) for qq, s in brute_force(self.reader, tenant, acl, vec(q), 3)]
                    assert [s for _, s in got] == [s for _, s in want]
                    assert all(qq.startswith(tenant) for qq, _ in got)
                    # same questions up to ties in similarity
                    assert {x for x in got if x[1] > (got[-1][1] if got else 0)} <= set(want)


TestCacheStoreMachine = CacheStoreMachine.TestCase
