"""Tenant isolation, property-based (technique: hypothesis over the embedded adapters -- SQLite,
BM25 postings, numpy -- built by the real ``factory.build`` with the hashing embedder, in three isolation
configurations: one shared index, an index per tenant, and a mix chosen per tenant by override).

Hypothesis draws 2-3 tenants, group memberships, documents written in one small shared
vocabulary (so every query matches documents of every tenant) each carrying a unique planted
secret token, and queries (some fishing for another tenant's secret). Every path a user can
reach -- ask (twice, so the semantic cache answers), cache_lookup, documents list/get/delete,
usage, feedback and upload URL -- is then checked: nothing it returns or raises may contain a
string that belongs to data the caller may not see (another tenant's doc ids, source keys,
secret tokens or name; a same-tenant document shared with a group the caller is not in).

A second part drives the query Lambda handler with API Gateway v2 events: the tenant comes
from the authorizer's claims, and a body that names a tenant is refused with 422.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ragline_testing import REPO, HashEmbedder

from ragline import factory
from ragline.errors import InvalidInput, NotFound
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, TenantScope, document_id
from ragline.server import LambdaContext, load_handler
from ragline.settings import Settings

SECRET = "test-secret-0123456789abcdef0123456789"
TENANTS = ["acme", "globex", "initech", "umbrella"]
GROUPS = ["board", "hr", "eng"]
VOCAB = ["invoice", "retention", "policy", "audit", "budget", "payroll", "server", "backup",
         "contract", "renewal", "travel", "expense", "laptop", "password", "holiday", "office"]
NAMES = ["notes", "policy", "handbook", "minutes"]  # file names repeat across tenants on purpose
MODES = ["shared-index", "index-per-tenant", "mixed"]


def build_app(home: Path, mode: str, tenants: list[str]):
    if mode == "mixed":  # the first tenant gets its own index, the others share one
        s = Settings(home=home, jwt_secret=SECRET, tenant_isolation="shared-index",
                     tenant_isolation_overrides={tenants[0]: "index-per-tenant"})
    else:
        s = Settings(home=home, jwt_secret=SECRET, tenant_isolation=mode)
    return factory.build(s, embedder=HashEmbedder())


@dataclass
class Doc:
    tenant: str
    key: str
    doc_id: str
    groups: tuple[str, ...]
    secret: str
    text: str


@st.composite
def worlds(draw):
    tenants = draw(st.lists(st.sampled_from(TENANTS), min_size=2, max_size=3, unique=True))
    docs: list[Doc] = []
    for ti, t in enumerate(tenants):
        names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
        for di, name in enumerate(names):
            words = draw(st.lists(st.sampled_from(VOCAB), min_size=4, max_size=10))
            groups = tuple(draw(st.lists(st.sampled_from(GROUPS), max_size=1)))
            secret = f"zq{ti}secret{di}tok"  # unique per document; no hex id can contain it
            key = f"tenants/{t}/{name}.txt"
            text = " ".join(words) + f". The {secret} code is kept here."
            docs.append(Doc(t, key, document_id(t, key), groups, secret, text))
    principals = [Principal(tenant=t, user=f"u-{t}", scopes=frozenset({"ragline/admin"}),  # admins: every route
                             groups=frozenset(draw(st.lists(st.sampled_from(GROUPS), max_size=2))))
                  for t in tenants]
    queries = []
    for _ in range(draw(st.integers(1, 2))):
        q = " ".join(draw(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4)))
        if draw(st.booleans()):  # fish for a planted secret, usually another tenant's
            q += " " + draw(st.sampled_from(docs)).secret
        queries.append(q)
    return tenants, docs, principals, queries


def visible(p: Principal, d: Doc) -> bool:
    return d.tenant == p.tenant and p.scope().can_see(frozenset(d.groups))


def forbidden(p: Principal, tenants: list[str], docs: list[Doc]) -> set[str]:
    out = {t for t in tenants if t != p.tenant} | {f"tenants/{t}/" for t in tenants if t != p.tenant}
    for d in docs:
        if not visible(p, d):
            out |= {d.doc_id, d.key, d.secret}
    return out


def assert_clean(what: str, payload, bad: set[str]) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    leaked = sorted(b for b in bad if b in text)
    assert not leaked, f"{what} leaked {leaked}: {text[:400]}"


@pytest.mark.parametrize("mode", MODES)
@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow],
           derandomize=False)
@given(world=worlds())
def test_no_path_reveals_another_tenants_data(mode, world):
    tenants, docs, principals, queries = world
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(Path(tmp) / "home", mode, tenants)
        try:
            for d in docs:
                out = app.pipeline.ingest(IngestItem(tenant=d.tenant, key=d.key, data=d.text.encode(), groups=d.groups))
                assert out.status == "indexed", out
            query_ids: dict[str, list[str]] = {t: [] for t in tenants}
            for p in principals:
                bad = forbidden(p, tenants, docs)
                mine = {d.doc_id for d in docs if visible(p, d)}
                for q in queries:
                    for attempt in range(2):  # the second ask may be served by the semantic cache
                        ans = app.ask(p, q)
                        assert_clean(f"ask#{attempt}", ans.model_dump(mode="json"), bad)
                        assert {c.doc_id for c in ans.citations} <= mine
                        query_ids[p.tenant].append(ans.query_id)
                    assert_clean("cache_lookup", app.cache_lookup(p.scope(), q), bad)
                # documents: list shows exactly what the caller may see
                assert {r.doc_id for r in app.list_documents(p)} == mine
                assert_clean("list", [r.model_dump(mode="json") for r in app.list_documents(p)], bad)
                absent_msg = None
                with pytest.raises(NotFound) as exc:
                    app.get_document(p, "doc_" + "0" * 24)
                absent_msg = exc.value.message.replace("doc_" + "0" * 24, "<id>")
                for d in docs:
                    if visible(p, d):
                        assert_clean("get", app.get_document(p, d.doc_id).model_dump(mode="json"), bad - {d.doc_id})
                        continue
                    for op in (app.get_document, app.delete_document):
                        with pytest.raises(NotFound) as exc:
                            op(p, d.doc_id)
                        # the refusal reads exactly like the one for an id that exists nowhere
                        assert exc.value.message.replace(d.doc_id, "<id>") == absent_msg
                        assert_clean("refusal", exc.value.message, bad - {d.doc_id})
                    owner = TenantScope(d.tenant, frozenset(d.groups))
                    assert app.index.count(owner, d.doc_id) >= 1, "a refused delete removed chunks"
                usage = app.usage(p, 1)
                assert usage["tenant"] == p.tenant
                assert_clean("usage", usage, bad)
                up = app.upload_url(p, "../../tenants/" + tenants[0] + "/evil.txt", None, 10)
                assert up["key"].startswith(f"tenants/{p.tenant}/uploads/") and ".." not in up["key"]
            # feedback on another tenant's query id is NotFound, and says nothing about it
            for p in principals:
                bad = forbidden(p, tenants, docs)
                for t, ids in query_ids.items():
                    if t == p.tenant:
                        assert app.feedback(p, ids[0], 1, None)["recorded"]
                        continue
                    with pytest.raises(NotFound) as exc:
                        app.feedback(p, ids[0], -1, "hi")
                    assert_clean("feedback", exc.value.message, bad)
        finally:
            app.index.close()


# ------------------------------------------------------------------ through the HTTP handler
def _event(name: str, tenant: str, groups: list[str], body: dict | None = None) -> dict:
    ev = json.loads((REPO / "events" / name).read_text())
    ev = copy.deepcopy(ev)
    claims = ev["requestContext"]["authorizer"]["jwt"]["claims"]
    claims["custom:tenant"] = tenant
    claims["cognito:groups"] = "[" + " ".join(groups) + "]"
    if body is not None:
        ev["body"] = json.dumps(body)
    return ev


@pytest.mark.parametrize("mode", MODES)
def test_http_claims_decide_the_tenant_and_a_body_tenant_is_refused(tmp_path, mode):
    tenants = ["acme", "globex"]
    app = build_app(tmp_path / "home", mode, tenants)
    factory.use(app)
    try:
        for t in tenants:
            key = f"tenants/{t}/policy.txt"
            app.pipeline.ingest(IngestItem(tenant=t, key=key, data=f"invoice retention policy zq{t}mark".encode()))
        handler = load_handler("query")
        ctx = LambdaContext("query")
        for t in tenants:
            other = next(x for x in tenants if x != t)
            out = handler.lambda_handler(_event("http_query.json", t, [], {"question": f"invoice retention zq{other}mark"}), ctx)
            assert out["statusCode"] == 200, out
            body = json.loads(out["body"])
            assert {c["source"] for c in body["citations"]} == {f"tenants/{t}/policy.txt"}
            assert other not in out["body"]
            listed = handler.lambda_handler(_event("http_documents_list.json", t, []), ctx)
            assert listed["statusCode"] == 200 and other not in listed["body"]
            assert t in listed["body"]
            widened = handler.lambda_handler(
                _event("http_query.json", t, [], {"question": "invoice retention", "tenant": other}), ctx)
            assert widened["statusCode"] == 422, widened
            assert other not in json.loads(widened["body"]).get("message", "")
    finally:
        factory.use(None)
        app.index.close()


def test_isolation_for_reads_the_override_and_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("RAGLINE_TENANT_ISOLATION_OVERRIDES", '{"bank": "index-per-tenant"}')
    s = Settings()
    assert s.isolation_for("bank") == "index-per-tenant" and s.isolation_for("acme") == "shared-index"
    assert s.uses_tenant_indexes
    monkeypatch.delenv("RAGLINE_TENANT_ISOLATION_OVERRIDES")
    assert not Settings().uses_tenant_indexes and Settings(tenant_isolation="index-per-tenant").uses_tenant_indexes
    monkeypatch.setenv("RAGLINE_TENANT_ISOLATION_OVERRIDES", '{"bank": "separate"}')
    with pytest.raises(ValueError):
        Settings()


def test_a_staging_batch_mixing_tenants_is_refused(tmp_path):
    app = build_app(tmp_path / "home", "mixed", ["acme", "globex"])
    import numpy as np

    from ragline.models import Chunk

    def chunk(t):
        return Chunk(chunk_id=f"{t}:v:00000", doc_id=f"d-{t}", version="v", tenant=t, ordinal=0, text="x",
                     source_key=f"tenants/{t}/x.txt", vector=np.zeros(384, dtype=np.float32))

    with pytest.raises(InvalidInput, match="mixes 2"):
        app.index.stage([chunk("acme"), chunk("globex")])
    app.index.close()
