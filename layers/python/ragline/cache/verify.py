"""Verification of a semantic-cache candidate: is the new question really the cached one?

Cosine similarity of sentence embeddings is blind to exactly the details that make two
questions different while their words overlap: a number ("in 2008" vs "in 2009"), a negation
("does X affect Y" vs "does X not affect Y"), a named entity ("IFITM5" vs "IFITM3"). Those are
cheap to compare on the surface, so the cache decides in stages:

1. a candidate threshold below the accept threshold picks the nearest cached question;
2. the pair is verified: numbers, negations and named entities must agree, and, in the band
   between the candidate and the accept threshold, the two questions must share enough content
   words and (when retrieval ran) retrieve the same passages;
3. a minimal edit, two questions identical but for one short span ("duck" / "human hepatitis B
   virus"), is refused when the cached answer's passages mention both sides: the documents then
   talk about both things, so the swap names another one, not a synonym (``substitution``).

Written by hand because it is a few set comparisons over regex tokens; a library (spaCy NER)
would add a model load to every query for little gain on short questions. The rules and their
thresholds are measured on STS-B train and checked on held-out sets (bench/cache_policy.py).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-\.]*[A-Za-z0-9]|[A-Za-z0-9]")
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)*$")
_HAS_DIGIT = re.compile(r"\d")
_RANGE = re.compile(r"^\d+(?:[.,]\d+)*(?:[-\u2013/]\d+(?:[.,]\d+)*)+$")
# what kind of answer a question asks for; "what"/"which" ask for anything and match every kind
_WH = [
    ("quantity", re.compile(r"\bhow (?:many|much|big|large|long|old|far|often|high|small|frequent|tall|deep|wide|"
                            r"heavy|expensive|cheap|fast|soon|early|late|common|rare|likely|risky|dangerous|"
                            r"severe|effective|accurate|safe|strong|hot|cold|low|short|quickly|slowly|rapidly|frequently)\b|"
                            r"\b(?:number|percentage|percent|proportion|amount|rate) of\b", re.IGNORECASE)),
    ("time", re.compile(r"\b(?:when|what (?:year|date|time|day|month))\b", re.IGNORECASE)),
    ("place", re.compile(r"\b(?:where|what (?:country|city|place|region))\b", re.IGNORECASE)),
    ("person", re.compile(r"\b(?:who|whom|whose)\b", re.IGNORECASE)),
    ("reason", re.compile(r"\bwhy\b|\bwhat (?:is|was|are|were) the (?:reason|cause)s?\b", re.IGNORECASE)),
    ("yesno", re.compile(r"^(?:is|are|was|were|do|does|did|can|could|should|has|have|had|will|would)\b", re.IGNORECASE)),
    ("manner", re.compile(r"\bhow\b", re.IGNORECASE)),
]
# a polite request is not a yes-no question: "Can you explain what IFITM is?" asks what
# "What is IFITM?" asks; the request prefix is dropped before the kind is read
_REQUEST = re.compile(r"^\s*(?:please\s+)?(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?)?"
                      r"(?=(?:explain|describe|tell|define|list|give|summari[sz]e|outline|clarify|show|say)\b)",
                      re.IGNORECASE)
_PREFIXES = ("dis", "un", "non", "in", "im", "ir", "il", "anti", "de")
# words that turn a question into its opposite when swapped for each other (both directions;
# matched on their stems, so "increasing" / "decreased" count too)
_CONTRASTS = [
    ("upper", "lower"), ("children", "adults"), ("child", "adult"), ("male", "female"), ("men", "women"),
    ("before", "after"), ("increase", "decrease"), ("high", "low"),
    ("higher", "lower"), ("highest", "lowest"), ("positive", "negative"), ("maximum", "minimum"),
    ("most", "least"), ("more", "less"), ("acute", "chronic"), ("inhibit", "promote"),
    ("advantage", "drawback"), ("benefit", "risk"), ("cause", "prevent"),
    ("early", "late"), ("earliest", "latest"), ("first", "last"), ("input", "output"),
    ("internal", "external"), ("import", "export"), ("minor", "major"), ("old", "new"), ("older", "younger"),
    ("pros", "cons"), ("start", "end"), ("success", "failure"), ("strength", "weakness"), ("strengths", "weaknesses"),
    ("with", "without"), ("inside", "outside"), ("human", "animal"), ("humans", "animals"),
    ("rise", "fall"), ("gain", "loss"), ("large", "small"), ("larger", "smaller"), ("largest", "smallest"),
    ("bigger", "smaller"), ("biggest", "smallest"), ("long", "short"), ("longer", "shorter"),
    ("longest", "shortest"), ("strong", "weak"), ("stronger", "weaker"), ("include", "exclude"),
    ("inclusion", "exclusion"), ("primary", "secondary"), ("mild", "severe"), ("best", "worst"),
    ("better", "worse"), ("good", "bad"), ("win", "lose"), ("buy", "sell"), ("past", "future"),
    ("north", "south"), ("east", "west"), ("public", "private"), ("domestic", "foreign"), ("urban", "rural"),
    ("symptomatic", "asymptomatic"), ("suspected", "confirmed"), ("agonist", "antagonist"),
    ("sensitivity", "specificity"), ("minimum", "average"), ("maximum", "average"), ("upstream", "downstream"),
    ("day", "night"), ("daily", "weekly"), ("weekly", "monthly"), ("monthly", "annual"),
    ("increase", "reduce"), ("enhance", "impair"), ("enhance", "reduce"), ("activate", "inhibit"),
    ("induce", "suppress"), ("promote", "suppress"), ("initial", "final"),
]
# prefixes that turn a word into its opposite when swapped (preoperative / postoperative,
# hyperglycemia / hypoglycemia, upregulated / downregulated, inpatient / outpatient)
_PREFIX_CONTRASTS = [("pre", "post"), ("hyper", "hypo"), ("over", "under"), ("intra", "extra"), ("inter", "intra"),
                     ("in", "out"), ("up", "down"), ("pro", "anti"), ("micro", "macro"), ("endo", "exo"),
                     ("sub", "super"), ("mono", "poly"), ("uni", "multi"), ("min", "max")]
NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without",
                       "nowhere", "n't"})
NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000",
    "billion": "1000000000", "first": "1", "second": "2", "third": "3", "half": "0.5", "once": "1", "twice": "2",
}
STOP = frozenset(
    ["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "into", "onto", "about", "over", "under", "than", "then", "there", "here", "this", "that", "these", "those", "it", "its", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "doing", "has", "have", "had", "having", "can", "could", "should", "would", "will", "shall", "may", "might", "must", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "i", "you", "he", "she", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "our", "their", "some", "any", "all", "each", "every", "other", "such", "own", "same", "so", "too", "very", "just", "also", "only", "s", "t", "up", "down", "out", "off", "again", "further", "once", "is's", "it's", "there's", "what's"]
)


def tokens(text: str) -> list[str]:
    raw = _TOKEN.findall(text.replace("\u2019", "'"))
    out: list[str] = []
    for t in raw:
        low = t.lower()
        if low.endswith("n't"):
            out.extend([t[:-3], "n't"])
        elif low.endswith("'s") and len(t) > 3:
            out.append(t[:-2])  # possessive: "COVID-19's first case" names COVID-19
        elif _RANGE.match(t):
            out.extend(p for p in re.split(r"[-\u2013/]", t) if p)  # 1918-1919 -> 1918, 1919
        else:
            out.append(t)
    return [t for t in out if t]


def _stem(word: str) -> str:
    """A crude suffix stripper (plural, -ing, -ed, -ly, final e), enough to match inflections."""
    w = word.lower().strip(".'-")
    if len(w) > 5 and w.endswith("ies"):
        return w[:-3] + "y"  # qualities -> quality, studies -> study
    for suf in ("ing", "es", "ed", "ly", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            w = w[: -len(suf)]
            break
    return w[:-1] if len(w) > 4 and w.endswith("e") else w


def _opposites(pairs: list[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """Stem -> the stems of its opposites: a word may have several ("lower": "upper", "higher")."""
    out: dict[str, set[str]] = {}
    for a, b in pairs:
        out.setdefault(_stem(a), set()).add(_stem(b))
        out.setdefault(_stem(b), set()).add(_stem(a))
    return {k: frozenset(v) for k, v in out.items()}


_ANTONYMS = Path(__file__).resolve().parents[1] / "data" / "antonyms" / "wordnet-3.0.tsv"


@cache
def _contrast_map() -> dict[str, frozenset[str]]:
    """The curated contrasts above plus WordNet 3.0's direct antonyms (more / fewer, start /
    finish, horizontal / vertical; ~3,200 pairs from tools/build_antonyms.py), read on first use
    (~15 ms, once per process) so a cold start does not pay for them."""
    lines = _ANTONYMS.read_text(encoding="utf-8").splitlines()
    return _opposites(_CONTRASTS + [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")])


@dataclass(frozen=True, slots=True)
class Features:
    lowered: frozenset[str]
    numbers: frozenset[str]
    negations: int
    entities: frozenset[str]
    content: frozenset[str]
    asks: str | None = None  # the kind of answer a question asks for (see _WH), None for any
    sequence: tuple[str, ...] = ()  # the lower-cased tokens in order (for acronyms)
    # "What is the genus of X?": the attribute asked about ("genus") and the content
    # words of what it is asked of (X)
    attribute: str | None = None
    attribute_of: frozenset[str] = frozenset()
    # "What is X?": the content words of the X a bare definition question asks about
    defines: frozenset[str] = frozenset()
    # the kind asked by the question's first words ("How is X spread?": manner), not by a
    # later clause ("What do antibodies do when ...")
    leads: str | None = None
    stems: frozenset[str] = frozenset()  # the stems of all words, stop words included (for _contrast_map)
    # "Which databases were searched?": the noun a leading which/what selects ("databases")
    selects: str | None = None
    stemmed: tuple[str, ...] = ()  # the stems of ``sequence``, in order (for ``substitution``)


def _asked(text: str) -> str:
    """The question without a polite request prefix ("Can you explain what X is" -> "what X is")."""
    return _REQUEST.sub("", text.strip(), count=1)


def question_kind(text: str) -> str | None:
    """The kind of answer asked for anywhere in the question (see _WH)."""
    return _kind(_asked(text))


def _kind(asked: str) -> str | None:
    for kind, pattern in _WH:
        if pattern.search(asked):
            return kind
    return None


@lru_cache(maxsize=8192)  # Features are immutable; a cached question's are reused at every lookup
def features(text: str) -> Features:
    toks = tokens(text)
    lowered = frozenset(t.lower() for t in toks)
    numbers: set[str] = set()
    entities: set[str] = set()
    negations = 0
    for i, t in enumerate(toks):
        low = t.lower()
        if low in NEGATIONS:
            negations += 1
        if _NUMBER.match(t):
            numbers.add(t.replace(",", ""))
        elif low in NUMBER_WORDS:
            numbers.add(NUMBER_WORDS[low])
        elif _HAS_DIGIT.search(t):
            entities.add(low)  # HIV-1, IFITM5, COVID-19, 2BP: identifiers, never interchangeable
        elif low not in STOP and (t.isupper() and len(t) >= 2 or (t[0].isupper() and i > 0 and not _sentence_start(toks, i))):
            entities.add(low)
    content = frozenset(_stem(t) for t in toks if t.lower() not in STOP and t.lower() not in NEGATIONS and len(t) > 1)
    asked = _asked(text)
    attribute, attribute_of, defines = _question_focus(asked)
    sequence = tuple(t.lower() for t in toks)
    stemmed = tuple(_stem(t) for t in sequence)
    return Features(lowered, frozenset(numbers), negations, frozenset(entities), content, _kind(asked),
                    sequence, attribute, attribute_of, defines, _leading_kind(asked),
                    frozenset(stemmed), _selected_noun(asked), stemmed)


_SELECTS = re.compile(r"^\s*(?:which|what)\s+([a-z][\w-]*)", re.IGNORECASE)


def _selected_noun(asked: str) -> str | None:
    """The word a leading "which"/"what" selects ("Which virus ...": virus), if it is not a
    function word ("What is ...", "Which of ...")."""
    m = _SELECTS.match(asked)
    return m.group(1).lower() if m and m.group(1).lower() not in STOP else None


def _leading_kind(asked: str) -> str | None:
    """The kind asked by the question's first words (``asked``: without a request prefix)."""
    for kind, pattern in _WH:
        if kind == "yesno":
            continue
        m = pattern.search(asked)
        if m and m.start() == 0:
            return kind
    return None


