"""PII detection at ingestion, with a policy per tenant.

The port is :class:`PiiDetector` (``detect(text) -> list[Finding]``). Two adapters:

* :class:`PresidioPatternDetector` (local, offline): Microsoft Presidio's *pattern* recognizers
  only, called directly, so no spaCy model is needed or downloaded. Presidio validates what
  matters: credit-card numbers pass a Luhn check, IBANs their mod-97 checksum, e-mail domains a
  public-suffix check (against tldextract's bundled snapshot; never fetched), SSNs the ranges the
  SSA never issues. Phone numbers come from Google's ``phonenumbers``.
* ``ragline.adapters.aws.comprehend.ComprehendPiiDetector`` (AWS): Amazon Comprehend
  DetectPiiEntities.

:class:`PiiStep` applies a tenant's policy to a document's extracted sections, after
sanitising and before chunking:

* ``redact``: every finding is replaced by its type in brackets (``[EMAIL]``) before chunking
  and embedding, so the value reaches neither the index nor the embedding model;
* ``tag``: text is kept, but each chunk that overlaps a finding gets the flag ``pii`` and its
  ACL becomes the configured restricted group only. The restricted group is a tenant-wide
  privileged group (e.g. compliance): its members see the tagged chunks of every document,
  other principals do not see them at all;
* ``allow``: no detection runs (no cost, nothing recorded).

What the registry records is ``{type: count}``; values are never stored nor logged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ..models import Chunk, Section

PiiPolicy = Literal["redact", "tag", "allow"]

# Canonical type names (what redaction writes and what the registry counts).
EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
US_SSN = "US_SSN"
IP_ADDRESS = "IP_ADDRESS"


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span: ``text[start:end]`` is the value (never kept beyond this object)."""

    type: str
    start: int
    end: int
    score: float


@runtime_checkable
class PiiDetector(Protocol):
    name: str

    def detect(self, text: str) -> list[Finding]: ...


def resolve_overlaps(findings: Sequence[Finding]) -> list[Finding]:
    """Keep the most confident finding where spans overlap (a phone-number matcher also
    matches an SSN or an IP address, at a lower score), longest first on ties; sorted by start.
    Hand-written because Presidio's own de-duplication only merges findings of one type."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if f.end > f.start and all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with each finding replaced by ``[TYPE]`` (findings must not overlap)."""
    out: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < pos:
            continue
        out.append(text[pos:f.start])
        out.append(f"[{f.type}]")
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


# ---------------------------------------------------------------------------- local adapter
_PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": EMAIL,
    "PHONE_NUMBER": PHONE,
    "CREDIT_CARD": CREDIT_CARD,
    "IBAN_CODE": IBAN,
    "US_SSN": US_SSN,
    "IP_ADDRESS": IP_ADDRESS,
}


class PresidioPatternDetector:
    """Presidio's pattern recognizers, run directly (no AnalyzerEngine, hence no NLP engine and
    no spaCy model). Presidio is imported on first use: it costs seconds, and a tenant whose
    policy is ``allow`` never pays for it."""

    name = "presidio-patterns"

    def __init__(self, *, min_score: float = 0.4, phone_regions: Sequence[str] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")):
        self.min_score = min_score
        self.phone_regions = tuple(phone_regions)
        self._recognizers: list | None = None
        self._lock = threading.Lock()

    def _load(self) -> list:
        if self._recognizers is None:
            with self._lock:
                if self._recognizers is None:
                    self._recognizers = _presidio_recognizers(self.phone_regions)
        return self._recognizers

    def detect(self, text: str) -> list[Finding]:
        if not text or not text.strip():
            return []
        found: list[Finding] = []
        for rec in self._load():
            for r in rec.analyze(text, entities=rec.supported_entities, nlp_artifacts=None) or []:
                kind = _PRESIDIO_TYPES.get(r.entity_type)
                if kind is not None and r.score >= self.min_score and _plausible(text, kind, r.start, r.end):
                    found.append(Finding(kind, r.start, r.end, float(r.score)))
        return resolve_overlaps(found)


_JOINED_BEFORE = re.compile(r"[\w./@-]$")
_JOINED_AFTER = re.compile(r"^(?:[\w/@-]|\.\w)")
_NUMBERING = re.compile(r"(?:section|sec\.|§|chapter|ch\.|figure|fig\.|table|version|ver\.|v|rule|clause|step|item|para\.?)\s*$", re.IGNORECASE)


def _plausible(text: str, kind: str, start: int, end: int) -> bool:
    """Context checks the pattern recognizers lack (measured false positives on real documents):
    a match glued to a longer token is part of something else (``10.1016/j.dib.2019.104520`` is a
    DOI, not a phone number), and a dotted quad after "Section" or "version" is a numbering."""
    if _JOINED_BEFORE.search(text[max(0, start - 1):start]) or _JOINED_AFTER.match(text[end:end + 2]):
        return False
    return not (kind == IP_ADDRESS and ":" not in text[start:end] and _NUMBERING.search(text[max(0, start - 12):start]))


def _presidio_recognizers(phone_regions: tuple[str, ...]) -> list:
    import logging

    import tldextract
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    # The e-mail recognizer validates the domain with tldextract, whose default extractor
    # downloads the public-suffix list. This one reads only the snapshot bundled with it.
    offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str):
            return offline_tld(pattern_text).fqdn != ""

    return [
        OfflineEmailRecognizer(),
        PhoneRecognizer(supported_regions=phone_regions),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
    ]


