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
    for tenant, data in (("bank", b"vault opening hours are nine to five"), ("acme", b"vault opening hours are ten to four")):
        app.blobs.put(f"tenants/{tenant}/a.txt", data)  # index builds re-read the stored bytes
        app.pipeline.ingest(IngestItem(tenant=tenant, key=f"tenants/{tenant}/a.txt", data=data))
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
    mixed.delete_document(Principal(tenant="bank", user="u", scopes=frozenset({"ragline/admin"})), doc.doc_id)
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


def test_a_shared_index_build_leaves_out_tenants_with_an_index_of_their_own(mixed):
    """Cross-tenant: rebuilding the shared index re-ingests only the tenants it serves, so an
    isolated tenant's chunks never land in the shared file, before or after promote."""
    from ragline.operations import index_versions

    m = index_versions.build(mixed, "v001")
    assert m["documents"] == 1 and m["index_of"] is None
    versions = IndexVersions(mixed.settings.home)
    assert rows_by_tenant(versions.path("v001")) == {"acme": 1}
    index_versions.promote(mixed, "v001")
    assert rows_by_tenant(versions.path("v001")) == {"acme": 1}
    assert rows_by_tenant(mixed.settings.home / "tenants" / "bank" / "index.db") == {"bank": 1}
    for t in ("bank", "acme"):  # each tenant still reads its own documents only
        ans = mixed.ask(Principal(tenant=t, user="u"), "vault opening hours")
        assert [c.source for c in ans.citations] == [f"tenants/{t}/a.txt"]


def test_a_tenants_own_index_has_its_own_versions(mixed):
    """--index-of: build, promote and roll back a version of one isolated tenant's index; the
    shared index and its versions do not move, and the tenant's new document is served only after
    promote. A shared tenant cannot be named, and the shared commands name no isolated tenant."""
    from ragline.errors import InvalidInput
    from ragline.operations import index_versions

    mixed.blobs.put("tenants/bank/b.txt", b"the vault audit happens every march")
    mixed.pipeline.ingest(IngestItem(tenant="bank", key="tenants/bank/b.txt", data=b"the vault audit happens every march"))
    own = tenant_home(mixed.settings.home, "bank")
    m = index_versions.build(mixed, "b1", index_of="bank")
    assert m["documents"] == 2 and m["index_of"] == "bank"
    assert rows_by_tenant(IndexVersions(own).path("b1")) == {"bank": 2}
    assert sorted(v["name"] for v in index_versions.describe(mixed, index_of="bank")) == ["b1", "default"]
    assert [v["name"] for v in index_versions.describe(mixed)] == ["default"]  # the shared versions
    index_versions.promote(mixed, "b1", index_of="bank")
    assert mixed.index.for_tenant("bank").live_name == "b1"
    assert mixed.index.count(TenantScope("bank")) == 2 and mixed.index.count(TenantScope("acme")) == 1
    index_versions.rollback(mixed, index_of="bank")
    assert mixed.index.for_tenant("bank").live_name == "default"
    with pytest.raises(InvalidInput, match="served by the shared index"):
        index_versions.build(mixed, "x", index_of="acme")


