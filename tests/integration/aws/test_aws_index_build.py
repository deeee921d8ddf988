"""Blue-green index builds on AWS: ``ragline index build | promote | rollback | versions`` over
the DynamoDB registry, the S3 blobs, OpenSearch and Bedrock batch inference.

Techniques:

* moto's server on 127.0.0.1 for S3 (documents, manifests, the batch job's input and output
  files) and DynamoDB (registry enumeration, cost ledger) — real botocore requests;
* a real ``opensearchpy.OpenSearch`` client on the recording connection of
  test_aws_opensearch_requests.py, answered by :class:`MiniCluster`, a small in-memory model
  of the requests the adapter sends (index create/delete, bulk, update/delete-by-query with
  term filters, aliases, a k-NN-only search honouring the filter): the test checks the exact
  bodies the build sends and what they leave behind;
* botocore's Stubber on a real ``bedrock`` control-plane client for CreateModelInvocationJob /
  GetModelInvocationJob (InProgress then Completed, and a Failed job), the Stubber validating
  each request and response against the service model; while the job is "InProgress" the test
  plays Bedrock: it reads the input JSONL from moto's S3 and writes ``<input>.out`` under
  ``<output prefix><job id>/`` in the documented output shape (one line with an error object).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from ragline_testing import HashEmbedder
from test_aws_opensearch_requests import RecordingConnection

from ragline import factory
from ragline.adapters.aws import DynamoLedgerStore, DynamoQueryLog, DynamoRegistry, OpenSearchIndex, S3BlobStore
from ragline.adapters.aws.bedrock_batch import BedrockBatchEmbedder
from ragline.adapters.local.versions import Conflict
from ragline.errors import InvalidInput, ModelError
from ragline.ingest.events import tenant_of
from ragline.ingest.pipeline import IngestItem
from ragline.ledger import meter
from ragline.models import DocStatus, DocumentRecord, TenantScope, Usage
from ragline.operations import index_versions as ops
from ragline.operations.index_versions_aws import build as build_aws
from ragline.settings import IndexBuildSettings, Settings

ALIAS = "ragline-chunks"
TITAN = "amazon.titan-embed-text-v2:0"
ROLE = "arn:aws:iam::123456789012:role/ragline-dev-index-batch"
JOB_ID = "k2x9abcd1234"
JOB_ARN = f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{JOB_ID}"

DOCS = {
    "acme": {
        "invoices.txt": "Invoices are kept for ten years. " * 12 + "The archive is in the basement of building B.",
        "cafeteria.txt": "The cafeteria opens at eight. " * 12 + "Lunch is served from noon until two.",
    },
    "globex": {
        "parking.txt": "Visitors park in the north lot. " * 12 + "Bicycles go in the racks by the fountain.",
        "security.txt": "Badges are checked at the gate. " * 12 + "Lost badges are reported to the front desk.",
    },
}


# --- an in-memory OpenSearch answering the recorded requests -----------------------------------------


def _matches(doc: dict, clause: dict, _id: str | None = None) -> bool:
    (kind, body), = clause.items()
    if kind == "ids":
        return _id in body["values"]
    if kind == "term":
        (field, value), = body.items()
        got = doc.get(field)
        return value in got if isinstance(got, list) else got == value
    if kind == "terms":
        (field, values), = body.items()
        got = doc.get(field)
        got = got if isinstance(got, list) else [got]
        return any(v in got for v in values)
    if kind == "bool":
        return (all(_matches(doc, c, _id) for c in body.get("filter", []))
                and all(_matches(doc, c, _id) for c in body.get("must", []))
                and not any(_matches(doc, c, _id) for c in body.get("must_not", [])))
    if kind == "multi_match":
        return True
    raise AssertionError(f"query clause {kind} is not modelled")


class MiniCluster:
    def __init__(self) -> None:
        self.log: list[dict] = []
        self.indices: dict[str, dict[str, tuple[str, dict]]] = {}  # index -> _id -> (routing, doc)
        self.aliases: dict[str, set[str]] = {}  # alias -> indices

    def client(self):
        from opensearchpy import OpenSearch

        return OpenSearch(hosts=[{"host": "search.test", "port": 443}], connection_class=RecordingConnection,
                          responder=self, log=self.log, max_retries=0)

    def resolve(self, name: str) -> list[str]:
        if name in self.indices:
            return [name]
        return sorted(self.aliases.get(name, ()))

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict]:
        return [r for r in self.log if (method is None or r["method"] == method) and (path is None or r["path"] == path)]

    def __call__(self, method: str, path: str, params: dict, body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if method == "PUT" and len(parts) == 1:
            if parts[0] in self.indices:
                return 400, {"error": {"type": "resource_already_exists_exception"}, "status": 400}
            self.indices[parts[0]] = {}
            for alias in (body or {}).get("aliases", {}):
                self.aliases.setdefault(alias, set()).add(parts[0])
            return 200, {"acknowledged": True, "index": parts[0]}
        if method == "DELETE" and len(parts) == 1:
            if parts[0] not in self.indices:
                return 404, {"error": {"type": "index_not_found_exception"}, "status": 404}
            del self.indices[parts[0]]
            return 200, {"acknowledged": True}
        if method == "POST" and parts == ["_bulk"]:
            items = []
            for action, doc in zip(body[::2], body[1::2], strict=True):
                meta = action["index"]
                (target,) = self.resolve(meta["_index"])
                self.indices[target][meta["_id"]] = (meta["routing"], doc)
                items.append({"index": {"_index": target, "_id": meta["_id"], "status": 201}})
            return 200, {"errors": False, "items": items}
        if method == "POST" and len(parts) == 2 and parts[1] in ("_update_by_query", "_delete_by_query"):
            n = 0
            for target in self.resolve(parts[0]):
                docs = self.indices[target]
                for _id, (routing, doc) in list(docs.items()):
                    if routing == params.get("routing") and _matches(doc, body["query"], _id):
                        n += 1
                        if parts[1] == "_update_by_query":
                            doc["live"] = True
                        else:
                            del docs[_id]
            key = "updated" if parts[1] == "_update_by_query" else "deleted"
            return 200, {key: n, "version_conflicts": 0, "failures": []}
        if method == "POST" and len(parts) == 2 and parts[1] == "_search":
            knn = body["query"]["hybrid"]["queries"][1]["knn"]["vector"]
            q = np.asarray(knn["vector"], dtype=np.float32)
            hits = []
            for target in self.resolve(parts[0]):
                for _id, (routing, doc) in self.indices[target].items():
                    if routing == params.get("routing") and _matches(doc, knn["filter"], _id):
                        score = float(np.dot(q, np.asarray(doc["vector"], dtype=np.float32)))
                        hits.append({"_id": _id, "_score": score,
                                     "_source": {k: v for k, v in doc.items() if k != "vector"}})
            hits.sort(key=lambda h: (-h["_score"], h["_id"]))
            return 200, {"hits": {"hits": hits[: body["size"]]}}
        if method == "GET" and len(parts) == 1 and parts[0].endswith("*"):
            return 200, {i: {} for i in self.indices if fnmatch.fnmatch(i, parts[0])}
        if method == "GET" and len(parts) == 2 and parts[0] == "_alias":
            targets = self.aliases.get(parts[1])
            if not targets:
                return 404, {"error": "alias missing", "status": 404}
            return 200, {i: {"aliases": {parts[1]: {}}} for i in targets}
        if method == "POST" and parts == ["_aliases"]:
            for action in body["actions"]:
                (kind, spec), = action.items()
                if kind == "remove":
                    self.aliases[spec["alias"]] = {i for i in self.aliases.get(spec["alias"], set())
                                                   if not fnmatch.fnmatch(i, spec["index"])}
                else:
                    assert spec["index"] in self.indices, spec
                    self.aliases.setdefault(spec["alias"], set()).add(spec["index"])
            return 200, {"acknowledged": True}
        if parts[:1] == ["_snapshot"] and method == "PUT" and len(parts) == 3:
            self.snapshots = {**getattr(self, "snapshots", {}),
                              parts[2]: {i: dict(self.indices[i]) for i in self.resolve(body["indices"])}}
            return 200, {"accepted": True}
        if parts[:1] == ["_snapshot"] and method == "POST" and parts[3:] == ["_restore"]:
            import re

            for index, docs in self.snapshots[parts[2]].items():
                self.indices[re.sub(body["rename_pattern"], body["rename_replacement"], index)] = dict(docs)
            return 200, {"accepted": True}
        raise AssertionError(f"unexpected request {method} {path}")

    def docs(self, index: str) -> list[tuple[str, dict]]:
        return list(self.indices[index].values())


# --- the embedder: Titan-like (model id, usage through the meter) on the hashing vectors ------------


class TitanLike(HashEmbedder):
    model_id = TITAN
    dimensions = 256

    def __init__(self, poison: str | None = None):
        super().__init__()
        self.poison = poison
        self.texts: list[str] = []

    def embed_documents(self, texts):
        if self.poison and any(self.poison in t for t in texts):
            raise ModelError(f"model {TITAN} rejected the input (ValidationException)")
        self.texts.extend(texts)
        out = super().embed_documents(texts)
        meter.record(Usage(model_id=TITAN, purpose="embed_documents", input_tokens=sum(len(t.split()) for t in texts)))
        return out


def _aws_app(settings, index, embedder, s3_client, dynamodb_client):
    """A Ragline on moto's S3 and DynamoDB and the given index, with DOCS ingested."""
    app = factory.build(
        settings,
        blobs=S3BlobStore(settings.documents_bucket, client=s3_client, settings=settings),
        registry=DynamoRegistry(settings.registry_table, client=dynamodb_client, settings=settings),
        query_log=DynamoQueryLog(settings.query_log_table, client=dynamodb_client, settings=settings),
        ledger=DynamoLedgerStore(settings.ledger_table, client=dynamodb_client, settings=settings),
        index=index, embedder=embedder, chat=None, reranker=None, cache_store=None, pii=None,
    )
    for tenant, docs in DOCS.items():
        for name, text in docs.items():
            key = f"tenants/{tenant}/{name}"
            blob = app.blobs.put(key, text.encode(), "text/plain")
            out = app.pipeline.ingest(IngestItem(tenant=tenant, key=key, data=text.encode(),
                                                 source_version_id=blob.version_id))
            assert out.status == "indexed"
    return app


