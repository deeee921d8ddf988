"""Blue-green index operations on the local stack: build a new index version beside the live
one, validate it against the live one, promote it (switch the alias), roll back.

``build`` re-ingests every current document version — the bytes from the blob store, the
groups and provenance from the registry — through the ingestion pipeline with the *current*
embedder and chunker settings into a new index file, with a scratch registry so the live
registry is not touched and "unchanged" short-cuts do not apply. Queries keep being served
from the live version meanwhile. The manifest records a fingerprint of the registry (every
tenant, document and version) so ``promote`` can refuse a build that no longer matches the
documents (uploaded, changed or deleted since), unless forced.

On ``RAGLINE_BACKEND=aws`` every operation goes to :mod:`.index_versions_aws` (OpenSearch
version indexes, manifests in S3); ``validate`` is shared: it compares retrieval on two
versions and, with a QA file, support@k and answer token F1 (the code of ``ragline eval qa``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..adapters.local.index import LocalHybridIndex
from ..adapters.local.registry import SqliteRegistry
from ..adapters.local.versions import AliasedIndex, Conflict, IndexVersions
from ..errors import InvalidInput, NotFound
from ..ingest.pipeline import IngestItem, IngestPipeline
from ..ledger.budget import INDEX_BUILD_PURPOSE
from ..models import DocStatus, TenantScope
from ..retrieval.service import Retriever
from ..settings import ChunkerSettings


def served_index(app, index_of: str | None = None) -> tuple[Any, Callable[[str], bool]]:
    """The index a version command works on and which tenants it serves, for both backends: the
    shared index (every tenant without an index of its own, which are never copied into it), or
    with ``index_of`` that tenant's own index, serving that tenant only."""
    from ..adapters.local.tenant_index import OWN, TenantRoutedIndex

    index = app.index
    if isinstance(index, TenantRoutedIndex):
        routed = index
        if index_of is not None:
            if routed.isolation(index_of) != OWN:
                raise InvalidInput(f"tenant {index_of!r} is served by the shared index; manage it without --index-of")
            return routed.for_tenant(index_of), lambda t: t == index_of
        return routed.shared, lambda t: routed.isolation(t) != OWN
    if index_of is not None:
        raise InvalidInput("--index-of is for tenants with an index of their own "
                           "(RAGLINE_TENANT_ISOLATION / RAGLINE_TENANT_ISOLATION_OVERRIDES)")
    return index, lambda t: True


def versions_of(app, index_of: str | None = None) -> tuple[IndexVersions, AliasedIndex, Callable[[str], bool]]:
    """The versions, the aliased index and which tenants it serves (see :func:`served_index`)."""
    index, serves = served_index(app, index_of)
    if not isinstance(index, AliasedIndex):
        raise InvalidInput("index versions need the local aliased index (RAGLINE_BACKEND=local)")
    return index.versions, index, serves


def _aws(app) -> bool:
    return getattr(getattr(app, "settings", None), "backend", "local") == "aws"


def tenants(app) -> list[str]:
    fn = getattr(app.registry, "tenants", None)
    if fn is None:
        raise InvalidInput("this registry cannot list its tenants")
    return fn()


def registry_fingerprint(app, serves: Callable[[str], bool] | None = None) -> tuple[str, int]:
    """A hash of every indexed document version (of the tenants ``serves`` admits)."""
    h = hashlib.sha256()
    n = 0
    for t in tenants(app):
        if serves is not None and not serves(t):
            continue
        for r in app.registry.list(t):
            if r.status == DocStatus.INDEXED:
                h.update(f"{t}\x00{r.doc_id}\x00{r.version}\x00{','.join(sorted(r.groups))}\n".encode())
                n += 1
    return h.hexdigest(), n