# "What is the (main) cause of X?", "Which are the appealing qualities of the NDV vector?"
_ATTRIBUTE = re.compile(
    r"^\s*(?:what|which)\s+(?:is|are|was|were|has been|have been|will be|would be|could be|can be|might be)\s+"
    r"(?:the|a|an|some|some of the)\s+((?:[\w-]+\s+){0,3}?[\w-]+)\s+"
    r"(?:of|for|in|on|between|among|behind|to|from|with|at|during|regarding|about)\s+(.*)$",
    re.IGNORECASE,
)
# "What is X?" with a short X and no clause of its own
_DEFINITION = re.compile(r"^\s*what\s+(?:is|are|was|were)\s+(?:an?\s+|the\s+)?([\w\s'-]+?)\s*\?*\s*$", re.IGNORECASE)
_CLAUSE_WORDS = frozenset({"of", "for", "in", "on", "to", "with", "during", "when", "while", "from", "by", "at", "about",
                           "between", "among", "if", "that", "which", "who"})
# attribute words that ask for the same thing (a curated list, like _CONTRASTS: no offline
# thesaurus library is at hand, and these are the attribute nouns questions actually use)
_ATTRIBUTE_SYNONYMS = [
    {"aim", "objective", "goal", "purpose", "point", "use", "intention"},
    {"cause", "reason", "driver", "trigger", "source"},
    {"role", "function", "job", "duty", "responsibility", "task"},
    {"advantage", "benefit", "strength", "pro", "merit", "upside", "value"},
    {"drawback", "disadvantage", "downside", "limitation", "weakness", "con", "shortcoming"},
    {"symptom", "sign", "manifestation", "indication"},
    {"size", "dimension", "magnitude", "extent"},
    {"method", "way", "approach", "means", "strategy", "technique", "procedure", "process", "step", "mode"},
    {"meaning", "definition", "sense"},
    {"price", "cost", "fee", "charge", "expense"},
    {"effect", "impact", "consequence", "influence", "implication", "outcome", "result"},
    {"importance", "significance", "relevance"},
    {"requirement", "prerequisite", "criterion", "criteria", "condition", "qualification"},
    {"type", "kind", "sort", "category", "class", "variety", "form"},
    {"history", "origin", "background", "root"},
    {"feature", "characteristic", "property", "trait", "quality", "attribute"},
    {"treatment", "therapy", "remedy", "cure"},
    {"risk", "danger", "hazard", "threat"},
    {"difference", "distinction"},
    {"relationship", "relation", "association", "link", "connection", "correlation"},
    {"number", "amount", "count", "quantity", "total"},
    {"rate", "ratio", "proportion", "percentage", "percent", "fraction", "share"},
]
# attribute words that ask for the same kind of answer as a wh-word: "What is the size of X?" asks
# what "How big is X?" asks; "What are the symptoms of X?" does not ask what "How is X spread?" asks
_KIND_NOUNS = {
    "quantity": {"number", "amount", "count", "size", "length", "rate", "percentage", "percent", "proportion",
                 "fraction", "ratio", "toll", "total", "frequency", "duration", "dose", "level", "incidence",
                 "prevalence", "mortality", "height", "weight", "age", "price", "cost", "range", "average", "mean",
                 "median", "magnitude", "concentration", "volume", "share", "extent", "degree", "distance", "time",
                 "period", "figure", "estimate", "value", "speed", "population", "salary", "income", "revenue",
                 "budget", "fee", "pay", "score", "temperature", "capacity", "limit", "quantity", "dimension",
                 "depth", "width", "area", "mass", "probability", "chance", "likelihood", "odds", "risk", "efficacy",
                 "effectiveness", "accuracy", "safety", "severity", "intensity", "popularity", "strength",
                 "headcount", "yield", "dosage", "throughput", "latency"},
    "time": {"time", "date", "year", "period", "day", "month", "onset", "timing", "age", "stage", "phase",
             "moment", "season", "timeline", "duration", "deadline", "hour", "schedule", "era", "century"},
    "place": {"location", "place", "site", "region", "country", "city", "origin", "source", "area", "setting",
              "destination", "address", "headquarters", "venue", "position", "home", "habitat", "distribution"},
    "person": {"person", "people", "group", "author", "researcher", "organization", "organisation", "agency",
               "team", "owner", "individual", "population", "patient", "inventor", "founder", "leader", "head",
               "ceo", "president", "winner", "creator", "writer", "director", "manager", "member", "victim"},
    "reason": {"reason", "cause", "purpose", "rationale", "explanation", "motive", "basis", "aim", "objective",
               "goal", "driver", "factor", "motivation", "justification", "advantage", "benefit", "importance",
               "significance", "appeal", "value", "point", "use", "need", "logic", "meaning", "origin", "source",
               "trigger"},
    "manner": {"way", "method", "mechanism", "process", "route", "mode", "means", "approach", "procedure",
               "strategy", "structure", "manner", "technique", "pathway", "step", "role", "function", "effect",
               "impact", "design", "model", "form", "shape", "course", "relationship", "relation",
               "association", "link", "connection", "difference", "similarity", "interaction", "dynamics",
               "principle", "working", "operation", "tip", "advice", "guide", "instruction", "recommendation",
               "plan", "practice", "trick", "requirement", "condition", "treatment", "therapy", "cure", "remedy",
               "definition", "meaning", "progress", "status", "state", "feeling", "experience", "diagnosis",
               "detection", "test", "testing", "prevention", "management", "care", "control", "production",
               "preparation", "installation", "configuration", "setup", "usage", "measurement", "calculation",
               "computation", "formula", "transmission", "spread", "protocol", "recipe", "regimen",
               "administration", "delivery", "workflow", "architecture", "organization", "organisation"},
}
# attribute words that can stand for any kind of answer ("What is the name of the person who ...")
_NEUTRAL_ATTRIBUTES = frozenset({"name", "answer", "detail", "information", "fact", "thing", "story", "situation"})


