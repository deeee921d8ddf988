"""The semantic-cache store on DynamoDB (technique: moto's server on 127.0.0.1 with a real
boto3 client; the same SemanticCache decision code as the local backend on top). Proves: nearest
is scoped to tenant and ACL key and ranked by cosine; expired entries are never returned;
invalidating a document removes exactly the entries that cite it; clear empties one tenant; the
substitution check reads the passage words stored with each entry, per tenant; each container's
in-memory copy of a scope is refreshed from the change counters (no Query when nothing changed,
an incremental Query after a put, a full reload after a removal) and sees other containers'
writes and invalidations at its next lookup (two store instances on one table stand in for two
Lambda containers; Query calls are counted with botocore's provide-client-params event)."""

from __future__ import annotations

import time
import uuid

import boto3
import numpy as np
import pytest

from ragline.adapters.aws.dynamodb_cache import DynamoCacheStore
from ragline.settings import Settings


@pytest.fixture()
def table(dynamodb_client):
    name = f"cache-{uuid.uuid4().hex[:8]}"
    dynamodb_client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    return name


@pytest.fixture()
def store(table, dynamodb_client, aws_region):
    return DynamoCacheStore(table, dimensions=4, client=dynamodb_client, settings=Settings(region=aws_region))


@pytest.fixture()
def container(table, dynamodb_client, aws_region):
    """A store with its own client (another Lambda container) on the same table; returns the
    store and the list of Query requests its client sent."""
    creds = dynamodb_client._request_signer._credentials

    def make(**kw):
        client = boto3.session.Session().client(
            "dynamodb", region_name=aws_region, endpoint_url=dynamodb_client.meta.endpoint_url,
            aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
        queries: list[dict] = []
        client.meta.events.register("provide-client-params.dynamodb.Query",
                                    lambda params, **_: queries.append(dict(params)) and None)
        return DynamoCacheStore(table, dimensions=4, client=client, settings=Settings(region=aws_region), **kw), queries
    return make


def unit(*v):
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def entry(q, tenant="acme", acl="k1", docs=("d1",), ttl=3600):
    return {"tenant": tenant, "acl_key": acl, "question": q, "answer": {"answer": q.upper()},
            "doc_versions": {d: "v1" for d in docs}, "ttl_s": ttl}


def test_nearest_is_scoped_and_ranked(store):
    store.put(entry("a"), unit(1, 0, 0, 0))
    store.put(entry("b"), unit(1, 1, 0, 0))
    store.put(entry("other-acl", acl="k2"), unit(1, 0, 0, 0))
    store.put(entry("other-tenant", tenant="globex"), unit(1, 0, 0, 0))
    got = store.nearest("acme", "k1", unit(1, 0.1, 0, 0), k=3)
    assert [e["question"] for e, _ in got] == ["a", "b"]
    assert got[0][1] == pytest.approx(float(unit(1, 0, 0, 0) @ unit(1, 0.1, 0, 0)), abs=1e-6)
    assert store.nearest("acme", "k3", unit(1, 0, 0, 0), k=3) == []


def test_expired_entries_are_not_returned(store, monkeypatch):
    store.put(entry("old", ttl=1), unit(1, 0, 0, 0))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 5)
    assert store.nearest("acme", "k1", unit(1, 0, 0, 0), k=3) == []


def test_invalidate_document_and_clear(store):
    store.put(entry("cites d1", docs=("d1",)), unit(1, 0, 0, 0))
    store.put(entry("cites d1 and d2", docs=("d1", "d2")), unit(0, 1, 0, 0))
    store.put(entry("cites d3", docs=("d3",)), unit(0, 0, 1, 0))
    store.put(entry("globex", tenant="globex", docs=("d1",)), unit(1, 0, 0, 0))
    assert store.invalidate_document("acme", "d1") == 2
    left = store.nearest("acme", "k1", unit(1, 1, 1, 0), k=5)
    assert [e["question"] for e, _ in left] == ["cites d3"]
    assert store.invalidate_document("acme", "d1") == 0
    # the entry that cited d1 and d2 went with its d2 link: d2 counts nothing now (it said 1)
    assert store.invalidate_document("acme", "d2") == 0
    assert len(store.nearest("globex", "k1", unit(1, 0, 0, 0), k=5)) == 1
    assert store.clear("acme") == 1
    assert store.nearest("acme", "k1", unit(0, 0, 1, 0), k=5) == []
    assert store.invalidate_document("acme", "d3") == 0  # clear removed the document refs too


