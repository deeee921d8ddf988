"""The extractive answerer: the local stand-in for a generative model.

It never invents text. It picks the sentences of the retrieved passages that best match the
question and quotes them with [n] citation markers, and it says plainly that no generative
model is configured.
"""

from __future__ import annotations

import math
import re

from ..models import Generation, SearchHit

NOTICE = "No generative model is configured; this answer quotes the most relevant passages."
# How an answer says the passages do not answer the question: the prompt asks for "I don't
# know"; models also phrase it these ways. Such an answer is not cached (a document uploaded
# later may answer it, and the entry cites none that would invalidate it).
_REFUSAL = re.compile(
    r"^\W*(i don'?t know|i do not know|i'?m not sure|i cannot (?:answer|find)|i can'?t (?:answer|find)"
    r"|(?:the )?(?:provided |given )?(?:passages|documents|context) (?:do not|don'?t) (?:contain|say|mention))",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text.replace("\u2019", "'")))
MODEL_ID = "ragline/extractive-v1"

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n{2,}")
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "how", "in", "is", "it", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "why", "with", "does", "do", "did", "can", "could", "should", "would", "will", "has", "have", "had", "not", "no", "yes", "than", "then", "there", "their", "they", "its", "into", "about"]
)


def _stem(w: str) -> str:
    return w[:6]


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def split_sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENT.split(text) if p and p.strip()]
    return [re.sub(r"\s+", " ", p) for p in parts]


class ExtractiveAnswerer:
    model_id = MODEL_ID

    def __init__(self, max_sentences: int = 3, max_chars: int = 700):
        self.max_sentences = max_sentences
        self.max_chars = max_chars

    def answer(self, question: str, hits: list[SearchHit]) -> Generation:
        if not hits:
            return Generation(
                text="I don't know: no passage in your documents matches this question.",
                model_id=self.model_id, generative=False,
            )
        q = _terms(question)
        scored: list[tuple[float, int, int, str]] = []
        for rank, hit in enumerate(hits):
            prior = 1.0 / (1.0 + 0.35 * rank)
            for pos, sent in enumerate(split_sentences(hit.text)):
                t = _terms(sent)
                if not t:
                    continue
                overlap = len(q & t)
                n_words = len(sent.split())
                # headings and fragments ("Let's eat") match words but answer nothing
                brevity = min(1.0, n_words / 8.0)
                score = brevity * (overlap / math.sqrt(len(t) + 4)) * (1.0 + (overlap / max(len(q), 1))) + 0.15 * prior
                scored.append((score, rank, pos, sent))
        scored.sort(key=lambda s: (-s[0], s[1], s[2]))
        chosen: list[tuple[int, int, str]] = []
        total = 0
        for score, rank, pos, sent in scored:
            if len(chosen) >= self.max_sentences or (chosen and total + len(sent) > self.max_chars):
                break
            if chosen and score < 0.5 * scored[0][0]:
                break
            chosen.append((rank, pos, sent if len(sent) <= self.max_chars else sent[: self.max_chars].rsplit(" ", 1)[0] + " …"))
            total += len(sent)
        if not chosen:
            chosen = [(0, 0, split_sentences(hits[0].text)[0] if split_sentences(hits[0].text) else hits[0].text[:300])]
        quotes = [f"\u201c{s}\u201d [{rank + 1}]" for rank, _, s in chosen]
        used = sorted({rank + 1 for rank, _, _ in chosen})
        return Generation(
            text=NOTICE + "\n\n" + "\n".join(quotes),
            model_id=self.model_id, generative=False, used_citations=used,
        )

    @staticmethod
    def quoted_text(answer_text: str) -> str:
        """The quoted sentences without the notice and markers (for answer-quality metrics)."""
        body = answer_text.split("\n\n", 1)[-1]
        return " ".join(re.findall(r"\u201c(.*?)\u201d", body, flags=re.DOTALL)) or body
