"""Fuzzing the extractors, the sanitiser and the chunker (technique: hypothesis, with random
bytes and with mutations — bit flips, truncation, spliced garbage, duplicated ranges — of the
small valid PDF, DOCX, HTML, Markdown and text files in samples/). The contract under test:
``extract`` returns a document or raises DocumentRejected (with a status and a one-line reason),
never any other exception; sanitising and chunking whatever comes out never raise, lose no text,
and stay within the token limit; the injection patterns run in linear time on hostile input."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ragline_testing import REPO

from ragline.errors import DocumentRejected
from ragline.ingest.chunking import Chunker
from ragline.ingest.extract import extract
from ragline.ingest.sanitize import clean_text, find_injection, neutralise
from ragline.settings import ChunkerSettings

SAMPLES = {p.suffix: p.read_bytes() for p in sorted((REPO / "samples").iterdir()) if p.is_file()}
CHUNKER = Chunker(ChunkerSettings(max_tokens=64, overlap_tokens=8))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_samples_are_there():
    assert {".pdf", ".docx", ".html", ".md", ".txt"} <= set(SAMPLES)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "splice", "duplicate", "delete"]))
        if not buf:
            buf.extend(draw(st.binary(min_size=1, max_size=64)))
            continue
        i = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del buf[i:]
        elif op == "splice":
            buf[i:i] = draw(st.binary(min_size=1, max_size=256))
        elif op == "duplicate":
            j = draw(st.integers(i, min(len(buf), i + 512)))
            buf[i:i] = buf[i:j]
        else:
            j = draw(st.integers(i, min(len(buf), i + 256)))
            del buf[i:j]
    return bytes(buf)


def _check(name: str, data: bytes) -> None:
    try:
        doc = extract(name, data, max_pages=50)
    except DocumentRejected as rej:
        assert rej.status in {"failed", "unsupported", "no_text"}
        assert rej.reason and "\n" not in rej.reason and "Traceback" not in rej.reason
        return
    assert any(s.text.strip() for s in doc.sections)
    for sec in doc.sections:
        sec.text, _ = clean_text(sec.text)
        if find_injection(sec.text):
            sec.text = neutralise(sec.text)
    for piece in CHUNKER.split(doc.sections):
        assert piece.tokens <= 64
        assert doc.sections[piece.section].text[piece.start:piece.end] == piece.text


@pytest.mark.parametrize("ext", [".pdf", ".docx", ".html", ".md", ".txt"])
@FUZZ
@given(data=st.data())
def test_mutated_samples_never_crash_extraction(ext, data):
    _check(f"sample{ext}", data.draw(mutated(SAMPLES[ext])))


@FUZZ
@given(name=st.sampled_from(["x.pdf", "x.docx", "x.html", "x.md", "x.txt", "x.csv", "x", "x.pptx", "x.bin"]),
       head=st.sampled_from([b"", b"%PDF-1.7\n", b"PK\x03\x04", b"\xd0\xcf\x11\xe0", b"{\\rtf1", b"\xef\xbb\xbf", b"\xff\xfe"]),
       body=st.binary(max_size=2048))
def test_random_bytes_never_crash_extraction(name, head, body):
    _check(name, head + body)


@FUZZ
@given(st.text(max_size=3000))
def test_any_text_sanitises_and_chunks(text):
    cleaned, _ = clean_text(text)
    out = neutralise(cleaned) if find_injection(cleaned) else cleaned
    from ragline.models import Section

    pieces = CHUNKER.split([Section(text=out)])
    if out.strip():
        assert pieces and pieces[0].start == 0 and pieces[-1].end == len(out)


@pytest.mark.parametrize("hostile", [
    "a " * 100_000, "a." * 100_000, "ignore " * 30_000, "<" * 100_000, "A" * 200_000,
    "you are now " * 20_000, "<system" * 30_000, "i g n o r e " * 20_000, "\u200b" * 100_000,
])
def test_patterns_run_in_linear_time_on_hostile_input(hostile):
    t0 = time.perf_counter()
    cleaned, _ = clean_text(hostile)
    neutralise(cleaned) if find_injection(cleaned) else cleaned
    assert time.perf_counter() - t0 < 10.0  # generous for a shared 2-core machine; backtracking takes minutes