def _noun_key(word: str) -> str:
    """A noun's singular, enough to look attribute words up (ways -> way, qualities -> quality,
    analyses -> analysis, processes -> process); not a stemmer: "structure" and "structural"
    stay apart."""
    w = word.lower().strip(".'-")
    if w in _INVARIANT_NOUNS or len(w) <= 3:
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("yses", "eses")):
        return w[:-2] + "is"
    if w.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


_INVARIANT_NOUNS = frozenset({"means", "series", "species", "news", "status", "genus", "physics", "ethics",
                              "economics", "mathematics", "diabetes", "measles", "mumps", "herpes"})
_KIND_NOUN = {kind: frozenset(_noun_key(w) for w in words) for kind, words in _KIND_NOUNS.items()}
_ATTRIBUTE_SYNONYM = {_noun_key(w): i for i, group in enumerate(_ATTRIBUTE_SYNONYMS) for w in group}


def _content_words(text: str) -> frozenset[str]:
    return frozenset(_stem(t) for t in tokens(text) if t.lower() not in STOP and len(t) > 1)


def _question_focus(text: str) -> tuple[str | None, frozenset[str], frozenset[str]]:
    m = _ATTRIBUTE.match(text)
    if m:
        words = [w for w in m.group(1).lower().split() if w not in STOP]
        if words:
            return words[-1], _content_words(m.group(2)), frozenset()
        return None, frozenset(), frozenset()
    m = _DEFINITION.match(text)
    if m:
        subject = m.group(1).lower().split()
        if len(subject) <= 6 and not _CLAUSE_WORDS & set(subject):
            return None, frozenset(), _content_words(m.group(1))
    return None, frozenset(), frozenset()


