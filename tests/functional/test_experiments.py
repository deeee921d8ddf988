"""A/B experiments (technique: embedded adapters with the hashing embedder; real asks through
the service so the overrides, the logged variant and the feedback path are the production
ones; the report's statistics on a log with a planted effect and on one too small to judge)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ragline.experiments import assign, bucket, resolve
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal
from ragline.operations.abtest import report
from ragline.settings import ExperimentSettings, Settings

EXP = {"name": "topk", "variants": [{"name": "control", "share": 0.5},
                                    {"name": "one", "share": 0.5, "top_k": 1, "dense_weight": 0.2, "prompt": "concise"}]}


@pytest.fixture
def ab_app(make_app, tmp_path):
    settings = Settings(home=tmp_path / "home", jwt_secret="x" * 40, experiments=[EXP], eval_sample_rate=1.0)
    app = make_app(settings=settings)
    for i, text in enumerate(["Invoices are kept for ten years.", "Invoices go to the finance team.",
                              "Invoices are paid within thirty days."]):
        app.pipeline.ingest(IngestItem(tenant="acme", key=f"tenants/acme/d{i}.txt", data=text.encode()))
    return app


def test_assignment_is_sticky_independent_and_follows_shares():
    exp = ExperimentSettings.model_validate(EXP)
    assert all(assign(exp, f"user{i}").name == assign(exp, f"user{i}").name for i in range(50))
    counts = sum(assign(exp, f"user{i}").name == "one" for i in range(4000))
    assert 0.46 < counts / 4000 < 0.54
    other = ExperimentSettings.model_validate(EXP | {"name": "other"})
    same = sum(assign(exp, f"u{i}").name == assign(other, f"u{i}").name for i in range(2000))
    assert 0.45 < same / 2000 < 0.55  # experiments split traffic independently
    assert 0 <= bucket("x", "y") < 1


def test_settings_reject_bad_experiments():
    with pytest.raises(ValidationError, match="add up to 0.9"):
        ExperimentSettings.model_validate({"name": "e", "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]})
    with pytest.raises(ValidationError, match="unknown prompt"):
        ExperimentSettings.model_validate({"name": "e", "variants": [{"name": "a", "share": 0.5},
                                                                     {"name": "b", "share": 0.5, "prompt": "shout"}]})
    assert resolve([ExperimentSettings.model_validate(EXP | {"enabled": False})], "u").label is None


def test_variant_overrides_apply_and_answers_and_logs_carry_the_variant(ab_app):
    exp = ExperimentSettings.model_validate(EXP)
    users = {v: next(f"u{i}" for i in range(100) if assign(exp, f"u{i}").name == v) for v in ("control", "one")}
    a = ab_app.ask(Principal(tenant="acme", user=users["control"]), "Where do invoices go?")
    b = ab_app.ask(Principal(tenant="acme", user=users["one"]), "Where do invoices go?")
    assert a.variant == "topk/control" and b.variant == "topk/one"
    assert len(a.citations) == 3 and len(b.citations) == 1  # top_k=1 in variant "one"
    assert not a.cached and not b.cached  # experiment traffic bypasses the shared cache
    logged = ab_app.query_log.get("acme", b.query_id)
    assert logged["variant"] == "topk/one" and logged["experiments"] == {"topk": "one"}
    ab_app.feedback(Principal(tenant="acme", user=users["one"]), b.query_id, 1, "good")
    assert ab_app.query_log.get("acme", b.query_id)["rating"] == 1


def _entries(n: int, variant: str, up: float, latency: float, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{"tenant": "t", "query_id": f"{variant}{i}", "experiments": {"e": variant},
             "latency_ms": float(latency + rng.normal(0, 5)), "rating": 1 if rng.random() < up else -1,
             "question": "q", "answer": "a", "passages": []} for i in range(n)]


def test_report_detects_a_planted_effect_and_the_latency_guard():
    log = _entries(200, "control", 0.4, 100, 1) + _entries(200, "treat", 0.8, 140, 2)
    res = report(log, "e", ["control", "treat"])
    (cmp,) = res["comparisons"]
    assert cmp["verdict"] == "better_but_slower" and cmp["latency_guard_breached"]
    lo, hi = cmp["thumbs_up_diff_ci95"]
    assert 0 < lo < cmp["thumbs_up_diff"] < hi
    assert 30 < cmp["latency_diff_ms"] < 50 and cmp["latency_diff_ci95"][0] > 0
    assert "treat vs control: better but slower" in res["conclusion"]
    same = report(_entries(200, "control", 0.5, 100, 3) + _entries(200, "treat", 0.5, 100, 4), "e", ["control", "treat"])
    assert same["comparisons"][0]["verdict"] == "no_difference_detected"


def test_report_says_when_the_sample_is_too_small(ab_app, monkeypatch):
    from ragline import cli, factory

    for i in range(12):
        ans = ab_app.ask(Principal(tenant="acme", user=f"user{i}"), "How long are invoices kept?")
        ab_app.feedback(Principal(tenant="acme", user=f"user{i}"), ans.query_id, 1 if i % 2 else -1, None)
    monkeypatch.setattr(factory, "default", lambda: ab_app)
    out = CliRunner().invoke(cli.app, ["ab", "report", "topk", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["too_small"] and "sample too small to conclude" in res["conclusion"]
    assert sum(v["queries"] for v in res["variants"].values()) == 12
    assert all(v["evaluation"]["sampled"] == v["queries"] for v in res["variants"].values())
    assert {c["verdict"] for c in res["comparisons"]} == {"too_small"}
    text = CliRunner().invoke(cli.app, ["ab", "report", "nope"])
    assert text.exit_code == 0 and "no logged queries carry experiment 'nope'" in text.output
