"""Chunking invariants, property-based (hypothesis): no text lost, token limit held, overlap
as configured, boundaries preferred over mid-sentence cuts."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragline.ingest.chunking import Chunker
from ragline.models import Section
from ragline.settings import ChunkerSettings
from ragline.tokens import encoding

words = st.sampled_from(
    ["alpha", "beta", "gamma", "Δέλτα", "naïve", "résumé", "数据", "データ", "ümlaut", "a", "x1", "2026", "e-mail",
     "!", ",", ".", "?", "\n", "\n\n", "  ", "😀", "tab\t", "long" * 20]
)
texts = st.lists(words, min_size=0, max_size=600).map(lambda ws: " ".join(ws))
configs = st.tuples(st.integers(min_value=16, max_value=120), st.integers(min_value=0, max_value=15))


def _cover(text: str, pieces) -> None:
    # chunks are slices of the section, in order, touching or overlapping: their union is the text
    assert pieces[0].start == 0
    assert pieces[-1].end == len(text)
    for a, b in itertools.pairwise(pieces):
        assert b.start <= a.end, "a gap between chunks would lose text"
        assert b.start > a.start, "chunks must advance"
    for p in pieces:
        assert text[p.start : p.end] == p.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, cfg=configs)
def test_no_text_lost_and_limits_held(text, cfg):
    max_t, overlap = cfg
    chunker = Chunker(ChunkerSettings(max_tokens=max_t, overlap_tokens=overlap))
    pieces = chunker.split([Section(text=text)])
    if not text.strip():
        assert pieces == []
        return
    _cover(text, pieces)
    enc = encoding()
    for p in pieces:
        assert len(enc.encode(p.text, disallowed_special=())) <= max_t


@settings(max_examples=60, deadline=None)
@given(n_sentences=st.integers(min_value=30, max_value=80), overlap=st.integers(min_value=1, max_value=12))
def test_overlap_as_configured(n_sentences, overlap):
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(n_sentences))
    chunker = Chunker(ChunkerSettings(max_tokens=48, overlap_tokens=overlap))
    pieces = chunker.split([Section(text=text)])
    assert len(pieces) > 1
    enc = encoding()
    for a, b in itertools.pairwise(pieces):
        shared = text[b.start : a.end]
        # the overlap is `overlap` tokens of the previous chunk's tail (re-tokenising a slice may
        # merge one token at the edge)
        assert abs(len(enc.encode(shared)) - overlap) <= 1


def test_prefers_paragraph_then_sentence_boundaries():
    para = "This is a sentence about shipping containers and their routes. " * 6
    text = (para.strip() + "\n\n") * 6
    pieces = Chunker(ChunkerSettings(max_tokens=100, overlap_tokens=0)).split([Section(text=text)])
    assert len(pieces) > 2
    for p in pieces[:-1]:
        assert p.text.rstrip().endswith("."), f"cut mid-sentence: {p.text[-40:]!r}"


def test_sections_keep_page_and_heading():
    secs = [Section(text="Page one text.", page=1), Section(text="Intro body.", heading="Intro", page=2)]
    pieces = Chunker().split(secs)
    assert [(p.page, p.heading) for p in pieces] == [(1, None), (2, "Intro")]


def test_overlap_must_be_smaller_than_size():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ChunkerSettings(max_tokens=32, overlap_tokens=32)


def test_an_overlap_inside_a_multi_token_character_still_advances():
    # found by the property test above: with 3 overlap tokens the window after "😀 alpha alpha"
    # started inside the emoji's tokens (one character offset) and repeated the chunk from 0
    text = "😀 alpha alpha " + "long" * 20 + " " + "long" * 20
    pieces = Chunker(ChunkerSettings(max_tokens=16, overlap_tokens=3)).split([Section(text=text)])
    _cover(text, pieces)
