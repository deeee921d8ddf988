"""Tier routing: a cheap, deterministic classifier that sends simple factual questions to the
small model and complex ones to the strong model.

Complex means any of: several questions in one (two question marks, "and what/how/why ..."),
a comparison ("compare", "difference between", "versus", "better than"), reasoning or synthesis
cues ("why", "explain", "evaluate", "implications", "step by step", "pros and cons",
"what would happen if"), a choice between alternatives ("Which is larger, A or B?"), advice
("Should ..."), an open-ended request (an overview, a walk-through, a plan, "how could we ...",
strengths and weaknesses), or a long question (more tokens than the configured limit). Everything
else (who/what/when/where/how many/define) is simple.

Written by hand on purpose: a rule list is auditable, costs microseconds and never changes
behaviour between deployments; its agreement with a hand-labelled set is measured in
bench/results/router_agreement.json (tests/data/router_labels.jsonl for development,
tests/data/router_labels_blind.jsonl as the blind check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..tokens import count_tokens

SMALL = "small"
LARGE = "large"

_COMPARATIVE = re.compile(
    r"\b(compare[sd]?|comparing|comparison|contrast|difference(?:s)? between|differ(?:s|ent)? (?:from|between|in)|"
    r"versus|vs\.?|better than|worse than|more (?:\w+ )?than|less (?:\w+ )?than|similarit(?:y|ies) between|"
    r"relative to|trade-?offs?)\b",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"(^|\b)(why|explain|explanation|justify|evaluate|assess|analy[sz]e|implications?|consequences?|"
    r"step[- ]by[- ]step|pros and cons|advantages and disadvantages|what would happen|what if|"
    r"how would|how should|should (?:we|i)|recommend|reason(?:s|ing)? (?:for|behind)|summari[sz]e|"
    r"critically|argue|predict|impact of|effects? of .* on|relationship between)\b",
    re.IGNORECASE,
)
_MULTI = re.compile(r"\?\s*\S.*\?|\b(?:and|also|as well as)\s+(?:what|how|why|when|where|who|which)\b|;\s*\w", re.IGNORECASE)
_LIST = re.compile(r"\b(list (?:all|every)|all the (?:ways|reasons|factors)|each of)\b", re.IGNORECASE)
# open-ended requests: an overview, a walk-through, a plan or a proposal is synthesis, not lookup
_OPEN = re.compile(
    r"\b(overview|tell me about|walk (?:me|us) through|describe|discuss|outline|draft|write|propose|suggest|"
    r"design|plan (?:for|to)|a plan|strategy|strengths and weaknesses|benefits and (?:risks|drawbacks)|"
    r"(?:how|what) (?:can|could|should|would|might) (?:we|i|you|one|they)\b|what should\b|improve\b|be improved\b|mitigate|"
    r"(?:a|the) summary of|summar(?:y|ies) of|create an? |make an? (?:plan|list|checklist)|checklist|lessons?\b|"
    r"prioriti[sz]e|considering\b|taking into account)",
    re.IGNORECASE,
)
# a choice between alternatives ("Which is larger, A or B?", "Was it A or B?", "Should X do A or B?"),
# not a fixed phrase ("one or more", "and/or", "or not")
_EITHER_OR = re.compile(
    r"^(?:which|whether|is|are|was|were|do|does|did|should|can|could|would|will)\b.*\b(?<!and/)or\b(?! not\b| more\b| less\b)",
    re.IGNORECASE,
)
_ADVICE = re.compile(r"^should\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Route:
    tier: str  # "small" | "large"
    reason: str

    def label(self) -> str:
        return f"{self.tier}: {self.reason}"


def route(question: str, *, long_question_tokens: int = 28) -> Route:
    q = " ".join(question.split())
    if _MULTI.search(q):
        return Route(LARGE, "multi-part question")
    m = _COMPARATIVE.search(q)
    if m:
        return Route(LARGE, f"comparative ({m.group(0).lower()!r})")
    m = _REASONING.search(q)
    if m:
        return Route(LARGE, f"reasoning cue ({m.group(2).lower()!r})")
    if _LIST.search(q):
        return Route(LARGE, "asks for an exhaustive list")
    if _EITHER_OR.search(q):
        return Route(LARGE, "choice between alternatives")
    if _ADVICE.search(q):
        return Route(LARGE, "asks for advice")
    m = _OPEN.search(q)
    if m:
        return Route(LARGE, f"open-ended request ({m.group(0).lower()!r})")
    n = count_tokens(q)
    if n > long_question_tokens:
        return Route(LARGE, f"long question ({n} tokens > {long_question_tokens})")
    return Route(SMALL, "simple factual question")
