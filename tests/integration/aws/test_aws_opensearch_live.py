"""OpenSearchIndex contract test against a real cluster (technique: live OpenSearch, opt-in).

Runs only when RAGLINE_TEST_OPENSEARCH_URL is set, e.g. ``http://localhost:9200`` or
``https://admin:password@localhost:9200`` (set RAGLINE_TEST_OPENSEARCH_VERIFY=0 for a
self-signed certificate). The cluster needs the k-NN and neural-search plugins (hybrid query,
normalization processor): OpenSearch 2.10+ distributions include both. Everything it creates is
named ``ragline-test-<random>`` and removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ragline.adapters.aws import OpenSearchIndex
from ragline.models import Chunk, SearchRequest, TenantScope
from ragline.settings import Settings

URL = os.environ.get("RAGLINE_TEST_OPENSEARCH_URL")

pytestmark = [
    pytest.mark.live_opensearch,
    pytest.mark.skipif(
        not URL, reason="set RAGLINE_TEST_OPENSEARCH_URL to run against a real OpenSearch cluster"
    ),
]

DIM = 4


@pytest.fixture(scope="module")
def index() -> Iterator[OpenSearchIndex]:
    from opensearchpy import OpenSearch

    verify = os.environ.get("RAGLINE_TEST_OPENSEARCH_VERIFY", "1") != "0"
    client = OpenSearch(hosts=[URL], verify_certs=verify, ssl_show_warn=verify, timeout=30)
    alias = f"ragline-test-{uuid.uuid4().hex[:10]}"
    idx = OpenSearchIndex(client=client, settings=Settings(embedding_dimensions=DIM), alias=alias)
    try:
        yield idx
    finally:
        client.indices.delete(index=idx.index_name, ignore=[404])
        client.search_pipeline.delete(id=idx.pipeline, ignore=[404])


def _vec(i: int) -> np.ndarray:
    v = np.full(DIM, 0.05, dtype=np.float32)
    v[i % DIM] = 1.0
    return v / np.linalg.norm(v)


def _chunks(
    tenant: str, doc_id: str, version: str, texts: list[str], groups: tuple[str, ...] = ()
) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=f"{tenant}:{doc_id}:{version}:{i:05d}",
            tenant=tenant,
            doc_id=doc_id,
            version=version,
            ordinal=i,
            text=text,
            source_key=f"{tenant}/{doc_id}.md",
            title=doc_id,
            groups=groups,
            vector=_vec(i),
        )
        for i, text in enumerate(texts)
    ]


def test_stage_publish_search_replace_delete(index):
    index.ensure()
    index.ensure()  # idempotent

    acme = TenantScope(tenant="acme")
    acme_finance = TenantScope(tenant="acme", groups=frozenset({"finance"}))

    index.stage(_chunks("acme", "handbook", "v1", ["holiday policy is generous", "expenses need receipts"]))
    index.stage(_chunks("acme", "salaries", "v1", ["salary bands for engineers"], groups=("finance",)))
    index.stage(_chunks("beta", "handbook", "v1", ["beta holiday policy secret"]))
    assert index.count(acme) == 0  # staged is invisible

    index.publish("acme", "handbook", "v1")
    index.publish("acme", "salaries", "v1")
    index.publish("beta", "handbook", "v1")
    assert index.count(acme) == 2
    assert index.count(acme_finance) == 3
    assert index.count(TenantScope(tenant="beta")) == 1

    request = SearchRequest(text="holiday policy", vector=_vec(0), top_k=5, candidates=10)
    hits = index.search(acme, request)
    assert hits and hits[0].text == "holiday policy is generous"
    assert all(h.source_key.startswith("acme/") for h in hits)
    assert not any("salary" in h.text for h in hits)  # restricted to finance
    assert any(
        "salary" in h.text
        for h in index.search(
            acme_finance, SearchRequest(text="salary bands", vector=_vec(0), top_k=5, candidates=10)
        )
    )

    # a new version replaces the old one completely
    index.stage(_chunks("acme", "handbook", "v2", ["holiday policy changed in 2025"]))
    index.publish("acme", "handbook", "v2")
    assert index.count(acme, doc_id="handbook") == 1
    assert [h.version for h in index.search(acme, request) if h.doc_id == "handbook"] == ["v2"]

    # a discarded staged version never appears and leaves the live one alone
    index.stage(_chunks("acme", "handbook", "v3", ["draft that failed"]))
    index.discard("acme", "handbook", "v3")
    assert index.count(acme, doc_id="handbook") == 1
    raw = index.client.count(
        index=index.alias, body={"query": {"term": {"doc_id": "handbook"}}}, routing="acme"
    )
    assert raw["count"] == 1  # the staged v3 chunk is really gone, not just hidden

    assert index.delete_document("acme", "handbook") == 1
    assert index.count(acme, doc_id="handbook") == 0
    assert index.count(TenantScope(tenant="beta")) == 1  # the other tenant's same doc id is untouched
