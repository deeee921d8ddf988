"""OpenSearchIndex: the exact HTTP requests it sends (technique: a real ``opensearchpy.OpenSearch``
client whose connection class records every request -- method, path, query parameters, decoded
body -- and answers with canned, real-shaped OpenSearch responses; nothing leaves the process).

These pin the wire format: index mapping, search pipeline, hybrid query with the tenant/ACL
filter inside BOTH legs, bulk lines, update/delete-by-query bodies and parameters. That the
bodies are accepted by a real OpenSearch is checked by test_aws_opensearch_live.py when a
cluster is available.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection

from ragline.adapters.aws import IndexWriteRejected, OpenSearchIndex
from ragline.adapters.aws.opensearch import PUBLIC_ACL
from ragline.errors import DependencyUnavailable
from ragline.models import Chunk, SearchHit, SearchRequest, TenantScope
from ragline.ports import SearchIndex
from ragline.settings import Settings

Responder = Callable[[str, str, dict, Any], tuple[int, Any]]


class RecordingConnection(Connection):
    """Records each request and answers from ``responder(method, path, params, body)``."""

    def __init__(self, responder: Responder, log: list[dict], **kwargs: Any):
        super().__init__(**kwargs)
        self.responder = responder
        self.log = log

    def perform_request(self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None):
        split = urlsplit(url)
        query = dict(parse_qsl(split.query)) | {
            k: (v.decode() if isinstance(v, bytes) else v) for k, v in (params or {}).items()
        }
        text = body.decode() if isinstance(body, bytes) else body
        if text and split.path.endswith("/_bulk"):
            decoded: Any = [json.loads(line) for line in text.strip().split("\n")]
        else:
            decoded = json.loads(text) if text else None
        self.log.append({"method": method, "path": split.path, "params": query, "body": decoded})
        status, payload = self.responder(method, split.path, query, decoded)
        raw = json.dumps(payload) if payload is not None else ""
        if not 200 <= status < 300 and status not in (ignore or ()):
            self._raise_error(status, raw, "application/json")
        return status, {"content-type": "application/json"}, raw


class FakeCluster:
    """Canned answers by (method, path); unknown requests fail the test loudly."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.log: list[dict] = []

    def on(
        self, method: str, path: str, status: int = 200, payload: Any = None, times: int = 1
    ) -> FakeCluster:
        self.routes.setdefault((method, path), []).extend(
            [(status, payload if payload is not None else {})] * times
        )
        return self

    def __call__(self, method: str, path: str, params: dict, body: Any) -> tuple[int, Any]:
        queue = self.routes.get((method, path))
        if not queue:
            raise AssertionError(f"unexpected request {method} {path}")
        return queue.pop(0)

    def client(self) -> OpenSearch:
        return OpenSearch(
            hosts=[{"host": "search.test", "port": 443}],
            connection_class=RecordingConnection,
            responder=self,
            log=self.log,
            max_retries=0,
        )

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict]:
        return [
            r
            for r in self.log
            if (method is None or r["method"] == method) and (path is None or r["path"] == path)
        ]


DIM = 4
ALIAS = "ragline-chunks"
PIPELINE = "ragline-chunks-hybrid"


@pytest.fixture()
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture()
def index(cluster) -> OpenSearchIndex:
    settings = Settings(embedding_dimensions=DIM)  # retrieval.dense_weight defaults to 0.6
    return OpenSearchIndex(client=cluster.client(), settings=settings)


def _chunk(
    ordinal: int,
    *,
    tenant: str = "acme",
    doc_id: str = "doc_1",
    version: str = "v2",
    groups: tuple[str, ...] = (),
    vector: Any = "default",
) -> Chunk:
    return Chunk(
        chunk_id=f"{doc_id}:{version}:{ordinal:05d}",
        tenant=tenant,
        doc_id=doc_id,
        version=version,
        ordinal=ordinal,
        text=f"passage {ordinal}",
        source_key=f"{tenant}/report.pdf",
        title="Report",
        page=ordinal + 1,
        heading="Intro",
        groups=groups,
        flags=("pii_redacted",) if ordinal == 0 else (),
        vector=np.eye(DIM, dtype=np.float32)[ordinal % DIM] if isinstance(vector, str) else vector,
    )


