"""Ingestion embedding costs on the AWS ports (technique: the DynamoDB ledger on moto's server on
127.0.0.1 — real TransactWriteItems with ADD — and the Titan v2 embedder on a real boto3
bedrock-runtime client under botocore's Stubber, answering recorded-shape Titan responses that
carry ``inputTextTokenCount``; registry, index and cache are the embedded local adapters).

Proves: each document's Titan-reported tokens are charged to its own tenant with purpose
``ingest_embedding``, priced from the shipped price table, with the daily aggregates equal to the
per-request items; a response without ``inputTextTokenCount`` is estimated and flagged; unchanged
bytes make no model call and no ledger write; tenant B never sees tenant A's ingestion.
"""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from ragline import factory
from ragline.adapters.aws import BedrockEmbedder, DynamoLedgerStore
from ragline.adapters.aws.bedrock import bedrock_config
from ragline.adapters.aws.dynamodb import from_item
from ragline.adapters.local.cache_store import SqliteCacheStore
from ragline.adapters.local.index import LocalHybridIndex
from ragline.adapters.local.registry import SqliteRegistry
from ragline.ingest.pipeline import IngestItem
from ragline.ledger.pricing import NANOS, load_price_table
from ragline.models import Principal
from ragline.settings import Settings
from ragline.tokens import count_tokens

TITAN = "amazon.titan-embed-text-v2:0"
DOC_A = b"# Invoices\n\nInvoices are kept for ten years in the archive.\n"
DOC_B = b"# Holidays\n\nEvery employee has twenty-five days of paid leave a year.\n"


def titan_response(i: int, tokens: int | None) -> dict:
    vector = [0.0] * 256
    vector[i] = 1.0
    body = {"embedding": vector, "embeddingsByType": {"float": vector}}
    if tokens is not None:
        body["inputTextTokenCount"] = tokens
    payload = json.dumps(body).encode()
    return {"body": StreamingBody(io.BytesIO(payload), len(payload)), "contentType": "application/json"}


@pytest.fixture()
def aws_app(tmp_path, aws_region, dynamodb_client, ledger_table):
    settings = Settings(region=aws_region, embedding_dimensions=256, home=tmp_path / "home", ledger_table=ledger_table)
    client = boto3.session.Session().client("bedrock-runtime", region_name=aws_region, config=bedrock_config())
    sent: list[str] = []  # the texts Titan was asked to embed, as the request bodies carried them
    client.meta.events.register("provide-client-params.bedrock-runtime.InvokeModel",
                                lambda params, **_: sent.append(json.loads(params["body"])["inputText"]))
    with Stubber(client) as stubber:
        stubber.sent = sent
        embedder = BedrockEmbedder(client=client, settings=settings, concurrency=1)  # responses in text order
        app = factory.build(
            settings, embedder=embedder,
            ledger=DynamoLedgerStore(ledger_table, client=dynamodb_client, settings=settings),
            registry=SqliteRegistry(tmp_path / "state.db"),
            index=LocalHybridIndex(tmp_path / "index.db", 256),
            cache_store=SqliteCacheStore(tmp_path / "cache.db", 256),
        )
        yield app, stubber
        embedder.close()


def _request_items(client, table: str, tenant: str) -> list[dict]:
    out = client.query(
        TableName=table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": {"S": f"tenant#{tenant}"}, ":p": {"S": "req#"}}, ConsistentRead=True,
    )
    return [from_item(i) for i in out["Items"]]


def test_titan_token_counts_are_charged_per_tenant_in_the_dynamodb_ledger(aws_app, dynamodb_client, ledger_table):
    app, stubber = aws_app
    # one chunk per document; the batch embeds both tenants' chunks in one embed_documents call
    stubber.add_response("invoke_model", titan_response(0, 11))
    stubber.add_response("invoke_model", titan_response(1, 29))

    outs = list(app.pipeline.ingest_many([
        IngestItem(tenant="acme", key="tenants/acme/invoices.md", data=DOC_A),
        IngestItem(tenant="globex", key="tenants/globex/leave.md", data=DOC_B),
    ]))

    stubber.assert_no_pending_responses()
    assert [(o.status, o.chunks) for o in outs] == [("indexed", 1), ("indexed", 1)]
    prices = load_price_table(app.settings.costs.price_table)
    for tenant, tokens in (("acme", 11), ("globex", 29)):
        (row,) = app.ledger.totals(tenant, 1)
        nanos = prices.cost_nanos(TITAN, tokens, 0)
        assert (row["model_id"], row["purpose"], row["input_tokens"], row["calls"]) == (TITAN, "ingest_embedding", tokens, 1)
        assert round(row["cost_usd"] * NANOS) == nanos > 0
        (item,) = _request_items(dynamodb_client, ledger_table, tenant)
        assert item["usages"] == [{"model_id": TITAN, "purpose": "ingest_embedding", "input_tokens": tokens,
                                   "output_tokens": 0, "cost_usd_nanos": nanos, "estimated": False,
                                   "price_version": prices.version}]
        usage = app.usage(Principal(tenant=tenant, user="u", scopes=frozenset({"ragline/admin"})), 1)
        assert usage["total_input_tokens"] == tokens  # never the other tenant's


def test_unchanged_bytes_make_no_call_and_no_record_and_a_missing_count_is_estimated(
        aws_app, dynamodb_client, ledger_table):
    app, stubber = aws_app
    stubber.add_response("invoke_model", titan_response(0, None))  # no inputTextTokenCount
    item = IngestItem(tenant="acme", key="tenants/acme/invoices.md", data=DOC_A)
    assert app.pipeline.ingest(item).status == "indexed"
    (rec,) = _request_items(dynamodb_client, ledger_table, "acme")
    (usage,) = rec["usages"]
    assert len(stubber.sent) == 1
    assert usage["estimated"] is True and usage["input_tokens"] == count_tokens(stubber.sent[0]) > 0

    # no stubbed response is queued: a model call would fail the ingestion
    again = app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/invoices.md", data=DOC_A))

    assert again.status == "unchanged"
    stubber.assert_no_pending_responses()
    assert len(_request_items(dynamodb_client, ledger_table, "acme")) == 1
    assert _request_items(dynamodb_client, ledger_table, "globex") == []
    assert app.usage(Principal(tenant="globex", user="u", scopes=frozenset({"ragline/admin"})), 1)["rows"] == []