def _same_attribute(a: str, b: str) -> bool:
    a, b = _noun_key(a), _noun_key(b)
    if a == b or a in _NEUTRAL_ATTRIBUTES or b in _NEUTRAL_ATTRIBUTES:
        return True
    return a in _ATTRIBUTE_SYNONYM and _ATTRIBUTE_SYNONYM.get(a) == _ATTRIBUTE_SYNONYM.get(b)


def _attribute_of_kind(attribute: str, kind: str) -> bool:
    key = _noun_key(attribute)
    return key in _NEUTRAL_ATTRIBUTES or key in _KIND_NOUN[kind]


def _sentence_start(toks: list[str], i: int) -> bool:
    return i == 0


@dataclass(slots=True)
class Verdict:
    ok: bool
    reason: str
    details: dict = field(default_factory=dict)


def conflicts(a: Features, b: Features) -> str | None:
    """A hard disagreement between two questions, or None. Checked at every similarity.

    * numbers: a number of one question that the other lacks, when the other has numbers of its
      own (a substituted figure: "in 2009" vs "in 2010"); a question that simply gives no number
      may still match;
    * negation: an odd number of negations on one side only;
    * negated words: "advantage" vs "disadvantage", "likely" vs "unlikely";
    * opposite words swapped (upper / lower, children / adults: a short curated list, matched
      on stems so "increasing" / "decreased" count; and swapped prefixes: pre- / post-,
      hyper- / hypo-, up- / down-);
    * two content words that trade places ("women more than men" / "men more than women");
    * the kind of answer asked for, when both questions say it: when / where / who / why /
      how many / how ("what" and "which" match any of these), and a yes-no question never
      matches a wh-question; a leading "which X" / "what X" asks for an X, so it matches "how
      many" or "when" only when X is of that kind ("what number", "which year");
    * the attribute asked about, when both questions have the form "What is the ATTRIBUTE of X?"
      ("genus" vs "family"; a short list of synonyms such as aim / objective counts as one);
    * a definition against an attribute of the same thing ("What is X?" vs "What are the
      findings in X?");
    * a wh-word against an attribute of another kind ("How is X spread?" vs "What are the
      symptoms of X?"; "How big is X?" and "What is the size of X?" agree);
    * named entities (capitalised words, acronyms, identifiers with digits): each side mentions
      an entity the other does not (a substitution: "IFITM5" vs "IFITM3"). Only dropping a
      qualifier ("the U.S. troops" vs "troops") is not a conflict: measured on STS-B train, the
      one-sided rule rejected 26% of true paraphrases and caught few more false ones.
    """
    only_a, only_b = a.numbers - b.numbers, b.numbers - a.numbers
    if (only_a and b.numbers) or (only_b and a.numbers):
        return f"numbers differ ({sorted(only_a | only_b)})"
    if (a.negations % 2) != (b.negations % 2):
        return "negation differs"
    antonym = _prefixed_antonym(a.lowered, b.lowered) or _prefixed_antonym(b.lowered, a.lowered)
    if antonym:
        return f"negated word ({antonym})"
    swapped = _contrast(a, b)
    if swapped:
        return f"opposite words ({swapped})"
    roles = _swapped_roles(a.sequence, b.sequence)
    if roles:
        return f"words swapped ({roles})"
    if (a.asks == "yesno") != (b.asks == "yesno") or (a.asks and b.asks and a.asks != b.asks):
        return f"asks for a different kind of answer ({a.asks} vs {b.asks})"
    if a.attribute and b.attribute and not _same_attribute(a.attribute, b.attribute):
        return f"asks about a different attribute ({a.attribute} vs {b.attribute})"
    for x, y in ((a, b), (b, a)):
        if x.defines and y.attribute and len(x.defines & y.attribute_of) >= 0.6 * len(x.defines):
            return f"asks what something is vs its {y.attribute}"
        if x.leads in _KIND_NOUN and y.asks is None and y.attribute and not _attribute_of_kind(y.attribute, x.leads):
            return f"asks for a different kind of answer ({x.leads} vs the {y.attribute})"
        # the kind a question opens with ("How many studies ...?"), not a "how" in a later
        # clause ("Which assay lets you monitor how ..."); "why" is left out: "What makes X
        # ...?" and "What diminishes X?" ask why in other words
        if (x.leads in _KIND_NOUN and x.leads != "reason" and y.asks is None and y.selects
                and not _attribute_of_kind(y.selects, x.leads)):
            return f"asks for a different kind of answer ({x.leads} vs which {y.selects})"
    # matched case-insensitively against all the other side's words, so a sentence-initial
    # mention still counts
    ent_a = {e for e in a.entities if not _mentioned(e, b)}
    ent_b = {e for e in b.entities if not _mentioned(e, a)}
    if ent_a and ent_b:
        return f"named entities differ ({sorted(ent_a)[:3]} vs {sorted(ent_b)[:3]})"
    return None