@pytest.fixture()
def env(tmp_path, aws_region, bucket, s3_client, dynamodb_client, registry_table, ledger_table, query_log_table):
    cluster = MiniCluster()
    cluster.indices[f"{ALIAS}-v1"] = {}
    cluster.aliases[ALIAS] = {f"{ALIAS}-v1"}
    settings = Settings(
        backend="aws", region=aws_region, documents_bucket=bucket, registry_table=registry_table,
        ledger_table=ledger_table, query_log_table=query_log_table, opensearch_endpoint="https://search.test",
        home=tmp_path / "home", index_build=IndexBuildSettings(batch_min_chunks=1, batch_min_records=1),
    )
    embedder = TitanLike()
    app = _aws_app(settings, OpenSearchIndex(client=cluster.client(), settings=settings, dimensions=TitanLike.dimensions),
                   embedder, s3_client, dynamodb_client)
    cluster.log.clear()
    embedder.texts.clear()
    return app, cluster, s3_client, dynamodb_client


QUESTIONS = {"acme": ["How long are invoices kept?", "When is lunch served?"],
             "globex": ["Where do bicycles go?", "Who checks badges?"]}


def answers(app) -> dict:
    return {t: [[(h.chunk_id, round(h.score, 6)) for h in app.retriever.search(TenantScope(t), q, top_k=4)[0]]
                for q in qs] for t, qs in QUESTIONS.items()}