def test_implements_the_port(index):
    assert isinstance(index, SearchIndex)


# --- ensure -------------------------------------------------------------------------------------

_FUSION = Settings().retrieval.fusion
_W = Settings().retrieval.dense_weight
EXPECTED_PIPELINE = {
    "description": f"Ragline hybrid search: { {'zscore': 'z_score', 'minmax': 'min_max'}[_FUSION]} normalised BM25 and "
    "k-NN scores, weighted mean",
    "phase_results_processors": [
        {
            "normalization-processor": {
                "normalization": {"technique": {"zscore": "z_score", "minmax": "min_max"}[_FUSION]},
                "combination": {"technique": "arithmetic_mean",
                                "parameters": {"weights": [round(1 - _W, 6), round(_W, 6)]}},
            }
        }
    ],
}


@pytest.mark.parametrize("fusion,technique", [("minmax", "min_max"), ("zscore", "z_score")])
def test_pipeline_follows_the_fusion_setting(cluster, fusion, technique):
    from ragline.settings import RetrievalSettings

    s = Settings(embedding_dimensions=DIM, retrieval=RetrievalSettings(fusion=fusion, dense_weight=0.25))
    body = OpenSearchIndex(client=cluster.client(), settings=s).pipeline_body()
    proc = body["phase_results_processors"][0]["normalization-processor"]
    assert proc["normalization"] == {"technique": technique}
    assert proc["combination"]["parameters"]["weights"] == [0.75, 0.25]


def test_rrf_pipeline(cluster):
    from ragline.settings import RetrievalSettings

    s = Settings(embedding_dimensions=DIM, retrieval=RetrievalSettings(fusion="rrf", rrf_k=60))
    body = OpenSearchIndex(client=cluster.client(), settings=s).pipeline_body()
    assert body["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 60}}}
    ]

EXPECTED_INDEX = {
    "settings": {"index": {"knn": True}},
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "chunk_id": {"type": "keyword"},
            "tenant": {"type": "keyword"},
            "doc_id": {"type": "keyword"},
            "version": {"type": "keyword"},
            "live": {"type": "boolean"},
            "acl": {"type": "keyword"},
            "flags": {"type": "keyword"},
            "source_key": {"type": "keyword"},
            "title": {"type": "text", "analyzer": "english"},
            "heading": {"type": "text", "analyzer": "english"},
            "page": {"type": "integer"},
            "ordinal": {"type": "integer"},
            "text": {"type": "text", "analyzer": "english"},
            "vector": {
                "type": "knn_vector",
                "dimension": DIM,
                "method": {
                    "name": "hnsw",
                    "engine": "faiss",
                    "space_type": "innerproduct",
                    "parameters": {"ef_construction": 128, "m": 16},
                },
            },
        },
    },
    "aliases": {ALIAS: {"is_write_index": True}},
}


def test_ensure_creates_pipeline_then_index_with_alias(cluster, index):
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{ALIAS}", 404).on("HEAD", f"/{ALIAS}-v1", 404)
    cluster.on("PUT", f"/{ALIAS}-v1", payload={"acknowledged": True, "index": f"{ALIAS}-v1"})

    index.ensure()

    assert [(r["method"], r["path"]) for r in cluster.log] == [
        ("PUT", f"/_search/pipeline/{PIPELINE}"),
        ("HEAD", f"/_alias/{ALIAS}"),
        ("HEAD", f"/{ALIAS}-v1"),
        ("PUT", f"/{ALIAS}-v1"),
    ]
    assert cluster.log[0]["body"] == EXPECTED_PIPELINE
    assert cluster.log[3]["body"] == EXPECTED_INDEX


def test_pipeline_weights_follow_settings_and_sum_to_one(cluster):
    idx = OpenSearchIndex(
        client=cluster.client(), settings=Settings(embedding_dimensions=DIM), dense_weight=0.7
    )
    weights = idx.pipeline_body()["phase_results_processors"][0]["normalization-processor"]["combination"][
        "parameters"
    ]["weights"]
    assert weights == [0.3, 0.7] and sum(weights) == pytest.approx(1.0)


def test_ensure_leaves_an_existing_alias_where_it_points(cluster, index):
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{ALIAS}", 200)
    index.ensure()
    assert [r["method"] for r in cluster.log] == ["PUT", "HEAD"]


