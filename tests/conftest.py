"""Shared fixtures. Functional tests use the real local adapters (SQLite, BM25 postings, numpy) with a
deterministic hashing embedder, so they run in milliseconds; tests marked ``slow`` load the
real MiniLM model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragline_testing import HashEmbedder


@pytest.fixture
def hash_embedder():
    return HashEmbedder()


@pytest.fixture
def make_app(tmp_path):
    """Build a local Ragline under a temp home with the hashing embedder (or overrides)."""
    from ragline import factory
    from ragline.settings import Settings

    def _make(**overrides):
        settings = overrides.pop("settings", None) or Settings(home=tmp_path / "home", jwt_secret="test-secret-0123456789abcdef0123456789")
        ports = {"embedder": HashEmbedder()}
        ports.update(overrides)
        if "index" not in ports:
            from ragline.adapters.local.index import LocalHybridIndex

            ports["index"] = LocalHybridIndex(settings.home_dir / "index.db", ports["embedder"].dimensions)
        if "cache_store" not in ports:
            from ragline.adapters.local.cache_store import SqliteCacheStore

            ports["cache_store"] = SqliteCacheStore(settings.home_dir / "cache.db", ports["embedder"].dimensions)
        return factory.build(settings, **ports)

    return _make


@pytest.fixture
def app(make_app):
    return make_app()