def build(app, name: str | None = None, *, chunker: ChunkerSettings | None = None,
          progress: Callable[[int, int], None] | None = None, index_of: str | None = None) -> dict[str, Any]:
    """A new version of the shared index (every tenant without an index of its own) or, with
    ``index_of``, of that tenant's own index, re-ingested from the stored documents."""
    if _aws(app):
        from .index_versions_aws import build as build_aws

        return build_aws(app, name, chunker=chunker, progress=progress, index_of=index_of)
    versions, aliased, serves = versions_of(app, index_of)
    name = versions.create(name)
    t0 = time.perf_counter()
    fingerprint, _ = registry_fingerprint(app, serves)
    index = LocalHybridIndex(versions.path(name), aliased.dim)
    scratch_path = versions.root / f".{name}.build-registry.db"
    scratch = SqliteRegistry(scratch_path)
    base = app.pipeline
    pipeline = IngestPipeline(
        registry=scratch, index=index, embedder=base.embedder, chunker=chunker or base.chunker_settings, cache=None,
        max_pages=base.max_pages, max_chunks=base.max_chunks, pii=base.pii,  # a tenant's PII policy holds in every version
        # a rebuild's embeddings are charged to each tenant, under the purpose budgets leave out
        meter=base.meter.for_purpose(INDEX_BUILD_PURPOSE) if base.meter is not None else None,
    )
    records = [r for t in tenants(app) if serves(t) for r in app.registry.list(t) if r.status == DocStatus.INDEXED]
    changed: list[str] = []
    missing: list[str] = []

    def items():
        for r in records:
            try:
                blob = app.blobs.get(r.source_key)
            except NotFound:
                missing.append(r.source_key)
                continue
            if hashlib.sha256(blob.data).hexdigest() != r.version:
                changed.append(r.source_key)  # built from the current bytes; ingestion will catch up live
            yield IngestItem(tenant=r.tenant, key=r.source_key, data=blob.data, groups=tuple(r.groups),
                             content_type=r.content_type, source_version_id=r.source_version_id)

    statuses: dict[str, int] = {}
    chunks = 0
    try:
        for i, out in enumerate(pipeline.ingest_many(items()), start=1):
            statuses[out.status] = statuses.get(out.status, 0) + 1
            chunks += out.chunks
            if progress:
                progress(i, len(records))
    except BaseException:
        index.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{versions.path(name)}{suffix}").unlink(missing_ok=True)
        raise
    finally:
        scratch.conn().close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch_path}{suffix}").unlink(missing_ok=True)
    index.close()
    manifest = {
        "name": name, "built_at": time.time(), "source": "build", "index_of": index_of,
        "documents": len(records), "chunks": chunks,
        "statuses": statuses, "embedding_model": base.embedder.model_id,
        "chunker": pipeline.chunker_settings.fingerprint(), "registry_fingerprint": fingerprint,
        "changed_since_indexed": changed, "missing_blobs": missing, "seconds": round(time.perf_counter() - t0, 2),
    }
    versions.write_manifest(name, manifest)
    return manifest


def promote(app, name: str, *, force: bool = False, index_of: str | None = None) -> dict[str, Any]:
    if _aws(app):
        from .index_versions_aws import promote as promote_aws

        return promote_aws(app, name, force=force, index_of=index_of)
    versions, _, serves = versions_of(app, index_of)
    return promote_checked(app, versions, name, force=force, conflict=Conflict, serves=serves)


