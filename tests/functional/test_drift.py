"""Drift of retrieval signals (technique: embedded adapters with the hashing embedder; a
synthetic shift — on-topic questions in the baseline days, off-topic ones in the window — and
pure distributions for the statistics)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from ragline import service
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal
from ragline.operations.drift import psi, report

DAY = 86400.0
NOW = 1_750_000_000.0

DOCS = [f"Invoice number {i} was paid by the finance team in March after review {i}." for i in range(30)]
ON = [f"When was invoice number {i} paid by finance?" for i in range(40)]
OFF = [f"zebra {i} migration across the savanna river delta" for i in range(40)]


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(0.6, 0.05, 500)
    assert psi(base, rng.normal(0.6, 0.05, 500)) < 0.1
    assert psi(base, rng.normal(0.4, 0.05, 500)) > 1.0
    assert psi(np.full(50, 0.5), np.full(50, 0.5)) == 0.0


def _ask_at(app, monkeypatch, questions, ts):
    monkeypatch.setattr(service.time, "time", lambda: ts)
    p = Principal(tenant="acme", user="u")
    for q in questions:
        app.ask(p, q, use_cache=False)


def test_a_synthetic_topic_shift_is_detected_and_said_plainly(app, monkeypatch):
    for i, d in enumerate(DOCS):
        app.pipeline.ingest(IngestItem(tenant="acme", key=f"tenants/acme/inv{i}.txt", data=d.encode()))
    _ask_at(app, monkeypatch, ON, NOW - 3 * DAY)
    _ask_at(app, monkeypatch, ON[::-1], NOW - 2 * DAY)
    _ask_at(app, monkeypatch, OFF, NOW - 0.5 * DAY)
    entries = app.query_log.recent("acme", 1000)
    assert all("retrieval" in e and "centroid_distance" in e for e in entries)
    res = report(entries, tenant="acme", now=NOW)
    by = {s["signal"]: s for s in res["signals"]}
    assert res["drift"] is True
    assert by["top1"]["status"] == "drift" and by["top1"]["window_median"] < by["top1"]["baseline_median"]
    assert by["centroid_distance"]["status"] == "drift" and "query distance to the corpus centroid rose" in res["message"]
    assert "top-1 similarity fell" in res["message"]
    assert sorted(res["daily"]) and all("top1" in d for d in res["daily"].values())
    # the same on-topic traffic in the window: no drift
    calm = report([e for e in entries if e["question"] in ON] +
                  [dict(e, ts=NOW - 0.2 * DAY) for e in entries if e["question"] in ON and e["ts"] == NOW - 2 * DAY],
                  tenant="acme", now=NOW)
    assert calm["drift"] is False, calm["message"]


def test_too_few_queries_is_reported_not_guessed(app, monkeypatch):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/a.txt", data=DOCS[0].encode()))
    _ask_at(app, monkeypatch, ON[:5], NOW - 2 * DAY)
    res = report(app.query_log.recent("acme", 100), tenant="acme", now=NOW)
    assert res["drift"] is False and {s["status"] for s in res["signals"]} == {"insufficient_data"}
    assert "too few queries" in res["signals"][0]["message"]


def test_cli_drift_exits_3_on_drift(app, monkeypatch):
    from ragline import cli, factory

    for i, d in enumerate(DOCS):
        app.pipeline.ingest(IngestItem(tenant="acme", key=f"tenants/acme/inv{i}.txt", data=d.encode()))
    now = 1_800_000_000.0
    _ask_at(app, monkeypatch, ON, now - 3 * DAY)
    _ask_at(app, monkeypatch, OFF, now - 0.1 * DAY)
    monkeypatch.setattr("time.time", lambda: now)
    monkeypatch.setattr(factory, "default", lambda: app)
    out = CliRunner().invoke(cli.app, ["drift", "--tenant", "acme", "--json"])
    assert out.exit_code == 3, out.output
    assert json.loads(out.stdout)["drift"] is True