def test_cli_index_commands_take_index_of(mixed, monkeypatch):
    """The CLI passes --index-of through every version command, and a shared tenant named there
    is a clear error (exit 1), not a traceback."""
    import json

    from typer.testing import CliRunner

    from ragline import cli

    monkeypatch.setattr(factory, "default", lambda: mixed)
    run = CliRunner().invoke
    out = run(cli.app, ["index", "build", "--name", "b1", "--index-of", "bank", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["index_of"] == "bank"
    assert run(cli.app, ["index", "promote", "b1", "--index-of", "bank"]).exit_code == 0
    listed = json.loads(run(cli.app, ["index", "versions", "--index-of", "bank", "--json"]).stdout)
    assert [r["name"] for r in listed if r["live"]] == ["b1"]
    shared = json.loads(run(cli.app, ["index", "versions", "--json"]).stdout)
    assert [r["name"] for r in shared if r["live"]] == ["default"]
    assert run(cli.app, ["index", "rollback", "--index-of", "bank"]).exit_code == 0
    bad = run(cli.app, ["index", "build", "--index-of", "acme"])
    assert bad.exit_code == 1 and "served by the shared index" in bad.output


@pytest.mark.parametrize("op", ["build", "promote", "rollback", "describe"])
def test_index_of_without_isolated_tenants_is_a_clear_error_on_aws(op):
    """On AWS with one shared index, --index-of names no index: refused with a message before
    anything is read or written (the AWS per-tenant path is in test_aws_index_build.py)."""
    from types import SimpleNamespace

    from ragline.errors import InvalidInput
    from ragline.operations import index_versions

    app = SimpleNamespace(settings=SimpleNamespace(backend="aws"), index=object())
    args = {"build": (app, "v1"), "promote": (app, "v1"), "rollback": (app,), "describe": (app,)}[op]
    with pytest.raises(InvalidInput, match="index of their own"):
        getattr(index_versions, op)(*args, index_of="bank")


def test_moving_a_tenant_to_an_index_of_its_own_with_the_version_commands(tmp_path):
    """The migration when a tenant's isolation changes from shared to its own index: with the new
    setting, build + promote the tenant's own index (re-ingested from the stored documents), then
    build + promote the shared index (which now leaves the tenant out). Afterwards the tenant's
    rows are only in its own live file, and both tenants still read their own documents."""
    from ragline.operations import index_versions

    home = tmp_path / "home"
    before = factory.build(Settings(home=home, jwt_secret="x" * 32), embedder=HashEmbedder())
    for tenant, data in (("bank", b"vault opening hours are nine to five"), ("acme", b"vault opening hours are ten to four")):
        before.blobs.put(f"tenants/{tenant}/a.txt", data)
        before.pipeline.ingest(IngestItem(tenant=tenant, key=f"tenants/{tenant}/a.txt", data=data))
    assert rows_by_tenant(home / "index.db") == {"acme": 1, "bank": 1}
    before.index.close()

    app = factory.build(Settings(home=home, jwt_secret="x" * 32, tenant_isolation_overrides={"bank": "index-per-tenant"}),
                        embedder=HashEmbedder())
    index_versions.build(app, "own1", index_of="bank")
    index_versions.promote(app, "own1", index_of="bank")
    index_versions.build(app, "v001")
    index_versions.promote(app, "v001")
    shared = IndexVersions(home)
    assert shared.live() == "v001" and rows_by_tenant(shared.path("v001")) == {"acme": 1}
    own = IndexVersions(tenant_home(home, "bank"))
    assert own.live() == "own1" and rows_by_tenant(own.path("own1")) == {"bank": 1}
    for t in ("bank", "acme"):
        ans = app.ask(Principal(tenant=t, user="u"), "vault opening hours")
        assert [c.source for c in ans.citations] == [f"tenants/{t}/a.txt"]
    app.index.close()


def test_old_versions_can_be_deleted_but_never_the_live_the_previous_or_default(mixed, monkeypatch):
    """`ragline index delete` (local, on a tenant's own index through the CLI): an old version's
    file and manifest go; the live version, the rollback target and the first `default` file
    are refused with a clear message, an unknown name is not found."""
    import json

    from typer.testing import CliRunner

    from ragline import cli
    from ragline.adapters.local.versions import Conflict
    from ragline.errors import NotFound
    from ragline.operations import index_versions

    for name in ("b1", "b2", "b3"):
        index_versions.build(mixed, name, index_of="bank")
        index_versions.promote(mixed, name, index_of="bank")
    own = IndexVersions(tenant_home(mixed.settings.home, "bank"))
    monkeypatch.setattr(factory, "default", lambda: mixed)
    out = CliRunner().invoke(cli.app, ["index", "delete", "b1", "--index-of", "bank", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"deleted": "b1", "index_of": "bank"}
    assert not own.path("b1").exists() and own.manifest("b1") is None
    for name in ("b3", "b2", "default"):  # live, rollback target, the first file
        with pytest.raises(Conflict):
            index_versions.delete(mixed, name, index_of="bank")
    with pytest.raises(NotFound):
        index_versions.delete(mixed, "nope", index_of="bank")
    bad = CliRunner().invoke(cli.app, ["index", "delete", "b3", "--index-of", "bank"])
    assert bad.exit_code == 1 and "live or the rollback target" in bad.output
