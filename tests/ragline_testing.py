"""Test helpers shared by the suites (imported as ``ragline_testing``; conftest modules are
not importable by name once several exist)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
INGEST_DOCS = SHARED_DATA / "ingest_docs"


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"evaluation data not found at {path} (../shared/data is read, never copied)")
    return path


class FakeTime:
    """A clock and a sleep that advances it: retries cost no wall time, budgets still apply."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class HashEmbedder:
    """Bag-of-words hashed into 384 dims, L2-normalised: texts sharing words are close. Not a
    language model, but deterministic and instant, which is what functional tests need."""

    model_id = "test/hash-embedder"
    dimensions = 384

    def __init__(self):
        self.calls = 0
        self.fail_next = 0

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimensions, dtype=np.float32)
        for w in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            v[h % self.dimensions] += 1.0 if (h >> 20) & 1 else -1.0
        n = np.linalg.norm(v)
        if n == 0:
            v[0] = 1.0
            return v
        return v / n

    def embed_documents(self, texts):
        from ragline.errors import DependencyUnavailable

        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise DependencyUnavailable("embedding model test/hash-embedder throttled")
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dimensions), np.float32)

    def embed_query(self, text):
        return self._vec(text)


_PRESIDIO = None


def presidio_detector():
    """One Presidio pattern detector per test process (loading Presidio costs seconds)."""
    global _PRESIDIO
    if _PRESIDIO is None:
        from ragline.ingest.pii import PresidioPatternDetector

        _PRESIDIO = PresidioPatternDetector()
    return _PRESIDIO


def sqlite_dump(*paths: Path) -> str:
    """Everything stored in these SQLite databases, as SQL text (to prove a value is absent)."""
    import sqlite3

    out = []
    for p in paths:
        conn = sqlite3.connect(p)
        try:
            out.extend(conn.iterdump())
        finally:
            conn.close()
    return "\n".join(out)


def check_budget_leases(ledger, committed, day: str, now_s: float) -> None:
    """The budget-lease contract both shipped ledgers keep (``committed(tenant)`` reads the day's
    committed nano-dollars from the store itself): a reservation whose lease deadline has passed
    (its request died) is reclaimed by the next reservation that does not fit, never one still
    live, never another tenant's, and a release or record of a reclaimed lease gives nothing back
    twice."""
    from ragline.models import Usage

    past, future = now_s - 1, now_s + 900
    assert ledger.reserve("acme", day, 6000, 10_000, lease=("dead", past))  # its request then died
    assert ledger.reserve("acme", day, 3000, 10_000, lease=("live", future))
    assert ledger.reserve("beta", day, 9000, 10_000, lease=("beta-dead", past))
    # 9,000 + 5,000 does not fit: the dead request's 6,000 is taken back, and then it does
    assert ledger.reserve("acme", day, 5000, 10_000, lease=("new", future))
    assert committed("acme") == 8000
    assert committed("beta") == 9000  # another tenant's dead lease is its own tenant's business
    ledger.release("acme", day, 6000, lease_id="dead")  # the dead request wakes up: nothing twice
    assert committed("acme") == 8000
    ledger.record("acme", "q-live", [Usage(model_id="m", purpose="generation", cost_usd=1000e-9)],
                  release=(day, 3000, "live"))
    assert committed("acme") == 6000  # 8,000 - 3,000 reserved + 1,000 spent
    # a live lease is never taken: 6,000 + 5,000 does not fit and nothing has expired
    assert not ledger.reserve("acme", day, 5000, 10_000, lease=("big", future))
    assert committed("acme") == 6000
    # a request that outlived its lease records its spend, without releasing what was reclaimed
    assert ledger.reserve("acme", day, 4000, 10_000, lease=("slow", past))
    assert ledger.reserve("acme", day, 1, 10_000, lease=("tiny", future))  # reclaims "slow"
    assert committed("acme") == 6001
    ledger.record("acme", "q-slow", [Usage(model_id="m", purpose="generation", cost_usd=2000e-9)],
                  release=(day, 4000, "slow"))
    assert committed("acme") == 8001
    assert sum(r["cost_usd"] for r in ledger.totals("acme", 1, consistent=True)) * 1e9 == pytest.approx(3000)
