"""Feedback in the local query log (SQLite) keeps the DynamoDB log's contract: one rating per
user and query (a re-rating replaces that user's), a retried append keeps the first entry and
its feedback, entries carry ``feedback`` and the net ``rating`` the evaluation counts, and a
tenant never rates or reads another's queries. The DynamoDB side is in
tests/integration/aws/test_aws_dynamodb.py (moto server)."""

from __future__ import annotations

import json

import pytest

from ragline.adapters.local.registry import SqliteQueryLog
from ragline.errors import NotFound
from ragline.models import Principal, net_rating


def test_feedback_is_one_rating_per_user_and_a_retried_append_keeps_it(tmp_path):
    log = SqliteQueryLog(tmp_path / "state.db")
    log.append({"tenant": "acme", "query_id": "q1", "question": "why?", "ts": 1.0})
    assert log.get("acme", "q1")["feedback"] == [] and log.get("acme", "q1")["rating"] is None
    log.add_feedback("acme", "q1", "alice", 1, "good")
    log.add_feedback("acme", "q1", "bob", -1, None)
    log.add_feedback("acme", "q1", "carol", 1, None)
    assert log.get("acme", "q1")["rating"] == 1  # two up, one down
    log.add_feedback("acme", "q1", "alice", -1, "changed my mind")  # replaces alice's, keeps the others
    got = log.get("acme", "q1")
    assert sorted((f["user"], f["rating"]) for f in got["feedback"]) == [("alice", -1), ("bob", -1), ("carol", 1)]
    assert got["rating"] == -1 and log.recent("acme", 5)[0]["rating"] == -1
    log.append({"tenant": "acme", "query_id": "q1", "question": "retried", "ts": 2.0})
    again = log.get("acme", "q1")
    assert again["question"] == "why?" and len(again["feedback"]) == 3
    # another tenant: cannot rate it, cannot see it, and its own same query id is its own
    with pytest.raises(NotFound):
        log.add_feedback("globex", "q1", "mallory", 1, None)
    assert log.get("globex", "q1") is None
    log.append({"tenant": "globex", "query_id": "q1", "question": "theirs", "ts": 3.0})
    assert log.get("globex", "q1")["feedback"] == [] and log.get("acme", "q1")["rating"] == -1


def test_a_log_written_before_per_user_feedback_still_reads_its_rating(tmp_path):
    log = SqliteQueryLog(tmp_path / "state.db")
    with log.tx() as c:  # the old layout: the rating on the query row itself
        c.execute("INSERT INTO queries (tenant, query_id, ts, entry, rating, feedback) VALUES (?,?,?,?,?,?)",
                  ("acme", "old", 1.0, json.dumps({"tenant": "acme", "query_id": "old"}), 1,
                   json.dumps({"user": "alice", "comment": "fine"})))
    got = log.get("acme", "old")
    assert got["rating"] == 1 and got["feedback"][0]["user"] == "alice"
    log.add_feedback("acme", "old", "bob", -1, None)  # from now on per user: bob's alone counts
    assert log.get("acme", "old")["rating"] == -1


def test_net_rating_is_the_majority_and_the_latest_on_a_tie():
    assert net_rating([]) is None
    assert net_rating([{"user": "a", "rating": 1, "at": "1"}, {"user": "b", "rating": -1, "at": "2"}]) == -1
    assert net_rating([{"user": "a", "rating": -1, "at": "2"}, {"user": "b", "rating": 1, "at": "1"}]) == -1
    assert net_rating([{"user": "a", "rating": 1, "at": "1"}, {"user": "b", "rating": 1, "at": "2"},
                       {"user": "c", "rating": -1, "at": "3"}]) == 1


def test_the_online_evaluation_counts_ratings_given_through_the_service(app):
    from ragline.evaluation.online import summarise
    from ragline.ingest.pipeline import IngestItem

    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.md", data=b"# A\n\nInvoices are kept ten years.\n"))
    ans = app.ask(Principal(tenant="acme", user="alice"), "How long are invoices kept?", use_cache=False)
    app.feedback(Principal(tenant="acme", user="alice"), ans.query_id, 1, None)
    app.feedback(Principal(tenant="acme", user="bob"), ans.query_id, 1, None)
    out = summarise(app.query_log.recent("acme", 10))
    assert out["positive_feedback_rate"] == 1.0
