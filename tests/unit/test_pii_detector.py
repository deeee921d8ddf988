"""The local PII detector (technique: the real Presidio pattern recognizers, offline, on
real-looking text): what it finds, what it refuses (Luhn-invalid cards, IBANs with a bad checksum,
numbering that looks like an IP address, numbers glued inside DOIs), redaction, and overlap
resolution. Also proves Presidio runs with no NLP engine and no network."""

from __future__ import annotations

import socket

import pytest
from ragline_testing import presidio_detector

from ragline.ingest.pii import Finding, PiiDetector, PiiStep, redact, resolve_overlaps
from ragline.models import Section

HR_NOTE = (
    "Onboarding record for the Lisbon office.\n\n"
    "Employee: Marta Sousa, personal e-mail marta.sousa@example.org, mobile +44 20 7946 0958, "
    "US phone (415) 555-0132. Salary goes to IBAN DE89 3704 0044 0532 0130 00. "
    "Corporate card 4111 1111 1111 1111 (expires 09/27). SSN on file: 536-22-4187. "
    "Laptop registered at 10.20.30.40 and 2001:db8::8a2e:370:7334."
)
VALUES = {
    "EMAIL": ["marta.sousa@example.org"],
    "PHONE": ["+44 20 7946 0958", "(415) 555-0132"],
    "IBAN": ["DE89 3704 0044 0532 0130 00"],
    "CREDIT_CARD": ["4111 1111 1111 1111"],
    "US_SSN": ["536-22-4187"],
    "IP_ADDRESS": ["10.20.30.40", "2001:db8::8a2e:370:7334"],
}

BENIGN = (
    "Section 4.2.1.3 of version 3.2.1 (released 2021-04-05) covers 12,500 units. See ISBN "
    "978-3-16-148410-0 and DOI 10.1016/j.dib.2019.104520. Revenue was $1,234,567.89 in FY2022 "
    "(Table 3, p. 45); call extension 4021. Order number 4111 1111 1111 1112 is not a card "
    "(it fails the Luhn check) and GB82 WEST 1234 5698 7654 33 fails the IBAN checksum."
)


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return presidio_detector()


def test_finds_each_type_with_exact_spans(detector):
    found = detector.detect(HR_NOTE)
    got: dict[str, list[str]] = {}
    for f in found:
        got.setdefault(f.type, []).append(HR_NOTE[f.start:f.end])
    assert got == VALUES
    assert isinstance(detector, PiiDetector)


def test_validation_rejects_lookalikes(detector):
    assert detector.detect(BENIGN) == [], [(f.type, BENIGN[f.start:f.end]) for f in detector.detect(BENIGN)]


def test_luhn_and_checksum_decide(detector):
    assert [f.type for f in detector.detect("card 4012 8888 8888 1881 on file")] == ["CREDIT_CARD"]
    assert detector.detect("card 4012 8888 8888 1882 on file") == []
    assert [f.type for f in detector.detect("pay GB82 WEST 1234 5698 7654 32 now")] == ["IBAN"]
    assert detector.detect("pay GB82 WEST 1234 5698 7654 31 now") == []


def test_redaction_replaces_every_value(detector):
    out = redact(HR_NOTE, detector.detect(HR_NOTE))
    for values in VALUES.values():
        for v in values:
            assert v not in out
    assert "[EMAIL]" in out and "[IBAN]" in out and "[CREDIT_CARD]" in out and "[US_SSN]" in out
    assert out.startswith("Onboarding record for the Lisbon office.")


def test_works_offline(detector, monkeypatch):
    """No network: any socket connection attempt fails the test (tldextract must use its snapshot)."""

    def refuse(*a, **k):
        raise AssertionError("the PII detector tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert [f.type for f in detector.detect("write to ops@mail.example.co.uk today")] == ["EMAIL"]


def test_overlaps_keep_the_most_confident():
    kept = resolve_overlaps([Finding("PHONE", 4, 15, 0.4), Finding("US_SSN", 4, 15, 0.5), Finding("EMAIL", 20, 30, 1.0)])
    assert [(f.type, f.start) for f in kept] == [("US_SSN", 4), ("EMAIL", 20)]


def test_step_refuses_a_policy_without_a_detector():
    with pytest.raises(ValueError, match="need a PII detector"):
        PiiStep(None, tenant_policies={"acme": "redact"})
    step = PiiStep(None)  # all "allow": nothing to detect
    assert step.apply("acme", [Section(text=HR_NOTE)]).counts == {}


def test_step_tag_taints_a_section_whose_heading_holds_pii(detector):
    step = PiiStep(detector, default_policy="tag")
    secs = [Section(text="Quarterly goals and travel.", heading="Notes from jane@corp.example.com"), Section(text="Nothing here.")]
    res = step.apply("acme", secs, title="Team notes")
    assert res.counts == {"EMAIL": 1}
    assert res.spans == {0: [(0, len(secs[0].text))]}
    assert secs[0].heading == "Notes from jane@corp.example.com"  # tag keeps the text


def test_settings_read_policies_from_the_environment(monkeypatch, tmp_path):
    from ragline.settings import Settings

    monkeypatch.setenv("RAGLINE_PII_POLICY", '{"acme": "redact", "globex": "tag"}')
    monkeypatch.setenv("RAGLINE_PII_RESTRICTED_GROUP", "compliance")
    s = Settings(home=tmp_path)
    step = PiiStep.from_settings(s, presidio_detector())
    assert (step.policy_for("acme"), step.policy_for("globex"), step.policy_for("initech")) == ("redact", "tag", "allow")
    assert step.restricted_group == "compliance"
    monkeypatch.setenv("RAGLINE_PII_POLICY", '{"acme": "shred"}')
    with pytest.raises(ValueError):
        Settings(home=tmp_path)
