"""Blue-green index versions on AWS: OpenSearch version indexes behind the read alias, built
from the DynamoDB registry and the S3 blobs, with manifests and the alias history in S3.

``build`` enumerates every tenant's current INDEXED documents (a paginated scan of the registry
for the tenants, a query per tenant), reads each document's recorded S3 object version, and
runs it through the real :class:`~ragline.ingest.pipeline.IngestPipeline` (extract, sanitise,
PII policy, chunk, embed) into a NEW index ``<alias>-<name>`` (``create_version`` +
``at_version``), with a throwaway SQLite registry so the live registry, the live alias and
the semantic cache are never touched. Documents are processed tenant by tenant and every item
carries the tenant that owns its registry partition; a record whose key is not under that
tenant's ``tenants/<tenant>/`` prefix is refused (a build never routes one tenant's text under
another tenant).

Embedding: on demand (Bedrock InvokeModel, batched per ingest batch) or, when batch inference is
configured (``RAGLINE_INDEX_BATCH_ROLE_ARN`` + ``RAGLINE_INDEX_BATCH_S3_URI``) and the build
makes more than ``RAGLINE_INDEX_BATCH_MIN_CHUNKS`` chunks, one Bedrock batch inference job. The
batch path runs the pipeline twice: a planning pass (null index and an embedder that only
collects the texts, one document at a time, so each text is known to belong to its document)
to count the chunks and write the job's records; then the real pass, whose embedder serves the
batch vectors. A record the batch output reports as failed (or omits) is retried on demand; if
that fails too, its document is left out of the version and listed under ``failed`` with the
reason. Tokens go to the cost ledger per tenant (query id ``index-build-<name>``): batch tokens
under ``<model>@batch`` at the batch price, on-demand ones under the model id.

Why the manifest is an S3 object (``_index_versions/<alias>/<name>.json`` in the documents
bucket) and not a DynamoDB item: it lists missing, changed, rejected and failed documents,
which for a large backfill can exceed DynamoDB's 400 KB item limit; the bucket is versioned and
KMS-encrypted already (manifests keep their history); the prefix is outside ``tenants/``, so
the bucket's ingest notifications never see it; and the registry table is keyed by tenant,
where a manifest item would show up as a tenant. ``alias.json`` beside the manifests records
the rollback target and the switch history (OpenSearch aliases keep no history).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.local.registry import SqliteRegistry
from ..errors import InvalidInput, NotFound, RaglineError
from ..ingest.events import tenant_of
from ..ingest.pipeline import IngestItem, IngestPipeline
from ..ledger import meter
from ..ledger.budget import INDEX_BUILD_PURPOSE
from ..ledger.pricing import batch_model_id, load_price_table
from ..models import DocStatus, DocumentRecord, Usage
from ..settings import ChunkerSettings
from ..tokens import count_tokens

MANIFEST_PREFIX = "_index_versions/"
LEDGER_PURPOSE = INDEX_BUILD_PURPOSE  # not counted against the tenant's request budget


def _conflict(message: str) -> RaglineError:
    from ..adapters.local.versions import Conflict

    return Conflict(message)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shared_index(app, index_of: str | None = None) -> tuple[Any, Callable[[str], bool]]:
    """The OpenSearch index a version command works on and a predicate "this tenant is served
    by it" (:func:`ragline.operations.index_versions.served_index`): the shared alias, which
    skips tenants with an index of their own (issue 6), or with ``index_of`` that tenant's alias."""
    from ..adapters.aws.opensearch import OpenSearchIndex
    from .index_versions import served_index

    index, serves = served_index(app, index_of)
    if not isinstance(index, OpenSearchIndex):
        raise InvalidInput("AWS index versions need the OpenSearch index (RAGLINE_BACKEND=aws)")
    return index, serves


