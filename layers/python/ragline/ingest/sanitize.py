"""Text hygiene before indexing: invisible characters removed, instruction-like text flagged
and neutralised so a passage cannot pose as an instruction to the model.

Hand-written regular expressions, because no maintained offline library covers this: the
ML classifiers for prompt injection need model weights, and the point here is a cheap,
explainable first line. The second line is structural and does not depend on these patterns:
the prompt builder escapes every passage (``ragline.generation.prompt``). The patterns are
tuned against ``tests/data/injection_corpus.jsonl`` (attacks that must be caught) and
``tests/data/injection_benign.jsonl`` (ordinary business text that must not be flagged).

Detection also looks through common disguises: letters spaced out (``i g n o r e``), full-width
look-alikes folded by NFKC (``＜system＞``), letters of other scripts that look Latin (Cyrillic
``о`` in ``ignоre``, folded by Unicode's confusables data through ``confusable_homoglyphs``),
Latin text stored backwards under a right-to-left override so that it *displays* forwards
(:func:`clean_text` turns such a segment to its displayed order when that reads as an instruction), base64 blobs that decode to an
instruction, and text smuggled in Unicode tag characters (invisible ASCII). Hidden HTML (``display:none``,
``font-size:0``, ``aria-hidden`` ...) never reaches this module: the HTML extractor drops it,
using :func:`is_hidden_style`.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from functools import lru_cache

# zero-width and bidi-control characters, word joiners, BOM, combining grapheme joiner, Hangul
# fillers, variation selectors (incl. the supplement used for "invisible ASCII" smuggling) and
# Unicode tag characters
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufe00-\ufe0f\ufeff\uffa0"
    "\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
_TAG_CHARS = re.compile("[\U000e0020-\U000e007e]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# The patterns below compile on first use (``_patterns()``), not at import: only ingestion uses
# them, and compiling them costs ~5 ms of every Lambda cold start that imports this module
# (`python -X importtime`: 6.2 ms -> 1.0 ms; the query function imports it through the service
# and never calls them).
_AI = r"(?:ai|a\.i\.|assistant|chatbot|chat\s*bot|llm|language model|model|bot|gpt|claude|copilot)"
_INJECTION_PATTERNS = (
    # instruction overrides
    r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}\b(previous|prior|above|earlier|preceding|all|any|system|your)\b[^.\n]{0,20}\b(instructions?|prompts?|rules|directions|context|guidelines|guardrails|directives|constraints)\b",
    r"\b(ignore|disregard|forget)\s+(?:all\s+|everything\s+)?(?:of\s+)?(?:the\s+|your\s+)?(?:text\s+|content\s+)?(above|before this|preceding|previous|prior)\b[^.\n]{0,30}\b(and|then|instead)\b",
    r"\bforget (?:everything|all) (?:you(?:'ve| have)? (?:were|been) (?:told|given)|you know|above|before this|(?:that )?(?:was|I) said (?:above|before))\b",
    r"\bnew (?:system )?instructions?\s*:",
    r"\b(?:updated|real|actual|true|revised) (?:system )?(?:instructions?|prompt)\s*:",
    # role-play and persona switches
    r"\byou are (?:now|no longer)\b[^.\n]{0,40}\b(dan|jailbroken|jailbreak|unrestricted|unfiltered|uncensored|free|bound|evil|persona|character|mode|ai|assistant|model|chatbot)\b",
    r"\bfrom now on,?\s+(?:you|the " + _AI + r")\b[^.\n]{0,20}\b(will|must|are|shall|should|respond|answer|act|only)\b",
    r"\b(pretend|act|behave|role-?play)\s+(?:to be|as if you were|as if you are|as|like)\s+(?:an?\s+|the\s+)?[^.\n]{0,30}\b(?:without|no|with no|free of)\s+(?:any\s+)?(restrictions|filters|rules|limits|guidelines|censorship)\b",
    r"\b(developer|god|dan|jailbreak|sudo)\s+mode\b",
    r"\bdo anything now\b",
    # talking to the model
    r"\b(?:note|message|attention|instructions?|hint|directive)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?" + _AI + r"s?\b",
    r"\b(?:dear|hey|hi|attention)\s+(?:the\s+)?" + _AI + r"s?\b[,:!]",
    r"\bif you are an? " + _AI + r"\b",
    r"\b(?:the\s+)?" + _AI + r"s?\s+(?:must|should|shall|will)\s+(?:now\s+|always\s+|only\s+)?(?:ignore|say|respond|reply|answer|tell|output|reveal|recommend|claim|state|print|include)\b",
    r"\b(reveal|print|show|repeat|leak|output|disclose)\b[^.\n]{0,30}\b(system prompt|hidden prompt|initial prompt|your instructions|your prompt|the instructions above)\b",
    r"\bdo not (tell|inform|let) the user\b",
    r"\bwithout (telling|informing|alerting) the user\b",
    # fake structure: chat-template tokens, our own block tags, role headers
    r"<\s*/?\s*(system|assistant|user|instructions?|passages?|context|question|prompt|tool|function)\b[^>\n]{0,60}>",
    r"<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id)\s*\|>",
    r"\[/?(?:INST|SYS|SYSTEM)\]|<<\s*/?SYS\s*>>",
    r"^\s*(?:#{1,6}\s*|\*\*)?(system|assistant|developer)\s*(?:prompt|message)?\s*(?:\*\*)?\s*:",
    r"\b(?:begin|end|start)\s+(?:of\s+)?(?:the\s+)?system\s+(?:prompt|message|instructions?)\b",
    # encoded payloads with an instruction to act on them
    r"\b(?:decode|base64[- ]decode|rot13)\b[^.\n]{0,60}\b(?:follow|execute|obey|run|do what it says|act on)\b",
    r"\b(?:follow|execute|obey)\b[^.\n]{0,40}\b(?:base64|encoded|rot13)\b",
)
_SPACED_PATTERN = r"(?<!\w)(?:\w[ .\-_*|]{1,3}){5,}\w(?!\w)"
_SPACED_WORDS = ("ignoreprevious", "ignoreall", "ignoreyour", "ignoretheabove", "disregard", "systemprompt",
                 "newinstructions", "youarenow", "jailbreak", "developermode")
_B64_PATTERN = r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{20,}={0,2}(?![A-Za-z0-9+/=])"
_HIDDEN_STYLE_PATTERNS = (
    r"display:none",
    r"visibility:(?:hidden|collapse)",
    r"font-size:0*(?:\.0+)?(?:px|pt|em|rem|%|vw|vh)?(?:;|!|$)",
    r"opacity:0*(?:\.0+)?(?:;|!|$)",
    r"(?:^|;)(?:max-)?(?:height|width):0+(?:px)?;.*overflow:hidden|overflow:hidden;.*(?:^|;)(?:max-)?(?:height|width):0+(?:px)?(?:;|$)",
    r"(?:left|top|text-indent):-\d{3,}",
    r"clip:rect\(0(?:px)?,?0(?:px)?,?0(?:px)?,?0(?:px)?\)",
    r"transform:scale\(0\)",
)


class _Compiled:
    def __init__(self) -> None:
        self.injection = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in _INJECTION_PATTERNS]
        self.spaced = re.compile(_SPACED_PATTERN)
        self.b64 = re.compile(_B64_PATTERN)
        self.hidden_style = [re.compile(p) for p in _HIDDEN_STYLE_PATTERNS]


@lru_cache(maxsize=1)
def _patterns() -> _Compiled:
    return _Compiled()


def is_hidden_style(style: str) -> bool:
    """True when an inline CSS style hides its element from a reader: display none,
    invisible, zero font size or opacity, collapsed with overflow hidden, pushed off-screen."""
    s = re.sub(r"\s+", "", style or "").lower()
    return bool(s) and any(rx.search(s) for rx in _patterns().hidden_style)


# a right-to-left override (U+202E) up to its pop (U+202C) or the end of the line
_RLO_SEGMENT = re.compile("\u202e([^\u202c\n]*)(\u202c?)")


def _as_displayed(m: re.Match) -> str:
    """An RLO segment, turned to the order a reader sees when that hides an instruction: Latin
    text under the override displays backwards, so stored "snoitcurtsni suoiverp erongI" reads
    "Ignore previous instructions" (a model may still decode it). Otherwise the stored order
    stays, which is what a model reads (an instruction stored forwards and displayed backwards
    is found as it stands). Text in a right-to-left script is never turned. The override
    characters stay here; they are counted and removed with the other invisible characters."""
    inner = m.group(1)
    letters = [c for c in inner if c.isalpha()]
    if letters and sum(1 for c in letters if c.isascii()) * 2 > len(letters):
        shown = inner[::-1]
        if _raw_hits(shown) and not _raw_hits(inner):
            inner = shown
    return "\u202e" + inner + m.group(2)


def clean_text(text: str) -> tuple[str, int]:
    """NFC-normalise, turn Latin right-to-left-override segments that display as an instruction
    to their displayed order, drop invisible and control characters. Returns (text, removed count)."""
    text = unicodedata.normalize("NFC", text)
    if "\u202e" in text:
        text = _RLO_SEGMENT.sub(_as_displayed, text)
    cleaned, n1 = _INVISIBLE.subn("", text)
    cleaned, n2 = _CONTROL.subn("", cleaned)
    return cleaned, n1 + n2


def smuggled_text(text: str) -> str:
    """ASCII hidden in Unicode tag characters (U+E0020..E007E map to ' '..'~'), which renders
    as nothing but a model tokenizer may still read. Call before :func:`clean_text`."""
    return " ".join("".join(chr(ord(c) - 0xE0000) for c in m.group(0)) for m in _TAG_CHARS.finditer(text))


def _raw_hits(text: str) -> list[str]:
    return [m.group(0) for rx in _patterns().injection for m in rx.finditer(text)]


@lru_cache(maxsize=4096)
def _latin_lookalike(ch: str) -> str:
    """The Latin letter ``ch`` is confusable with (Cyrillic "о" -> "o"), or ``ch`` itself."""
    from confusable_homoglyphs import confusables  # 70 ms to import: only for non-ASCII letters

    found = confusables.is_confusable(ch, greedy=True, preferred_aliases=["latin"])
    if found:
        for glyph in found[0]["homoglyphs"]:
            c = glyph["c"]
            if len(c) == 1 and c.isascii() and c.isalpha():
                return c
    return ch


def fold_lookalikes(text: str) -> str:
    """NFKC (full-width and compatibility forms) and then letters of other scripts that look
    Latin, folded to the Latin letters a reader takes them for."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return "".join(_latin_lookalike(c) if not c.isascii() and c.isalpha() else c for c in text)