def test_ensure_adds_the_alias_to_an_existing_index(cluster, index):
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{ALIAS}", 404).on("HEAD", f"/{ALIAS}-v1", 200)
    cluster.on("PUT", f"/{ALIAS}-v1/_alias/{ALIAS}", payload={"acknowledged": True})
    index.ensure()
    assert cluster.log[-1]["body"] == {"is_write_index": True}


def test_ensure_tolerates_losing_the_creation_race(cluster, index):
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{ALIAS}", 404).on("HEAD", f"/{ALIAS}-v1", 404)
    cluster.on(
        "PUT",
        f"/{ALIAS}-v1",
        400,
        {
            "error": {
                "type": "resource_already_exists_exception",
                "reason": "index [ragline-chunks-v1] already exists",
            },
            "status": 400,
        },
    )
    index.ensure()  # no exception


# --- stage --------------------------------------------------------------------------------------


def test_stage_bulk_indexes_by_chunk_id_routed_by_tenant_and_invisible(cluster, index):
    cluster.on("POST", "/_bulk", payload={"took": 3, "errors": False, "items": []})
    chunks = [_chunk(0), _chunk(1, groups=("finance", "board"))]
    index.stage(chunks)

    (request,) = cluster.requests("POST", "/_bulk")
    assert request["params"] == {"refresh": "wait_for"}
    actions, docs = request["body"][0::2], request["body"][1::2]
    # each staging under ids of its own (<chunk_id>~<generation>), never over the live rows
    generation = actions[0]["index"]["_id"].split("~")[1]
    assert re.fullmatch(r"[0-9a-f]{12}", generation)
    assert actions == [{"index": {"_index": ALIAS, "_id": f"{c.chunk_id}~{generation}", "routing": "acme"}}
                       for c in chunks]
    assert docs[0] == {
        "chunk_id": "doc_1:v2:00000",
        "tenant": "acme",
        "doc_id": "doc_1",
        "version": "v2",
        "live": False,
        "acl": [PUBLIC_ACL],
        "flags": ["pii_redacted"],
        "source_key": "acme/report.pdf",
        "title": "Report",
        "heading": "Intro",
        "page": 1,
        "ordinal": 0,
        "text": "passage 0",
        "vector": [1.0, 0.0, 0.0, 0.0],
    }
    assert docs[1]["acl"] == ["board", "finance"] and docs[1]["live"] is False
    assert set(docs[1]) == set(EXPECTED_INDEX["mappings"]["properties"])  # strict mapping: no stray fields


def test_stage_splits_batches_and_refreshes_only_at_the_end(cluster):
    idx = OpenSearchIndex(
        client=cluster.client(), settings=Settings(embedding_dimensions=DIM), bulk_max_docs=2
    )
    cluster.on("POST", "/_bulk", payload={"took": 1, "errors": False, "items": []}, times=3)
    idx.stage([_chunk(i) for i in range(5)])
    bulks = cluster.requests("POST", "/_bulk")
    assert [len(b["body"]) // 2 for b in bulks] == [2, 2, 1]
    assert [b["params"]["refresh"] for b in bulks] == ["false", "false", "wait_for"]


def _bulk_failure(status: int, error_type: str) -> dict:
    return {
        "took": 1,
        "errors": True,
        "items": [
            {"index": {"_index": f"{ALIAS}-v1", "_id": "doc_1:v2:00000", "status": 201, "result": "created"}},
            {
                "index": {
                    "_index": f"{ALIAS}-v1",
                    "_id": "doc_1:v2:00001",
                    "status": status,
                    "error": {"type": error_type, "reason": "boom"},
                }
            },
        ],
    }


def test_stage_failures_are_transient_or_permanent_by_status(cluster, index):
    cluster.on("POST", "/_bulk", payload=_bulk_failure(429, "es_rejected_execution_exception"))
    with pytest.raises(DependencyUnavailable, match="doc_1:v2:00001"):
        index.stage([_chunk(0), _chunk(1)])
    cluster.on("POST", "/_bulk", payload=_bulk_failure(400, "mapper_parsing_exception"))
    with pytest.raises(IndexWriteRejected, match="mapper_parsing_exception: boom"):
        index.stage([_chunk(0), _chunk(1)])


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (_chunk(0, vector=None), "has no vector"),
        (_chunk(0, vector=np.ones(3, dtype=np.float32)), "3-d vector"),
        (_chunk(0, groups=(PUBLIC_ACL,)), "reserved"),
    ],
)
def test_stage_validates_before_sending_anything(cluster, index, chunk, message):
    with pytest.raises(ValueError, match=message):
        index.stage([chunk])
    assert cluster.log == []


