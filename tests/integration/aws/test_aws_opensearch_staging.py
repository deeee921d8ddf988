"""Staging and publishing on the OpenSearch adapter, against the in-memory cluster of
test_aws_index_build.py that evaluates the recorded request shapes (term / terms / ids / bool
queries, bulk, update- and delete-by-query; technique: recorded request/response shapes with a
query-evaluating stand-in, since moto serves no OpenSearch data plane).

The same version processed again (an ACL change, a PII policy, a new chunker) once overwrote the
live rows with invisible ones: the document vanished from search between stage and publish, and
for good if the attempt died; a superseded attempt's discard then deleted the old live rows."""

from __future__ import annotations

import numpy as np
from test_aws_index_build import MiniCluster

from ragline.adapters.aws.opensearch import OpenSearchIndex
from ragline.models import Chunk, SearchRequest, TenantScope
from ragline.settings import Settings

ALIAS = "ragline-chunks"
DIM = 8
HR = TenantScope("acme", frozenset({"hr"}))


def _cluster() -> MiniCluster:
    cluster = MiniCluster()
    cluster.indices[f"{ALIAS}-v1"] = {}
    cluster.aliases[ALIAS] = {f"{ALIAS}-v1"}
    return cluster


def _index(cluster: MiniCluster) -> OpenSearchIndex:
    settings = Settings(backend="local", opensearch_endpoint="https://search.test")
    return OpenSearchIndex(client=cluster.client(), settings=settings, dimensions=DIM)


def _chunks(n: int, *, version: str = "v1", groups=("hr",), tenant: str = "acme", text: str = "old") -> list[Chunk]:
    vec = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    return [Chunk(chunk_id=f"doc_1:{version}:{i:05d}", tenant=tenant, doc_id="doc_1", version=version, ordinal=i,
                  text=f"{text} passage {i}", source_key="k", groups=tuple(groups), vector=vec) for i in range(n)]


def _rows(cluster: MiniCluster, tenant: str = "acme") -> list[dict]:
    return [doc for routing, doc in cluster.indices[f"{ALIAS}-v1"].values() if routing == tenant]


def _visible(index: OpenSearchIndex, scope: TenantScope = HR) -> list[str]:
    hits = index.search(scope, SearchRequest(text="passage", vector=np.ones(DIM) / np.sqrt(DIM), top_k=50, candidates=50))
    return sorted(h.text for h in hits)


def test_restaging_a_live_version_keeps_it_served_until_publish_then_swaps_it():
    cluster = _cluster()
    index = _index(cluster)
    index.stage(_chunks(3))
    assert index.publish("acme", "doc_1", "v1") == 3
    assert _visible(index) == ["old passage 0", "old passage 1", "old passage 2"]
    # the same version again with a new ACL and text (fewer chunks): the old rows still serve
    index.stage(_chunks(2, groups=("hr", "board"), text="new"))
    assert _visible(index) == ["old passage 0", "old passage 1", "old passage 2"]
    assert index.publish("acme", "doc_1", "v1") == 2
    assert _visible(index) == ["new passage 0", "new passage 1"]
    rows = _rows(cluster)
    assert len(rows) == 2 and all(r["live"] and r["acl"] == ["board", "hr"] for r in rows)


def test_a_superseded_attempt_discards_only_what_it_staged():
    cluster = _cluster()
    index = _index(cluster)
    index.stage(_chunks(3))
    index.publish("acme", "doc_1", "v1")
    index.stage(_chunks(3, text="newer"))  # the same version, then overtaken: discard
    index.discard("acme", "doc_1", "v1")
    assert _visible(index) == ["old passage 0", "old passage 1", "old passage 2"]
    assert len(_rows(cluster)) == 3


def test_what_a_dead_attempt_left_staged_goes_at_the_next_publish_and_never_goes_live():
    cluster = _cluster()
    _index(cluster).stage(_chunks(5, text="dead", groups=()))  # a process died after staging (public ACL)
    survivor = _index(cluster)  # another container
    survivor.stage(_chunks(2))
    assert survivor.publish("acme", "doc_1", "v1") == 2  # only its own rows flipped
    assert _visible(survivor, TenantScope("acme")) == []  # the dead attempt's public rows never went live
    assert _visible(survivor) == ["old passage 0", "old passage 1"]
    assert len(_rows(cluster)) == 2


def test_another_tenants_rows_are_untouched_by_a_publish():
    cluster = _cluster()
    index = _index(cluster)
    index.stage(_chunks(2, tenant="globex", text="globex"))
    index.publish("globex", "doc_1", "v1")
    index.stage(_chunks(3))
    index.publish("acme", "doc_1", "v1")
    assert len(_rows(cluster, "globex")) == 2 and len(_rows(cluster, "acme")) == 3
    assert _visible(index, TenantScope("globex", frozenset({"hr"}))) == ["globex passage 0", "globex passage 1"]