def promote_checked(app, versions, name: str, *, force: bool, conflict: Callable[[str], Exception],
                    serves: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Switch the read alias to ``name`` unless the documents changed since it was built (the
    registry fingerprint in its manifest), for the local and the AWS versions alike."""
    m = versions.manifest(name)
    if m and m.get("registry_fingerprint") and not force:
        now, n = registry_fingerprint(app, serves)
        if now != m["registry_fingerprint"]:
            raise conflict(f"documents changed since version {name} was built ({n} indexed now, "
                           f"{m.get('documents')} at build time): build again, or promote with --force")
    return versions.switch(name)


def rollback(app, *, index_of: str | None = None) -> dict[str, Any]:
    if _aws(app):
        from .index_versions_aws import rollback as rollback_aws

        return rollback_aws(app, index_of=index_of)
    return versions_of(app, index_of)[0].rollback()


def delete(app, name: str, *, index_of: str | None = None) -> dict[str, Any]:
    """Delete a version that is neither live nor the rollback target (locally also never the
    first ``default`` file): what is left of an index after a rebuild, or of a tenant that moved
    to an index of its own."""
    if _aws(app):
        from .index_versions_aws import AwsVersions

        AwsVersions(app, index_of).delete(name)
    else:
        versions = versions_of(app, index_of)[0]
        if not versions.exists(name):
            raise NotFound(f"no index version {name}")
        versions.delete(name)
    return {"deleted": name, "index_of": index_of}


def describe(app, *, index_of: str | None = None) -> list[dict[str, Any]]:
    if _aws(app):
        from .index_versions_aws import AwsVersions

        return AwsVersions(app, index_of).describe()
    return versions_of(app, index_of)[0].describe()


def snapshot(app, name: str | None = None, *, to: Path | None = None, repository: str | None = None,
             index_of: str | None = None) -> Any:
    """Locally a file copy (``to``, default under RAGLINE_HOME/snapshots); on AWS an OpenSearch
    snapshot into a registered S3 repository."""
    if _aws(app):
        from .index_versions_aws import AwsVersions

        return AwsVersions(app, index_of).snapshot(name, repository)
    v = versions_of(app, index_of)[0]
    src = name or v.live()
    dest = to or v.home / "snapshots" / f"{src}-{time.strftime('%Y%m%dT%H%M%S')}.db"
    return v.snapshot(src, dest)


def restore(app, snapshot_ref: str, name: str | None = None, *, repository: str | None = None,
            source: str | None = None, index_of: str | None = None) -> str:
    """A new, not live, version from a snapshot file (local) or an OpenSearch snapshot id (AWS)."""
    if _aws(app):
        from .index_versions_aws import AwsVersions

        return AwsVersions(app, index_of).restore(snapshot_ref, repository, name, source)
    return versions_of(app, index_of)[0].restore(Path(snapshot_ref), name)


def _version_reader(app, index_of: str | None = None) -> tuple[str, Callable[[str], Any]]:
    """The live version's name and a function opening any version for reads."""
    if _aws(app):
        from .index_versions_aws import AwsVersions

        v = AwsVersions(app, index_of)
        names = set(v.names())

        def at(name: str):
            if name not in names:
                raise NotFound(f"no index version {name}")
            return v.index.at_version(name)

        return v.live(), at
    versions, aliased, _ = versions_of(app, index_of)
    return versions.live(), aliased.at_version


class _AtVersion:
    """The parts of a Ragline that the QA evaluation reads, with retrieval on one version."""

    def __init__(self, app, retriever: Retriever):
        self.retriever = retriever
        self.chat = app.chat
        self.extractive = app.extractive


def _qa_compare(app, sides: dict[str, Retriever], qa: Path, tenant: str, limit: int | None,
                baseline: str, candidate: str) -> dict[str, Any]:
    from ..evaluation.qa import KS, load_qa, run_questions, subset

    try:
        items = subset(load_qa(qa), limit)
    except ValueError as exc:  # a malformed line: the file and line number, not a traceback
        raise InvalidInput(str(exc)) from None
    if not items:
        raise InvalidInput(f"{qa} holds no questions")
    keys = [f"support@{k}" for k in KS] + ["answer_f1"]
    out: dict[str, Any] = {"file": str(qa), "tenant": tenant, "questions": len(items)}
    for v, r in sides.items():
        res = run_questions(_AtVersion(app, r), items, tenant=tenant)
        out[v] = {k: res[k] for k in (*keys, "answerer", "ragas")}
    out["delta"] = {k: round(out[candidate][k] - out[baseline][k], 4) for k in keys}
    return out


def _retriever(app, index) -> Retriever:
    return Retriever(index, app.retriever.embedder, app.retriever.settings)


def validate(app, candidate: str, *, baseline: str | None = None, data: Path | None = None,
             split: str = "test", tenant: str = "eval", queries: int = 200, k: int = 5,
             qa: Path | None = None, qa_limit: int | None = None, index_of: str | None = None) -> dict[str, Any]:
    """Compare two versions: with ``data`` (a BEIR folder whose corpus is ingested under
    ``tenant``), nDCG@10 and Recall@10 of each; otherwise the query log's recent questions,
    as overlap of the top-k documents, top-1 agreement and mean top-1 similarity. With ``qa``
    (JSON lines of question and answers, asked as ``tenant``), also support@1/3/5 and answer
    token F1 of each version and the deltas (candidate minus baseline), under ``qa``."""
    live, at_version = _version_reader(app, index_of)
    baseline = baseline or live
    if candidate == baseline:
        raise InvalidInput("validate compares two different versions")
    sides = {v: _retriever(app, at_version(v)) for v in (baseline, candidate)}
    serves = served_index(app, index_of)[1]
    out = _compare_retrieval(app, sides, baseline, candidate, data=data, split=split, tenant=tenant,
                             queries=queries, k=k, serves=serves)
    if qa is not None:
        out["qa"] = _qa_compare(app, sides, qa, tenant, qa_limit, baseline, candidate)
    return out


def _compare_retrieval(app, sides: dict[str, Retriever], baseline: str, candidate: str, *, data: Path | None,
                       split: str, tenant: str, queries: int, k: int,
                       serves: Callable[[str], bool] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline": baseline, "candidate": candidate}
    if data is not None:
        from ..evaluation.beir import load_beir, ndcg_at, recall_at

        _, qs, qrels = load_beir(data, split)
        scope = TenantScope(tenant)
        for v, r in sides.items():
            nd, rc = [], []
            for qid, text in qs.items():
                hits, _ = r.search(scope, text, top_k=100)
                ranked = list(dict.fromkeys(PurePosixPath(h.source_key).stem for h in hits))
                nd.append(ndcg_at(ranked, qrels[qid], 10))
                rc.append(recall_at(ranked, qrels[qid], 10))
            out[v] = {"ndcg@10": round(float(np.mean(nd)), 4) if nd else 0.0,
                      "recall@10": round(float(np.mean(rc)), 4) if rc else 0.0}
        out.update(mode="beir", queries=len(qs))
        out["delta_ndcg@10"] = round(out[candidate]["ndcg@10"] - out[baseline]["ndcg@10"], 4)
        return out
    seen: set[tuple[str, str]] = set()
    asked = []
    for e in app.query_log.recent(None, queries * 5):
        key = (e.get("tenant"), e.get("question"))
        if serves is not None and key[0] and not serves(key[0]):
            continue  # a question of a tenant this index does not serve
        if all(key) and key not in seen:
            seen.add(key)
            asked.append(key)
        if len(asked) >= queries:
            break
    overlaps, agree, top1 = [], [], {baseline: [], candidate: []}
    for t, q in asked:
        scope = TenantScope(t)
        res = {}
        for v, r in sides.items():
            hits, _ = r.search(scope, q, top_k=k)
            res[v] = list(dict.fromkeys(h.doc_id for h in hits))
            if hits:
                top1[v].append(max(float(h.dense_score if h.dense_score is not None else h.score) for h in hits))
        a, b = set(res[baseline]), set(res[candidate])
        overlaps.append(len(a & b) / len(a | b) if a | b else 1.0)
        agree.append(bool(res[baseline][:1] == res[candidate][:1]))
    out.update(
        mode="query_log", queries=len(asked), k=k,
        doc_overlap_at_k=round(float(np.mean(overlaps)), 4) if overlaps else None,
        top1_agreement=round(float(np.mean(agree)), 4) if agree else None,
        mean_top1_similarity={v: round(float(np.mean(x)), 4) if x else None for v, x in top1.items()},
    )
    return out