def _mentioned(entity: str, other: Features) -> bool:
    """Does ``other`` mention ``entity``: the same word; the name part of a hyphenated identifier
    ("COVID" in "COVID-19", written "COVID -19" on the other side); another form of the same
    name (Canada / Canadian: a shared beginning of 5+ letters covering 75% of the shorter word,
    letters only -- identifiers with digits must match exactly); or an acronym of consecutive
    words ("MERS" / "Middle East Respiratory Syndrome")."""
    if entity in other.lowered:
        return True
    if any(entity == w.split("-")[0] or w == entity.split("-")[0] for w in other.lowered if "-" in w or "-" in entity):
        return True
    if entity.isalpha():
        for w in other.lowered:
            if w.isalpha():
                n = len(_common_prefix(entity, w))
                if n >= 5 and n >= 0.75 * min(len(entity), len(w)):
                    return True
        k = len(entity)
        if 2 <= k <= 6:
            seq = [w for w in other.sequence if w not in {"of", "and", "the", "for", "in"}]
            if any("".join(w[0] for w in seq[i:i + k]) == entity for i in range(len(seq) - k + 1)):
                return True
    return False


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def _prefixed_antonym(a: frozenset[str], b: frozenset[str]) -> str | None:
    """A word of ``a`` whose negative-prefixed form is in ``b`` and not in ``a`` (advantage /
    disadvantage, structural / non-structural)."""
    for word in a:
        if len(word) < 4 or not word.isalpha():
            continue
        for prefix in _PREFIXES:
            for form in (prefix + word, f"{prefix}-{word}"):
                if form in b and form not in a:
                    return f"{word} / {form}"
    return None