def test_the_substitution_check_reads_the_passage_words_stored_in_dynamodb(store):
    # SemanticCache (the shared decision code) on the DynamoDB store: the passage words travel
    # with the entry through moto's DynamoDB, for this tenant only
    from types import SimpleNamespace

    from ragline.cache.semantic import SemanticCache
    from ragline.models import Principal

    class Registry:
        def get(self, tenant, doc_id):
            return SimpleNamespace(version="v1", status=SimpleNamespace(value="indexed"), groups=[])

    cache = SemanticCache(store, Registry(), settings=Settings().cache)
    passage = "Carboxypeptidase D is the receptor for duck hepatitis B virus; human hepatitis B virus uses NTCP."
    duck = "What is the receptor for duck hepatitis B virus?"
    human = "What is the receptor for human hepatitis B virus?"
    acme, globex = Principal(tenant="acme", user="u").scope(), Principal(tenant="globex", user="u").scope()
    cache.store_answer(acme, duck, unit(1, 0, 0, 0), {"answer": "CPD"}, {"d1": "v1"}, ["c1"], [passage])
    cache.store_answer(globex, duck, unit(1, 0, 0, 0), {"answer": "CPD"}, {"d1": "v1"}, ["c1"],
                       ["Carboxypeptidase D is the receptor for duck hepatitis B virus."])
    near = unit(1, 0.05, 0, 0)  # cosine 0.999: only the words can tell the questions apart
    d = cache.decide(acme, near, human)
    assert not d.hit and d.reason.startswith("substituted words both in the cited passages (duck / human)")
    assert cache.decide(acme, near, duck).hit
    assert cache.decide(globex, near, human).hit  # globex's passages never name a human virus


def test_a_warm_copy_reads_only_the_counters_until_something_changes(container):
    a, queries = container()
    a.put(entry("first"), unit(1, 0, 0, 0))
    assert [e["question"] for e, _ in a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)] == ["first"]
    assert a.last_read == "full" and len(queries) == 1
    for _ in range(3):
        assert [e["question"] for e, _ in a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)] == ["first"]
    assert a.last_read == "counters" and len(queries) == 1  # no Query while nothing changed
    a.put(entry("second"), unit(0, 1, 0, 0))
    got = a.nearest("acme", "k1", unit(0, 1, 0, 0), k=3)
    assert [e["question"] for e, _ in got] == ["second", "first"]
    assert a.last_read == "incremental" and len(queries) == 2
    assert "BETWEEN" in queries[-1]["KeyConditionExpression"]


def test_other_containers_writes_and_invalidations_are_seen_at_the_next_lookup(container):
    a, _ = container()
    b, _ = container()
    assert b.nearest("acme", "k1", unit(1, 0, 0, 0), k=3) == []  # b's copy exists, empty
    a.put(entry("from a", docs=("d1",)), unit(1, 0, 0, 0))
    assert [e["question"] for e, _ in b.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)] == ["from a"]
    assert b.last_read == "incremental"
    a.put(entry("also a", docs=("d2",)), unit(0, 1, 0, 0))
    assert len(b.nearest("acme", "k1", unit(1, 1, 0, 0), k=3)) == 2
    # a invalidates d1: b's copy still holds the entry, and must drop it at its next lookup
    assert a.invalidate_document("acme", "d1") == 1
    assert [e["question"] for e, _ in b.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)] == ["also a"]
    assert b.last_read == "full"
    a.clear("acme")
    assert b.nearest("acme", "k1", unit(1, 0, 0, 0), k=3) == [] and b.last_read == "full"