def registry_items(client, table) -> list[dict]:
    return sorted(client.scan(TableName=table, ConsistentRead=True)["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


# --- registry enumeration ---------------------------------------------------------------------------------


def test_registry_lists_every_tenant_across_scan_pages(dynamodb_client, registry_table):
    reg = DynamoRegistry(registry_table, client=dynamodb_client, settings=Settings())
    expected = [f"t{i:02d}" for i in range(23)]
    for t in expected:
        for d in range(3):
            reg.put(DocumentRecord(tenant=t, doc_id=f"d{d}", source_key=f"tenants/{t}/{d}.txt",
                                   status=DocStatus.INDEXED))
    assert reg.tenants(page_size=5) == expected  # 69 items over 14 pages, each tenant once
    assert reg.tenants() == expected


# --- build -----------------------------------------------------------------------------------------------


def test_build_writes_a_new_version_and_leaves_live_alias_and_registry_alone(env, registry_table):
    app, cluster, s3, ddb = env
    before = answers(app)
    registry_before = registry_items(ddb, registry_table)
    during: list[dict] = []
    m = ops.build(app, "v002", progress=lambda i, n: during.append(answers(app)))

    # the exact index creation: the live mapping, without the alias
    (create,) = cluster.requests("PUT", f"/{ALIAS}-v002")
    assert create["body"] == app.index.version_body() and "aliases" not in create["body"]
    # every bulk line goes to the new index, routed by its own tenant
    bulks = cluster.requests("POST", "/_bulk")
    assert bulks
    for req in bulks:
        for action, doc in zip(req["body"][::2], req["body"][1::2], strict=True):
            assert action["index"]["_index"] == f"{ALIAS}-v002"
            assert action["index"]["routing"] == doc["tenant"] == tenant_of(doc["source_key"])[0]
    # publish flips live in the new index only; nothing touched the alias
    assert all(r["path"].startswith(f"/{ALIAS}-v002/") for r in cluster.requests("POST")
               if r["path"].endswith(("_update_by_query", "_delete_by_query")))
    assert cluster.requests("POST", "/_aliases") == []
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    assert registry_items(ddb, registry_table) == registry_before
    assert answers(app) == before and during and all(d == before for d in during)  # served meanwhile

    assert m["documents"] == 4 and m["statuses"] == {"indexed": 4} and m["embedding"]["mode"] == "on_demand"
    assert m["chunks"] == len(cluster.indices[f"{ALIAS}-v002"])
    assert m["embedding_model"] == TITAN and m["missing_blobs"] == [] and m["refused"] == []
    assert len(m["registry_fingerprint"]) == 64
    stored = json.loads(s3.get_object(Bucket=app.blobs.bucket, Key=f"_index_versions/{ALIAS}/v002.json")["Body"].read())
    assert stored["name"] == "v002" and stored["chunks"] == m["chunks"] and stored["statuses"] == m["statuses"]
    rows = {r["name"]: r for r in ops.describe(app)}
    assert rows["v1"]["live"] and not rows["v002"]["live"] and rows["v002"]["chunks"] == m["chunks"]
    # on-demand tokens of the build are in the ledger, per tenant
    for tenant in DOCS:
        totals = [r for r in app.ledger.totals(tenant, 1) if r["purpose"] == "index_build"]
        assert [r["model_id"] for r in totals] == [TITAN] and totals[0]["input_tokens"] > 0


def test_missing_blob_and_corrupt_document_are_recorded_and_the_build_goes_on(env):
    app, cluster, s3, _ = env
    bucket = app.blobs.bucket
    # a registry entry whose object is gone (every version deleted)
    gone = "tenants/acme/invoices.txt"
    for v in s3.list_object_versions(Bucket=bucket, Prefix=gone)["Versions"]:
        s3.delete_object(Bucket=bucket, Key=gone, VersionId=v["VersionId"])
    # a registry entry whose bytes are a broken PDF
    bad_key, bad = "tenants/globex/broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage"
    put = s3.put_object(Bucket=bucket, Key=bad_key, Body=bad, ContentType="application/pdf")
    app.registry.put(DocumentRecord(tenant="globex", doc_id="broken", source_key=bad_key, status=DocStatus.INDEXED,
                                    version=hashlib.sha256(bad).hexdigest(), source_version_id=put["VersionId"]))
    m = ops.build(app, "v002")
    assert m["documents"] == 5
    assert m["missing_blobs"] == [gone]
    assert m["statuses"] == {"indexed": 3, "failed": 1}
    (rej,) = m["rejected"]
    assert rej["key"] == bad_key and rej["tenant"] == "globex" and rej["status"] == "failed" and rej["reason"]
    keys = {doc["source_key"] for _, doc in cluster.docs(f"{ALIAS}-v002")}
    assert keys == {"tenants/acme/cafeteria.txt", "tenants/globex/parking.txt", "tenants/globex/security.txt"}


def test_tenants_stay_apart_and_a_foreign_key_is_refused(env):
    app, cluster, _, _ = env
    # a registry record in globex's partition naming acme's object: never built under globex
    app.registry.put(DocumentRecord(tenant="globex", doc_id="stolen", source_key="tenants/acme/invoices.txt",
                                    status=DocStatus.INDEXED, version="x"))
    m = ops.build(app, "v002")
    assert m["refused"] == [{"tenant": "globex", "key": "tenants/acme/invoices.txt",
                             "reason": "the key is not under tenants/globex/"}]
    by_tenant: dict[str, set[str]] = {}
    for routing, doc in cluster.docs(f"{ALIAS}-v002"):
        assert routing == doc["tenant"] == tenant_of(doc["source_key"])[0]
        by_tenant.setdefault(doc["tenant"], set()).add(doc["source_key"])
    assert by_tenant == {t: {f"tenants/{t}/{n}" for n in docs} for t, docs in DOCS.items()}
    # after promotion each tenant's search sees its own documents only
    ops.promote(app, "v002", force=True)
    for tenant, qs in QUESTIONS.items():
        for q in qs:
            hits, _ = app.retriever.search(TenantScope(tenant), q, top_k=10)
            assert hits and {tenant_of(h.source_key)[0] for h in hits} == {tenant}


# --- promote / rollback -------------------------------------------------------------------------------


def test_promote_and_rollback_switch_the_alias_and_return_the_same_results(env):
    app, cluster, s3, _ = env
    before = answers(app)
    ops.build(app, "v002")
    cluster.log.clear()
    state = ops.promote(app, "v002")
    (switch,) = cluster.requests("POST", "/_aliases")
    assert switch["body"] == {"actions": [{"remove": {"index": f"{ALIAS}-*", "alias": ALIAS}},
                                          {"add": {"index": f"{ALIAS}-v002", "alias": ALIAS, "is_write_index": True}}]}
    assert state["live"] == "v002" and state["previous"] == "v1"
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v002"}
    assert answers(app) == before  # same documents, same model, same chunker: identical results
    cluster.log.clear()
    back = ops.rollback(app)
    (switch,) = cluster.requests("POST", "/_aliases")
    assert switch["body"]["actions"][1] == {"add": {"index": f"{ALIAS}-v1", "alias": ALIAS, "is_write_index": True}}
    assert back["live"] == "v1" and back["previous"] == "v002" and cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    assert answers(app) == before
    history = json.loads(s3.get_object(Bucket=app.blobs.bucket, Key=f"_index_versions/{ALIAS}/alias.json")["Body"].read())
    assert [(h["from"], h["to"]) for h in history["history"]] == [("v1", "v002"), ("v002", "v1")]
    with pytest.raises(Conflict, match="already live"):
        ops.promote(app, "v1")


def test_promote_refuses_a_build_the_registry_moved_past_unless_forced(env):
    app, cluster, _, _ = env
    ops.build(app, "v002")
    key = "tenants/acme/new.txt"
    blob = app.blobs.put(key, b"A new policy on remote work.", "text/plain")
    app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=b"A new policy on remote work.",
                                   source_version_id=blob.version_id))
    with pytest.raises(Conflict, match="documents changed since version v002"):
        ops.promote(app, "v002")
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    assert ops.promote(app, "v002", force=True)["live"] == "v002"
    with pytest.raises(Conflict, match="already live"):
        ops.promote(app, "v002", force=True)


