"""Extraction on real files from ../shared/data/ingest_docs and on fixtures the tests make."""

from __future__ import annotations

import io

import pytest
from ragline_testing import INGEST_DOCS, need_shared

from ragline.errors import DocumentRejected
from ragline.ingest.extract import decode_text, extract


def _real(rel: str) -> tuple[str, bytes]:
    p = need_shared(INGEST_DOCS / rel)
    return p.name, p.read_bytes()


def _rejected(name: str, data: bytes) -> DocumentRejected:
    with pytest.raises(DocumentRejected) as exc:
        extract(name, data)
    return exc.value


# ------------------------------------------------------------------ PDF
def test_pdf_pages_are_numbered():
    doc = extract(*_real("pdf/docling__multi_page.pdf"))
    assert doc.pages == 5
    assert [s.page for s in doc.sections] == sorted(s.page for s in doc.sections)
    assert {s.page for s in doc.sections} <= set(range(1, 6)) and len(doc.sections) >= 4


@pytest.mark.parametrize("rel", ["pdf/unstructured__password.pdf", "pdf/docling__2206.01062_pg3.pdf"])
def test_encrypted_pdf_fails_with_reason(rel):
    rej = _rejected(*_real(rel))
    assert rej.status == "failed" and "password" in rej.reason


@pytest.mark.parametrize("rel", ["malformed/qpdf__bad1.pdf", "malformed/qpdf__bad7.pdf", "malformed/qpdf__bad40.pdf"])
def test_corrupt_pdf_fails_with_reason(rel):
    rej = _rejected(*_real(rel))
    assert rej.status == "failed" and "corrupt" in rej.reason


@pytest.mark.parametrize("rel", ["pdf/docling__ocr_test.pdf", "pdf/unstructured__loremipsum-flat.pdf"])
def test_image_only_pdf_is_no_text_and_says_ocr(rel):
    rej = _rejected(*_real(rel))
    assert rej.status == "no_text" and "OCR" in rej.reason


def test_copy_protected_pdf_without_password_is_read():
    doc = extract(*_real("pdf/unstructured__copy-protected.pdf"))
    assert len(doc.text) > 1000


def test_made_up_encrypted_pdf(tmp_path):
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(width=200, height=200)
    w.encrypt("s3cret")
    buf = io.BytesIO()
    w.write(buf)
    rej = _rejected("secret.pdf", buf.getvalue())
    assert rej.status == "failed" and "password" in rej.reason


def test_truncated_pdf_fails_cleanly():
    _, data = _real("pdf/docling__multi_page.pdf")
    rej = _rejected("cut.pdf", data[: len(data) // 3])
    assert rej.status in {"failed", "no_text"} and rej.reason


# ------------------------------------------------------------------ HTML
def test_html_drops_scripts_and_boilerplate():
    doc = extract(*_real("html/unstructured__example-with-scripts.html"))
    text = doc.text
    assert "function(" not in text and "<script" not in text.lower()
    assert len(text) > 1000


def test_html_fixture_keeps_main_text_and_tables():
    html = b"""<html><head><title>T</title><style>p{}</style><script>var secret = 1;</script></head>
    <body><nav>Home | About</nav><h1>Heading one</h1><p>Main   text
    continues here.</p><div style="display:none">hidden instructions</div>
    <table><tr><th>k</th><th>v</th></tr><tr><td>rate</td><td>5%</td></tr></table>
    <footer>copyright</footer></body></html>"""
    doc = extract("page.html", html)
    t = doc.text
    assert "Main text continues here." in t
    assert "rate | 5%" in t
    for gone in ("secret", "Home | About", "hidden instructions", "copyright"):
        assert gone not in t
    assert doc.title == "T"
    assert any(s.heading == "Heading one" for s in doc.sections)


def test_html_cp1252():
    doc = extract(*_real("html/unstructured__fake-html-cp1252.html"))
    assert "\ufffd" not in doc.text


# ------------------------------------------------------------------ DOCX
def test_docx_tables_kept_as_text():
    doc = extract(*_real("docx/docling__word_tables.docx"))
    assert " | " in doc.text


def test_docx_fixture_headings_and_table(tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("Section A", level=1)
    d.add_paragraph("Alpha paragraph.")
    t = d.add_table(rows=2, cols=2)
    t.rows[0].cells[0].text, t.rows[0].cells[1].text = "name", "value"
    t.rows[1].cells[0].text, t.rows[1].cells[1].text = "speed", "42"
    buf = io.BytesIO()
    d.save(buf)
    doc = extract("f.docx", buf.getvalue())
    assert "speed | 42" in doc.text
    assert doc.sections[0].heading == "Section A"


def test_docx_that_is_not_a_zip_fails():
    rej = _rejected("broken.docx", b"PK\x03\x04 this is not really a zip")
    assert rej.status in {"failed", "unsupported"} and rej.reason


# ------------------------------------------------------------------ text, markdown, encodings
def test_utf16_with_bom():
    doc = extract(*_real("txt/unstructured__fake-text-utf-16.txt"))
    assert "\x00" not in doc.text and len(doc.text) > 20


def test_latin1_markdown():
    doc = extract(*_real("md/unstructured__umlauts-non-utf8.md"))
    assert any(ch in doc.text for ch in "äöüÄÖÜß")


def test_empty_file_is_no_text():
    assert _rejected("empty.txt", b"").status == "no_text"


@pytest.mark.parametrize(
    "data,expected",
    [
        ("naïve café".encode(), "naïve café"),
        ("\ufeffbom text".encode("utf-8"), "bom text"),
        ("Grüße".encode("utf-16"), "Grüße"),
        ("“smart quotes” – dash €".encode("cp1252"), "“smart quotes” – dash €"),
    ],
)
def test_decode_text(data, expected):
    assert decode_text(data) == expected


def test_markdown_headings_are_sections():
    doc = extract("a.md", b"# Title\n\nintro\n\n## Part two\n\nbody [link](http://x) ![img](y.png)\n")
    assert doc.title == "Title"
    assert [s.heading for s in doc.sections] == ["Title", "Part two"]
    assert "link" in doc.text and "http://x" not in doc.text


# ------------------------------------------------------------------ unsupported
@pytest.mark.parametrize(
    "rel,label",
    [("other/unstructured__fake-power-point.pptx", "PowerPoint"), ("other/unstructured__stanley-cups.xlsx", "Excel"),
     ("other/unstructured__fake-email.eml", "e-mail"), ("other/unstructured__fake.doc", "Word"),
     ("other/unstructured__winter-sports.epub", "EPUB")],
)
def test_other_formats_are_unsupported_naming_the_type(rel, label):
    rej = _rejected(*_real(rel))
    assert rej.status == "unsupported" and label in rej.reason


def test_pdf_named_txt_is_still_read_as_text_but_binary_named_pdf_is_checked():
    rej = _rejected("fake.pdf", b"PK\x03\x04" + b"\x00" * 100)
    assert rej.status in {"unsupported", "failed"}