class AwsVersions:
    """Version indexes of the shared alias (or of one isolated tenant's alias), their manifests
    and the alias history."""

    def __init__(self, app, index_of: str | None = None):
        self.app = app
        self.index, self.serves = shared_index(app, index_of)
        self.blobs = app.blobs
        self.root = f"{MANIFEST_PREFIX}{self.index.alias}/"

    # ------------------------------------------------------------------ names
    def check_name(self, name: str) -> str:
        try:
            self.index.version_index(name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if name == "alias":
            raise InvalidInput("'alias' is reserved")
        return name

    def names(self) -> list[str]:
        prefix = f"{self.index.alias}-"
        return sorted(i[len(prefix):] for i in self.index.versions()["indices"] if i.startswith(prefix))

    def live(self) -> str:
        live = self.index.versions()["live"]
        if isinstance(live, list):
            raise _conflict(f"alias {self.index.alias} points at {len(live)} indexes ({', '.join(live)}); "
                            "promote one version to repair it")
        prefix = f"{self.index.alias}-"
        if not live.startswith(prefix):
            raise _conflict(f"alias {self.index.alias} points at {live}, which is not one of its versions")
        return live[len(prefix):]

    def next_name(self) -> str:
        import re

        numbers = [int(m.group(1)) for m in (re.match(r"^v(\d+)$", n) for n in self.names()) if m]
        return f"v{1 + max(numbers or [0]):03d}"

    # ------------------------------------------------------------------ S3 documents
    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.blobs.get(key).data)
        except NotFound:
            return None

    def _write(self, key: str, data: dict[str, Any]) -> None:
        self.blobs.put(key, json.dumps(data, indent=1, default=str).encode(), "application/json")

    def manifest(self, name: str) -> dict[str, Any] | None:
        return self._read(f"{self.root}{self.check_name(name)}.json")

    def write_manifest(self, name: str, data: dict[str, Any]) -> None:
        self._write(f"{self.root}{self.check_name(name)}.json", data)

    def alias_state(self) -> dict[str, Any]:
        return self._read(f"{self.root}alias.json") or {"live": None, "previous": None, "history": []}

    # ------------------------------------------------------------------ operations
    def describe(self) -> list[dict[str, Any]]:
        live, previous = self.live(), self.alias_state().get("previous")
        rows = []
        for name in self.names():
            m = self.manifest(name) or {}
            rows.append({"name": name, "live": name == live, "previous": name == previous, "bytes": None,
                         "built_at": m.get("built_at"), "chunks": m.get("chunks"), "documents": m.get("documents"),
                         "embedding_model": m.get("embedding_model"), "chunker": m.get("chunker"),
                         "source": m.get("source"), "index": self.index.version_index(name)})
        return rows

    def switch(self, name: str) -> dict[str, Any]:
        """Point the alias at ``name`` (one atomic _aliases request) and remember the old target."""
        self.check_name(name)
        if name not in self.names():
            raise NotFound(f"no index version {name} ({self.index.version_index(name)})")
        current = self.live()
        if current == name:
            raise _conflict(f"index version {name} is already live")
        self.index.switch_alias(name)
        state = self.alias_state()
        now = time.time()
        new = {"live": name, "previous": current, "switched_at": now,
               "history": [*state.get("history", []), {"from": current, "to": name, "at": now}][-50:]}
        self._write(f"{self.root}alias.json", new)
        return new

    def delete(self, name: str) -> None:
        """Drop a version index and its manifest; never the live version or the rollback target."""
        self.check_name(name)
        if name not in self.names():
            raise NotFound(f"no index version {name} ({self.index.version_index(name)})")
        if name in (self.live(), self.alias_state().get("previous")):
            raise _conflict(f"index version {name} is live or the rollback target; not deleted")
        self.index.delete_version(name)
        self.blobs.delete(f"{self.root}{name}.json")

    def rollback(self) -> dict[str, Any]:
        previous = self.alias_state().get("previous")
        if not previous:
            raise _conflict("there is no previous index version to roll back to")
        return self.switch(previous)

    def repository(self, repository: str | None) -> str:
        repo = repository or self.app.settings.index_build.snapshot_repository
        if not repo:
            raise InvalidInput("an OpenSearch snapshot needs a registered repository: --repository or "
                               "RAGLINE_INDEX_SNAPSHOT_REPOSITORY")
        return repo

    def snapshot(self, name: str | None, repository: str | None) -> dict[str, Any]:
        source = self.check_name(name or self.live())
        if source not in self.names():
            raise NotFound(f"no index version {source}")
        snap = f"{source}.{time.strftime('%Y%m%dt%H%M%S', time.gmtime())}"
        repo = self.repository(repository)
        self.index.snapshot_version(source, repo, snap)
        return {"repository": repo, "snapshot": snap, "version": source, "index": self.index.version_index(source)}

    def restore(self, snapshot: str, repository: str | None, name: str | None = None,
                source: str | None = None) -> str:
        """A new (not live) version from a snapshot made by :meth:`snapshot` (``<version>.<time>``)."""
        source = self.check_name(source or snapshot.rsplit(".", 1)[0])
        repo = self.repository(repository)
        name = self.check_name(name or self.next_name())
        if name in self.names():
            raise _conflict(f"index version {name} already exists")
        self.index.restore_version(repo, snapshot, source, name)
        self.write_manifest(name, {"name": name, "built_at": time.time(),
                                   "source": f"restored from snapshot {repo}/{snapshot} (version {source})"})
        return name


