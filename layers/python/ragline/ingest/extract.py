"""Text extraction: bytes + a name -> sections of text with page numbers and headings.

Every failure becomes a :class:`DocumentRejected` with a status (``failed``, ``unsupported``,
``no_text``) and a reason a person understands; nothing here lets a parser's traceback out.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from ..errors import DocumentRejected
from ..models import ExtractedDocument, Section
from .sanitize import is_hidden_style

TEXT_EXTS = {".txt", ".text", ".log", ".csv", ".tsv"}
MARKDOWN_EXTS = {".md", ".markdown", ".mdown"}
HTML_EXTS = {".html", ".htm", ".xhtml"}
SUPPORTED = {".pdf", ".docx", *TEXT_EXTS, *MARKDOWN_EXTS, *HTML_EXTS}

_KNOWN_UNSUPPORTED = {
    ".pptx": "PowerPoint presentation (.pptx)",
    ".ppt": "PowerPoint presentation (.ppt)",
    ".xlsx": "Excel workbook (.xlsx)",
    ".xls": "Excel workbook (.xls)",
    ".eml": "e-mail message (.eml)",
    ".msg": "Outlook message (.msg)",
    ".epub": "EPUB e-book (.epub)",
    ".odt": "OpenDocument text (.odt)",
    ".rtf": "Rich Text Format (.rtf)",
    ".doc": "legacy Word document (.doc)",
    ".json": "JSON data (.json)",
    ".xml": "XML data (.xml)",
    ".zip": "ZIP archive (.zip)",
    ".png": "PNG image",
    ".jpg": "JPEG image",
    ".jpeg": "JPEG image",
    ".tif": "TIFF image",
    ".tiff": "TIFF image",
}

_SUPPORTED_LIST = "PDF, DOCX, HTML, Markdown, plain text"


def _sniff(data: bytes) -> str | None:
    """The real type from magic bytes, so a misnamed file is treated as what it is."""
    head = data[:8]
    if head.startswith(b"%PDF"):
        return ".pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "zip-corrupt"
        if "word/document.xml" in names:
            return ".docx"
        if any(n.startswith("ppt/") for n in names):
            return ".pptx"
        if any(n.startswith("xl/") for n in names):
            return ".xlsx"
        if "mimetype" in names:
            return ".epub-or-odf"
        return ".zip"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return ".ole"
    if head.startswith(b"{\\rtf"):
        return ".rtf"
    return None


def detect_type(name: str, data: bytes, content_type: str | None = None) -> str:
    ext = PurePosixPath(name).suffix.lower()
    sniffed = _sniff(data)
    if ext in {".pdf", ".docx"} and sniffed not in (ext, None, "zip-corrupt"):
        # named as a supported binary but is something else
        return sniffed or ext
    if ext in SUPPORTED:
        return ext
    if sniffed in (".pdf", ".docx"):
        return sniffed
    if content_type:
        ct = content_type.split(";")[0].strip().lower()
        mapped = {
            "application/pdf": ".pdf",
            "text/html": ".html",
            "text/markdown": ".md",
            "text/plain": ".txt",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
        }.get(ct)
        if mapped and not ext:
            return mapped
    return ext or (sniffed or "")


def extract(name: str, data: bytes, content_type: str | None = None, *, max_pages: int = 2000) -> ExtractedDocument:
    """Extract text, or raise DocumentRejected. A parser bug on a strange file becomes a
    ``failed`` status naming the file type and the error, never an unhandled exception."""
    kind = detect_type(name, data, content_type)
    try:
        return _extract(name, data, kind, content_type, max_pages)
    except DocumentRejected:
        raise
    except RecursionError:
        raise DocumentRejected("failed", f"the {kind.lstrip('.') or 'file'} is too deeply nested to read") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a property of the file
        raise DocumentRejected(
            "failed", f"the {kind.lstrip('.').upper() or 'file'} could not be read: {type(exc).__name__}: {_short(exc)}"
        ) from None


def _extract(name: str, data: bytes, kind: str, content_type: str | None, max_pages: int) -> ExtractedDocument:
    if kind == ".pdf":
        doc = extract_pdf(data, max_pages=max_pages)
    elif kind == ".docx":
        doc = extract_docx(data)
    elif kind in HTML_EXTS:
        doc = extract_html(decode_text(data))
    elif kind in MARKDOWN_EXTS:
        doc = extract_markdown(decode_text(data))
    elif kind in TEXT_EXTS:
        doc = extract_plain(decode_text(data))
    else:
        label = _KNOWN_UNSUPPORTED.get(kind) or {
            ".ole": "legacy Microsoft Office file (OLE2)",
            ".epub-or-odf": "EPUB/OpenDocument package",
            "zip-corrupt": "damaged ZIP-based file",
        }.get(kind) or (f"'{kind}' file" if kind else "file with no extension")
        raise DocumentRejected("unsupported", f"unsupported file type: {label}; Ragline reads {_SUPPORTED_LIST}")
    if not doc.title:
        doc.title = PurePosixPath(name).stem or None
    if not any(s.text.strip() for s in doc.sections):
        if kind == ".pdf":
            raise DocumentRejected(
                "no_text",
                "the PDF has no text layer (scanned or image-only); OCR is not enabled, so nothing was indexed",
            )
        raise DocumentRejected("no_text", "the document contains no text")
    return doc


# ---------------------------------------------------------------- plain text and encodings
def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16/32 with BOM, else the best guess among cp1252,
    latin-1 and others (charset-normalizer). Never raises: undecodable bytes are replaced."""
    if not data:
        return ""
    for bom, enc in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(enc, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:200_000]).best()
        if best is not None and best.encoding:
            enc = best.encoding
            # cp1252 is a superset of latin-1 for printable text; prefer it for western guesses
            if enc in {"latin_1", "iso8859_1", "iso-8859-1"}:
                enc = "cp1252"
            return data.decode(enc, errors="replace")
    except Exception:  # noqa: BLE001, S110 - detection is best effort; fall back below
        pass
    return data.decode("cp1252", errors="replace")