def _contrast(a: Features, b: Features) -> str | None:
    """A word of one side whose opposite (upper / lower, children / adults, preoperative /
    postoperative) is on the other side only."""
    contrast = _contrast_map()
    for stem in a.stems - b.stems:
        for other in contrast.get(stem, ()):
            if other in b.stems and other not in a.stems:
                return f"{stem} / {other}"
    for word in a.lowered - b.lowered:
        for x, y in _PREFIX_CONTRASTS:
            for p, q in ((x, y), (y, x)):
                if word.startswith(p) and len(word) - len(p) >= 4:
                    swapped = q + word[len(p):]
                    if swapped in b.lowered and swapped not in a.lowered:
                        return f"{word} / {swapped}"
    return None


def _swapped_roles(a: tuple[str, ...], b: tuple[str, ...]) -> str | None:
    """Two content words that trade places and nothing else changes ("women more than men" /
    "men more than women"): the same words, the opposite question."""
    if len(a) != len(b):
        return None
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(diff) == 2:
        i, j = diff
        if a[i] == b[j] and a[j] == b[i] and a[i] not in STOP and a[j] not in STOP:
            return f"{a[i]} / {a[j]}"
    return None


def content_overlap(a: Features, b: Features) -> float:
    """Jaccard overlap of stemmed content words (1.0 when neither has any)."""
    if not a.content and not b.content:
        return 1.0
    return len(a.content & b.content) / len(a.content | b.content)


