"""``ragline index validate --qa``: the QA evaluation (support@k, answer token F1) on both index
versions next to the retrieval comparison (technique: embedded adapters — SQLite index files
behind the alias file — with the hashing embedder and the extractive answerer; a tiny QA file
written by the test; the CLI through typer's runner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragline.adapters.local.versions import AliasedIndex, IndexVersions
from ragline.evaluation.qa import run_questions
from ragline.ingest.pipeline import IngestItem
from ragline.operations import index_versions as ops
from ragline.settings import ChunkerSettings, Settings

TEXTS = {
    "invoices": "Invoices are kept for ten years. " * 20 + "The archive is in the basement of building B.",
    "cafeteria": "The cafeteria opens at eight. " * 20 + "Lunch is served from noon until two.",
    "parking": "Visitors park in the north lot. " * 20 + "Bicycles go in the racks by the fountain.",
}
QA = [
    {"question": "How long are invoices kept?", "answers": [{"text": "ten years"}]},
    {"question": "When is lunch served?", "answers": [{"text": "from noon until two"}]},
    {"question": "Where do bicycles go?", "answers": [{"text": "in the racks by the fountain"}]},
    # not in the corpus: no version can support it
    {"question": "Who founded the company?", "answers": [{"text": "Margaret Oduya in 1987"}]},
]


@pytest.fixture
def vapp(make_app, tmp_path):
    from ragline_testing import HashEmbedder

    settings = Settings(home=tmp_path / "home", jwt_secret="x" * 40)
    app = make_app(settings=settings, index=AliasedIndex(IndexVersions(settings.home_dir), HashEmbedder.dimensions))
    for name, text in TEXTS.items():
        key = f"tenants/acme/{name}.txt"
        app.blobs.put(key, text.encode())
        app.pipeline.ingest(IngestItem(tenant="acme", key=key, data=text.encode()))
    return app


@pytest.fixture
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in QA))
    return path


def test_validate_reports_qa_for_both_versions_and_the_deltas(vapp, qa_file):
    ops.build(vapp, "v001", chunker=ChunkerSettings(max_tokens=24, overlap_tokens=0))
    out = ops.validate(vapp, "v001", qa=qa_file, tenant="acme")
    assert out["baseline"] == "default" and out["candidate"] == "v001"
    assert out["mode"] == "query_log"  # the retrieval comparison is still there, beside the QA
    qa = out["qa"]
    assert qa["questions"] == 4 and qa["tenant"] == "acme"
    for side in ("default", "v001"):
        scores = qa[side]
        # three of four answers are in the corpus and three documents fit in five passages
        assert scores["support@5"] == 0.75
        assert 0.0 <= scores["support@1"] <= scores["support@3"] <= scores["support@5"]
        assert 0.0 < scores["answer_f1"] <= 1.0
        assert scores["answerer"] == vapp.extractive.model_id
    for k in ("support@1", "support@3", "support@5", "answer_f1"):
        assert qa["delta"][k] == round(qa["v001"][k] - qa["default"][k], 4)


def test_qa_scores_are_those_of_eval_qa_on_the_version(vapp, qa_file):
    """The same code as ``ragline eval qa``: on the live version, validate's baseline figures
    equal run_questions on the app itself."""
    from ragline.evaluation.qa import load_qa

    ops.build(vapp, "v001", chunker=ChunkerSettings(max_tokens=24, overlap_tokens=0))
    direct = run_questions(vapp, load_qa(qa_file), tenant="acme")
    qa = ops.validate(vapp, "v001", qa=qa_file, tenant="acme")["qa"]
    assert {k: qa["default"][k] for k in ("support@1", "support@3", "support@5", "answer_f1")} == \
        {k: direct[k] for k in ("support@1", "support@3", "support@5", "answer_f1")}
    ops.promote(vapp, "v001")
    promoted = run_questions(vapp, load_qa(qa_file), tenant="acme")
    assert qa["v001"]["support@3"] == promoted["support@3"] and qa["v001"]["answer_f1"] == promoted["answer_f1"]


def test_cli_validate_qa_and_bad_files(vapp, qa_file, tmp_path, monkeypatch):
    from ragline import cli, factory

    monkeypatch.setattr(factory, "default", lambda: vapp)
    ops.build(vapp, "v001")
    run = CliRunner().invoke(cli.app, ["index", "validate", "v001", "--qa", str(qa_file), "-t", "acme",
                                       "--qa-limit", "2", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    assert out["qa"]["questions"] == 2 and set(out["qa"]["delta"]) == {"support@1", "support@3", "support@5",
                                                                       "answer_f1"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no answers"}\n')
    run = CliRunner().invoke(cli.app, ["index", "validate", "v001", "--qa", str(bad)])
    text = "".join(run.output.split())  # rich wraps long lines at the terminal width
    assert run.exit_code == 1 and "bad.jsonl:1:eachlineneedsaquestion" in text and "Traceback" not in text
    run = CliRunner().invoke(cli.app, ["index", "validate", "v001", "--qa", str(tmp_path / "nope.jsonl")])
    assert run.exit_code == 2 and "noQAfile" in "".join(run.output.split())
