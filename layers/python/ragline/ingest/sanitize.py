"""Text hygiene before indexing: invisible characters removed, instruction-like text flagged
and neutralised so a passage cannot pose as an instruction to the model."""

from __future__ import annotations

import re
import unicodedata

# zero-width and bidi-control characters, word joiners, BOM, Unicode tag characters
_INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_INJECTION = [
    re.compile(p, re.I)
    for p in (
        r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|any|system)\b[^.\n]{0,20}\b(instructions?|prompts?|rules|directions|context)\b",
        r"\byou are now\b[^.\n]{0,60}",
        r"\b(reveal|print|show|repeat|leak)\b[^.\n]{0,30}\b(system prompt|hidden prompt|instructions)\b",
        r"\bnew instructions?\s*:",
        r"</?\s*(system|assistant|instructions?|passage|context)\s*>",
        r"^\s*(system|assistant)\s*:",
        r"\bdo not (tell|inform) the user\b",
    )
]


def clean_text(text: str) -> tuple[str, int]:
    """NFC-normalise, drop invisible and control characters. Returns (text, removed count)."""
    text = unicodedata.normalize("NFC", text)
    cleaned, n1 = _INVISIBLE.subn("", text)
    cleaned, n2 = _CONTROL.subn("", cleaned)
    return cleaned, n1 + n2


def find_injection(text: str) -> list[str]:
    hits: list[str] = []
    for rx in _INJECTION:
        for m in rx.finditer(text):
            hits.append(m.group(0))
    return hits


def neutralise(text: str) -> str:
    """Wrap instruction-like spans so they read as quoted data, not as commands."""
    for rx in _INJECTION:
        text = rx.sub(lambda m: f"[quoted text: {m.group(0).strip('<>/ ')}]", text)
    return text