# --- publish / discard / delete ---------------------------------------------------------------

BY_QUERY_PARAMS = {"routing": "acme", "conflicts": "proceed", "refresh": "true"}


def _by_query_response(**counts: int) -> dict:
    return {
        "took": 5,
        "timed_out": False,
        "total": counts.get("total", 0),
        "updated": counts.get("updated", 0),
        "deleted": counts.get("deleted", 0),
        "batches": 1,
        "version_conflicts": counts.get("conflicts", 0),
        "noops": 0,
        "retries": {"bulk": 0, "search": 0},
        "failures": [],
    }


def test_publish_flips_the_version_live_then_deletes_other_versions(cluster, index):
    cluster.on("POST", f"/{ALIAS}/_update_by_query", payload=_by_query_response(total=3, updated=3))
    cluster.on("POST", f"/{ALIAS}/_delete_by_query", payload=_by_query_response(total=4, deleted=4))

    # the count made live is what the pipeline checks against the chunks it staged
    assert index.publish("acme", "doc_1", "v2") == 3

    update, delete = cluster.log
    assert (update["method"], update["path"], update["params"]) == (
        "POST",
        f"/{ALIAS}/_update_by_query",
        BY_QUERY_PARAMS,
    )
    assert update["body"] == {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"tenant": "acme"}},
                    {"term": {"doc_id": "doc_1"}},
                    {"term": {"version": "v2"}},
                    {"term": {"live": False}},
                ]
            }
        },
        "script": {"source": "ctx._source.live = true", "lang": "painless"},
    }
    # delete_by_query removes ALL matches: no max_docs / size cap, never search-then-delete
    assert (delete["path"], delete["params"]) == (f"/{ALIAS}/_delete_by_query", BY_QUERY_PARAMS)
    assert delete["body"] == {
        "query": {
            "bool": {
                "filter": [{"term": {"tenant": "acme"}}, {"term": {"doc_id": "doc_1"}}],
                "must_not": [{"term": {"version": "v2"}}],
            }
        }
    }
    assert cluster.requests("POST", f"/{ALIAS}/_search") == []


def test_publish_repeats_the_update_after_version_conflicts(cluster, index):
    cluster.on(
        "POST", f"/{ALIAS}/_update_by_query", payload=_by_query_response(total=3, updated=2, conflicts=1)
    )
    cluster.on("POST", f"/{ALIAS}/_update_by_query", payload=_by_query_response(total=1, updated=1))
    cluster.on("POST", f"/{ALIAS}/_delete_by_query", payload=_by_query_response())
    assert index.publish("acme", "doc_1", "v2") == 3  # the updates of both passes
    assert len(cluster.requests("POST", f"/{ALIAS}/_update_by_query")) == 2


def test_publish_failures_are_transient(cluster, index):
    failed = _by_query_response() | {
        "failures": [{"index": f"{ALIAS}-v1", "cause": {"type": "x"}, "status": 500}]
    }
    cluster.on("POST", f"/{ALIAS}/_update_by_query", payload=failed)
    with pytest.raises(DependencyUnavailable):
        index.publish("acme", "doc_1", "v2")
    assert cluster.requests("POST", f"/{ALIAS}/_delete_by_query") == []  # never delete the old version


def test_discard_deletes_only_the_staged_version(cluster, index):
    cluster.on("POST", f"/{ALIAS}/_delete_by_query", payload=_by_query_response(deleted=2))
    index.discard("acme", "doc_1", "v3")
    (request,) = cluster.log
    assert request["params"] == BY_QUERY_PARAMS
    assert request["body"] == {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"tenant": "acme"}},
                    {"term": {"doc_id": "doc_1"}},
                    {"term": {"version": "v3"}},
                    {"term": {"live": False}},
                ]
            }
        }
    }