def test_snapshot_and_restore_on_aws(env):
    app, cluster, s3, _ = env
    with pytest.raises(InvalidInput, match="registered repository"):
        ops.snapshot(app)
    out = ops.snapshot(app, repository="s3-repo")
    assert out["version"] == "v1" and out["snapshot"].startswith("v1.")
    (snap,) = cluster.requests("PUT", f"/_snapshot/s3-repo/{out['snapshot']}")
    assert snap["body"] == {"indices": f"{ALIAS}-v1", "include_global_state": False}
    name = ops.restore(app, out["snapshot"], repository="s3-repo")
    assert name == "v002"  # the next free name
    assert cluster.indices[f"{ALIAS}-v002"] == cluster.indices[f"{ALIAS}-v1"]
    (restore,) = cluster.requests("POST", f"/_snapshot/s3-repo/{out['snapshot']}/_restore")
    assert restore["body"]["rename_replacement"] == f"{ALIAS}-v002" and restore["body"]["include_aliases"] is False
    manifest = json.loads(s3.get_object(Bucket=app.blobs.bucket, Key=f"_index_versions/{ALIAS}/v002.json")["Body"].read())
    assert manifest["source"] == f"restored from snapshot s3-repo/{out['snapshot']} (version v1)"
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}  # restored, not live