# --- embedders used by the build ------------------------------------------------------------------


class _CollectingEmbedder:
    """Planning pass: remembers the texts it is asked to embed and returns zero vectors (the
    planning pass writes to a null index)."""

    def __init__(self, model_id: str, dimensions: int):
        self.model_id, self.dimensions = model_id, dimensions
        self.pending: list[str] = []

    def embed_documents(self, texts):
        self.pending.extend(texts)
        return np.zeros((len(texts), self.dimensions), dtype=np.float32)

    def embed_query(self, text):  # never called by ingestion
        raise RuntimeError("the planning embedder embeds no queries")

    def drain(self) -> list[str]:
        out, self.pending = self.pending, []
        return out


class _PrecomputedEmbedder:
    """Serves the batch job's vectors; a text it has none for is embedded on demand."""

    def __init__(self, base, vectors: dict[str, np.ndarray], dimensions: int):
        self.base, self.vectors, self.dimensions = base, vectors, dimensions
        self.model_id = base.model_id
        self.on_demand = 0

    def embed_documents(self, texts):
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            vector = self.vectors.get(text_key(text))
            if vector is None:
                missing.append(i)
            else:
                out[i] = vector
        if missing:
            out[missing] = np.asarray(self.base.embed_documents([texts[i] for i in missing]), dtype=np.float32)
            self.on_demand += len(missing)
        return out

    def embed_query(self, text):
        return self.base.embed_query(text)


class _NullIndex:
    def stage(self, chunks): pass
    def publish(self, tenant, doc_id, version): pass
    def discard(self, tenant, doc_id, version): pass
    def delete_document(self, tenant, doc_id): return 0
    def search(self, scope, request): return []
    def count(self, scope, doc_id=None): return 0


# --- the build -----------------------------------------------------------------------------------