def passage_overlap(cached: list[str] | None, fresh: list[str] | None) -> float | None:
    """Share of the cached question's top passages that the new question also retrieves
    (None when either side has no retrieval to compare)."""
    if not cached or fresh is None:
        return None
    return len(set(cached) & set(fresh)) / len(set(cached))


# ---------------------------------------------------------------- one-span substitutions
# A minimal edit ("... receptor for duck hepatitis B virus?" / "... for human hepatitis B
# virus?") keeps every word but one span, so cosine stays at 0.9+ while the answer changes.
# A rewording swaps a word for one the documents do not use ("final" / "last", "TB" /
# "tuberculosis"); a different question swaps it for another thing the documents talk about.
# So when the two questions differ in exactly one short span, and the passages the cached
# answer drew on mention what each side names, the pair is refused. Measured on the blind
# question-pair sets in bench/README.md; without passages (no corpus) nothing changes.
_MAX_SPAN = 5


_BLOOM = "bloom1"
_BLOOM_BITS_PER_STEM = 14.4  # with 10 probes: ~0.1% false positives
_BLOOM_PROBES = 10


def _probes(stem: str, m: int) -> list[int]:
    """Ten independent bit positions: 32-bit slices of one 40-byte BLAKE2b digest."""
    d = hashlib.blake2b(stem.encode(), digest_size=4 * _BLOOM_PROBES).digest()
    return [int.from_bytes(d[4 * i:4 * i + 4], "little") % m for i in range(_BLOOM_PROBES)]