def test_delete_document_removes_every_version_and_returns_the_count(cluster, index):
    cluster.on("POST", f"/{ALIAS}/_delete_by_query", payload=_by_query_response(total=1234, deleted=1234))
    assert index.delete_document("acme", "doc_1") == 1234
    (request,) = cluster.log
    assert request["params"] == BY_QUERY_PARAMS
    assert request["body"] == {
        "query": {"bool": {"filter": [{"term": {"tenant": "acme"}}, {"term": {"doc_id": "doc_1"}}]}}
    }


# --- search / count -----------------------------------------------------------------------------


def _source(chunk_id: str, tenant: str = "acme", acl: list[str] | None = None, live: bool = True) -> dict:
    return {
        "chunk_id": chunk_id,
        "tenant": tenant,
        "doc_id": "doc_1",
        "version": "v2",
        "live": live,
        "acl": acl or [PUBLIC_ACL],
        "flags": ["pii_redacted"],
        "source_key": "acme/report.pdf",
        "title": "Report",
        "heading": "Intro",
        "page": 3,
        "ordinal": 0,
        "text": "the passage",
    }


def _search_response(*sources: dict) -> dict:
    return {
        "took": 9,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(sources), "relation": "eq"},
            "max_score": 1.0,
            "hits": [
                {
                    "_index": f"{ALIAS}-v1",
                    "_id": s["chunk_id"],
                    "_score": 1.0 - 0.25 * i,
                    "_routing": s["tenant"],
                    "_source": s,
                }
                for i, s in enumerate(sources)
            ],
        },
    }


@pytest.mark.parametrize("service, depth, expected", [
    ("es", None, 100),  # default on a domain: the request's candidate depth
    ("aoss", None, None),  # Serverless: off by default (support unverified)
    ("es", 0, None),  # switched off
    ("aoss", 300, 300),  # set explicitly
    ("es", 5, None),  # not deeper than the hits asked for: nothing to add
])
def test_hybrid_pagination_depth_follows_the_setting(cluster, service, depth, expected):
    """Recorded request bodies (the fake cluster): without pagination_depth each hybrid sub-query
    keeps only from + size hits per shard, so fusion would see top_k hits per leg."""
    settings = Settings(embedding_dimensions=DIM, opensearch_service=service, opensearch_hybrid_depth=depth)
    idx = OpenSearchIndex(client=cluster.client(), settings=settings)
    request = SearchRequest(text="revenue", vector=np.array([0.5] * DIM, dtype=np.float32), top_k=5, candidates=100)
    hybrid = idx.search_body(TenantScope("acme"), request)["query"]["hybrid"]
    assert hybrid.get("pagination_depth") == expected
    assert len(hybrid["queries"]) == 2


def test_search_sends_a_hybrid_query_with_the_scope_filter_inside_both_legs(cluster, index):
    cluster.on(
        "POST", f"/{ALIAS}/_search", payload=_search_response(_source("c1"), _source("c2", acl=["finance"]))
    )
    scope = TenantScope(tenant="acme", groups=frozenset({"finance", "eng"}))
    request = SearchRequest(
        text="revenue 2024", vector=np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32), top_k=5, candidates=100
    )

    hits = index.search(scope, request)

    (sent,) = cluster.log
    assert sent["params"] == {"routing": "acme", "search_pipeline": PIPELINE}
    visible = [
        {"term": {"tenant": "acme"}},
        {"term": {"live": True}},
        {"terms": {"acl": [PUBLIC_ACL, "eng", "finance"]}},
    ]
    assert sent["body"] == {
        "size": 5,
        "_source": {"excludes": ["vector"]},
        "query": {
            "hybrid": {
                # each leg keeps the candidate depth per shard before fusion, not just top_k
                "pagination_depth": 100,
                "queries": [
                    {
                        "bool": {
                            "must": [{"multi_match": {"query": "revenue 2024", "fields": ["text", "title"]}}],
                            "filter": visible,
                        }
                    },
                    {
                        "knn": {
                            "vector": {
                                "vector": [0.5, 0.5, 0.5, 0.5],
                                "k": 100,
                                "filter": {"bool": {"filter": visible}},
                            }
                        }
                    },
                ]
            }
        },
    }
    lexical, dense = sent["body"]["query"]["hybrid"]["queries"]
    assert {"term": {"tenant": "acme"}} in lexical["bool"]["filter"]
    assert {"term": {"tenant": "acme"}} in dense["knn"]["vector"]["filter"]["bool"]["filter"]
    assert hits == [
        SearchHit(
            chunk_id="c1",
            doc_id="doc_1",
            version="v2",
            text="the passage",
            source_key="acme/report.pdf",
            score=1.0,
            title="Report",
            page=3,
            heading="Intro",
            flags=("pii_redacted",),
        ),
        SearchHit(
            chunk_id="c2",
            doc_id="doc_1",
            version="v2",
            text="the passage",
            source_key="acme/report.pdf",
            score=0.75,
            title="Report",
            page=3,
            heading="Intro",
            flags=("pii_redacted",),
        ),
    ]


