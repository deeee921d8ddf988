"""OpenSearch blue-green versions: the exact requests (technique: a real opensearch-py client
whose connection records method, path and body and answers with canned, real-shaped responses
— the recording fixtures of test_aws_opensearch_requests.py; nothing leaves the process)."""

from __future__ import annotations

import numpy as np
import pytest
from test_aws_opensearch_requests import FakeCluster

from ragline.adapters.aws import OpenSearchIndex
from ragline.models import SearchRequest, TenantScope
from ragline.settings import Settings

ALIAS = "ragline-chunks"


@pytest.fixture()
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture()
def index(cluster) -> OpenSearchIndex:
    return OpenSearchIndex(client=cluster.client(), settings=Settings(embedding_dimensions=4))


def test_create_version_uses_the_live_mapping_without_the_alias(cluster, index):
    cluster.on("PUT", f"/{ALIAS}-v2", payload={"acknowledged": True, "index": f"{ALIAS}-v2"})
    assert index.create_version("v2") == f"{ALIAS}-v2"
    (req,) = cluster.requests("PUT", f"/{ALIAS}-v2")
    assert "aliases" not in req["body"]
    assert req["body"]["mappings"] == index.index_body()["mappings"]
    assert req["body"]["mappings"]["properties"]["vector"]["dimension"] == 4


def test_switch_is_one_atomic_aliases_request_pinned(cluster, index):
    cluster.on("POST", "/_aliases", payload={"acknowledged": True})
    index.switch_alias("v2")
    (req,) = cluster.requests("POST", "/_aliases")
    assert req["body"] == {"actions": [
        {"remove": {"index": f"{ALIAS}-*", "alias": ALIAS}},
        {"add": {"index": f"{ALIAS}-v2", "alias": ALIAS, "is_write_index": True}},
    ]}
    with pytest.raises(ValueError, match="invalid index version"):
        index.switch_alias("../V2")


def test_versions_lists_indices_and_the_live_one(cluster, index):
    cluster.on("GET", f"/{ALIAS}-*", payload={f"{ALIAS}-v1": {}, f"{ALIAS}-v2": {}})
    cluster.on("GET", f"/_alias/{ALIAS}", payload={f"{ALIAS}-v2": {"aliases": {ALIAS: {"is_write_index": True}}}})
    assert index.versions() == {"alias": ALIAS, "live": f"{ALIAS}-v2", "indices": [f"{ALIAS}-v1", f"{ALIAS}-v2"]}


def test_at_version_reads_the_concrete_index(cluster, index):
    cluster.on("POST", f"/{ALIAS}-v2/_search", payload={"hits": {"hits": []}})
    v2 = index.at_version("v2")
    req = SearchRequest(text="q", vector=np.ones(4, dtype=np.float32) / 2, top_k=3)
    assert v2.search(TenantScope("acme"), req) == []
    assert index.alias == ALIAS  # the original keeps the alias
    (sent,) = cluster.requests("POST", f"/{ALIAS}-v2/_search")
    assert sent["params"]["routing"] == "acme" and sent["params"]["search_pipeline"] == f"{ALIAS}-hybrid"


def test_snapshot_and_restore_bodies(cluster, index):
    cluster.on("PUT", "/_snapshot/s3-repo/snap-1", payload={"accepted": True})
    cluster.on("POST", "/_snapshot/s3-repo/snap-1/_restore", payload={"accepted": True})
    index.snapshot_version("v1", "s3-repo", "snap-1")
    index.restore_version("s3-repo", "snap-1", "v1", "v3")
    snap = cluster.requests("PUT", "/_snapshot/s3-repo/snap-1")[0]
    assert snap["body"] == {"indices": f"{ALIAS}-v1", "include_global_state": False}
    restore = cluster.requests("POST", "/_snapshot/s3-repo/snap-1/_restore")[0]
    assert restore["body"] == {"indices": f"{ALIAS}-v1", "include_global_state": False, "include_aliases": False,
                               "rename_pattern": "ragline\\-chunks\\-v1", "rename_replacement": f"{ALIAS}-v3"}
