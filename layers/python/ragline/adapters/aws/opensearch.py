"""OpenSearch implementation of :class:`ragline.ports.SearchIndex`: hybrid BM25 + k-NN search
through a search pipeline, tenant and ACL filters inside both legs, reads and writes through an
alias so a rebuilt index can be swapped in (blue-green) and swapped back.

Request syntax pinned from the OpenSearch documentation:

* normalization-processor (``phase_results_processors``; ``normalization.technique``,
  ``combination.technique``, ``combination.parameters.weights`` summing to 1, one per sub-query):
  https://docs.opensearch.org/latest/search-plugins/search-pipelines/normalization-processor/
* ``hybrid`` query (``queries``: up to 5 sub-queries; top-level only, never nested):
  https://docs.opensearch.org/latest/query-dsl/compound/hybrid/
* efficient k-NN filtering (``filter`` inside the ``knn`` clause; faiss HNSW from 2.9, lucene from 2.4):
  https://docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/
* ``pagination_depth`` in the hybrid clause (2.19+): how many results each sub-query keeps per
  shard; without it each keeps only ``from + size``, so fusion would see top_k hits per leg
  where the local index fuses hundreds:
  https://docs.opensearch.org/latest/vector-search/ai-search/hybrid-search/pagination/
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from ...errors import DependencyUnavailable, RaglineError
from ...models import Chunk, SearchHit, SearchRequest, TenantScope
from ...settings import Settings, get_settings
from ._boto import LazyClient

log = logging.getLogger(__name__)

# ACL value of a chunk every member of its tenant may see; keeps the ACL filter a single terms query.
PUBLIC_ACL = "__tenant__"
TEXT_ANALYZER = "english"


class IndexWriteRejected(RaglineError):
    """OpenSearch refused documents for a reason retrying will not fix (e.g. a mapping error)."""

    code = "index_write_rejected"


def _transient_status(status: Any) -> bool:
    return isinstance(status, int) and (status == 429 or status >= 500)


class OpenSearchIndex:
    """A :class:`~ragline.ports.SearchIndex` on an OpenSearch domain (``service="es"``) or
    Serverless collection (``service="aoss"``). ``client`` is an ``opensearchpy.OpenSearch``.

    Chunks are stored with ``_id`` = ``<chunk id>~<staging generation>`` (see ``stage``) and
    routed by tenant, so one tenant's reads and writes touch one shard.
    """

    def __init__(
        self,
        *,
        client: Any | None = None,
        settings: Settings | None = None,
        alias: str | None = None,
        dimensions: int | None = None,
        dense_weight: float | None = None,
        engine: str = "faiss",
        space_type: str = "innerproduct",
        bulk_max_docs: int = 500,
        bulk_max_bytes: int = 5 * 1024 * 1024,
        timeout_s: float = 30.0,
        ensure_on_write: bool = False,
    ):
        settings_ = settings or get_settings()
        self.alias = alias or settings_.opensearch_index_alias
        self.missing_is_empty = False  # a tenant's own index reads as empty until created
        self.index_name = f"{self.alias}-v1"
        self.pipeline = f"{self.alias}-hybrid"
        self.dimensions = dimensions if dimensions is not None else settings_.embedding_dimensions
        weight = dense_weight if dense_weight is not None else settings_.retrieval.dense_weight
        if not 0.0 <= weight <= 1.0:
            raise ValueError("dense_weight must be within [0, 1]")
        self.dense_weight = weight
        self.fusion = settings_.retrieval.fusion
        self.rrf_k = settings_.retrieval.rrf_k
        # the dense weights A/B experiment arms ask for: each gets a pipeline of its own (ensure)
        self.variant_weights = sorted({
            round(v.dense_weight, 6) for e in settings_.experiments if e.enabled for v in e.variants
            if v.dense_weight is not None and round(v.dense_weight, 6) != round(weight, 6)})
        # the deployed functions: the pipelines, the first index and the alias are created
        # (idempotently) before this process's first write, so a fresh stack needs no setup step
        self.ensure_on_write = ensure_on_write
        self._ensured = False
        if engine not in ("faiss", "lucene"):  # the engines with efficient filtering
            raise ValueError("engine must be faiss or lucene")
        self.engine = engine
        self.space_type = space_type
        self.bulk_max_docs = bulk_max_docs
        self.bulk_max_bytes = bulk_max_bytes
        self.timeout_s = timeout_s
        # unset: the request's candidate depth on a domain, off on Serverless (support unverified)
        self.hybrid_depth = settings_.opensearch_hybrid_depth
        self.hybrid_depth_auto = self.hybrid_depth is None and settings_.opensearch_service == "es"
        self._client = LazyClient(client, self._client_factory(settings_, timeout_s))
        # what this process last staged per (tenant, doc_id, version): the _ids its publish
        # flips and keeps (see stage)
        self._staged: dict[tuple[str, str, str], list[str]] = {}
        self._staged_lock = threading.Lock()

    @staticmethod
    def _client_factory(settings: Settings, timeout_s: float) -> Callable[[], Any]:
        def build() -> Any:
            import boto3
            from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

            if not settings.opensearch_endpoint:
                raise ValueError("OpenSearchIndex needs RAGLINE_OPENSEARCH_ENDPOINT")
            endpoint = settings.opensearch_endpoint
            parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            credentials = boto3.session.Session().get_credentials()
            auth = AWSV4SignerAuth(credentials, settings.region, settings.opensearch_service)
            return OpenSearch(
                hosts=[{"host": parsed.hostname, "port": parsed.port or 443}],
                http_auth=auth,
                use_ssl=True,
                verify_certs=True,
                connection_class=RequestsHttpConnection,
                timeout=timeout_s,
                pool_maxsize=20,
            )

        return build

    @property
    def client(self) -> Any:
        return self._client.get()

    # --- bodies (public so tests and the infra code can check them) -----------------------------

    def pipeline_for(self, dense_weight: float | None) -> str:
        """The search pipeline for a request's dense weight: the default one, or an experiment
        arm's (``<pipeline>-w<weight x 1000>``, created by ensure) when the fusion uses weights."""
        if dense_weight is None or self.fusion == "rrf" or round(dense_weight, 6) == round(self.dense_weight, 6):
            return self.pipeline
        if round(dense_weight, 6) not in self.variant_weights:
            log.warning("no search pipeline for dense weight %s (not an experiment arm's); the default one answers",
                        dense_weight)
            return self.pipeline
        return f"{self.pipeline}-w{round(dense_weight * 1000):04d}"

    def pipeline_body(self, dense_weight: float | None = None) -> dict[str, Any]:
        """The hybrid pipeline follows ``settings.retrieval.fusion`` as the local index does:
        ``zscore`` -> normalization-processor ``z_score`` (OpenSearch 2.19+; arithmetic mean only),
        ``minmax`` -> ``min_max``, ``rrf`` -> score-ranker-processor ``rrf`` (2.19+). One
        difference remains: OpenSearch normalises each leg over its own hits, the local index
        over the union of both legs' candidates (it can score both legs for every candidate)."""
        weight = self.dense_weight if dense_weight is None else dense_weight
        lexical = round(1.0 - weight, 6)
        dense = round(weight, 6)
        if self.fusion == "rrf":
            return {
                "description": "Ragline hybrid search: reciprocal rank fusion of BM25 and k-NN",
                "phase_results_processors": [
                    {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": self.rrf_k}}}
                ],
            }
        technique = {"zscore": "z_score", "minmax": "min_max"}[self.fusion]
        return {
            "description": f"Ragline hybrid search: {technique} normalised BM25 and k-NN scores, weighted mean",
            "phase_results_processors": [
                {
                    "normalization-processor": {
                        "normalization": {"technique": technique},
                        # weights follow the order of the hybrid sub-queries: [lexical, dense]
                        "combination": {
                            "technique": "arithmetic_mean",
                            "parameters": {"weights": [lexical, dense]},
                        },
                    }
                }
            ],
        }

    def index_body(self) -> dict[str, Any]:
        return {
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
                    "title": {"type": "text", "analyzer": TEXT_ANALYZER},
                    "heading": {"type": "text", "analyzer": TEXT_ANALYZER},
                    "page": {"type": "integer"},
                    "ordinal": {"type": "integer"},
                    "text": {"type": "text", "analyzer": TEXT_ANALYZER},
                    "vector": {
                        "type": "knn_vector",
                        "dimension": self.dimensions,
                        "method": {
                            "name": "hnsw",
                            "engine": self.engine,
                            "space_type": self.space_type,
                            "parameters": {"ef_construction": 128, "m": 16},
                        },
                    },
                },
            },
            "aliases": {self.alias: {"is_write_index": True}},
        }

    @staticmethod
    def visibility_filter(scope: TenantScope) -> list[dict[str, Any]]:
        """What a scope may see: its tenant, live chunks only, public or shared with its groups."""
        return [
            {"term": {"tenant": scope.tenant}},
            {"term": {"live": True}},
            {"terms": {"acl": [PUBLIC_ACL, *sorted(scope.groups)]}},
        ]

    def search_body(self, scope: TenantScope, request: SearchRequest) -> dict[str, Any]:
        visible = {"bool": {"filter": self.visibility_filter(scope)}}
        hybrid: dict[str, Any] = {}
        depth = request.candidates if self.hybrid_depth_auto else self.hybrid_depth
        if depth and depth > request.top_k:
            hybrid["pagination_depth"] = depth
        return {
            "size": request.top_k,
            "_source": {"excludes": ["vector"]},
            "query": {
                "hybrid": {
                    **hybrid,
                    "queries": [
                        {
                            "bool": {
                                "must": [
                                    {"multi_match": {"query": request.text, "fields": ["text", "title"]}}
                                ],
                                "filter": self.visibility_filter(scope),
                            }
                        },
                        {
                            "knn": {
                                "vector": {
                                    "vector": [float(x) for x in request.vector],
                                    "k": request.candidates,
                                    "filter": visible,
                                }
                            }
                        },
                    ]
                }
            },
        }

    def _document(self, chunk: Chunk) -> dict[str, Any]:
        if chunk.vector is None:
            raise ValueError(f"chunk {chunk.chunk_id} has no vector")
        vector = [float(x) for x in chunk.vector]
        if len(vector) != self.dimensions:
            raise ValueError(
                f"chunk {chunk.chunk_id} has a {len(vector)}-d vector; the index is {self.dimensions}-d"
            )
        if PUBLIC_ACL in chunk.groups:
            raise ValueError(f"{PUBLIC_ACL} is reserved and cannot be a group name")
        return {
            "chunk_id": chunk.chunk_id,
            "tenant": chunk.tenant,
            "doc_id": chunk.doc_id,
            "version": chunk.version,
            "live": False,
            "acl": sorted(chunk.groups) if chunk.groups else [PUBLIC_ACL],
            "flags": list(chunk.flags),
            "source_key": chunk.source_key,
            "title": chunk.title,
            "heading": chunk.heading,
            "page": chunk.page,
            "ordinal": chunk.ordinal,
            "text": chunk.text,
            "vector": vector,
        }

    # --- calls ------------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            return fn()
        except OSConnectionError as exc:  # includes ConnectionTimeout
            raise DependencyUnavailable(f"search index {what} failed: cannot reach OpenSearch") from exc
        except TransportError as exc:
            if _transient_status(exc.status_code):
                raise DependencyUnavailable(
                    f"search index {what} failed: OpenSearch returned {exc.status_code}"
                ) from exc
            raise

    def _read_or_empty(self, what: str, fn: Callable[[], Any], empty: Any) -> Any:
        """A read; on a tenant's own index not created yet (404), the empty answer."""
        from opensearchpy.exceptions import NotFoundError

        try:
            return self._call(what, fn)
        except NotFoundError:
            if self.missing_is_empty:
                return empty
            raise

    def ensure(self) -> None:
        """Create, idempotently, the search pipeline, the first index and the alias onto it.
        An existing alias is left pointing where it points (a blue-green switch may have moved it)."""

        client = self.client
        self._call("ensure", lambda: client.search_pipeline.put(id=self.pipeline, body=self.pipeline_body()))
        if self.fusion != "rrf":
            for w in self.variant_weights:
                self._call("ensure", lambda w=w: client.search_pipeline.put(id=self.pipeline_for(w),
                                                                           body=self.pipeline_body(w)))
        self._ensure_index(client)
        self._ensured = True

    def _ensure_index(self, client: Any) -> None:
        from opensearchpy.exceptions import RequestError

        if self._call("ensure", lambda: client.indices.exists_alias(name=self.alias)):
            return
        if self._call("ensure", lambda: client.indices.exists(index=self.index_name)):
            self._call(
                "ensure",
                lambda: client.indices.put_alias(
                    index=self.index_name, name=self.alias, body={"is_write_index": True}
                ),
            )
            return
        try:
            self._call("ensure", lambda: client.indices.create(index=self.index_name, body=self.index_body()))
        except RequestError as exc:  # another container created it first
            if exc.error != "resource_already_exists_exception":
                raise

    def stage(self, chunks: Sequence[Chunk]) -> None:
        """Write chunks invisibly (live=false), in bulk batches bounded by count and bytes.
        The last batch waits for a refresh so ``publish`` can find every staged chunk.

        Each staging writes its chunks under new document ids (``<chunk_id>~<generation>``):
        the same version processed again (other groups, PII policy, chunker, embedding model)
        must not overwrite the live rows with invisible ones, which would hide the document
        until publish (or for good, if the attempt dies). ``publish`` flips exactly these rows
        and removes every other row of the document; search answers by the ``chunk_id``
        field, so citations keep the chunk ids."""
        if not chunks:
            return
        if self.ensure_on_write and not self._ensured:
            self.ensure()
        generation = uuid.uuid4().hex[:12]
        staged: dict[tuple[str, str, str], list[str]] = {}
        batches: list[list[dict[str, Any]]] = []
        lines: list[dict[str, Any]] = []
        size = 0
        count = 0
        for chunk in chunks:
            doc = self._document(chunk)
            doc_size = len(json.dumps(doc, separators=(",", ":")))
            if lines and (count >= self.bulk_max_docs or size + doc_size > self.bulk_max_bytes):
                batches.append(lines)
                lines, size, count = [], 0, 0
            _id = f"{chunk.chunk_id}~{generation}"
            staged.setdefault((chunk.tenant, chunk.doc_id, chunk.version), []).append(_id)
            lines.append({"index": {"_index": self.alias, "_id": _id, "routing": chunk.tenant}})
            lines.append(doc)
            size += doc_size
            count += 1
        batches.append(lines)
        for number, body in enumerate(batches, start=1):
            refresh = "wait_for" if number == len(batches) else "false"
            response = self._call("stage", lambda b=body, r=refresh: self.client.bulk(body=b, refresh=r))
            if response.get("errors"):
                self._raise_bulk_errors(response)
        with self._staged_lock:
            self._staged.update(staged)  # a later staging of the same version supersedes an earlier one

    @staticmethod
    def _raise_bulk_errors(response: dict[str, Any]) -> None:
        failures = []
        for item in response.get("items", []):
            result = next(iter(item.values()))
            if result.get("error"):
                failures.append(result)
        if not failures:
            return
        first = failures[0]
        error = first["error"]
        reason = f"{error.get('type')}: {error.get('reason')}" if isinstance(error, dict) else str(error)
        message = f"{len(failures)} chunk(s) not indexed, first {first.get('_id')}: {reason}"
        if all(_transient_status(f.get("status")) for f in failures):
            raise DependencyUnavailable(message)
        raise IndexWriteRejected(message)

    @staticmethod
    def _doc_filter(tenant: str, doc_id: str) -> list[dict[str, Any]]:
        return [{"term": {"tenant": tenant}}, {"term": {"doc_id": doc_id}}]

    def _delete_by_query(self, what: str, tenant: str, query: dict[str, Any]) -> int:
        """delete_by_query removes every match (it scrolls internally: no result-size limit)."""
        response = self._read_or_empty(  # nothing to delete in a tenant index never created
            what,
            lambda: self.client.delete_by_query(
                index=self.alias,
                body={"query": query},
                routing=tenant,
                conflicts="proceed",
                refresh=True,
            ),
            {"deleted": 0},
        )
        if response.get("failures"):
            raise DependencyUnavailable(f"search index {what} failed: {response['failures'][0]}")
        return int(response.get("deleted", 0))

    def _take_staged(self, tenant: str, doc_id: str, version: str) -> list[str] | None:
        with self._staged_lock:
            return self._staged.pop((tenant, doc_id, version), None)

    def publish(self, tenant: str, doc_id: str, version: str, *, attempts: int = 3) -> int | None:
        """Make ``version`` the document's only visible version: flip its chunks to live, then
        delete every other row of the document (other versions, the same version's earlier
        rows, what a dead attempt left staged). Between the two steps both are briefly visible
        (never neither), which is the safer side for a reader; search drops the duplicates.
        Returns how many chunks were flipped to live (the pipeline checks it against what it
        staged), or None when the response does not say.

        The rows flipped are the ones this process staged last for the version (by id); a
        publish with nothing staged here flips every staged row of the version instead."""
        staged_ids = self._take_staged(tenant, doc_id, version)
        mine = [{"ids": {"values": staged_ids}}] if staged_ids is not None else []
        made_live: int | None = 0
        query = {
            "bool": {
                "filter": [
                    *self._doc_filter(tenant, doc_id),
                    {"term": {"version": version}},
                    {"term": {"live": False}},
                    *mine,
                ]
            }
        }
        body = {"query": query, "script": {"source": "ctx._source.live = true", "lang": "painless"}}
        for _ in range(attempts):
            response = self._call(
                "publish",
                lambda: self.client.update_by_query(
                    index=self.alias, body=body, routing=tenant, conflicts="proceed", refresh=True
                ),
            )
            if response.get("failures"):
                raise DependencyUnavailable(f"search index publish failed: {response['failures'][0]}")
            if made_live is not None:
                made_live = made_live + int(response["updated"]) if "updated" in response else None
            # a conflict means a chunk changed under us; it still matches live=false, so go again
            if not response.get("version_conflicts"):
                break
        else:
            raise DependencyUnavailable(f"search index publish of {doc_id} kept conflicting; retry later")
        keep = mine or [{"term": {"version": version}}]
        self._delete_by_query(
            "publish",
            tenant,
            {
                "bool": {
                    "filter": self._doc_filter(tenant, doc_id),
                    "must_not": keep,
                }
            },
        )
        return made_live

    def discard(self, tenant: str, doc_id: str, version: str) -> None:
        """Remove a staged (not live) version, e.g. after a failed or superseded ingest: the
        rows this process staged for it, or else every staged row of the version."""
        staged_ids = self._take_staged(tenant, doc_id, version)
        self._delete_by_query(
            "discard",
            tenant,
            {
                "bool": {
                    "filter": [
                        *self._doc_filter(tenant, doc_id),
                        {"term": {"version": version}},
                        {"term": {"live": False}},
                        *([{"ids": {"values": staged_ids}}] if staged_ids is not None else []),
                    ]
                }
            },
        )

    def delete_document(self, tenant: str, doc_id: str) -> int:
        return self._delete_by_query("delete", tenant, {"bool": {"filter": self._doc_filter(tenant, doc_id)}})

    @staticmethod
    def _require_tenant(scope: TenantScope) -> None:
        if not isinstance(scope, TenantScope) or not scope.tenant:
            raise ValueError("an index read needs a tenant scope")

    def search(self, scope: TenantScope, request: SearchRequest) -> list[SearchHit]:
        self._require_tenant(scope)
        body = self.search_body(scope, request)
        response = self._read_or_empty(
            "search",
            lambda: self.client.search(
                index=self.alias, body=body, routing=scope.tenant,
                search_pipeline=self.pipeline_for(request.dense_weight),
            ),
            {},
        )
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for hit in response.get("hits", {}).get("hits", []):
            src = hit.get("_source", {})
            acl = set(src.get("acl") or ()) - {PUBLIC_ACL}
            # The filter is inside the query; this re-check is defence in depth against a bad
            # mapping or a query change, and must never fire.
            if src.get("tenant") != scope.tenant or src.get("live") is not True or not scope.can_see(acl):
                log.error("search returned a chunk outside the scope; dropped (chunk %s)", hit.get("_id"))
                continue
            chunk_id = src.get("chunk_id", hit.get("_id"))
            if chunk_id in seen:  # a chunk's old and new rows, both live for a moment during a publish
                continue
            seen.add(chunk_id)
            hits.append(
                SearchHit(
                    chunk_id=chunk_id,
                    doc_id=src["doc_id"],
                    version=src["version"],
                    text=src.get("text", ""),
                    source_key=src.get("source_key", ""),
                    score=float(hit.get("_score") or 0.0),
                    title=src.get("title"),
                    page=src.get("page"),
                    heading=src.get("heading"),
                    flags=tuple(src.get("flags") or ()),
                )
            )
        return hits

    def count(self, scope: TenantScope, doc_id: str | None = None) -> int:
        """Visible chunks in the scope (optionally of one document)."""
        self._require_tenant(scope)
        filters = self.visibility_filter(scope)
        if doc_id is not None:
            filters.append({"term": {"doc_id": doc_id}})
        response = self._read_or_empty(
            "count",
            lambda: self.client.count(
                index=self.alias, body={"query": {"bool": {"filter": filters}}}, routing=scope.tenant
            ),
            {"count": 0},
        )
        return int(response.get("count", 0))

    # --- blue-green versions (issue 7) ------------------------------------------------------------
    # A version is a concrete index "<alias>-<name>"; the alias is what every read and write
    # names. Switching is one _aliases request (remove from every index + add to the new one),
    # which OpenSearch applies atomically. Backfilling a new version runs the ingest pipeline
    # with an index from at_version(name) (for large backfills, Bedrock batch inference).

    def version_index(self, name: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", name or ""):
            raise ValueError(f"invalid index version name {name!r}: lower-case letters, digits, '.', '_', '-'")
        return f"{self.alias}-{name}"

    def version_body(self) -> dict[str, Any]:
        """The mapping of a new version: the live mapping without the alias (added at switch)."""
        body = self.index_body()
        body.pop("aliases", None)
        return body

    def create_version(self, name: str) -> str:
        index = self.version_index(name)
        self._call("create version", lambda: self.client.indices.create(index=index, body=self.version_body()))
        return index

    def delete_version(self, name: str) -> None:
        """Drop a version index: what a failed build leaves behind (a missing one is fine)."""
        index = self.version_index(name)
        from opensearchpy.exceptions import NotFoundError

        try:
            self._call("delete version", lambda: self.client.indices.delete(index=index))
        except NotFoundError:
            pass

    def versions(self) -> dict[str, Any]:
        """Every version index and which one the alias points at."""
        indices = self._call("versions", lambda: self.client.indices.get(index=f"{self.alias}-*"))
        aliased = self._call("versions", lambda: self.client.indices.get_alias(name=self.alias))
        live = sorted(aliased)
        return {"alias": self.alias, "live": live[0] if len(live) == 1 else live, "indices": sorted(indices)}

    def switch_body(self, name: str) -> dict[str, Any]:
        return {
            "actions": [
                {"remove": {"index": f"{self.alias}-*", "alias": self.alias}},
                {"add": {"index": self.version_index(name), "alias": self.alias, "is_write_index": True}},
            ]
        }

    def switch_alias(self, name: str) -> dict[str, Any]:
        """Point the alias at version ``name`` in one atomic _aliases request."""
        body = self.switch_body(name)
        self._call("switch alias", lambda: self.client.indices.update_aliases(body=body))
        return body

    # --- index per tenant (issue 6) -----------------------------------------------------------------
    # A tenant that needs physical separation gets its own alias "<alias>.t.<tenant>" onto
    # "<alias>.t.<tenant>-v1" (a '.' so the shared alias's version pattern "<alias>-*" never
    # matches a tenant's index); the search pipeline is shared. Its reads keep the tenant filter.
    def tenant_alias(self, tenant: str) -> str:
        from ..local.tenant_index import tenant_slug

        return f"{self.alias}.t.{tenant_slug(tenant)}"

    def for_tenant(self, tenant: str) -> OpenSearchIndex:
        """This index on the tenant's own alias (no request is made)."""
        import copy

        other = copy.copy(self)
        other.alias = self.tenant_alias(tenant)
        other.index_name = f"{other.alias}-v1"
        other.missing_is_empty = True  # not created until the tenant's first write (ensure)
        return other

    def at_version(self, name: str) -> OpenSearchIndex:
        """This index reading and writing one version directly (a build, or an A/B arm)."""
        import copy

        other = copy.copy(self)
        other.alias = self.version_index(name)
        return other

    def snapshot_version(self, name: str, repository: str, snapshot: str) -> dict[str, Any]:
        """An OpenSearch snapshot of one version into a registered (S3) repository."""
        body = {"indices": self.version_index(name), "include_global_state": False}
        self._call("snapshot", lambda: self.client.snapshot.create(
            repository=repository, snapshot=snapshot, body=body, wait_for_completion=False))
        return body

    def restore_version(self, repository: str, snapshot: str, source: str, name: str) -> dict[str, Any]:
        """Restore version ``source`` from a snapshot as the new version ``name`` (not live)."""
        body = {
            "indices": self.version_index(source), "include_global_state": False, "include_aliases": False,
            "rename_pattern": re.escape(self.version_index(source)), "rename_replacement": self.version_index(name),
        }
        self._call("restore", lambda: self.client.snapshot.restore(
            repository=repository, snapshot=snapshot, body=body, wait_for_completion=False))
        return body
