"""Tier routing: a cheap, deterministic classifier that sends simple factual questions to the
small model and complex ones to the strong model.

Complex means any of: several questions in one (two question marks, "and what/how/why ..."),
a comparison ("compare", "difference between", "versus", "better than"), reasoning or synthesis
cues ("why", "explain", "evaluate", "implications", "step by step", "pros and cons",
"what would happen if"), a choice between alternatives ("Which is larger, A or B?"), advice
("Should ..."), an open-ended request (an overview, a walk-through, a plan, "how could we ...",
strengths and weaknesses), a hypothetical or consequence ("If we double ..., how/what ...",
"blast radius", "how much would ...", how two rules "interact", likely causes), synthesis across
documents or options ("across the three papers", "which of the three vendors is cheapest", how a
mechanism decides), a premise applied to a case ("Contractors can't ... . Can we ...?"), or a long
question (more tokens than the configured limit, counting the question after a preamble, not
the preamble). Everything else (who/what/when/where/how many/define) is simple. Quoted titles
("the "why is checkout slow" ticket") are not read for cues.

Written by hand on purpose: a rule list is auditable, costs microseconds and never changes
behaviour between deployments; its agreement with a hand-labelled set is measured in
bench/results/router_agreement.json (tests/data/router_labels.jsonl for development,
tests/data/router_labels_blind*.jsonl as blind checks).
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
    r"\b(overview|tell me about|walk (?:me|us) through|describe|discuss|outline|draft|write(?![- ]?ups?\b)|propose|suggest|"
    r"design|plan (?:for|to)|a plan|strategy|strengths and weaknesses|benefits and (?:risks|drawbacks)|"
    r"(?:how|what) (?:can|could|should|would|might) (?:we|i|you|one|they)\b|what should\b|improve\b|be improved\b|mitigate|"
    r"(?:a|the) summary of|summar(?:y|ies) of|create an? |make an? (?:plan|list|checklist)|checklist (?:for|of|to)\b|lessons?\b|"
    r"prioriti[sz]e|considering\b|taking into account|^plan\b|what (?:could|might) be (?:going on|causing|wrong|behind)|"
    r"the better (?:bet|option|choice|fit|move)\b)",
    re.IGNORECASE,
)
# a choice between alternatives ("Which is larger, A or B?", "Was it A or B?", "Should X do A or B?"),
# not a fixed phrase ("one or more", "and/or", "or not")
_EITHER_OR = re.compile(
    r"^(?:which|whether|is|are|was|were|do|does|did|should|can|could|would|will)\b.*\b(?<!and/)or\b(?! not\b| more\b| less\b)",
    re.IGNORECASE,
)
_ADVICE = re.compile(r"^should\b", re.IGNORECASE)
# a hypothetical or a consequence: "If we double the replicas, what happens to ...?", "What's the
# blast radius if ...?", "How much would we save if ...?", and how two rules combine ("interact")
_HYPOTHETICAL = re.compile(
    r"(?:^if\b.*\b(?:what|how)\b|^given\b|\bwhat happens\b.*\bif\b|\bblast radius\b|\bhow (?:much|many) would\b|"
    r"\binteract(?:s|ions?)?\b|\bis it (?:worth\b|(?:better|wise|safe|cheaper|faster) to\b)|"
    r"\b(?:plausible|likely|possible|probable) causes?\b|\bwhat caused\b)",
    re.IGNORECASE,
)
# synthesis across documents or options: "the main findings across the three papers", "which of the
# three vendor proposals is cheapest ...", how a mechanism decides ("how does the rate limiter decide
# which ...")
_SYNTHESIS = re.compile(
    r"\b(?:across (?:the|all|our|these|those|both|several|multiple|every) (?:[\w-]+ ){0,3}(?:papers|documents|docs|"
    r"reports|studies|sources|teams|incidents|postmortems|post-mortems|projects|surveys|contracts|proposals)\b|"
    r"which of (?:the|our|these|those) (?:two|three|four|five|six|several|\d+) [^?]*\b(?:(?:cheap|fast|larg|small|high|low|saf|quick|short|long|strong|weak|slow)est|best|worst|most|least)\b|"
    r"how (?:does|do|did) (?:\S+ ){1,5}(?:decide|determine|choose|pick)\b)",
    re.IGNORECASE,
)
# a premise, then a question about the case it sets up: "Contractors aren't allowed production
# access ... Can we put a contractor on call?", "We're opening an office in Brazil. What ... will
# we need?" (a rule or situation applied to a case; a preamble before a lookup is not one of these)
_PREMISE = re.compile(
    r"[.!]\s+(?:can|could|may|must|should|is it|are we|am i|do we|do (?:they|you) qualify|does (?:he|she|it|that|this)|would|will|what (?:[\w,-]+ ){0,6}"
    r"(?:will|would|do|does) (?:we|i|they|it) need)\b[^.!?]*\?\s*$",
    re.IGNORECASE,
)
# a long preamble before one short question ("I'm filling out the form ... one thing: what's
# the maximum meal per diem?"): the length cue counts the question, not the preamble
_LAST_QUESTION = re.compile(r"(?:^|[.:!]\s+)([^.:!?]+\?)\s*$")


@dataclass(frozen=True, slots=True)
class Route:
    tier: str  # "small" | "large"
    reason: str

    def label(self) -> str:
        return f"{self.tier}: {self.reason}"


# a quoted title or phrase is not the question's own wording ('the "why is checkout slow" ticket')
_QUOTED = re.compile(r'"[^"]{1,80}"|“[^”]{1,80}”')
# (pattern, reason, which group to quote in the reason or None), tried in this order
_RULES = (
    (_MULTI, "multi-part question", None),
    (_COMPARATIVE, "comparative", 0),
    (_REASONING, "reasoning cue", 2),
    (_LIST, "asks for an exhaustive list", None),
    (_EITHER_OR, "choice between alternatives", None),
    (_ADVICE, "asks for advice", None),
    (_OPEN, "open-ended request", 0),
    (_HYPOTHETICAL, "hypothetical or consequence", 0),
    (_SYNTHESIS, "synthesis across documents or options", 0),
    (_PREMISE, "applies a stated premise to a case", None),
)



def _cue(text: str) -> str:
    """The matched words for the reason, shortened when a rule spans a clause ("if ... how")."""
    words = text.lower().split()
    return " ".join(words) if len(words) <= 4 else f"{words[0]} ... {words[-1]}"


def route(question: str, *, long_question_tokens: int = 28) -> Route:
    q = _QUOTED.sub("QUOTED", " ".join(question.split()))
    for pattern, reason, group in _RULES:
        m = pattern.search(q)
        if m:
            return Route(LARGE, reason if group is None else f"{reason} ({_cue(m.group(group))!r})")
    last = _LAST_QUESTION.search(q)
    n = count_tokens(last.group(1) if last else q)
    if n > long_question_tokens:
        return Route(LARGE, f"long question ({n} tokens > {long_question_tokens})")
    return Route(SMALL, "simple factual question")