_PARA_SPLIT = re.compile(r"\n\s*\n")


def extract_plain(text: str) -> ExtractedDocument:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return ExtractedDocument(sections=[Section(text=text.strip())] if text.strip() else [], content_type="text/plain")


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def extract_markdown(text: str) -> ExtractedDocument:
    """Keep headings as section boundaries (the chunker splits there first); drop markup that
    carries no words (images, link targets, HTML comments)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    # link-reference "comments" ([//]: # (...)) render as nothing, so they are not content
    text = re.sub(r"(?m)^[ \t]*\[(?://|comment|_)\]:[ \t]*(?:#|<>)[^\n]*$", "", text)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    sections: list[Section] = []
    heading: str | None = None
    title: str | None = None
    buf: list[str] = []

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(text=body, heading=heading))
        buf.clear()

    for line in text.split("\n"):
        m = _MD_HEADING.match(line)
        if m:
            flush()
            heading = m.group(2).strip()
            if title is None and len(m.group(1)) == 1:
                title = heading
            buf.append(heading)
        else:
            buf.append(line)
    flush()
    return ExtractedDocument(sections=sections, content_type="text/markdown", title=title)


# ---------------------------------------------------------------- HTML
_BLOCK_TAGS = ["p", "li", "td", "th", "pre", "blockquote", "dd", "dt", "figcaption", "caption"]
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]


def extract_html(html: str) -> ExtractedDocument:
    """Main text of a page: scripts, styles, navigation, headers/footers, forms and hidden
    elements dropped; headings kept as section boundaries; table rows kept as text lines."""
    import warnings

    from bs4 import BeautifulSoup, Comment, XMLParsedAsHTMLWarning

    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)

    try:
        soup = BeautifulSoup(html, "lxml")
    except Exception:  # noqa: BLE001 - lxml missing or broken input: use the stdlib parser
        soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
                     "nav", "header", "footer", "aside", "form", "button", "select", "input", "head"]):
        tag.decompose()
    for c in soup.find_all(string=lambda s: isinstance(s, Comment)):
        c.extract()
    for tag in soup.find_all(True):
        if tag.attrs is None:
            continue
        if tag.has_attr("hidden") or tag.get("aria-hidden") == "true" or is_hidden_style(tag.get("style") or ""):
            tag.decompose()
    # whitespace inside text is layout, not structure: only block elements make line breaks
    for s in soup.find_all(string=True):
        if s.parent is not None and s.parent.name != "pre" and not isinstance(s, Comment):
            s.replace_with(re.sub(r"\s+", " ", str(s)))
    for tr in soup.find_all("tr"):
        cells = [c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])]
        tr.replace_with(soup.new_string("\n" + " | ".join(c for c in cells if c) + "\n"))
    for br in soup.find_all("br"):
        br.replace_with("\n")
    body = soup.body or soup
    sections: list[Section] = []
    heading: str | None = None
    buf: list[str] = []

    def flush() -> None:
        txt = "\n".join(x for x in buf if x).strip()
        if txt:
            sections.append(Section(text=txt, heading=heading))
        buf.clear()

    for h in body.find_all(_HEADINGS):
        h.insert_before(soup.new_string("\n\x00H\x00"))
        h.insert_after(soup.new_string("\n"))
    for blk in body.find_all(_BLOCK_TAGS + ["div", "section", "article", "main", "table", "ul", "ol"]):
        blk.insert_before(soup.new_string("\n"))
        blk.insert_after(soup.new_string("\n"))
    raw = body.get_text("")
    lines = [re.sub(r"[ \t\u00a0]+", " ", ln).strip() for ln in raw.split("\n")]
    pending_heading = False
    for ln in lines:
        if ln.startswith("\x00H\x00"):
            ln = ln[3:].strip()
            pending_heading = True
        if not ln:
            continue
        if pending_heading:
            flush()
            heading = ln
            pending_heading = False
        buf.append(ln)
    flush()
    # collapse paragraphs: one block per line -> blank line between blocks
    for s in sections:
        s.text = "\n\n".join(p for p in s.text.split("\n") if p.strip())
    return ExtractedDocument(sections=sections, content_type="text/html", title=title or None)


# ---------------------------------------------------------------- DOCX
# A DOCX is a zip: a 112 KB upload can unpack to 34 MB of XML that takes minutes and half a GB
# to parse (a 500 KB one, over 2.5 GB). The unpacked size is checked before parsing.
DOCX_MAX_UNPACKED_BYTES = 64 * 1024 * 1024
DOCX_MAX_RATIO = 100  # unpacked / packed, over the whole archive
DOCX_MAX_ENTRIES = 10_000


def _check_docx_archive(data: bytes) -> None:
    try:
        entries = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: python-docx says so below
    unpacked = sum(e.file_size for e in entries)
    packed = max(1, sum(e.compress_size for e in entries))
    if len(entries) > DOCX_MAX_ENTRIES or unpacked > DOCX_MAX_UNPACKED_BYTES or (
            unpacked > 8 * 1024 * 1024 and unpacked / packed > DOCX_MAX_RATIO):
        raise DocumentRejected(
            "failed", f"the Word document is too large when unpacked ({unpacked / 1e6:.0f} MB from "
                      f"{len(data) / 1e3:.0f} KB, {len(entries)} parts; the limit is "
                      f"{DOCX_MAX_UNPACKED_BYTES // (1024 * 1024)} MB)")


def extract_docx(data: bytes) -> ExtractedDocument:
    """Paragraphs and tables in document order; headings (Heading n styles) start sections;
    each table row becomes one ``cell | cell`` line so tables stay searchable as text."""
    _check_docx_archive(data)
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        d = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise DocumentRejected("failed", f"the Word document could not be opened: it is damaged or not a DOCX ({type(exc).__name__})") from None
    sections: list[Section] = []
    heading: str | None = None
    buf: list[str] = []

    def flush() -> None:
        txt = "\n\n".join(buf).strip()
        if txt:
            sections.append(Section(text=txt, heading=heading))
        buf.clear()

    body = d.element.body
    for child in body.iterchildren():
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            p = Paragraph(child, d)
            text = p.text.strip()
            if not text:
                continue
            style = (p.style.name if p.style is not None else "") or ""
            if style.lower().startswith(("heading", "title")):
                flush()
                heading = text
            buf.append(text)
        elif tag == "tbl":
            table = Table(child, d)
            rows = []
            for row in table.rows:
                cells: list[str] = []
                for cell in row.cells:
                    t = cell.text.strip().replace("\n", " ")
                    if not cells or cells[-1] != t:  # merged cells repeat; keep once
                        cells.append(t)
                if any(cells):
                    rows.append(" | ".join(cells))
            if rows:
                buf.append("\n".join(rows))
    flush()
    title = (d.core_properties.title or "").strip() or None
    return ExtractedDocument(sections=sections, content_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document", title=title)


# ---------------------------------------------------------------- PDF
def extract_pdf(data: bytes, *, max_pages: int = 2000) -> ExtractedDocument:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except Exception as exc:  # noqa: BLE001
        raise DocumentRejected("failed", f"the PDF is corrupt and could not be opened ({_short(exc)})") from None
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except Exception:  # noqa: BLE001
            ok = 0
        if not ok:
            raise DocumentRejected("failed", "the PDF is password-protected; upload an unencrypted copy")
    try:
        n_pages = len(reader.pages)
    except Exception as exc:  # noqa: BLE001
        raise DocumentRejected("failed", f"the PDF is corrupt: its page tree cannot be read ({_short(exc)})") from None
    if n_pages > max_pages:
        raise DocumentRejected("failed", f"the PDF has {n_pages} pages, more than the limit of {max_pages}")
    sections: list[Section] = []
    bad_pages = 0
    for i in range(n_pages):
        try:
            text = reader.pages[i].extract_text() or ""
        except (PdfReadError, Exception):  # noqa: BLE001 - one damaged page must not lose the rest
            bad_pages += 1
            continue
        text = _clean_pdf_text(text)
        if text:
            sections.append(Section(text=text, page=i + 1))
    if bad_pages and not sections:
        raise DocumentRejected("failed", f"the PDF is damaged: none of its {n_pages} pages could be read")
    title = None
    try:
        meta = reader.metadata
        title = (meta.title or "").strip() if meta else None
    except Exception:  # noqa: BLE001
        title = None
    return ExtractedDocument(sections=sections, content_type="application/pdf", title=title or None, pages=n_pages)


def _clean_pdf_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"(\w)-\n(\w)", r"\1\2", text)  # de-hyphenate line breaks
    text = re.sub(r"[ \t]+", " ", text)
    return text.strip()


def _short(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:160]