# --- Bedrock batch inference -------------------------------------------------------------------------------


def bedrock_client():
    return boto3.session.Session().client("bedrock", region_name="us-east-1")


class PlayBedrock:
    """Plays the batch job between polls: reads the input JSONL from S3, writes the output
    file in the documented shape. ``fail`` maps a substring of an input text to an error."""

    def __init__(self, s3, bucket: str, embedder: HashEmbedder, fail: dict[str, str] | None = None):
        self.s3, self.bucket, self.embedder, self.fail = s3, bucket, embedder, fail or {}
        self.inputs: list[dict] = []
        self.sleeps: list[float] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        (obj,) = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="_index_versions/batch/input/")["Contents"]
        name = obj["Key"].rsplit("/", 1)[1]
        job = name[: -len(".jsonl")]
        lines = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read().decode().splitlines()
        self.inputs = [json.loads(x) for x in lines]
        out = []
        for rec in self.inputs:
            text = rec["modelInput"]["inputText"]
            bad = next((m for s, m in self.fail.items() if s in text), None)
            if bad:
                out.append({"recordId": rec["recordId"], "modelInput": rec["modelInput"],
                            "error": {"errorCode": 400, "errorMessage": bad}})
            else:
                vec = self.embedder._vec(text)
                out.append({"recordId": rec["recordId"], "modelInput": rec["modelInput"],
                            "modelOutput": {"embedding": vec.tolist(), "inputTextTokenCount": len(text.split())}})
        key = f"_index_versions/batch/output/{job}/{JOB_ID}/{name}.out"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body="\n".join(json.dumps(o) for o in out).encode())
        self.s3.put_object(Bucket=self.bucket, Key=f"_index_versions/batch/output/{job}/{JOB_ID}/manifest.json.out",
                           Body=json.dumps({"totalRecordCount": len(out)}).encode())


def job_response(status: str, message: str | None = None) -> dict:
    from datetime import UTC, datetime

    r = {"jobArn": JOB_ARN, "jobName": "x", "modelId": TITAN, "roleArn": ROLE, "status": status,
         "submitTime": datetime(2026, 1, 1, tzinfo=UTC),
         "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/i.jsonl"}},
         "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/o/"}}}
    if message:
        r["message"] = message
    return r


def make_batch(app, s3, client, player) -> BedrockBatchEmbedder:
    return BedrockBatchEmbedder(role_arn=ROLE, s3_uri=f"s3://{app.blobs.bucket}/_index_versions/batch/",
                                model_id=TITAN, dimensions=TitanLike.dimensions, settings=app.settings,
                                bedrock_client=client, s3_client=s3, poll_s=30, deadline_s=3600,
                                clock=player.clock, sleep=player.sleep)


