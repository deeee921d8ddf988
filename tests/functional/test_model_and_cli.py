"""The real MiniLM model and the CLI end to end on the sample corpus (slow: loads the model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ragline_testing import REPO

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "ragline.cli"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-home")


def run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAGLINE_HOME=str(home), COLUMNS="200")
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"ragline {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return out


def test_numpy_and_torch_engines_agree():
    from ragline.adapters.local.embedder import MiniLMEmbedder

    texts = ["How long are invoices kept?", "Parcels to Norway need a customs form. " * 20, "数据 résumé naïve"]
    a = MiniLMEmbedder(engine="numpy").embed_documents(texts)
    b = MiniLMEmbedder(engine="torch").embed_documents(texts)
    assert a.shape == b.shape == (3, 384)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999
    q = MiniLMEmbedder().embed_query(texts[0])
    assert float(q @ b[0]) > 0.9999
    # and it is a language model: paraphrases are closer than unrelated text
    m = MiniLMEmbedder(engine="numpy")
    v = m.embed_documents(["How long do we keep invoices?", "Invoice retention period", "The duck swims in the lake"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_cli_end_to_end_on_the_sample_corpus(home):
    out = run(home, "ingest", "samples", "--tenant", "demo", "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {Path(r["path"]).name for r in rows} == {p.name for p in (REPO / "samples").iterdir()}
    assert all(r["status"] == "indexed" and r["chunks"] > 0 for r in rows), rows
    for r in rows:
        assert {"path", "doc_id", "version", "status", "reason", "chunks"} <= r.keys()
    again = [json.loads(line) for line in run(home, "ingest", "samples", "--tenant", "demo", "--json").stdout.splitlines()]
    assert {r["status"] for r in again} == {"unchanged"}

    ans = json.loads(run(home, "ask", "How long are invoices kept?", "--tenant", "demo", "--json").stdout)
    assert {"answer", "citations", "cached", "latency_ms"} <= ans.keys()
    assert "ten years" in ans["answer"]
    assert ans["citations"][0]["source"].endswith("data-retention.html")
    pdf = json.loads(run(home, "ask", "How long must passwords be?", "--tenant", "demo", "--json").stdout)
    assert pdf["citations"][0]["source"].endswith("security-handbook.pdf") and pdf["citations"][0]["page"] == 1
    cached = json.loads(run(home, "ask", "How long are invoices kept?", "--tenant", "demo", "--json").stdout)
    assert cached["cached"] is True

    other = json.loads(run(home, "ask", "How long are invoices kept?", "--tenant", "other", "--json").stdout)
    assert other["citations"] == [] and "don't know" in other["answer"]

    docs = json.loads(run(home, "docs", "list", "--tenant", "demo", "--json").stdout)
    assert len(docs) == len(rows)
    assert json.loads(run(home, "docs", "list", "--tenant", "other", "--json").stdout) == []
    doc = next(d for d in docs if d["source_key"].endswith("data-retention.html"))
    shown = json.loads(run(home, "docs", "show", doc["doc_id"], "--tenant", "demo").stdout)
    assert shown["version"] == doc["version"] and shown["chunk_ids"]
    miss = run(home, "docs", "show", doc["doc_id"], "--tenant", "other", check=False)
    assert miss.returncode == 1 and "no document" in miss.stderr and "Traceback" not in miss.stderr
    assert run(home, "docs", "delete", doc["doc_id"], "--tenant", "other", check=False).returncode == 1
    run(home, "docs", "delete", doc["doc_id"], "--tenant", "demo")
    after = json.loads(run(home, "ask", "How long are invoices kept?", "--tenant", "demo", "--json", "--no-cache").stdout)
    assert all(not c["source"].endswith("data-retention.html") for c in after["citations"])


def test_cli_reports_failures_with_exit_code(home, tmp_path):
    (tmp_path / "ok.txt").write_text("Fine text about rivers.")
    (tmp_path / "bad.pdf").write_bytes(b"oops")
    (tmp_path / "deck.pptx").write_bytes(b"PK\x03\x04")
    out = run(home, "ingest", str(tmp_path), "--tenant", "t2", check=False)
    assert out.returncode == 1
    assert "failed" in out.stdout and "unsupported" in out.stdout and "indexed" in out.stdout
    assert "Traceback" not in out.stderr + out.stdout


def test_cli_errors_are_clear(home):
    out = run(home, "ingest", "does-not-exist", "--tenant", "demo", check=False)
    assert out.returncode != 0 and "no such file" in out.stderr and "Traceback" not in out.stderr
    out = run(home, "ask", "", "--tenant", "demo", check=False)
    assert out.returncode != 0 and "empty" in out.stderr


def test_eval_retrieval_on_a_small_beir_folder(tmp_path, home):
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    docs = {
        "d1": ("Invoices", "Invoices are kept for ten years."),
        "d2": ("Ducks", "Ducks eat grass, insects and small fish."),
        "d3": ("Passwords", "Passwords need fourteen characters."),
        "d4": ("Trains", "Book trains for short trips under 500 km."),
    }
    (d / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": t, "text": x}) for k, (t, x) in docs.items()))
    qs = {"q1": "how long do we keep invoices", "q2": "what do ducks eat", "q3": "password length"}
    (d / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in qs.items()))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t2\n")
    res = json.loads(run(home, "eval", "retrieval", "--data", str(d), "--json").stdout)
    assert set(res) >= {"ndcg@10", "recall@10", "recall@100", "index_s", "p50_ms", "p95_ms", "p99_ms"}
    assert res["ndcg@10"] == 1.0 and res["recall@10"] == 1.0 and res["queries"] == 3
    bad = run(home, "eval", "retrieval", "--data", str(tmp_path), "--json", check=False)
    assert bad.returncode == 2 and "BEIR" in bad.stderr
