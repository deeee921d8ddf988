"""All 77 files of ../shared/data/ingest_docs in ONE run of ``ragline ingest`` (technique: the
real CLI command through typer's CliRunner, on the embedded adapters with the hashing embedder;
marked slow because the run takes over a minute on this machine: the 619-page PDF, the 872-page
DOCX and War and Peace are in it).

Proves: no crash; every file ends with a status and, unless indexed, a reason a person
understands; the statuses are those the data set's README leads us to expect (written down
below, per file); nothing is half-indexed (every indexed document's registry chunk ids equal
the index's live chunk ids and no staged rows remain; nothing else has rows); no file of this
benign set trips the prompt-injection patterns (false positives measured on real documents);
the summary table names every file."""

from __future__ import annotations

import pytest
from ragline_testing import INGEST_DOCS, need_shared
from typer.testing import CliRunner

from ragline import factory
from ragline.models import TenantScope

pytestmark = pytest.mark.slow

FOLDERS = ["docx", "html", "malformed", "md", "other", "pdf", "txt"]
ENCRYPTED = {"pdf/unstructured__password.pdf", "pdf/docling__2206.01062_pg3.pdf"}
CORRUPT = {"malformed/qpdf__bad1.pdf", "malformed/qpdf__bad7.pdf", "malformed/qpdf__bad40.pdf"}
SCANNED = {"pdf/unstructured__loremipsum-flat.pdf", "pdf/unstructured__single_table.pdf",
           "pdf/unstructured__table-multi-row-column-cells.pdf", "pdf/docling__ocr_test.pdf",
           "pdf/docling__nemotron_multipage.pdf"}
OTHER_FORMATS = {"other/unstructured__fake-power-point.pptx": "PowerPoint", "other/unstructured__stanley-cups.xlsx": "Excel",
                 "other/unstructured__fake-email.eml": "e-mail", "other/unstructured__winter-sports.epub": "EPUB",
                 "other/unstructured__fake.odt": "OpenDocument", "other/unstructured__fake-doc.rtf": "Rich Text",
                 "other/unstructured__fake.doc": "legacy Word", "malformed/unstructured__fake-power-point-malformed.pptx": "PowerPoint"}
EMPTY = {"txt/unstructured__empty.txt"}


def expected(rel: str) -> tuple[str, str | None]:
    """(status, a phrase the reason must contain) from the README's description of each file.
    Everything not listed is expected to index: that includes the copy-protected PDF (no open
    password), the OCR-layer scans, the damaged-stream PDF (it opens; what survives is indexed),
    the truncated JSON in a .txt file (it is text), every encoding case and the long documents."""
    if rel in ENCRYPTED:
        return "failed", "password-protected"
    if rel in CORRUPT:
        return "failed", "corrupt"
    if rel in SCANNED:
        return "no_text", "no text layer"
    if rel in OTHER_FORMATS:
        return "unsupported", OTHER_FORMATS[rel]
    if rel in EMPTY:
        return "no_text", "no text"
    return "indexed", None


@pytest.fixture
def cli_app(make_app):
    app = make_app()
    factory.use(app)
    yield app
    factory.use(None)


def test_ingest_every_shared_document_in_one_run(cli_app, tmp_path):
    from ragline.cli import app as cli

    root = need_shared(INGEST_DOCS)
    files = sorted(f.relative_to(root).as_posix() for d in FOLDERS for f in (root / d).rglob("*") if f.is_file())
    assert len(files) == 77

    result = CliRunner().invoke(cli, ["ingest", *(str(root / d) for d in FOLDERS), "--tenant", "acme"],
                                env={"COLUMNS": "160"}, catch_exceptions=False)
    assert result.exit_code == 1, result.output  # 1 = finished, and some files failed (the encrypted and corrupt ones)
    assert "Traceback" not in result.output

    records = {r.source_key.removeprefix("tenants/acme/"): r for r in cli_app.registry.list("acme")}
    assert sorted(records) == files, "every file must end with a registry record"

    scope = TenantScope("acme")
    wrong = []
    for rel in files:
        rec = records[rel]
        want_status, phrase = expected(rel)
        if rec.status.value != want_status or (phrase and phrase.lower() not in (rec.reason or "").lower()):
            wrong.append((rel, rec.status.value, rec.reason))
        if rec.status.value == "indexed":
            assert rec.reason is None and rec.chunk_ids, rel
            assert cli_app.index.live_chunk_ids(scope, rec.doc_id) == rec.chunk_ids, f"{rel} is half-indexed"
            assert sorted(cli_app.index.all_chunk_ids("acme", rec.doc_id)) == sorted(rec.chunk_ids), f"{rel} left staged rows"
            assert "prompt_injection" not in rec.flags, f"false positive on a benign document: {rel}"
        else:
            reason = rec.reason or ""
            assert 15 <= len(reason) <= 300 and "Traceback" not in reason and "\n" not in reason, (rel, reason)
            assert rec.chunk_ids == [] and cli_app.index.all_chunk_ids("acme", rec.doc_id) == [], rel
    assert not wrong, f"unexpected outcomes: {wrong}"

    # the summary names every file (by file name, not a truncated path) and counts the statuses
    for rel in files:
        assert rel.rsplit("/", 1)[1] in result.output, f"{rel} missing from the summary"
    counts = {}
    for r in records.values():
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    assert counts == {"indexed": 58, "failed": 5, "no_text": 6, "unsupported": 8}
    assert "failed: 5  indexed: 58  no_text: 6  unsupported: 8" in result.output