def test_batch_build_embeds_through_a_job_retries_failed_records_and_meters_the_batch_rate(env):
    app, cluster, s3, _ = env
    app.pipeline.embedder.poison = "Lost badges"  # that text fails in the batch AND on demand
    player = PlayBedrock(s3, app.blobs.bucket, app.pipeline.embedder,
                         fail={"Lunch is served": "ValidationException: throttled record",
                               "Lost badges": "ValidationException: input too long"})
    client = bedrock_client()
    sent: list[dict] = []
    client.meta.events.register("provide-client-params.bedrock.CreateModelInvocationJob",
                                lambda params, **kw: sent.append(dict(params)))
    with Stubber(client) as stub:
        stub.add_response("create_model_invocation_job", {"jobArn": JOB_ARN},
                          {"jobName": ANY, "roleArn": ROLE, "modelId": TITAN, "clientRequestToken": ANY,
                           "inputDataConfig": ANY, "outputDataConfig": ANY, "timeoutDurationInHours": 24})
        stub.add_response("get_model_invocation_job", job_response("InProgress"), {"jobIdentifier": JOB_ARN})
        stub.add_response("get_model_invocation_job", job_response("Completed"), {"jobIdentifier": JOB_ARN})
        m = build_aws(app, "v002", batch=make_batch(app, s3, client, player))
        stub.assert_no_pending_responses()

    (req,) = sent
    job = req["jobName"]
    assert req["inputDataConfig"] == {"s3InputDataConfig": {
        "s3Uri": f"s3://{app.blobs.bucket}/_index_versions/batch/input/{job}.jsonl", "s3InputFormat": "JSONL"}}
    assert req["outputDataConfig"] == {"s3OutputDataConfig": {
        "s3Uri": f"s3://{app.blobs.bucket}/_index_versions/batch/output/{job}/"}}
    # Titan v2 records, one per distinct text
    assert player.inputs and all(set(r) == {"recordId", "modelInput"} and
                                 set(r["modelInput"]) == {"inputText", "dimensions", "normalize"} and
                                 r["modelInput"]["dimensions"] == 256 and r["modelInput"]["normalize"] is True
                                 for r in player.inputs)
    assert len({r["recordId"] for r in player.inputs}) == len(player.inputs)
    assert player.sleeps == [30]

    e = m["embedding"]
    assert e["mode"] == "batch" and e["batch"]["job_arn"] == JOB_ARN and e["batch"]["records"] == len(player.inputs)
    assert e["batch"]["record_errors"] == 2 and e["batch"]["retried_on_demand"] == 1 and e["batch"]["lost"] == 1
    (failed,) = m["failed"]
    assert failed["key"] == "tenants/globex/security.txt" and "input too long" in failed["reason"]
    assert "rejected the input" in failed["reason"]
    assert m["statuses"] == {"indexed": 3, "failed": 1}

    # each chunk carries the vector the job produced for its text (or the on-demand retry's)
    by_text = {r["modelInput"]["inputText"]: r for r in player.inputs}
    docs = cluster.docs(f"{ALIAS}-v002")
    assert {d["source_key"] for _, d in docs} == {"tenants/acme/invoices.txt", "tenants/acme/cafeteria.txt",
                                                  "tenants/globex/parking.txt"}
    for _, doc in docs:
        (text,) = [t for t in by_text if t.endswith("\n" + doc["text"])]
        np.testing.assert_allclose(doc["vector"], app.pipeline.embedder._vec(text), atol=1e-6)
    # only the failed records were embedded on demand
    assert all("Lunch is served" in t for t in app.pipeline.embedder.texts)

    # the ledger: batch tokens at the batch price, the retry at the on-demand price, per tenant
    tokens = {"acme": 0, "globex": 0}
    for r in player.inputs:
        text = r["modelInput"]["inputText"]
        if "Lunch is served" in text or "Lost badges" in text:
            continue
        tenant = "acme" if any(k in text for k in ("Invoices", "invoices", "cafeteria", "archive")) else "globex"
        tokens[tenant] += len(text.split())
    for tenant in ("acme", "globex"):
        rows = {r["model_id"]: r for r in app.ledger.totals(tenant, 1) if r["purpose"] == "index_build"}
        batch_row = rows[f"{TITAN}@batch"]
        assert batch_row["input_tokens"] == tokens[tenant]
        assert batch_row["cost_usd"] == pytest.approx(tokens[tenant] * 0.00001 / 1000, abs=1e-9)
    assert rows.get(TITAN) is None  # globex had no successful retry
    acme = {r["model_id"]: r for r in app.ledger.totals("acme", 1) if r["purpose"] == "index_build"}
    assert acme[TITAN]["input_tokens"] > 0 and acme[TITAN]["cost_usd"] == pytest.approx(
        acme[TITAN]["input_tokens"] * 0.00002 / 1000, abs=1e-9)
    # the build's spend is the tenant's for cost allocation, but not against its request budget
    from ragline.ledger.budget import BudgetGuard
    from ragline.settings import CostSettings

    # (the fixture's own ingestion is charged as ingest_embedding and does count)
    other = sum(r["cost_usd"] for r in app.ledger.totals("acme", 1) if r["purpose"] != "index_build")
    guard = BudgetGuard(CostSettings(hard_budget_usd={"*": 1.0}), app.ledger)
    assert acme[TITAN]["cost_usd"] > 0
    assert guard.check("acme").spent_usd == pytest.approx(other, abs=1e-12)


