"""The index-per-tenant isolation mode on the embedded adapters (technique: the real
``factory.build`` with SQLite files under a temp RAGLINE_HOME and the hashing embedder; the
files are then opened directly to see where each tenant's rows physically are)."""

from __future__ import annotations

import sqlite3

import pytest
from ragline_testing import HashEmbedder

from ragline import factory
from ragline.adapters.local.tenant_index import TenantRoutedIndex, tenant_home, tenant_slug
from ragline.adapters.local.versions import IndexVersions, _backup
from ragline.errors import DependencyUnavailable
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, TenantScope
from ragline.settings import Settings


def rows_by_tenant(db) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT tenant, count(*) FROM chunks GROUP BY tenant").fetchall())


@pytest.fixture
def mixed(tmp_path):
    s = Settings(home=tmp_path / "home", jwt_secret="x" * 32, tenant_isolation_overrides={"bank": "index-per-tenant"})
    app = factory.build(s, embedder=HashEmbedder())
    assert isinstance(app.index, TenantRoutedIndex)
    app.pipeline.ingest(IngestItem(tenant="bank", key="tenants/bank/a.txt", data=b"vault opening hours are nine to five"))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.txt", data=b"vault opening hours are ten to four"))
    yield app
    app.index.close()


def test_an_isolated_tenants_rows_live_only_in_its_own_file(mixed):
    home = mixed.settings.home
    assert rows_by_tenant(home / "index.db") == {"acme": 1}
    assert rows_by_tenant(home / "tenants" / "bank" / "index.db") == {"bank": 1}
    for t in ("bank", "acme"):
        ans = mixed.ask(Principal(tenant=t, user="u"), "vault opening hours")
        assert [c.source for c in ans.citations] == [f"tenants/{t}/a.txt"]
    doc = mixed.registry.list("bank")[0]
    mixed.delete_document(Principal(tenant="bank", user="u"), doc.doc_id)
    assert rows_by_tenant(home / "tenants" / "bank" / "index.db") == {}
    assert rows_by_tenant(home / "index.db") == {"acme": 1}


def test_default_settings_keep_the_plain_aliased_index(tmp_path):
    from ragline.adapters.local.versions import AliasedIndex

    app = factory.build(Settings(home=tmp_path / "h", jwt_secret="x" * 32), embedder=HashEmbedder())
    assert isinstance(app.index, AliasedIndex)


def test_blue_green_works_inside_a_tenants_own_index(mixed):
    """A tenant's own index has versions like the shared one: a copy with one more document,
    switched in by the tenant's alias file, is what the tenant then reads; rollback undoes it."""
    versions = IndexVersions(tenant_home(mixed.settings.home, "bank"))
    own = mixed.index.for_tenant("bank")
    name = versions.create("v001")
    _backup(versions.path("default"), versions.path(name))
    from ragline.adapters.local.index import LocalHybridIndex
    from ragline.adapters.local.registry import SqliteRegistry
    from ragline.ingest.pipeline import IngestPipeline

    side = LocalHybridIndex(versions.path(name), 384)
    IngestPipeline(registry=SqliteRegistry(versions.root / "scratch.db"), index=side, embedder=HashEmbedder(),
                   chunker=mixed.settings.chunker).ingest(IngestItem(tenant="bank", key="tenants/bank/b.txt", data=b"vault audit"))
    side.close()
    before = mixed.index.count(TenantScope("bank"))
    versions.switch(name)
    assert own.live_name == name and mixed.index.count(TenantScope("bank")) == before + 1
    assert mixed.index.count(TenantScope("acme")) == 1  # the shared index did not move
    versions.rollback()
    assert mixed.index.count(TenantScope("bank")) == before


def test_an_own_index_that_cannot_be_opened_is_retried_not_remembered(tmp_path):
    calls = []

    def open_own(tenant):
        calls.append(tenant)
        if len(calls) == 1:
            raise DependencyUnavailable("search index ensure failed: cannot reach OpenSearch")
        return "own-index"

    routed = TenantRoutedIndex("shared", open_own, lambda t: "index-per-tenant" if t == "bank" else "shared-index")
    with pytest.raises(DependencyUnavailable):
        routed.for_tenant("bank")
    assert routed.for_tenant("bank") == "own-index" and routed.for_tenant("bank") == "own-index"
    assert calls == ["bank", "bank"] and routed.for_tenant("acme") == "shared"


def test_an_own_index_is_ensured_before_its_first_write_only_and_a_failed_ensure_is_retried():
    ensured = []

    def ensure(idx):
        ensured.append(idx)
        if len(ensured) == 1:
            raise DependencyUnavailable("search index ensure failed: OpenSearch returned 503")

    routed = TenantRoutedIndex("shared", lambda t: f"own-{t}", lambda t: "index-per-tenant", ensure_own=ensure)
    assert routed.for_tenant("bank") == "own-bank" and ensured == []  # reads never create
    with pytest.raises(DependencyUnavailable):
        routed.for_tenant("bank", write=True)
    for _ in range(3):
        assert routed.for_tenant("bank", write=True) == "own-bank"
    assert ensured == ["own-bank", "own-bank"]


def test_tenant_slug_is_safe_and_injective():
    assert tenant_slug("bank") == "bank"
    odd = [tenant_slug(t) for t in ("Bank", "../etc", "a b", "x" * 60)]
    assert all(s.startswith("h.") and "/" not in s and s == s.lower() for s in odd)
    assert len(set(odd)) == len(odd)


def test_shared_index_version_commands_refuse_when_tenants_have_their_own(mixed):
    from ragline.errors import InvalidInput
    from ragline.operations import index_versions

    with pytest.raises(InvalidInput, match="index of their own"):
        index_versions.build(mixed, "v001")
    assert rows_by_tenant(mixed.settings.home / "index.db") == {"acme": 1}
