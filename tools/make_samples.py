"""Writes the two binary samples (DOCX and PDF) from text kept here, so their content is ours
and reviewable. Run: .venv/bin/python tools/make_samples.py"""

from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "samples"

SECURITY_PAGES = [
    [
        "Northwind Logistics security handbook",
        "Passwords must be at least 14 characters long and are never reused.",
        "Multi-factor authentication is mandatory for e-mail, VPN and the warehouse system.",
        "Report a lost laptop or phone to the security desk within one hour.",
    ],
    [
        "Incident response",
        "Suspected phishing e-mails are forwarded to phishing@northwind.example and then deleted.",
        "The security team answers incidents around the clock; the on-call number is on every badge.",
        "Laptops are encrypted with full-disk encryption before they leave the IT desk.",
    ],
]


def write_pdf(path: Path, pages: list[list[str]]) -> None:
    """A minimal, valid PDF with a real text layer (Helvetica), one content stream per page."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    pages_id = len(objects) + 1 + 2 * len(pages)  # reserved after the page objects
    page_ids = []
    for lines in pages:
        ops = ["BT", "/F1 12 Tf", "72 740 Td", "16 TL"]
        for line in lines:
            safe = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({safe}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (pages_id, content, font)
            )
        )
    kids = b" ".join(b"%d 0 R" % p for p in page_ids)
    assert add(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))) == pages_id
    info = add(b"<< /Title (Northwind Logistics security handbook) >>")
    catalog = add(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, catalog, info, xref)
    path.write_bytes(bytes(out))


def write_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.core_properties.title = "Northwind Logistics office locations"
    d.add_heading("Northwind Logistics office locations", level=1)
    d.add_paragraph("Visitors sign in at reception. Parking is free for visitors at every site.")
    table = d.add_table(rows=1, cols=3)
    for cell, text in zip(table.rows[0].cells, ("Office", "Address", "Opening hours")):
        cell.text = text
    for row in (
        ("Rotterdam (headquarters)", "Wilhelminakade 12, Rotterdam", "Mon-Fri 8:00-18:00"),
        ("Hamburg warehouse", "Am Sandtorkai 5, Hamburg", "Mon-Sat 6:00-22:00"),
        ("Lyon sales office", "Rue de la Republique 40, Lyon", "Mon-Fri 9:00-17:30"),
    ):
        cells = table.add_row().cells
        for cell, text in zip(cells, row):
            cell.text = text
    d.add_heading("Getting there", level=2)
    d.add_paragraph("The Rotterdam office is a ten-minute walk from Rotterdam Centraal station.")
    d.core_properties.created = __import__("datetime").datetime(2026, 1, 1)
    d.save(str(path))


if __name__ == "__main__":
    write_pdf(HERE / "security-handbook.pdf", SECURITY_PAGES)
    write_docx(HERE / "office-locations.docx")
    print("wrote security-handbook.pdf and office-locations.docx")