def test_a_failed_batch_job_names_the_job_and_leaves_nothing_behind(env):
    app, cluster, s3, _ = env
    player = PlayBedrock(s3, app.blobs.bucket, app.pipeline.embedder)
    client = bedrock_client()
    with Stubber(client) as stub:
        stub.add_response("create_model_invocation_job", {"jobArn": JOB_ARN})
        stub.add_response("get_model_invocation_job", job_response("InProgress"), {"jobIdentifier": JOB_ARN})
        stub.add_response("get_model_invocation_job",
                          job_response("Failed", "Access denied: the role cannot read the input"),
                          {"jobIdentifier": JOB_ARN})
        with pytest.raises(ModelError) as err:
            build_aws(app, "v002", batch=make_batch(app, s3, client, player))
    assert JOB_ARN in str(err.value) and "ended Failed: Access denied" in str(err.value)
    assert "ragline-ragline-chunks-v002" in str(err.value)
    assert f"{ALIAS}-v002" not in cluster.indices and cluster.requests("DELETE", f"/{ALIAS}-v002")
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    assert "Contents" not in s3.list_objects_v2(Bucket=app.blobs.bucket, Prefix=f"_index_versions/{ALIAS}/")


def test_a_small_build_stays_on_demand_even_with_batch_configured(env):
    app, _, s3, _ = env
    app.settings.index_build.batch_min_chunks = 10_000
    player = PlayBedrock(s3, app.blobs.bucket, app.pipeline.embedder)
    client = bedrock_client()
    with Stubber(client):  # no responses queued: any Bedrock call would fail the test
        m = build_aws(app, "v002", batch=make_batch(app, s3, client, player))
    assert m["embedding"]["mode"] == "on_demand" and m["embedding"]["planned_chunks"] == m["chunks"] > 0
    assert m["statuses"] == {"indexed": 4} and player.sleeps == []


# --- validate and the CLI on AWS ----------------------------------------------------------------------


def test_validate_with_qa_on_aws_compares_both_versions(env, tmp_path):
    app, cluster, _, _ = env
    ops.build(app, "v002")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(d) for d in [
        {"question": "How long are invoices kept?", "answers": [{"text": "ten years"}]},
        {"question": "When is lunch served?", "answers": [{"text": "from noon until two"}]},
        {"question": "Who audits the accounts?", "answers": [{"text": "Ines Markovic"}]},
    ]))
    cluster.log.clear()
    out = ops.validate(app, "v002", qa=qa, tenant="acme")
    assert out["baseline"] == "v1" and out["candidate"] == "v002"
    # both versions were read directly (never through the alias), routed to the asking tenant
    searched = {r["path"] for r in cluster.requests("POST") if r["path"].endswith("/_search")}
    assert searched == {f"/{ALIAS}-v1/_search", f"/{ALIAS}-v002/_search"}
    assert {r["params"]["routing"] for r in cluster.requests("POST") if r["path"].endswith("/_search")} == {"acme"}
    for side in ("v1", "v002"):
        assert out["qa"][side]["support@5"] == round(2 / 3, 4)
    assert out["qa"]["delta"] == {"support@1": 0.0, "support@3": 0.0, "support@5": 0.0, "answer_f1": 0.0}


def test_cli_versions_build_promote_rollback_on_aws(env, monkeypatch):
    from typer.testing import CliRunner

    from ragline import cli

    app, cluster, _, _ = env
    monkeypatch.setattr(factory, "default", lambda: app)
    run = CliRunner().invoke(cli.app, ["index", "build", "--json"])
    assert run.exit_code == 0, run.output
    built = json.loads(run.output)
    assert built["name"] == "v002" and built["index"] == f"{ALIAS}-v002"
    run = CliRunner().invoke(cli.app, ["index", "versions", "--json"])
    rows = {r["name"]: r for r in json.loads(run.output)}
    assert rows["v1"]["live"] and rows["v002"]["chunks"] == built["chunks"]
    assert CliRunner().invoke(cli.app, ["index", "promote", "v002"]).exit_code == 0
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v002"}
    assert CliRunner().invoke(cli.app, ["index", "rollback"]).exit_code == 0
    assert cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    run = CliRunner().invoke(cli.app, ["index", "promote", "nope"])
    assert run.exit_code == 1 and "no index version nope" in run.output and "Traceback" not in run.output
    run = CliRunner().invoke(cli.app, ["index", "build", "--name", "Bad/Name"])
    assert run.exit_code == 1 and "invalid index version name" in run.output


def test_a_job_past_its_deadline_is_reported_with_its_arn(env):
    app, _, s3, _ = env
    player = PlayBedrock(s3, app.blobs.bucket, app.pipeline.embedder)
    player.sleep = lambda seconds: setattr(player, "now", player.now + seconds)  # nothing is ever written
    client = bedrock_client()
    batch = BedrockBatchEmbedder(role_arn=ROLE, s3_uri=f"s3://{app.blobs.bucket}/_index_versions/batch",
                                 model_id=TITAN, dimensions=TitanLike.dimensions, settings=app.settings,
                                 bedrock_client=client, s3_client=s3, poll_s=600, deadline_s=1500,
                                 clock=player.clock, sleep=player.sleep)
    with Stubber(client) as stub:
        stub.add_response("create_model_invocation_job", {"jobArn": JOB_ARN})
        for _ in range(4):  # polled at 0, 600, 1200 and 1500 s
            stub.add_response("get_model_invocation_job", job_response("InProgress"), {"jobIdentifier": JOB_ARN})
        with pytest.raises(ModelError, match=r"ragline-test \(.*k2x9abcd1234\) is still InProgress after 1500 s"):
            batch.embed([("r1", "some text")], "ragline test")
        stub.assert_no_pending_responses()
    assert player.now == 1500


