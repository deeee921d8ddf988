"""Token-aware chunking.

Within each section (a heading's body or a PDF page) text is cut into windows of at most
``max_tokens`` tiktoken tokens. A window ends at the best boundary it can reach, in order of
preference: a paragraph break, a sentence end, a line break, a word boundary, anywhere.
Consecutive windows of a section overlap by ``overlap_tokens`` tokens. Windows are cut on
character offsets of token starts, so a multi-byte character is never split, and the union of
a section's chunks is exactly its text (no text lost).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from ..models import Section
from ..settings import ChunkerSettings
from ..tokens import encoding

_PARA = re.compile(r"\n[ \t]*\n\s*")
_LINE = re.compile(r"\n")
_SENT = re.compile(r"(?<=[.!?。！？])[\"')\]]?(?=\s)")
_WORD = re.compile(r"(?<=\S)(?=\s)")

# boundary priorities, best first
_RULES = (_PARA, _SENT, _LINE, _WORD)


@dataclass(slots=True)
class Piece:
    text: str
    start: int  # char offsets into the section text
    end: int
    tokens: int
    section: int
    page: int | None
    heading: str | None


class Chunker:
    def __init__(self, settings: ChunkerSettings | None = None):
        self.settings = settings or ChunkerSettings()

    @property
    def enc(self):
        """The tokenizer, loaded on first use (~0.3 s): the query, cache and evaluate Lambdas
        build a pipeline but never chunk, so their cold start does not pay for it."""
        return encoding(self.settings.encoding)  # lru_cached per encoding name

    def split(self, sections: list[Section]) -> list[Piece]:
        pieces: list[Piece] = []
        for si, sec in enumerate(sections):
            if sec.text.strip():
                pieces.extend(self._split_section(si, sec))
        return pieces

    def _count(self, text: str) -> int:
        return len(self.enc.encode(text, disallowed_special=()))

    def _split_section(self, si: int, sec: Section) -> list[Piece]:
        text = sec.text
        max_t = self.settings.max_tokens
        overlap = self.settings.overlap_tokens
        tokens = self.enc.encode(text, disallowed_special=())
        n = len(tokens)
        if n <= max_t:
            return [Piece(text, 0, len(text), n, si, sec.page, sec.heading)]
        # char offset where each token starts; append len(text) as the end sentinel
        _, offsets = self.enc.decode_with_offsets(tokens)
        offsets = list(offsets) + [len(text)]
        # boundary candidates per priority, as token indices where a token starts exactly there
        cands: list[list[int]] = []
        for rule in _RULES:
            idx = sorted(
                {
                    bisect.bisect_left(offsets, m.start())
                    for m in rule.finditer(text)
                    if offsets[min(bisect.bisect_left(offsets, m.start()), n)] == m.start()
                }
            )
            cands.append(idx)
        pieces: list[Piece] = []
        s = 0
        while s < n:
            limit = min(s + max_t, n)
            b = limit
            if limit < n:
                # prefer a boundary in the back half of the window; fall back to any boundary
                lo = s + max(1, (max_t - overlap) // 2) if max_t - overlap > 1 else s + 1
                b = self._best_break(cands, lo, limit) or self._best_break(cands, s + overlap + 1, limit) or limit
            start_c, end_c = offsets[s], offsets[b]
            chunk = text[start_c:end_c]
            count = self._count(chunk)
            # re-tokenising a slice can merge differently at its edges: hold the limit exactly
            while count > max_t and b > s + 1:
                b -= count - max_t
                b = max(b, s + 1)
                end_c = offsets[b]
                chunk = text[start_c:end_c]
                count = self._count(chunk)
            if end_c > start_c:
                pieces.append(Piece(chunk, start_c, end_c, count, si, sec.page, sec.heading))
            if b >= n:
                break
            nxt = b - overlap
            # tokens inside one character (an emoji's bytes) share its offset: the next window
            # must start at a later character, or it would repeat this one from its start
            while nxt < b and offsets[nxt] <= offsets[s]:
                nxt += 1
            s = nxt if nxt > s else b
        return pieces

    @staticmethod
    def _best_break(cands: list[list[int]], lo: int, hi: int) -> int | None:
        if lo > hi:
            return None
        for idx in cands:
            j = bisect.bisect_right(idx, hi) - 1
            if j >= 0 and idx[j] >= lo:
                return idx[j]
        return None