def test_another_tenants_changes_do_not_touch_a_tenants_copy(container):
    a, a_queries = container()
    def acme_reads():
        return [q for q in a_queries if q["ExpressionAttributeValues"][":pk"]["S"] == "cache#acme"]

    a.put(entry("acme q"), unit(1, 0, 0, 0))
    a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)
    n = len(acme_reads())
    a.put(entry("globex q", tenant="globex"), unit(1, 0, 0, 0))
    assert a.invalidate_document("globex", "d1") == 1
    got = a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)
    assert [e["question"] for e, _ in got] == ["acme q"]
    assert a.last_read == "counters" and len(acme_reads()) == n  # per-tenant counters
    assert a.nearest("globex", "k1", unit(1, 0, 0, 0), k=3) == []


def test_a_copy_older_than_max_age_is_reloaded_in_full(container, monkeypatch):
    a, _ = container(max_age_s=60)
    a.put(entry("q"), unit(1, 0, 0, 0))
    a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)
    a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)
    assert a.last_read == "counters"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)
    assert len(a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)) == 1
    assert a.last_read == "full"


def test_an_entry_expiring_while_in_a_warm_copy_is_not_returned(container, monkeypatch):
    a, _ = container()
    a.put(entry("short", ttl=2), unit(1, 0, 0, 0))
    a.put(entry("long"), unit(0.9, 0.1, 0, 0))
    assert len(a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)) == 2
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 5)
    got = a.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)
    assert [e["question"] for e, _ in got] == ["long"] and a.last_read == "counters"


def test_exact_key_lookup_is_scoped_and_follows_other_containers_changes(container, monkeypatch):
    from ragline.cache.semantic import question_key

    a, _ = container()
    b, b_queries = container()
    key = question_key("Who approves expenses?")
    assert key == question_key("  who approves EXPENSES ") and key != question_key("Who approves invoices?")
    assert b.exact("acme", "k1", key) is None
    a.put(entry("Who approves expenses?", docs=("d1",)) | {"question_key": key}, unit(1, 0, 0, 0))
    a.put(entry("Who approves expenses?", tenant="globex", docs=("d1",)) | {"question_key": key}, unit(1, 0, 0, 0))
    got = b.exact("acme", "k1", key)
    assert got["question"] == "Who approves expenses?" and got["tenant"] == "acme"
    assert b.exact("acme", "k2", key) is None  # another ACL group set
    assert b.exact("acme", "k1", question_key("Who approves invoices?")) is None
    n = len(b_queries)
    assert b.exact("acme", "k1", key) is not None and len(b_queries) == n  # served from the warm copy
    # a newer answer under the same key wins; an invalidation elsewhere removes it here too
    a.put(entry("Who approves expenses? (newer)", docs=("d2",)) | {"question_key": key}, unit(1, 0, 0, 0))
    assert b.exact("acme", "k1", key)["question"].endswith("(newer)")
    assert a.invalidate_document("acme", "d2") == 1
    assert b.exact("acme", "k1", key)["question"] == "Who approves expenses?"
    assert a.invalidate_document("acme", "d1") == 1
    assert b.exact("acme", "k1", key) is None
    assert b.exact("globex", "k1", key)["tenant"] == "globex"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)  # past the entries' TTL
    assert b.exact("globex", "k1", key) is None