def test_search_drops_anything_outside_the_scope_even_if_the_cluster_returns_it(cluster, index):
    cluster.on(
        "POST",
        f"/{ALIAS}/_search",
        payload=_search_response(
            _source("mine"),
            _source("theirs", tenant="other"),
            _source("secret", acl=["board"]),
            _source("staged", live=False),
        ),
    )
    hits = index.search(
        TenantScope(tenant="acme", groups=frozenset({"eng"})),
        SearchRequest(text="q", vector=np.ones(DIM, dtype=np.float32)),
    )
    assert [h.chunk_id for h in hits] == ["mine"]


def _unscoped() -> TenantScope:
    scope = object.__new__(TenantScope)  # bypasses TenantScope's own check, as a bug might
    object.__setattr__(scope, "tenant", "")
    object.__setattr__(scope, "groups", frozenset())
    return scope


def test_reads_without_a_tenant_are_refused_before_any_request(cluster, index):
    request = SearchRequest(text="q", vector=np.ones(DIM, dtype=np.float32))
    with pytest.raises(ValueError, match="tenant"):
        index.search(_unscoped(), request)
    with pytest.raises(ValueError, match="tenant"):
        index.count(_unscoped())
    with pytest.raises(ValueError):
        TenantScope(tenant="")
    assert cluster.log == []


def test_count_uses_the_same_scope_filter(cluster, index):
    cluster.on("POST", f"/{ALIAS}/_count", payload={"count": 17, "_shards": {"total": 1, "successful": 1}})
    assert index.count(TenantScope(tenant="acme"), doc_id="doc_1") == 17
    (sent,) = cluster.log
    assert sent["params"] == {"routing": "acme"}
    assert sent["body"] == {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"tenant": "acme"}},
                    {"term": {"live": True}},
                    {"terms": {"acl": [PUBLIC_ACL]}},
                    {"term": {"doc_id": "doc_1"}},
                ]
            }
        }
    }


def test_overload_and_unreachable_cluster_are_transient(cluster, index):
    cluster.on("POST", f"/{ALIAS}/_search", 503, {"error": {"type": "unavailable"}, "status": 503})
    with pytest.raises(DependencyUnavailable, match="503"):
        index.search(TenantScope(tenant="acme"), SearchRequest(text="q", vector=np.ones(DIM)))
    cluster.on("POST", f"/{ALIAS}/_count", 400, {"error": {"type": "parsing_exception"}, "status": 400})
    from opensearchpy.exceptions import RequestError

    with pytest.raises(RequestError):  # a bad request is a bug, not an outage
        index.count(TenantScope(tenant="acme"))

    unreachable = OpenSearchIndex(
        client=OpenSearch(hosts=[{"host": "127.0.0.1", "port": 9}], max_retries=0, timeout=1),
        settings=Settings(embedding_dimensions=DIM),
    )
    with pytest.raises(DependencyUnavailable, match="cannot reach"):
        unreachable.count(TenantScope(tenant="acme"))


def test_default_client_is_sigv4_signed_https_built_lazily(aws_region):
    from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

    settings = Settings(
        region=aws_region,
        opensearch_endpoint="https://search-ragline-abc.us-east-1.es.amazonaws.com",
        opensearch_service="aoss",
        embedding_dimensions=DIM,
    )
    idx = OpenSearchIndex(settings=settings)
    assert idx._client._client is None
    connection = idx.client.transport.get_connection()
    assert isinstance(connection, RequestsHttpConnection)
    assert connection.host == "https://search-ragline-abc.us-east-1.es.amazonaws.com:443"
    assert isinstance(connection.session.auth, AWSV4SignerAuth)
    assert connection.session.verify not in (False, None, "")  # True or a CA bundle path
    # sign a request the way the session would, offline: the scope names the region and service
    import requests

    prepared = requests.Request("GET", f"{connection.host}/_cluster/health").prepare()
    signed = connection.session.auth(prepared)
    assert f"/{aws_region}/aoss/aws4_request" in signed.headers["Authorization"]