def vocabulary(texts: Iterable[str]) -> str:
    """The content stems of the passages a cached answer drew on, stored with the cache entry
    as a Bloom filter (``bloom1:<bits>:<base64>``, ~1 KB for five 512-token passages instead of
    3-5 KB as a word list; ~0.1% false positives, which can only refuse a hit, never make one).
    Written by hand: a dozen lines, where a Bloom-filter package would be a dependency of the
    Lambda layer for one membership test."""
    stems = {_stem(t) for text in texts for t in tokens(text) if t.lower() not in STOP}
    m = max(64, 8 * math.ceil(len(stems) * _BLOOM_BITS_PER_STEM / 8))
    bits = bytearray(m // 8)
    for stem in stems:
        for i in _probes(stem, m):
            bits[i >> 3] |= 1 << (i & 7)
    return f"{_BLOOM}:{m}:{base64.b64encode(bytes(bits)).decode()}"


def _contains(vocab: str) -> Callable[[str], bool]:
    """Membership in a stored vocabulary: the Bloom filter, or the space-separated stems of
    entries stored before it."""
    if vocab.startswith(_BLOOM + ":"):
        _, m_s, b64 = vocab.split(":", 2)
        m, bits = int(m_s), base64.b64decode(b64)
        return lambda w: all(bits[i >> 3] >> (i & 7) & 1 for i in _probes(w, m))
    words = set(vocab.split())
    return words.__contains__


def substitution(a: Features, b: Features) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The content stems of the one span in which the two questions differ, when they are
    otherwise word for word the same (after stemming) and the span is short on both sides;
    None for anything else, and for spellings of one word ("white-headed" / "white headed")."""
    sa, sb = a.stemmed, b.stemmed
    ops = [op for op in difflib.SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(ops) != 1 or ops[0][0] != "replace":
        return None
    _, i1, i2, j1, j2 = ops[0]
    if max(i2 - i1, j2 - j1) > _MAX_SPAN:
        return None
    if "".join(a.sequence[i1:i2]).replace("-", "") == "".join(b.sequence[j1:j2]).replace("-", ""):
        return None
    left = tuple(w for w, t in zip(sa[i1:i2], a.sequence[i1:i2]) if t not in STOP)
    right = tuple(w for w, t in zip(sb[j1:j2], b.sequence[j1:j2]) if t not in STOP)
    return (left, right) if left and right else None


def substituted_in_passages(sub: tuple[tuple[str, ...], tuple[str, ...]] | None, vocab: str | None) -> str | None:
    """A reason to refuse when both sides of a one-span substitution occur in the cached
    answer's passages (``vocab`` from :func:`vocabulary`)."""
    if not sub or not vocab:
        return None
    has = _contains(vocab)
    left, right = sub
    if any(has(w) for w in left) and any(has(w) for w in right):
        return f"substituted words both in the cited passages ({' '.join(left)} / {' '.join(right)})"
    return None