def test_an_exact_miss_then_nearest_reads_the_counters_once(container, monkeypatch):
    # what a question that is not an exact repeat costs: exact() refreshes the copy (one counter
    # GetItem), then the nearest() that follows it on the same thread and scope uses that copy
    from ragline.cache.semantic import question_key

    a, _ = container()
    b, _ = container()
    gets: list[dict] = []
    b.client.meta.events.register("provide-client-params.dynamodb.GetItem",
                                  lambda params, **_: gets.append(dict(params)) and None)
    key = question_key("Who approves expenses?")
    a.put(entry("Who approves expenses?") | {"question_key": key}, unit(1, 0, 0, 0))
    got = b.exact("acme", "k1", key)
    assert got["question"] == "Who approves expenses?"
    assert np.allclose(got["vector"], unit(1, 0, 0, 0))  # the stored vector, for the drift signal
    assert len(gets) == 1
    assert b.exact("acme", "k1", question_key("Who approves invoices?")) is None and len(gets) == 2
    assert [e["question"] for e, _ in b.nearest("acme", "k1", unit(1, 0.2, 0, 0), k=3)] == ["Who approves expenses?"]
    assert len(gets) == 2 and b.last_read == "reused"
    # consumed: the next nearest() reads the counters, and sees another container's put
    a.put(entry("Who signs contracts?"), unit(0, 1, 0, 0))
    assert len(b.nearest("acme", "k1", unit(1, 0.2, 0, 0), k=3)) == 2 and len(gets) == 3
    assert b.last_read == "incremental"
    # not for another scope, and not once the hand-off is older than reuse_s
    b.exact("acme", "k1", key)
    b.nearest("acme", "k2", unit(1, 0, 0, 0), k=3)
    assert len(gets) == 5 and b.last_read != "reused"
    b.exact("acme", "k1", key)
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + b.reuse_s + 0.5)
    b.nearest("acme", "k1", unit(1, 0, 0, 0), k=3)
    assert len(gets) == 7 and b.last_read == "counters"


def test_every_query_reads_consistently_and_an_entry_is_written_after_its_links(container, dynamodb_client, table):
    # DynamoDB's Query is eventually consistent unless asked: an invalidation could miss a link
    # written a moment before, and a reload could still see removed entries (SQLite cannot)
    store, queries = container()
    writes: list[list[str]] = []
    store.client.meta.events.register(
        "provide-client-params.dynamodb.BatchWriteItem",
        lambda params, **_: writes.append([r["PutRequest"]["Item"]["pk"]["S"]
                                           for reqs in params["RequestItems"].values() for r in reqs
                                           if "PutRequest" in r]) and None)
    store.put(entry("a", docs=("d1", "d2")), unit(1, 0, 0, 0))
    assert writes == [["cachedoc#acme#d1", "cachedoc#acme#d2"], ["cache#acme"]]  # the entry last, on its own
    store.nearest("acme", "k1", unit(1, 0, 0, 0), k=1)
    assert store.invalidate_document("acme", "d1") == 1
    store.nearest("acme", "k1", unit(1, 0, 0, 0), k=1)
    store.clear("acme")
    assert len(queries) >= 4 and all(q.get("ConsistentRead") is True for q in queries)


def test_an_entry_is_never_written_while_its_links_are_unacknowledged(store, monkeypatch):
    # DynamoDB may write some items of one BatchWriteItem and return the rest unprocessed: here
    # every link comes back unprocessed (written never), everything else is really written
    import ragline.adapters.aws.dynamodb_cache as mod

    real = store.client.batch_write_item

    def links_throttled(RequestItems):
        (table, reqs), = RequestItems.items()
        links = [r for r in reqs if "PutRequest" in r and r["PutRequest"]["Item"]["pk"]["S"].startswith("cachedoc#")]
        rest = [r for r in reqs if r not in links]
        if rest:
            real(RequestItems={table: rest})
        return {"UnprocessedItems": {table: links} if links else {}}

    monkeypatch.setattr(store.client, "batch_write_item", links_throttled)
    monkeypatch.setattr(mod.time, "sleep", lambda s: None)
    with pytest.raises(Exception, match="throttl|unavailable"):
        store.put(entry("a", docs=("d1",)), unit(1, 0, 0, 0))
    assert store.nearest("acme", "k1", unit(1, 0, 0, 0), k=1) == []  # no entry no invalidation could find