# --- index per tenant (issue 6) ----------------------------------------------------------------
BANK = f"{ALIAS}.t.bank"  # the isolated tenant's alias; "<alias>-*" (the versions' pattern) never matches it


def _routed(cluster):
    from ragline.adapters.local.tenant_index import TenantRoutedIndex

    settings = Settings(embedding_dimensions=DIM, tenant_isolation_overrides={"bank": "index-per-tenant"})
    shared = OpenSearchIndex(client=cluster.client(), settings=settings)
    return TenantRoutedIndex(shared, shared.for_tenant, settings.isolation_for, ensure_own=OpenSearchIndex.ensure)


def test_an_isolated_tenant_gets_its_own_alias_created_before_its_first_write_then_reused(cluster):
    routed = _routed(cluster)
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{BANK}", 404).on("HEAD", f"/{BANK}-v1", 404)
    cluster.on("PUT", f"/{BANK}-v1", payload={"acknowledged": True, "index": f"{BANK}-v1"})
    cluster.on("POST", "/_bulk", payload={"took": 1, "errors": False, "items": []})
    cluster.on("POST", f"/{BANK}/_search", payload=_search_response(_source("b1", tenant="bank")))
    cluster.on("POST", f"/{ALIAS}/_search", payload=_search_response(_source("a1")))

    routed.stage([_chunk(0, tenant="bank")])
    request = SearchRequest(text="vault", vector=np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32), top_k=3)
    assert [h.chunk_id for h in routed.search(TenantScope("bank"), request)] == ["b1"]
    assert [h.chunk_id for h in routed.search(TenantScope("acme"), request)] == ["a1"]

    assert [(r["method"], r["path"]) for r in cluster.log] == [
        ("PUT", f"/_search/pipeline/{PIPELINE}"),  # ensure, once, before the first write
        ("HEAD", f"/_alias/{BANK}"),
        ("HEAD", f"/{BANK}-v1"),
        ("PUT", f"/{BANK}-v1"),
        ("POST", "/_bulk"),
        ("POST", f"/{BANK}/_search"),  # no second ensure
        ("POST", f"/{ALIAS}/_search"),  # a shared-index tenant stays on the shared alias
    ]
    assert cluster.log[3]["body"] == EXPECTED_INDEX | {"aliases": {BANK: {"is_write_index": True}}}
    action = cluster.log[4]["body"][0]["index"]
    assert (action["_index"], action["routing"]) == (BANK, "bank") and action["_id"].startswith("doc_1:v2:00000~")
    bank_search = cluster.log[5]
    assert bank_search["params"] == {"routing": "bank", "search_pipeline": PIPELINE}
    # the tenant filter stays inside both legs of the own index's query (defence in depth)
    legs = bank_search["body"]["query"]["hybrid"]["queries"]
    assert json.dumps(legs).count('{"term": {"tenant": "bank"}}') == 2


def test_wiring_routes_by_tenant_only_when_a_tenant_is_isolated():
    from ragline.adapters.aws.wiring import build_ports
    from ragline.adapters.local.tenant_index import TenantRoutedIndex

    base = {"backend": "aws", "region": "eu-west-1", "documents_bucket": "b", "registry_table": "r",
            "ledger_table": "l", "query_log_table": "q", "opensearch_endpoint": "https://search.test"}
    shared = build_ports(Settings(**base))["index"]
    assert isinstance(shared, OpenSearchIndex)
    assert shared.ensure_on_write and not shared.missing_is_empty  # created before the first write
    routed = build_ports(Settings(**base, tenant_isolation="index-per-tenant"))["index"]
    assert isinstance(routed, TenantRoutedIndex) and routed.shared.tenant_alias("Odd Tenant").startswith(f"{ALIAS}.t.h.")


