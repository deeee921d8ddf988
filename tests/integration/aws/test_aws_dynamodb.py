"""DynamoRegistry, DynamoQueryLog and DynamoLedgerStore against moto's DynamoDB server on
127.0.0.1 (technique: moto ThreadedMotoServer). The TransactionConflict retry path, which moto
never produces, is driven with botocore's Stubber (technique: Stubber with real error shapes).
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from ragline.adapters.aws import DynamoLedgerStore, DynamoQueryLog, DynamoRegistry, StaleWrite
from ragline.adapters.aws.dynamodb import from_item
from ragline.errors import DependencyUnavailable, NotFound
from ragline.models import DocStatus, DocumentRecord, Usage, chunk_id
from ragline.ports import DocumentRegistry, Ledger, QueryLog
from ragline.settings import Settings


def _record(
    tenant: str = "acme", doc_id: str = "doc_1", version: str | None = "v1", **extra
) -> DocumentRecord:
    return DocumentRecord(
        tenant=tenant,
        doc_id=doc_id,
        version=version,
        **{"status": DocStatus.INDEXED, "source_key": f"{tenant}/{doc_id}.pdf", **extra},
    )


# --- registry -----------------------------------------------------------------------------------


@pytest.fixture()
def registry(dynamodb_client, registry_table) -> DynamoRegistry:
    return DynamoRegistry(registry_table, client=dynamodb_client, settings=Settings())


def test_registry_implements_the_port(registry):
    assert isinstance(registry, DocumentRegistry)


def test_registry_round_trips_a_full_record(registry):
    record = _record(
        title="Annual report",
        content_type="application/pdf",
        groups=["finance"],
        pages=3,
        chunk_ids=[chunk_id("doc_1", "v1" * 8, i) for i in range(3)],
        pii={"email": 2},
        flags={"injection": 1},
        embedding_model="amazon.titan-embed-text-v2:0",
        size_bytes=1234,
    )
    registry.put(record)
    assert registry.get("acme", "doc_1") == record
    assert registry.get("acme", "missing") is None
    assert registry.get("other-tenant", "doc_1") is None


def test_registry_stores_twenty_thousand_chunk_ids_within_the_item_limit(
    registry, dynamodb_client, registry_table
):
    ids = [chunk_id("doc_big_" + "x" * 20, "f" * 64, i) for i in range(20000)]  # ~1 MB uncompressed
    registry.put(_record(doc_id="doc_big", chunk_ids=ids))
    assert registry.get("acme", "doc_big").chunk_ids == ids
    raw = dynamodb_client.get_item(
        TableName=registry_table, Key={"pk": {"S": "acme"}, "sk": {"S": "doc_big"}}
    )
    assert len(raw["Item"]["chunk_ids_z"]["B"]) < 350_000


def test_registry_conditional_write_refuses_a_stale_version(registry):
    registry.put(_record(version="v1"), expected_version=None)  # first write: nothing there yet
    registry.put(_record(version="v2"), expected_version="v1")  # we read v1, we write v2: fine

    # a worker that also read v1 and now tries to write v3 must lose against v2
    with pytest.raises(StaleWrite) as info:
        registry.put(_record(version="v3"), expected_version="v1")
    assert info.value.http_status == 409 and not info.value.transient
    assert "'v2'" in info.value.message
    assert registry.get("acme", "doc_1").version == "v2"

    with pytest.raises(StaleWrite):
        registry.put(_record(version="v9"), expected_version=None)  # "expected none" but one exists
    registry.put(_record(version="v9"))  # no expectation: unconditional
    assert registry.get("acme", "doc_1").version == "v9"


def test_registry_only_one_of_many_racing_writers_wins(registry):
    registry.put(_record(version="v0"))
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        try:
            registry.put(_record(version=f"w{n}"), expected_version="v0")
            result = f"w{n}"
        except StaleWrite:
            result = "stale"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(attempt, range(8)))
    winners = [o for o in outcomes if o != "stale"]
    assert len(winners) == 1
    assert registry.get("acme", "doc_1").version == winners[0]


def test_registry_attempt_claim_is_a_condition_on_the_stored_attempt(registry):
    # the ingestion claim: "write only if the record still holds the attempt I read"
    registry.put(_record(attempt="a1"), expected_attempt=None)  # nothing there yet
    registry.put(_record(version="v2", attempt="a2"), expected_attempt="a1")
    with pytest.raises(StaleWrite) as info:  # a worker that also read a1 lost to a2
        registry.put(_record(version="v3", attempt="a3"), expected_attempt="a1")
    assert "'a2'" in info.value.message
    with pytest.raises(StaleWrite):  # "nothing there" is wrong now
        registry.put(_record(attempt="a4"), expected_attempt=None)
    stored = registry.get("acme", "doc_1")
    assert (stored.version, stored.attempt) == ("v2", "a2")
    # both conditions together: each must hold
    with pytest.raises(StaleWrite):
        registry.put(_record(version="v5", attempt="a5"), expected_version="v1", expected_attempt="a2")
    registry.put(_record(version="v5", attempt="a5"), expected_version="v2", expected_attempt="a2")
    # a record deleted meanwhile fails an attempt condition (the attempt was overtaken by a delete)
    registry.delete("acme", "doc_1")
    with pytest.raises(StaleWrite):
        registry.put(_record(attempt="a6"), expected_attempt="a5")
    assert registry.get("acme", "doc_1") is None
    # a record written before attempts existed (no attribute) counts as "no attempt"
    registry.put(_record(doc_id="doc_legacy"))
    registry.put(_record(doc_id="doc_legacy", attempt="b1"), expected_attempt=None)
    assert registry.get("acme", "doc_legacy").attempt == "b1"


def test_an_older_upload_overtaken_mid_commit_stands_down_on_the_dynamodb_registry(registry, tmp_path):
    # the pipeline's claim protocol over DynamoDB conditional writes (moto server) with the
    # local index: the newer upload runs whole while the older one has staged
    from ragline_testing import HashEmbedder

    from ragline.adapters.local.index import LocalHybridIndex
    from ragline.ingest.pipeline import IngestItem, IngestPipeline
    from ragline.models import SearchRequest, TenantScope

    emb = HashEmbedder()
    index = LocalHybridIndex(tmp_path / "index.db", emb.dimensions)
    pipeline = IngestPipeline(registry=registry, index=index, embedder=emb)
    key = "tenants/acme/runbook.md"
    real_stage = index.stage
    state = {"armed": True}

    def stage(chunks):
        real_stage(chunks)
        if state.pop("armed", False):
            newer = pipeline.ingest(IngestItem(tenant="acme", key=key, sequencer="0000000020",
                                               data=b"# Runbook\n\nUse the violet switch.\n"))
            assert newer.status == "indexed"

    index.stage = stage
    older = pipeline.ingest(IngestItem(tenant="acme", key=key, sequencer="0000000010",
                                       data=b"# Runbook\n\nUse the amber switch.\n"))
    assert older.status == "superseded"
    hits = index.search(TenantScope(tenant="acme"), SearchRequest(text="switch", vector=emb.embed_query("switch")))
    assert hits and all("violet" in h.text for h in hits)
    rec = registry.get("acme", older.doc_id)
    assert rec.status == DocStatus.INDEXED and sorted(rec.chunk_ids) == sorted(index.all_chunk_ids("acme", older.doc_id))


def test_registry_tombstones_carry_an_expiry_and_a_new_upload_drops_it(registry, dynamodb_client, registry_table):
    import time as _time

    registry.put(_record(doc_id="doc_gone", status=DocStatus.DELETED, version=None))
    raw = dynamodb_client.get_item(TableName=registry_table, Key={"pk": {"S": "acme"}, "sk": {"S": "doc_gone"}})["Item"]
    expires = int(raw["expires_at"]["N"])
    assert abs(expires - (_time.time() + registry.tombstone_days * 86400)) < 60  # the table's TTL attribute
    assert registry.get("acme", "doc_gone").status == DocStatus.DELETED  # the attribute is not a field
    # the document uploaded again: the item is replaced whole, no expiry left on it
    registry.put(_record(doc_id="doc_gone", status=DocStatus.INDEXED))
    raw = dynamodb_client.get_item(TableName=registry_table, Key={"pk": {"S": "acme"}, "sk": {"S": "doc_gone"}})["Item"]
    assert "expires_at" not in raw
    registry.put(_record(doc_id="doc_live"))
    raw = dynamodb_client.get_item(TableName=registry_table, Key={"pk": {"S": "acme"}, "sk": {"S": "doc_live"}})["Item"]
    assert "expires_at" not in raw


def test_registry_put_stamps_the_write_time_and_lists_by_source_key_as_sqlite_does(registry):
    # parity with the SQLite registry (a GET /v1/documents showed a dead-lettered document's last
    # index time, and listed documents in doc-id hash order, on AWS only)
    registry.put(_record(doc_id="doc_b", source_key="b/second.md", updated_at=datetime(2020, 1, 1, tzinfo=UTC)))
    registry.put(_record(doc_id="doc_a", source_key="z/last.md"))
    registry.put(_record(doc_id="doc_z", source_key="a/first.md"))
    got = registry.get("acme", "doc_b")
    assert got.updated_at > datetime.now(UTC) - timedelta(minutes=5)
    assert [r.source_key for r in registry.list("acme")] == ["a/first.md", "b/second.md", "z/last.md"]


def test_registry_list_pages_through_a_tenant_and_delete_removes(registry):
    big = "y" * 50_000  # ~50 KB items: 1 MB query pages hold ~20, so 45 items need several pages
    for i in range(45):
        registry.put(_record(doc_id=f"doc_{i:03d}", title=big))
    registry.put(_record(tenant="other", doc_id="doc_x"))
    listed = registry.list("acme")
    assert sorted(r.doc_id for r in listed) == [f"doc_{i:03d}" for i in range(45)]
    registry.delete("acme", "doc_000")
    assert registry.get("acme", "doc_000") is None
    assert len(registry.list("acme")) == 44
    assert [r.doc_id for r in registry.list("other")] == ["doc_x"]


# --- query log ----------------------------------------------------------------------------------


class _Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture()
def clock() -> _Clock:
    return _Clock(datetime(2025, 3, 10, 12, 0, tzinfo=UTC))


@pytest.fixture()
def query_log(dynamodb_client, query_log_table, clock) -> DynamoQueryLog:
    return DynamoQueryLog(
        query_log_table, client=dynamodb_client, settings=Settings(), ttl_days=30, now=clock
    )


def test_query_log_implements_the_port(query_log):
    assert isinstance(query_log, QueryLog)


def test_query_log_stores_entry_with_ttl_and_feedback_replaces_per_user(
    query_log, dynamodb_client, query_log_table, clock
):
    entry = {
        "tenant": "acme",
        "query_id": "q1",
        "question": "why?",
        "latency_ms": 12.5,
        "citations": [{"doc_id": "d", "score": 0.91}],
        "cached": False,
    }
    query_log.append(entry)
    got = query_log.get("acme", "q1")
    assert {k: got[k] for k in entry} == entry
    assert got["feedback"] == []
    assert query_log.get("other", "q1") is None  # tenants never see each other's log

    raw = dynamodb_client.get_item(TableName=query_log_table, Key={"pk": {"S": "acme"}, "sk": {"S": "q1"}})
    assert int(raw["Item"]["expires_at"]["N"]) == int((clock.now + timedelta(days=30)).timestamp())

    query_log.add_feedback("acme", "q1", "alice", 1, "good")
    clock.tick(minutes=1)
    query_log.add_feedback("acme", "q1", "bob", -1, None)
    clock.tick(minutes=1)
    query_log.add_feedback("acme", "q1", "alice", -1, "changed my mind")
    feedback = query_log.get("acme", "q1")["feedback"]
    assert [(f["user"], f["rating"], f["comment"]) for f in feedback] == [
        ("bob", -1, None),
        ("alice", -1, "changed my mind"),
    ]
    # the rating the online evaluation and A/B tests count (it was missing on this backend)
    assert query_log.get("acme", "q1")["rating"] == -1
    assert query_log.recent("acme", 10)[0]["rating"] == -1

    query_log.append(entry | {"question": "retried"})  # a retried append keeps the first entry and feedback
    assert query_log.get("acme", "q1")["question"] == "why?"
    assert len(query_log.get("acme", "q1")["feedback"]) == 2


def test_query_log_stores_numpy_numbers_and_enums_and_refuses_reserved_names(query_log):
    query_log.append(
        {
            "tenant": "acme",
            "query_id": "q9",
            "score": np.float64(0.25),
            "rank": np.int64(3),
            "status": DocStatus.INDEXED,
            "groups": frozenset({"b", "a"}),
            "nan": float("nan"),
        }
    )
    got = query_log.get("acme", "q9")
    assert (got["score"], got["rank"], got["status"], got["groups"]) == (0.25, 3, "indexed", ["a", "b"])
    assert "nan" not in got  # DynamoDB has no NaN; an unknown value is left out rather than invented
    for reserved in ("feedback", "pk", "expires_at", "fb#alice"):
        with pytest.raises(ValueError, match="reserved"):
            query_log.append({"tenant": "acme", "query_id": "q10", reserved: 1})


def test_feedback_on_an_unknown_query_is_not_found(query_log):
    with pytest.raises(NotFound):
        query_log.add_feedback("acme", "nope", "alice", 1, None)
    with pytest.raises(NotFound):  # nor can another tenant rate acme's query
        query_log.append({"tenant": "acme", "query_id": "q1"})
        query_log.add_feedback("evil", "q1", "mallory", -1, None)


def test_query_log_recent_is_newest_first_per_tenant_and_across_days(query_log, clock):
    for i in range(7):
        query_log.append({"tenant": "acme" if i % 2 == 0 else "beta", "query_id": f"q{i}"})
        clock.tick(hours=10)  # spreads the entries over three days
    assert [e["query_id"] for e in query_log.recent("acme", 10)] == ["q6", "q4", "q2", "q0"]
    assert [e["query_id"] for e in query_log.recent("acme", 2)] == ["q6", "q4"]
    assert [e["query_id"] for e in query_log.recent(None, 5)] == ["q6", "q5", "q4", "q3", "q2"]
    assert [e["query_id"] for e in query_log.recent(None, 100)] == [f"q{i}" for i in range(6, -1, -1)]
    assert query_log.recent("nobody", 5) == []


# --- ledger -------------------------------------------------------------------------------------


@pytest.fixture()
def ledger(dynamodb_client, ledger_table, clock) -> DynamoLedgerStore:
    return DynamoLedgerStore(ledger_table, client=dynamodb_client, settings=Settings(), now=clock)


def _request_records(client, table: str, tenant: str) -> list[dict]:
    pages = client.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": {"S": f"tenant#{tenant}"}, ":p": {"S": "req#"}},
        ConsistentRead=True,
    )
    return [from_item(item) for page in pages for item in page["Items"]]


def test_ledger_implements_the_port(ledger):
    assert isinstance(ledger, Ledger)


def test_ledger_aggregates_by_day_model_and_purpose_with_exact_costs(ledger, clock):
    ledger.record(
        "acme",
        "q1",
        [
            Usage(
                model_id="amazon.titan-embed-text-v2:0",
                purpose="embed_query",
                input_tokens=7,
                cost_usd=0.00000014,
            ),
            Usage(
                model_id="haiku", purpose="generate", input_tokens=900, output_tokens=120, cost_usd=0.000375
            ),
        ],
    )
    ledger.record(
        "acme",
        "q2",
        [Usage(model_id="haiku", purpose="generate", input_tokens=100, output_tokens=10, cost_usd=0.1)],
    )
    ledger.record(
        "acme",
        "q2b",
        [Usage(model_id="haiku", purpose="generate", input_tokens=100, output_tokens=10, cost_usd=0.2)],
    )
    clock.tick(days=1)
    ledger.record(
        "acme", "q3", [{"model_id": "haiku", "purpose": "generate", "input_tokens": 1, "cost_usd": 0.7}]
    )
    ledger.record("beta", "q4", [Usage(model_id="haiku", purpose="generate", input_tokens=5)])

    totals = ledger.totals("acme", days=2)
    assert totals == [
        {
            "day": "2025-03-10",
            "model_id": "amazon.titan-embed-text-v2:0",
            "purpose": "embed_query",
            "input_tokens": 7,
            "output_tokens": 0,
            "cost_usd": 0.00000014,
            "calls": 1,
            "estimated_calls": 0,
        },
        {
            "day": "2025-03-10",
            "model_id": "haiku",
            "purpose": "generate",
            "input_tokens": 1100,
            "output_tokens": 140,
            "cost_usd": 0.300375,
            "calls": 3,
            "estimated_calls": 0,
        },
        {
            "day": "2025-03-11",
            "model_id": "haiku",
            "purpose": "generate",
            "input_tokens": 1,
            "output_tokens": 0,
            "cost_usd": 0.7,
            "calls": 1,
            "estimated_calls": 0,
        },
    ]
    assert [t["day"] for t in ledger.totals("acme", days=1)] == ["2025-03-11"]
    assert [t["input_tokens"] for t in ledger.totals("beta", days=30)] == [5]


def test_ledger_recording_the_same_request_twice_counts_once(ledger, dynamodb_client, ledger_table):
    usages = [Usage(model_id="haiku", purpose="generate", input_tokens=10, output_tokens=2, cost_usd=0.01)]
    ledger.record("acme", "q1", usages, record_id="build-1")
    ledger.record("acme", "q1", usages, record_id="build-1")  # e.g. a resumed job recording again
    ledger.record("acme", "q1", [Usage(model_id="haiku", purpose="generate", input_tokens=3)])  # a later call
    (total,) = ledger.totals("acme", days=1)
    assert (total["input_tokens"], total["calls"], total["cost_usd"]) == (13, 2, 0.01)
    assert len(_request_records(dynamodb_client, ledger_table, "acme")) == 2


def test_ledger_repeated_identical_calls_are_each_charged_like_sqlite(ledger, dynamodb_client, ledger_table, tmp_path):
    """A judge scores one answer three times with the same token counts: three charges on both
    backends (the DynamoDB key was a digest of the rows, which dropped two of them)."""
    from ragline.adapters.local.registry import SqliteLedger

    sqlite = SqliteLedger(tmp_path / "ledger.db")
    for store in (ledger, sqlite):
        for _ in range(3):
            store.record("acme", "q_judged", [Usage(model_id="haiku", purpose="judge", input_tokens=900,
                                                    output_tokens=20, cost_usd=0.001)])
    dynamo_total, sqlite_total = ledger.totals("acme", 1), sqlite.totals("acme", 1)
    assert [(r["calls"], r["input_tokens"]) for r in dynamo_total] == [(3, 2700)]
    assert [(r["calls"], r["input_tokens"]) for r in sqlite_total] == [(3, 2700)]
    assert len(_request_records(dynamodb_client, ledger_table, "acme")) == 3


def test_ledger_keeps_the_price_version_and_counts_estimated_calls(ledger, dynamodb_client, ledger_table, tmp_path):
    from ragline.adapters.local.registry import SqliteLedger

    sqlite = SqliteLedger(tmp_path / "ledger.db")
    usages = [Usage(model_id="haiku", purpose="generation", input_tokens=50, output_tokens=5, cost_usd=0.001,
                    estimated=True, price_version="2024-11"),
              Usage(model_id="haiku", purpose="generation", input_tokens=60, output_tokens=6, cost_usd=0.001,
                    price_version="2024-11")]
    for store in (ledger, sqlite):
        store.record("acme", "q1", usages)
        (row,) = store.totals("acme", 1)
        assert (row["calls"], row["estimated_calls"]) == (2, 1)
    (item,) = _request_records(dynamodb_client, ledger_table, "acme")
    assert [u["price_version"] for u in item["usages"]] == ["2024-11", "2024-11"]
    assert [r["price_version"] for r in sqlite.records("acme")] == ["2024-11", "2024-11"]


def test_ledger_request_record_and_aggregate_commit_together_or_not_at_all(
    ledger, dynamodb_client, ledger_table
):
    # corrupt today's aggregate so the ADD must fail: the per-request record must not be written either
    dynamodb_client.put_item(
        TableName=ledger_table,
        Item={
            "pk": {"S": "tenant#acme"},
            "sk": {"S": "day#2025-03-10#model#haiku#purpose#generate"},
            "input_tokens": {"S": "not a number"},
        },
    )
    with pytest.raises((DependencyUnavailable, ClientError)):
        ledger.record("acme", "q1", [Usage(model_id="haiku", purpose="generate", input_tokens=10)])
    assert _request_records(dynamodb_client, ledger_table, "acme") == []


def test_ledger_concurrent_records_sum_exactly(ledger, dynamodb_client, ledger_table):
    models = ["haiku", "sonnet", "amazon.titan-embed-text-v2:0"]
    purposes = ["generate", "embed_query"]

    def worker(thread: int) -> None:
        rng = random.Random(thread)
        for n in range(10):
            usages = [
                Usage(
                    model_id=rng.choice(models),
                    purpose=rng.choice(purposes),
                    input_tokens=rng.randint(0, 5000),
                    output_tokens=rng.randint(0, 800),
                    cost_usd=rng.randint(0, 10**6) / 10**6,
                )
                for _ in range(rng.randint(1, 3))
            ]
            ledger.record("acme", f"t{thread}-q{n}", usages)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, range(16)))

    records = _request_records(dynamodb_client, ledger_table, "acme")
    assert len(records) == 160
    expected: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for record in records:
        for u in record["usages"]:
            e = expected[(record["day"], u["model_id"], u["purpose"])]
            e[0] += u["input_tokens"]
            e[1] += u["output_tokens"]
            e[2] += u["cost_usd_nanos"]
            e[3] += 1
    totals = {(t["day"], t["model_id"], t["purpose"]): t for t in ledger.totals("acme", days=1)}
    assert set(totals) == set(expected)
    for key, (tin, tout, nanos, calls) in expected.items():
        t = totals[key]
        assert (t["input_tokens"], t["output_tokens"], round(t["cost_usd"] * 10**9), t["calls"]) == (
            tin,
            tout,
            nanos,
            calls,
        )


def _cancelled(stubber: Stubber, *codes: str) -> None:
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled",
        http_status_code=400,
        modeled_fields={"CancellationReasons": [{"Code": c} for c in codes]},
        expected_params={"TransactItems": ANY},
    )


def _stubbed_ledger(aws_region: str) -> tuple[DynamoLedgerStore, Stubber, list[float]]:
    client = boto3.session.Session().client("dynamodb", region_name=aws_region)
    sleeps: list[float] = []
    store = DynamoLedgerStore(
        "ledger", client=client, settings=Settings(), sleep=sleeps.append, conflict_attempts=3
    )
    return store, Stubber(client), sleeps


def test_ledger_retries_a_transaction_conflict(aws_region):
    store, stubber, sleeps = _stubbed_ledger(aws_region)
    _cancelled(stubber, "None", "TransactionConflict")
    stubber.add_response("transact_write_items", {}, {"TransactItems": ANY})
    with stubber:
        store.record("acme", "q1", [Usage(model_id="m", purpose="generate", input_tokens=1)])
        stubber.assert_no_pending_responses()
    assert len(sleeps) == 1


def test_ledger_gives_up_on_persistent_conflicts_with_a_transient_error(aws_region):
    store, stubber, sleeps = _stubbed_ledger(aws_region)
    for _ in range(3):
        _cancelled(stubber, "None", "TransactionConflict")
    with stubber, pytest.raises(DependencyUnavailable, match="TransactionConflict"):
        store.record("acme", "q1", [Usage(model_id="m", purpose="generate", input_tokens=1)])
    assert len(sleeps) == 2


def test_ledger_does_not_retry_a_validation_cancellation(aws_region):
    store, stubber, sleeps = _stubbed_ledger(aws_region)
    _cancelled(stubber, "None", "ValidationError")
    with stubber, pytest.raises(DependencyUnavailable, match="ValidationError"):
        store.record("acme", "q1", [Usage(model_id="m", purpose="generate", input_tokens=1)])
    assert sleeps == []


def _committed(client, table: str, tenant: str, day: str) -> int:
    item = client.get_item(TableName=table, ConsistentRead=True,
                           Key={"pk": {"S": f"tenant#{tenant}"}, "sk": {"S": f"budget#{day}"}}).get("Item")
    return int(item["committed_nanos"]["N"]) if item else 0


def test_budget_reservations_serialise_so_parallel_requests_cannot_pass_the_limit(ledger, dynamodb_client, ledger_table):
    """moto's server: 16 threads reserve 1,000 nano-dollars each against a 10,000 limit at once;
    the conditional ADD lets exactly ten through. Recording releases the reservation in the same
    transaction, so the committed spend ends equal to the recorded one."""
    day = "2025-03-10"
    with ThreadPoolExecutor(16) as pool:
        granted = list(pool.map(lambda _: ledger.reserve("acme", day, 1000, 10_000), range(16)))
    assert granted.count(True) == 10 and _committed(dynamodb_client, ledger_table, "acme", day) == 10_000
    for _ in range(10):  # each request cost 300 of its 1,000 worst case
        ledger.record("acme", "q", [Usage(model_id="haiku", purpose="generation", input_tokens=1, cost_usd=300e-9)],
                      release=(day, 1000))
    assert _committed(dynamodb_client, ledger_table, "acme", day) == 3000
    assert sum(round(r["cost_usd"] * 1e9) for r in ledger.totals("acme", 1)) == 3000
    assert ledger.reserve("acme", day, 7000, 10_000) and not ledger.reserve("acme", day, 1, 10_000)
    ledger.release("acme", day, 7000)
    assert _committed(dynamodb_client, ledger_table, "acme", day) == 3000
    assert _committed(dynamodb_client, ledger_table, "beta", day) == 0  # per tenant


def test_budget_first_reservation_of_a_day_counts_spend_recorded_before(ledger, dynamodb_client, ledger_table):
    """Spend recorded before any reservation (a ledger from before reservations, or an index
    build, which an operator causes and the tenant's budget does not count) seeds the day."""
    day = "2025-03-10"
    ledger.record("acme", "old", [Usage(model_id="haiku", purpose="generation", cost_usd=4000e-9)])
    ledger.record("acme", "build", [Usage(model_id="titan", purpose="index_build", cost_usd=90_000e-9)])
    dynamodb_client.delete_item(TableName=ledger_table, Key={"pk": {"S": "tenant#acme"}, "sk": {"S": f"budget#{day}"}})
    assert not ledger.reserve("acme", day, 7000, 10_000)  # 4,000 + 7,000 > 10,000
    assert ledger.reserve("acme", day, 6000, 10_000)
    assert _committed(dynamodb_client, ledger_table, "acme", day) == 10_000


def test_budget_reservations_are_leases_a_dead_request_cannot_hold_all_day(ledger, dynamodb_client, ledger_table, clock):
    """moto's server: the lease items, their conditional deletes and the counter ADDs in one
    transaction (the contract is shared with the SQLite ledger's test)."""
    from ragline_testing import check_budget_leases

    check_budget_leases(ledger, lambda t: _committed(dynamodb_client, ledger_table, t, "2025-03-10"),
                        "2025-03-10", clock().timestamp())


def test_budget_alert_is_raised_once_a_day(ledger):
    assert ledger.first_alert("acme", "2025-03-10", "soft")
    assert not ledger.first_alert("acme", "2025-03-10", "soft")
    assert ledger.first_alert("acme", "2025-03-11", "soft") and ledger.first_alert("beta", "2025-03-10", "soft")


def test_budget_seed_counts_spend_from_before_even_after_a_record_created_the_item(ledger, dynamodb_client,
                                                                                    ledger_table):
    """moto's server: the day's aggregate holds 4,000 nano-dollars of spend from before budgets
    were reserved (written directly, as an older release did); a record then creates the budget
    item with its own 1,000. The first reservation adds the 4,000 once."""
    day = "2025-03-10"
    dynamodb_client.put_item(TableName=ledger_table, Item={
        "pk": {"S": "tenant#acme"}, "sk": {"S": f"day#{day}#model#haiku#purpose#generation"},
        "tenant": {"S": "acme"}, "day": {"S": day}, "model_id": {"S": "haiku"}, "purpose": {"S": "generation"},
        "input_tokens": {"N": "10"}, "output_tokens": {"N": "1"}, "cost_usd_nanos": {"N": "4000"}, "calls": {"N": "1"}})
    ledger.record("acme", "new", [Usage(model_id="haiku", purpose="generation", cost_usd=1000e-9)])
    assert _committed(dynamodb_client, ledger_table, "acme", day) == 1000  # not seeded yet
    assert not ledger.reserve("acme", day, 6000, 10_000)  # 5,000 + 6,000 > 10,000
    assert _committed(dynamodb_client, ledger_table, "acme", day) == 5000
    assert ledger.reserve("acme", day, 5000, 10_000) and not ledger.reserve("acme", day, 1, 10_000)


def test_budget_updates_retry_a_transaction_conflict():
    """botocore Stubber (moto never raises it): real DynamoDB answers an UpdateItem that collides
    with an ongoing TransactWriteItems on the same item with TransactionConflictException."""
    client = boto3.session.Session().client("dynamodb", region_name="us-east-1",
                                            aws_access_key_id="x", aws_secret_access_key="x")
    store = DynamoLedgerStore("ledger", client=client, settings=Settings(), sleep=lambda s: None)
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_client_error("update_item", service_error_code="TransactionConflictException",
                                  service_message="Transaction is ongoing for the item", http_status_code=400)
            stub.add_response("update_item", {})
        assert store.reserve("acme", "2026-12-07", 1000, 10_000) is True
        store.release("acme", "2026-12-07", 1000)
        stub.assert_no_pending_responses()
