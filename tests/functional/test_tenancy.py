"""Tenant isolation and group ACLs inside the search, the cache and the documents use cases."""

from __future__ import annotations

import pytest

from ragline.errors import NotFound
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, SearchRequest, TenantScope

SECRET = b"The merger with Contoso closes on 14 March; the code name is BLUEFISH."
PUBLIC = b"The cafeteria opens at 8 and serves BLUEFISH soup on Fridays."


@pytest.fixture
def two_tenants(app):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/merger.txt", data=SECRET, groups=("board",)))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/cafe.txt", data=PUBLIC))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/notes.txt", data=b"Globex BLUEFISH notes on widgets."))
    return app


def _sources(ans):
    return {c.source for c in ans.citations}


def test_other_tenant_never_sees_documents(two_tenants):
    ans = two_tenants.ask(Principal(tenant="globex", user="g", groups=frozenset({"board"})), "BLUEFISH merger Contoso")
    assert _sources(ans) == {"tenants/globex/notes.txt"}
    assert "Contoso" not in ans.answer


def test_group_acl_inside_the_search(two_tenants):
    outsider = Principal(tenant="acme", user="e")
    board = Principal(tenant="acme", user="b", groups=frozenset({"board"}))
    assert _sources(two_tenants.ask(outsider, "BLUEFISH merger Contoso", use_cache=False)) == {"tenants/acme/cafe.txt"}
    assert "tenants/acme/merger.txt" in _sources(two_tenants.ask(board, "BLUEFISH merger Contoso", use_cache=False))


def test_acl_filter_applies_before_top_k(two_tenants):
    # even with top_k=1 the outsider gets a document it may see, not an empty answer caused by
    # a post-filter removing the best (forbidden) hit
    scope = TenantScope("acme")
    req = SearchRequest(text="merger Contoso BLUEFISH code name", vector=two_tenants.retriever.embed("merger Contoso BLUEFISH code name"), top_k=1)
    hits = two_tenants.index.search(scope, req)
    assert [h.source_key for h in hits] == ["tenants/acme/cafe.txt"]


def test_cache_never_crosses_tenants_or_groups(two_tenants):
    board = Principal(tenant="acme", user="b", groups=frozenset({"board"}))
    first = two_tenants.ask(board, "When does the Contoso merger close?")
    assert not first.cached
    again = two_tenants.ask(board, "When does the Contoso merger close?")
    assert again.cached
    outsider = two_tenants.ask(Principal(tenant="acme", user="e"), "When does the Contoso merger close?")
    assert not outsider.cached and "Contoso" not in outsider.answer
    other = two_tenants.ask(Principal(tenant="globex", user="g", groups=frozenset({"board"})), "When does the Contoso merger close?")
    assert not other.cached and "Contoso" not in other.answer


def test_documents_list_get_delete_are_scoped(two_tenants):
    acme_docs = {r.source_key for r in two_tenants.list_documents(Principal(tenant="acme", user="e"))}
    assert acme_docs == {"tenants/acme/cafe.txt"}
    board_docs = {r.source_key for r in two_tenants.list_documents(Principal(tenant="acme", user="b", groups=frozenset({"board"})))}
    assert board_docs == {"tenants/acme/cafe.txt", "tenants/acme/merger.txt"}
    merger = next(r for r in two_tenants.registry.list("acme") if r.source_key.endswith("merger.txt"))
    for who in (Principal(tenant="globex", user="g", groups=frozenset({"board"}), scopes=frozenset({"ragline/admin"})), Principal(tenant="acme", user="e", scopes=frozenset({"ragline/admin"}))):
        with pytest.raises(NotFound) as exc:
            two_tenants.get_document(who, merger.doc_id)
        assert "Contoso" not in exc.value.message
        with pytest.raises(NotFound):
            two_tenants.delete_document(who, merger.doc_id)
    assert two_tenants.registry.get("acme", merger.doc_id) is not None


def test_search_without_scope_is_impossible(two_tenants):
    with pytest.raises((TypeError, ValueError)):
        two_tenants.index.search(None, SearchRequest(text="x", vector=None))
    with pytest.raises(ValueError):
        TenantScope("")


def test_same_key_in_two_tenants_is_two_documents(app):
    a = app.pipeline.ingest(IngestItem(tenant="acme", key="shared/name.txt", data=b"acme text"))
    b = app.pipeline.ingest(IngestItem(tenant="globex", key="shared/name.txt", data=b"globex text"))
    assert a.doc_id != b.doc_id
    app.delete_document(Principal(tenant="acme", user="u", scopes=frozenset({"ragline/admin"})), a.doc_id)
    assert app.index.count(TenantScope("globex"), b.doc_id) == 1
