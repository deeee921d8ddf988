"""Audit of the tenant filter (technique: embedded adapters with the hashing embedder; a spy
SearchIndex passed through ``make_app(index=...)``, and the same spy check patched onto
``LocalHybridIndex.search`` for paths that open index files themselves; the Powertools
logger's own formatter writing into a buffer).

Every query must log the tenant filter it applied, and no search may run without the caller's
TenantScope: the spy fails the test on any search whose scope is missing or is not exactly the
caller's tenant and groups.
"""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager

import pytest
from ragline_testing import HashEmbedder

from ragline import factory
from ragline.adapters.local.index import LocalHybridIndex
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, TenantScope
from ragline.observability import logger
from ragline.settings import Settings

ALICE = Principal(tenant="acme", user="alice", groups=frozenset({"board", "eng"}))
GLEN = Principal(tenant="globex", user="glen")


class SpyIndex:
    """Delegates to a real index; records every search and fails it (and so the test) when its
    scope is not a TenantScope equal to the one the test expects for the running call."""

    def __init__(self, inner):
        self.inner = inner
        self.expected: TenantScope | None = None
        self.seen: list[TenantScope] = []
        self.violations: list[str] = []

    def search(self, scope, request):
        self.seen.append(scope)
        if not isinstance(scope, TenantScope):
            self.violations.append(f"search without a TenantScope: {scope!r}")
        elif self.expected is None or scope != self.expected:
            self.violations.append(f"search with scope {scope} while the caller is {self.expected}")
        if self.violations:
            raise AssertionError(self.violations[-1])
        return self.inner.search(scope, request)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @contextmanager
    def caller(self, principal: Principal):
        self.expected = principal.scope()
        n = len(self.seen)
        try:
            yield
        finally:
            self.expected = None
        assert len(self.seen) > n, "the call made no search at all"


@pytest.fixture
def spied(make_app, tmp_path):
    inner = LocalHybridIndex(tmp_path / "spy-index.db", HashEmbedder.dimensions)
    spy = SpyIndex(inner)
    app = make_app(index=spy)
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/plan.txt", data=b"The board plan: budget rises in May.",
                                   groups=("board",)))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/plan.txt", data=b"Globex budget plan for May."))
    yield app, spy
    inner.close()


@contextmanager
def captured_log():
    """The Powertools logger's JSON lines, at INFO, into a buffer (its own formatter)."""
    lg = logger()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(lg.registered_formatter)
    std = lg._logger
    old = std.level
    std.addHandler(handler)
    std.setLevel(logging.INFO)
    try:
        yield buf
    finally:
        std.removeHandler(handler)
        std.setLevel(old)


def search_records(buf: io.StringIO) -> list[dict]:
    lines = [json.loads(x) for x in buf.getvalue().splitlines() if x.strip()]
    return [r for r in lines if r.get("message") == "search"]


def test_every_query_logs_the_tenant_filter_it_applied(spied):
    app, spy = spied
    for p in (ALICE, GLEN):
        with captured_log() as buf, spy.caller(p):
            app.ask(p, "What is the budget plan for May?", use_cache=False)
        (rec,) = search_records(buf)
        assert rec["tenant_filter"] == {"tenant": p.tenant, "groups": sorted(p.groups)}
        assert rec["service"] == "ragline" and rec["level"] == "INFO"


def test_ask_cache_and_lookup_search_only_with_the_callers_scope(spied):
    app, spy = spied
    for p in (ALICE, GLEN, Principal(tenant="acme", user="eve")):
        with spy.caller(p):
            app.ask(p, "budget plan May", use_cache=False)
        with spy.caller(p):
            app.ask(p, "budget plan for May")  # cache consulted; the miss searches in scope
        # a near question: the cache's verification band runs the retrieval check in scope
        spy.expected = p.scope()
        app.ask(p, "budget plan for May please")
        app.cache_lookup(p.scope(), "the budget plan for May")
        spy.expected = None
    assert not spy.violations
    assert {s.tenant for s in spy.seen} == {"acme", "globex"}


def test_the_spy_fails_a_search_without_or_outside_the_callers_scope(spied):
    """The audit check is real: an unscoped search or one in another tenant fails."""
    app, spy = spied
    from ragline.models import SearchRequest

    req = SearchRequest(text="budget", vector=app.retriever.embed("budget"), top_k=3)
    spy.expected = ALICE.scope()
    with pytest.raises(AssertionError, match="without a TenantScope"):
        spy.search(None, req)
    with pytest.raises(AssertionError, match="while the caller is"):
        spy.search(TenantScope("globex"), req)
    with pytest.raises(TypeError):  # and the real index refuses an unscoped search outright
        spy.inner.search(None, req)


def test_validate_replays_each_logged_question_in_its_own_tenant(tmp_path, monkeypatch):
    """The blue-green validate path opens index files itself, so the spy check is patched onto
    LocalHybridIndex.search: every replayed question is searched in the tenant that asked it."""
    from ragline.operations import index_versions

    app = factory.build(Settings(home=tmp_path / "home", jwt_secret="x" * 32), embedder=HashEmbedder())
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.txt", data=b"acme budget plan"))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/a.txt", data=b"globex budget plan"))
    asked = {"acme budget?": "acme", "globex plan?": "globex"}
    for q, t in asked.items():
        app.ask(Principal(tenant=t, user="u"), q, use_cache=False)
    index_versions.build(app, "v001")
    seen: list[tuple[str, str]] = []
    real = LocalHybridIndex.search

    def audited(self, scope, request):
        if not isinstance(scope, TenantScope):
            pytest.fail(f"search without a TenantScope: {scope!r}")
        seen.append((scope.tenant, request.text))
        return real(self, scope, request)

    monkeypatch.setattr(LocalHybridIndex, "search", audited)
    out = index_versions.validate(app, "v001")
    assert out["queries"] == 2
    assert sorted(seen) == sorted([(t, q) for q, t in asked.items()] * 2)  # baseline and candidate
    app.index.close()