def test_an_isolated_tenants_own_alias_has_its_own_versions_on_aws(tmp_path, aws_region, bucket, s3_client,
                                                                    dynamodb_client, registry_table, ledger_table,
                                                                    query_log_table):
    """Tenant isolation on AWS (moto S3 + DynamoDB, the in-memory MiniCluster for OpenSearch):
    globex has an index of its own (alias ragline-chunks.t.globex, made here up front instead of
    by ``ensure``). A shared build skips globex, so its chunks never enter a shared version; the
    same commands with index_of="globex" build, promote and roll back globex's alias only, and
    the shared alias never moves. A shared tenant named in index_of is refused."""
    from ragline.adapters.local.tenant_index import OWN, TenantRoutedIndex

    own_alias = f"{ALIAS}.t.globex"
    cluster = MiniCluster()
    for alias in (ALIAS, own_alias):
        cluster.indices[f"{alias}-v1"] = {}
        cluster.aliases[alias] = {f"{alias}-v1"}
    settings = Settings(
        backend="aws", region=aws_region, documents_bucket=bucket, registry_table=registry_table,
        ledger_table=ledger_table, query_log_table=query_log_table, opensearch_endpoint="https://search.test",
        home=tmp_path / "home", tenant_isolation_overrides={"globex": OWN},
    )
    shared = OpenSearchIndex(client=cluster.client(), settings=settings, dimensions=TitanLike.dimensions)
    routed = TenantRoutedIndex(shared, shared.for_tenant, settings.isolation_for)
    app = _aws_app(settings, routed, TitanLike(), s3_client, dynamodb_client)
    tenants_in = lambda index: {doc["tenant"] for _, doc in cluster.docs(index)}
    assert tenants_in(f"{ALIAS}-v1") == {"acme"} and tenants_in(f"{own_alias}-v1") == {"globex"}
    before = answers(app)

    m = ops.build(app, "v002")
    assert m["skipped_tenants"] == ["globex"] and tenants_in(f"{ALIAS}-v002") == {"acme"}
    g = ops.build(app, "g2", index_of="globex")
    assert g["index_of"] == "globex" and g["documents"] == len(DOCS["globex"])
    assert tenants_in(f"{own_alias}-g2") == {"globex"}
    assert [v["name"] for v in ops.describe(app, index_of="globex") if v["live"]] == ["v1"]
    ops.promote(app, "g2", index_of="globex")
    assert cluster.aliases[own_alias] == {f"{own_alias}-g2"} and cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    assert answers(app) == before  # the same documents re-embedded: the same results
    ops.rollback(app, index_of="globex")
    assert cluster.aliases[own_alias] == {f"{own_alias}-v1"} and cluster.aliases[ALIAS] == {f"{ALIAS}-v1"}
    with pytest.raises(InvalidInput, match="served by the shared index"):
        ops.build(app, "x", index_of="acme")
    # delete: an old version of the tenant's alias goes (index and manifest); live and rollback
    # target stay, and the shared alias's versions are untouched
    ops.build(app, "g3", index_of="globex")
    ops.promote(app, "g3", index_of="globex")  # live g3, rollback target v1
    assert ops.delete(app, "g2", index_of="globex") == {"deleted": "g2", "index_of": "globex"}
    assert f"{own_alias}-g2" not in cluster.indices and f"{ALIAS}-v002" in cluster.indices
    assert [v["name"] for v in ops.describe(app, index_of="globex")] == ["g3", "v1"]
    for name in ("g3", "v1"):
        with pytest.raises(Conflict, match="live or the rollback target"):
            ops.delete(app, name, index_of="globex")


def test_a_build_under_bedrocks_minimum_records_stays_on_demand(env):
    """Bedrock refuses a batch job under its minimum number of records (a quota, 100 by default):
    a build above batch_min_chunks but with fewer distinct texts than batch_min_records embeds on
    demand, and the manifest says why. Stubber with nothing queued: any Bedrock call would fail."""
    app, _, s3, _ = env
    app.settings.index_build.batch_min_records = 100
    player = PlayBedrock(s3, app.blobs.bucket, app.pipeline.embedder)
    client = bedrock_client()
    with Stubber(client):
        m = build_aws(app, "v002", batch=make_batch(app, s3, client, player))
    assert m["embedding"]["mode"] == "on_demand" and m["statuses"] == {"indexed": 4}
    assert "fewer than Bedrock's minimum of 100 records" in m["embedding"]["batch"]["skipped"]