def _disguised(text: str) -> list[str]:
    """Hits hidden by spacing, look-alike characters or base64."""
    hits: list[str] = []
    folded = fold_lookalikes(text)
    if folded != text:
        hits.extend(_raw_hits(folded))
    for m in _patterns().spaced.finditer(text):
        joined = re.sub(r"[ .\-_*|]", "", m.group(0)).lower()
        if any(w in joined for w in _SPACED_WORDS):
            hits.append(m.group(0))
    for m in _patterns().b64.finditer(text):
        blob = m.group(0)
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded.isprintable() and _raw_hits(decoded):
            hits.append(blob)
    return hits


def find_injection(text: str) -> list[str]:
    """Instruction-like spans in ``text`` (empty when none)."""
    return _raw_hits(text) or _disguised(text)


def neutralise(text: str) -> str:
    """Wrap instruction-like spans so they read as quoted data, not as commands. Disguised
    spans (spaced letters, base64) are wrapped as they stand; look-alike characters are folded
    first so the wrapped text is what a model would read."""
    if not _raw_hits(text):
        folded = fold_lookalikes(text)
        if folded != text and _raw_hits(folded):
            text = folded
    compiled = _patterns()
    for rx in compiled.injection:
        text = rx.sub(lambda m: f"[quoted text: {m.group(0).strip('<>/ ')}]", text)
    for rx in (compiled.spaced, compiled.b64):
        text = rx.sub(lambda m: f"[quoted text: {m.group(0)}]" if _disguised(m.group(0)) else m.group(0), text)
    return text