class _Build:
    def __init__(self, app, target, *, chunker: ChunkerSettings | None, batch, progress, scratch_dir: Path):
        self.app, self.target, self.batch, self.progress = app, target, batch, progress
        self.base = app.pipeline
        self.chunker = chunker or self.base.chunker_settings
        self.scratch_dir = scratch_dir
        self.missing: list[str] = []
        self.changed: list[str] = []
        self.refused: list[dict[str, str]] = []
        self.rejected: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.statuses: dict[str, int] = defaultdict(int)
        self.chunks = 0
        self.done = 0
        self.usage: dict[str, list[Usage]] = defaultdict(list)
        self.scratch: list[SqliteRegistry] = []

    def pipeline(self, registry_name: str, index, embedder, batch_chunks: int = 512) -> IngestPipeline:
        """The real ingest pipeline with a throwaway registry (the live one is never written)."""
        scratch = SqliteRegistry(self.scratch_dir / f"{registry_name}.db")
        self.scratch.append(scratch)
        return IngestPipeline(
            registry=scratch, index=index, embedder=embedder,
            chunker=self.chunker, cache=None, max_pages=self.base.max_pages, max_chunks=self.base.max_chunks,
            embed_batch_chunks=batch_chunks, pii=self.base.pii,
        )

    def _blob(self, r: DocumentRecord):
        blobs = self.app.blobs
        try:
            return blobs.get(r.source_key, r.source_version_id) if r.source_version_id else blobs.get(r.source_key)
        except NotFound:
            if not r.source_version_id:
                raise
            return blobs.get(r.source_key)  # the recorded version expired: the current bytes

    def items(self, tenant: str, records: list[DocumentRecord], *, note: bool,
              skip: set[str] = frozenset()) -> Iterator[IngestItem]:
        for r in records:
            owner = tenant_of(r.source_key)
            if r.tenant != tenant or owner is None or owner[0] != tenant:
                if note:
                    self.refused.append({"tenant": tenant, "key": r.source_key,
                                         "reason": f"the key is not under tenants/{tenant}/"})
                continue
            if r.source_key in skip:
                continue
            try:
                blob = self._blob(r)
            except NotFound:
                if note:
                    self.missing.append(r.source_key)
                continue
            if note and hashlib.sha256(blob.data).hexdigest() != r.version:
                self.changed.append(r.source_key)  # built from the current bytes; ingestion catches up live
            yield IngestItem(tenant=tenant, key=r.source_key, data=blob.data, groups=tuple(r.groups),
                             content_type=r.content_type, source_version_id=blob.version_id)

    # -- planning pass (batch only)
    def plan(self, work: dict[str, list[DocumentRecord]]) -> dict[tuple[str, str], list[str]]:
        """Texts to embed per (tenant, key), through the real pipeline with a null index."""
        texts: dict[tuple[str, str], list[str]] = {}
        for tenant, records in work.items():
            collector = _CollectingEmbedder(self.app.pipeline.embedder.model_id, self.target.dimensions)
            pipe = self.pipeline(f"plan-{text_key(tenant)[:12]}", _NullIndex(), collector, batch_chunks=1)
            for out in pipe.ingest_many(self.items(tenant, records, note=False)):
                got = collector.drain()
                if out.status == DocStatus.INDEXED.value:
                    texts[(tenant, out.path)] = got
        return texts

    def run_batch(self, name: str, texts: dict[tuple[str, str], list[str]]) -> tuple[dict[str, dict], dict]:
        """One batch job over the distinct (tenant, text) pairs; failed records retried on demand.
        Returns vectors per tenant (by text key) and a summary for the manifest."""
        records: list[tuple[str, str]] = []
        owner: dict[str, tuple[str, str]] = {}
        seen: set[tuple[str, str]] = set()
        for (tenant, _key), doc_texts in texts.items():
            for text in doc_texts:
                k = (tenant, text_key(text))
                if k not in seen:
                    seen.add(k)
                    rid = f"r{len(records):010d}"
                    records.append((rid, text))
                    owner[rid] = k
        text_of = dict(records)
        result = self.batch.embed(records, name)
        vectors: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
        tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # tenant -> [tokens, estimated count]
        for rid, vector in result.vectors.items():
            tenant, tk = owner[rid]
            vectors[tenant][tk] = vector
            n = result.tokens.get(rid)
            if n is None:
                n = count_tokens(text_of[rid])
                tokens[tenant][1] += 1
            tokens[tenant][0] += n
        for tenant, (n, estimated) in tokens.items():
            self.usage[tenant].append(Usage(model_id=batch_model_id(self.batch.model_id), purpose=LEDGER_PURPOSE,
                                            input_tokens=n, estimated=bool(estimated)))
        retried, lost = 0, {}
        for rid, reason in sorted(result.errors.items()):
            tenant, tk = owner[rid]
            try:
                with meter.collecting() as calls:
                    vector = np.asarray(self.app.pipeline.embedder.embed_documents([text_of[rid]]), dtype=np.float32)[0]
                self.usage[tenant].extend(calls)
                vectors[tenant][tk] = vector
                retried += 1
            except (RaglineError, ValueError) as exc:
                lost[(tenant, tk)] = f"batch record {rid}: {reason}; on-demand retry: {exc}"
        for (tenant, key), doc_texts in texts.items():
            reasons = [lost[(tenant, text_key(t))] for t in doc_texts if (tenant, text_key(t)) in lost]
            if reasons:
                self.failed.append({"tenant": tenant, "key": key, "reason": reasons[0],
                                    "chunks_without_vector": len(reasons)})
        summary = {"job_arn": result.job_arn, "job_name": result.job_name, "status": result.status,
                   "input": result.input_uri, "output_key": result.output_key, "records": len(records),
                   "record_errors": len(result.errors), "retried_on_demand": retried, "lost": len(lost)}
        return vectors, summary

    # -- the real pass
    def write(self, work: dict[str, list[DocumentRecord]], vectors: dict[str, dict[str, np.ndarray]],
              total: int) -> int:
        on_demand = 0
        failed_keys: dict[str, set[str]] = defaultdict(set)
        for f in self.failed:
            failed_keys[f["tenant"]].add(f["key"])
            self.statuses[DocStatus.FAILED.value] += 1
        for tenant, records in work.items():
            embedder = _PrecomputedEmbedder(self.app.pipeline.embedder, vectors.get(tenant, {}), self.target.dimensions)
            pipe = self.pipeline(f"build-{text_key(tenant)[:12]}", self.target, embedder)
            with meter.collecting() as calls:
                for out in pipe.ingest_many(self.items(tenant, records, note=True, skip=failed_keys[tenant])):
                    self.statuses[out.status] += 1
                    self.chunks += out.chunks
                    if out.status != DocStatus.INDEXED.value:
                        self.rejected.append({"tenant": tenant, "key": out.path, "status": out.status,
                                              "reason": out.reason})
                    self.done += 1
                    if self.progress:
                        self.progress(self.done, total)
            self.usage[tenant].extend(calls)
            on_demand += embedder.on_demand
        return on_demand

    def close(self) -> None:
        for scratch in self.scratch:
            scratch.conn().close()

    def ledger(self, name: str) -> dict[str, dict[str, Any]]:
        """Sum each tenant's usage per model, price it and record it in the cost ledger."""
        prices = load_price_table(self.app.settings.costs.price_table)
        out: dict[str, dict[str, Any]] = {}
        for tenant, calls in self.usage.items():
            per_model: dict[str, Usage] = {}
            for u in calls:
                agg = per_model.setdefault(u.model_id, Usage(model_id=u.model_id, purpose=LEDGER_PURPOSE))
                agg.input_tokens += u.input_tokens
                agg.estimated = agg.estimated or u.estimated
            priced = [prices.priced(u) for u in per_model.values() if u.input_tokens]
            if not priced:
                continue
            # once per build: a resumed build's ledger step does not charge the tenant twice
            self.app.ledger.record(tenant, f"index-build-{name}", priced, record_id="ledger")
            out[tenant] = {u.model_id: {"input_tokens": u.input_tokens, "cost_usd": u.cost_usd} for u in priced}
        return out


