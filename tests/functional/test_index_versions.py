"""Blue-green index versions on the local stack (technique: embedded adapters — real SQLite
index files behind the alias file — with the hashing embedder; queries from a second thread
during a build; the CLI through typer's runner)."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from ragline.adapters.local.versions import AliasedIndex, Conflict, IndexVersions
from ragline.ingest.pipeline import IngestItem
from ragline.models import Principal, TenantScope
from ragline.operations import index_versions as ops
from ragline.settings import ChunkerSettings, Settings

TEXTS = {
    "invoices": "Invoices are kept for ten years. " * 30 + "The archive is in the basement of building B.",
    "cafeteria": "The cafeteria opens at eight. " * 30 + "Lunch is served from noon until two.",
    "parking": "Visitors park in the north lot. " * 30 + "Bicycles go in the racks by the fountain.",
}
QUESTIONS = ["How long are invoices kept?", "When is lunch served?", "Where do bicycles go?", "archive building"]


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


def results(app) -> list[list[tuple[str, float]]]:
    scope = TenantScope("acme")
    return [[(h.chunk_id, round(h.score, 9)) for h in app.retriever.search(scope, q, top_k=5)[0]] for q in QUESTIONS]


def test_promote_then_rollback_returns_exactly_the_earlier_results(vapp):
    before = results(vapp)
    m = ops.build(vapp, "v001", chunker=ChunkerSettings(max_tokens=32, overlap_tokens=0))
    assert m["documents"] == 3 and m["statuses"] == {"indexed": 3} and m["chunks"] > 3
    assert results(vapp) == before  # building changes nothing that is served
    ops.promote(vapp, "v001")
    promoted = results(vapp)
    assert promoted != before  # the smaller chunks of v001 are what is served now
    assert vapp.index.live_name == "v001"
    ops.rollback(vapp)
    assert results(vapp) == before
    ops.promote(vapp, "v001")
    assert results(vapp) == promoted
    rows = {r["name"]: r for r in vapp.index.versions.describe()}
    assert rows["v001"]["live"] and rows["default"]["previous"]


def test_a_second_process_sees_the_switch(vapp, tmp_path):
    from ragline_testing import HashEmbedder

    ops.build(vapp, "v001", chunker=ChunkerSettings(max_tokens=32, overlap_tokens=0))
    other = AliasedIndex(IndexVersions(vapp.settings.home), HashEmbedder.dimensions)
    assert other.live_name == "default"
    ops.promote(vapp, "v001")
    assert other.live_name == "v001"
    assert other.count(TenantScope("acme")) == vapp.index.count(TenantScope("acme"))


def test_queries_keep_working_during_a_build(vapp):
    before = results(vapp)
    errors: list[BaseException] = []
    seen: list[list] = []
    stop = threading.Event()

    def ask_loop():
        try:
            while not stop.is_set():
                seen.append(results(vapp))
                vapp.ask(Principal(tenant="acme", user="u"), "How long are invoices kept?", use_cache=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=ask_loop)
    t.start()
    try:
        ops.build(vapp, "v002")
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    assert seen and all(r == before for r in seen)


def test_promote_refuses_a_stale_build_and_versions_guard_their_state(vapp):
    ops.build(vapp, "v001")
    vapp.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/new.txt", data=b"A brand new document."))
    with pytest.raises(Conflict, match="changed since version v001 was built"):
        ops.promote(vapp, "v001")
    ops.promote(vapp, "v001", force=True)
    with pytest.raises(Conflict, match="already live"):
        ops.promote(vapp, "v001", force=True)
    with pytest.raises(Conflict, match="already exists"):
        ops.build(vapp, "v001")
    with pytest.raises(Conflict, match="live or the rollback target"):
        vapp.index.versions.delete("v001")
    fresh = IndexVersions(vapp.settings.home / "elsewhere")
    with pytest.raises(Conflict, match="no previous"):
        fresh.rollback()


def test_identical_build_validates_as_identical_from_the_query_log(vapp):
    for q in QUESTIONS:
        vapp.ask(Principal(tenant="acme", user="u"), q, use_cache=False)
    ops.build(vapp, "v001")
    out = ops.validate(vapp, "v001")
    assert out["mode"] == "query_log" and out["queries"] == len(QUESTIONS)
    assert out["doc_overlap_at_k"] == 1.0 and out["top1_agreement"] == 1.0
    assert out["mean_top1_similarity"]["default"] == out["mean_top1_similarity"]["v001"]


def test_validate_on_a_beir_folder_reports_ndcg_for_both(make_app, tmp_path):
    from ragline_testing import HashEmbedder

    from ragline.evaluation.beir import corpus_items

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {"d1": "Invoices are kept for ten years.", "d2": "The cafeteria opens at eight.", "d3": "Visitors park north."}
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in docs.items()))
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "invoices kept years"}\n{"_id": "q2", "text": "cafeteria opens"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    settings = Settings(home=tmp_path / "h2", jwt_secret="x" * 40)
    app = make_app(settings=settings, index=AliasedIndex(IndexVersions(settings.home_dir), HashEmbedder.dimensions))
    for item in corpus_items(beir / "corpus.jsonl"):
        app.blobs.put(item.key, item.data)
        app.pipeline.ingest(item)
    ops.build(app, "v001")
    out = ops.validate(app, "v001", data=beir)
    assert out["mode"] == "beir" and out["queries"] == 2
    assert out["default"]["ndcg@10"] == out["v001"]["ndcg@10"] == 1.0 and out["delta_ndcg@10"] == 0.0


def test_snapshot_and_restore_round_trip(vapp, tmp_path):
    before = results(vapp)
    v = vapp.index.versions
    snap = v.snapshot("default", tmp_path / "snap.db")
    vapp.pipeline.delete_document("acme", vapp.registry.list("acme")[0].doc_id, "tenants/acme/cafeteria.txt")
    assert results(vapp) != before
    name = v.restore(snap, "restored")
    ops.promote(vapp, name, force=True)
    assert results(vapp) == before
    with pytest.raises(Conflict):
        v.snapshot("default", snap)


def test_cli_index_commands(vapp, monkeypatch):
    from ragline import cli, factory

    monkeypatch.setattr(factory, "default", lambda: vapp)
    run = CliRunner().invoke
    out = run(cli.app, ["index", "build", "--name", "v001", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["name"] == "v001"
    assert run(cli.app, ["index", "promote", "v001"]).exit_code == 0
    listed = json.loads(run(cli.app, ["index", "versions", "--json"]).stdout)
    assert [r["name"] for r in listed if r["live"]] == ["v001"]
    monkeypatch.setenv("COLUMNS", "80")
    table = run(cli.app, ["index", "versions"])
    assert table.exit_code == 0 and "\u2026" not in table.output, table.output  # ids wrap, never cut
    assert run(cli.app, ["index", "rollback"]).exit_code == 0
    bad = run(cli.app, ["index", "promote", "nope"])
    assert bad.exit_code == 1 and "no index version nope" in bad.output
    bad = run(cli.app, ["index", "promote", "../etc"])
    assert bad.exit_code == 1 and "invalid index version name" in bad.output