def test_reads_of_an_isolated_tenant_never_written_find_nothing_and_create_nothing(cluster):
    """The query function's role may only read: a tenant index that does not exist yet (404)
    reads as empty, and no create request is sent; the shared index's 404 stays an error."""
    from opensearchpy.exceptions import NotFoundError

    routed = _routed(cluster)
    missing = {"error": {"type": "index_not_found_exception", "reason": f"no such index [{BANK}]"}, "status": 404}
    cluster.on("POST", f"/{BANK}/_search", 404, missing)
    cluster.on("POST", f"/{BANK}/_count", 404, missing)
    cluster.on("POST", f"/{BANK}/_delete_by_query", 404, missing)
    cluster.on("POST", f"/{ALIAS}/_count", 404, missing | {"error": {"type": "index_not_found_exception"}})
    request = SearchRequest(text="vault", vector=np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32), top_k=3)
    assert routed.search(TenantScope("bank"), request) == []
    assert routed.count(TenantScope("bank")) == 0
    assert routed.delete_document("bank", "doc_1") == 0
    with pytest.raises(NotFoundError):
        routed.count(TenantScope("acme"))
    assert [r["method"] for r in cluster.log] == ["POST"] * 4


# --- a fresh stack, and experiment arms with their own fusion weights ------------------------------


def test_the_deployed_index_creates_its_pipeline_index_and_alias_before_its_first_write(cluster):
    # nothing created these on a fresh stack: the first bulk went to an alias that did not exist
    # (OpenSearch would auto-create a plain index there, without the k-NN mapping) and every
    # search named a pipeline that did not exist
    index = OpenSearchIndex(client=cluster.client(), settings=Settings(embedding_dimensions=DIM), ensure_on_write=True)
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{ALIAS}", 404).on("HEAD", f"/{ALIAS}-v1", 404)
    cluster.on("PUT", f"/{ALIAS}-v1", payload={"acknowledged": True, "index": f"{ALIAS}-v1"})
    cluster.on("POST", "/_bulk", payload={"took": 3, "errors": False, "items": []}, times=2)
    index.stage([_chunk(0)])
    index.stage([_chunk(1)])  # once per process
    assert [(r["method"], r["path"]) for r in cluster.log] == [
        ("PUT", f"/_search/pipeline/{PIPELINE}"), ("HEAD", f"/_alias/{ALIAS}"), ("HEAD", f"/{ALIAS}-v1"),
        ("PUT", f"/{ALIAS}-v1"), ("POST", "/_bulk"), ("POST", "/_bulk"),
    ]
    assert cluster.log[3]["body"] == EXPECTED_INDEX


def test_an_experiment_arms_dense_weight_searches_through_a_pipeline_of_its_own(cluster):
    # the search body carries no weights: they live in the pipeline, so an arm that changes
    # dense_weight once searched exactly like the control arm on AWS
    experiments = [{"name": "fusion", "variants": [{"name": "control", "share": 0.5},
                                                   {"name": "dense", "share": 0.5, "dense_weight": 0.8}]}]
    settings = Settings(embedding_dimensions=DIM, experiments=experiments)
    index = OpenSearchIndex(client=cluster.client(), settings=settings)
    arm = f"{PIPELINE}-w0800"
    cluster.on("PUT", f"/_search/pipeline/{PIPELINE}", payload={"acknowledged": True})
    cluster.on("PUT", f"/_search/pipeline/{arm}", payload={"acknowledged": True})
    cluster.on("HEAD", f"/_alias/{ALIAS}", 200)
    index.ensure()
    weights = cluster.log[1]["body"]["phase_results_processors"][0]["normalization-processor"]["combination"]
    assert weights["parameters"]["weights"] == [0.2, 0.8]
    cluster.on("POST", f"/{ALIAS}/_search", payload={"hits": {"hits": []}}, times=3)
    vec = [0.0] * DIM
    scope = TenantScope("acme")
    index.search(scope, SearchRequest(text="q", vector=vec, dense_weight=0.8))
    index.search(scope, SearchRequest(text="q", vector=vec))  # the control arm: the default pipeline
    index.search(scope, SearchRequest(text="q", vector=vec, dense_weight=0.3))  # no such arm: the default
    pipelines = [r["params"]["search_pipeline"] for r in cluster.requests("POST", f"/{ALIAS}/_search")]
    assert pipelines == [arm, PIPELINE, PIPELINE]