def build(app, name: str | None = None, *, chunker: ChunkerSettings | None = None,
          progress: Callable[[int, int], None] | None = None, batch: Any | None = None,
          index_of: str | None = None) -> dict[str, Any]:
    """Build a new version beside the live one. ``batch`` (a BedrockBatchEmbedder) is built
    from settings when batch inference is configured; tests inject one."""
    from .index_versions import registry_fingerprint, tenants

    versions = AwsVersions(app, index_of)
    name = versions.check_name(name or versions.next_name())
    if name in versions.names():
        raise _conflict(f"index version {name} already exists")
    t0 = time.perf_counter()
    fingerprint, _ = registry_fingerprint(app, versions.serves)
    work: dict[str, list[DocumentRecord]] = {}
    skipped: list[str] = []
    for t in tenants(app):
        if not versions.serves(t):
            skipped.append(t)
            continue
        records = [r for r in app.registry.list(t) if r.status == DocStatus.INDEXED]
        if records:
            work[t] = records
    total = sum(len(v) for v in work.values())
    settings = app.settings.index_build
    if batch is None and settings.batch_configured:
        from ..adapters.aws.bedrock_batch import BedrockBatchEmbedder

        batch = BedrockBatchEmbedder(role_arn=settings.batch_role_arn, s3_uri=settings.batch_s3_uri,
                                     model_id=app.pipeline.embedder.model_id, dimensions=versions.index.dimensions,
                                     settings=app.settings)
    versions.index.create_version(name)
    target = versions.index.at_version(name)
    try:
        with tempfile.TemporaryDirectory(prefix="ragline-build-") as tmp:
            run = _Build(app, target, chunker=chunker, batch=batch, progress=progress, scratch_dir=Path(tmp))
            vectors: dict[str, dict[str, np.ndarray]] = {}
            mode, batch_summary, planned = "on_demand", None, None
            try:
                if batch is not None:
                    texts = run.plan(work)
                    planned = sum(len(v) for v in texts.values())
                    distinct = len({(t, text_key(x)) for (t, _), xs in texts.items() for x in xs})
                    if planned > settings.batch_min_chunks and distinct < settings.batch_min_records:
                        batch_summary = {"skipped": f"{distinct} distinct texts, fewer than Bedrock's minimum of "
                                                    f"{settings.batch_min_records} records a job (batch_min_records)"}
                    elif planned > settings.batch_min_chunks:
                        mode = "batch"
                        job = f"ragline-{versions.index.alias}-{name}-{int(time.time())}"
                        vectors, batch_summary = run.run_batch(job, texts)
                on_demand = run.write(work, vectors, total)
            finally:
                run.close()
    except BaseException:
        versions.index.delete_version(name)
        raise
    costs = run.ledger(name)
    manifest = {
        "name": name, "index": versions.index.version_index(name), "built_at": time.time(), "source": "build",
        "index_of": index_of,
        "documents": total, "chunks": run.chunks, "statuses": dict(run.statuses),
        "embedding_model": app.pipeline.embedder.model_id, "chunker": run.chunker.fingerprint(),
        "registry_fingerprint": fingerprint, "changed_since_indexed": run.changed, "missing_blobs": run.missing,
        "rejected": run.rejected, "failed": run.failed, "refused": run.refused, "skipped_tenants": skipped,
        "embedding": {"mode": mode, "planned_chunks": planned, "threshold": settings.batch_min_chunks,
                      "on_demand_texts": on_demand, "batch": batch_summary},
        "usage": costs, "seconds": round(time.perf_counter() - t0, 2),
    }
    versions.write_manifest(name, manifest)
    return manifest


def promote(app, name: str, *, force: bool = False, index_of: str | None = None) -> dict[str, Any]:
    from .index_versions import promote_checked

    versions = AwsVersions(app, index_of)
    return promote_checked(app, versions, name, force=force, conflict=_conflict, serves=versions.serves)


def rollback(app, *, index_of: str | None = None) -> dict[str, Any]:
    return AwsVersions(app, index_of).rollback()