# ---------------------------------------------------------------------------- the policy step
@dataclass(slots=True)
class PiiResult:
    """What the PII step did to one document."""

    policy: str
    counts: dict[str, int] = field(default_factory=dict)
    # section index -> spans (start, end) that hold PII, for tagging chunks ("tag" policy)
    spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    restricted_group: str | None = None
    title: str | None = None

    def mark(self, chunks: Sequence[Chunk], pieces: Sequence, flags: dict[str, int]) -> None:
        """``tag`` policy: flag ``pii`` on each chunk overlapping a finding and restrict its ACL
        to the restricted group. Records summary counts in ``flags``."""
        if self.counts:
            flags["pii_" + ("redacted" if self.policy == "redact" else "found")] = sum(self.counts.values())
        if self.policy != "tag" or not self.spans:
            return
        tagged = 0
        for ch, piece in zip(chunks, pieces):
            spans = self.spans.get(piece.section, ())
            if any(s < piece.end and e > piece.start for s, e in spans):
                ch.flags = tuple(dict.fromkeys((*ch.flags, "pii")))
                ch.groups = (self.restricted_group,) if self.restricted_group else ch.groups
                tagged += 1
        if tagged:
            flags["pii_restricted_chunks"] = tagged


class PiiStep:
    """Applies the tenant's PII policy to extracted sections (see the module docstring)."""

    def __init__(
        self,
        detector: PiiDetector | None,
        *,
        default_policy: PiiPolicy = "allow",
        tenant_policies: Mapping[str, PiiPolicy] | None = None,
        restricted_group: str = "pii-readers",
    ):
        self.detector = detector
        self.default_policy = default_policy
        self.tenant_policies = dict(tenant_policies or {})
        self.restricted_group = restricted_group
        wanted = {default_policy, *self.tenant_policies.values()} - {"allow"}
        if wanted and detector is None:
            # a tenant promised redaction must not silently get none: refuse at start-up
            raise ValueError(f"PII policies {sorted(wanted)} need a PII detector, and none is configured")

    @classmethod
    def from_settings(cls, settings, detector: PiiDetector | None) -> PiiStep:
        return cls(detector, default_policy=settings.pii_default_policy, tenant_policies=settings.pii_policy,
                   restricted_group=settings.pii_restricted_group)

    def policy_for(self, tenant: str) -> str:
        return self.tenant_policies.get(tenant, self.default_policy)

    def apply(self, tenant: str, sections: list[Section], title: str | None = None) -> PiiResult:
        """Detect PII in every section (text and heading) and in the title. ``redact`` rewrites
        the sections in place and returns the redacted title in ``result.title``; ``tag``
        records the spans (a heading or title with PII taints its whole section or document).
        """
        policy = self.policy_for(tenant)
        result = PiiResult(policy=policy, restricted_group=self.restricted_group if policy == "tag" else None,
                           title=title)
        if policy == "allow" or self.detector is None:
            return result

        def scrub(text: str | None) -> tuple[str | None, list[Finding]]:
            if not text:
                return text, []
            findings = self.detector.detect(text)
            for f in findings:
                result.counts[f.type] = result.counts.get(f.type, 0) + 1
            if findings and policy == "redact":
                return redact(text, findings), findings
            return text, findings

        result.title, title_findings = scrub(title)
        for i, sec in enumerate(sections):
            text, findings = scrub(sec.text)
            sec.text = text or ""
            heading, heading_findings = scrub(sec.heading)
            sec.heading = heading
            if policy == "tag":
                if title_findings or heading_findings:
                    findings = [Finding("*", 0, len(sec.text), 1.0)]
                if findings:
                    result.spans[i] = [(f.start, f.end) for f in findings]
        return result
