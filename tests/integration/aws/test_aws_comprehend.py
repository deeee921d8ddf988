"""Amazon Comprehend DetectPiiEntities adapter (technique: botocore Stubber on a real boto3
Comprehend client; the Stubber checks every request against the service model and every
response against its output shape). Proves: exact requests, offsets mapped back across
segments cut under the 100 KB limit, type mapping and filtering, error translation, and the
pipeline's redact policy driven by Comprehend findings."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from ragline.adapters.aws import ComprehendPiiDetector
from ragline.adapters.aws.comprehend import MAX_TEXT_BYTES, segments
from ragline.errors import DependencyUnavailable, DocumentRejected
from ragline.ingest.pii import PiiDetector
from ragline.ingest.pipeline import IngestItem
from ragline.settings import Settings


@pytest.fixture
def comprehend():
    client = boto3.session.Session().client("comprehend", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _settings(tmp_path, **kw):
    return Settings(home=tmp_path / "home", region="us-east-1", **kw)


def _entity(kind, begin, end, score=0.9999):
    return {"Score": score, "Type": kind, "BeginOffset": begin, "EndOffset": end}


def test_one_request_and_type_mapping(comprehend, tmp_path):
    client, stub = comprehend
    text = "Reach Ana at ana@example.com or 206-555-0199 on 2024-05-01. SSN 536-22-4187."
    stub.add_response(
        "detect_pii_entities",
        {"Entities": [
            _entity("NAME", 6, 9), _entity("EMAIL", 13, 28), _entity("PHONE", 32, 44),
            _entity("DATE_TIME", 48, 58), _entity("SSN", 64, 75), _entity("ADDRESS", 0, 5, score=0.2),
        ]},
        {"Text": text, "LanguageCode": "en"},
    )
    det = ComprehendPiiDetector(client=client, settings=_settings(tmp_path))
    found = det.detect(text)
    assert isinstance(det, PiiDetector)
    assert [(f.type, text[f.start:f.end]) for f in found] == [
        ("NAME", "Ana"), ("EMAIL", "ana@example.com"), ("PHONE", "206-555-0199"), ("US_SSN", "536-22-4187"),
    ]  # DATE_TIME ignored by default; the 0.2-score ADDRESS is under pii_min_score


def test_long_text_is_cut_under_the_limit_and_offsets_map_back(comprehend, tmp_path):
    client, stub = comprehend
    para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "\n\n"
    text = para * 100 + "Contact: ops@example.com\n\n" + para * 90 + "Café €uro ünïcode — bob@example.org"
    assert len(text.encode()) > MAX_TEXT_BYTES * 3
    segs = segments(text, 99_000)
    assert "".join(s for _, s in segs) == text and all(len(s.encode()) <= 99_000 for _, s in segs)
    assert all(s.endswith("\n\n") for _, s in segs[:-1])  # cut at paragraph breaks
    for offset, seg in segs:
        ents = []
        for email in ("ops@example.com", "bob@example.org"):
            i = seg.find(email)
            if i >= 0:
                ents.append(_entity("EMAIL", i, i + len(email)))
        stub.add_response("detect_pii_entities", {"Entities": ents}, {"Text": seg, "LanguageCode": "es"})
    det = ComprehendPiiDetector(client=client, settings=_settings(tmp_path, comprehend_language="es"))
    found = det.detect(text)
    assert [text[f.start:f.end] for f in found] == ["ops@example.com", "bob@example.org"]
    assert det.requests == len(segs) >= 4


def test_multibyte_text_is_measured_in_bytes():
    text = ("€" * 40_000 + " ") * 3  # 120,001 bytes per 40,001 chars
    segs = segments(text, 99_000)
    assert "".join(s for _, s in segs) == text
    assert all(len(s.encode()) <= 99_000 for _, s in segs)


def test_throttling_is_transient_and_invalid_text_is_a_document_failure(comprehend, tmp_path):
    client, stub = comprehend
    det = ComprehendPiiDetector(client=client, settings=_settings(tmp_path))
    stub.add_client_error("detect_pii_entities", "TooManyRequestsException", "Rate exceeded", http_status_code=400)
    with pytest.raises(DependencyUnavailable, match="Comprehend"):
        det.detect("call 206-555-0199")
    stub.add_client_error("detect_pii_entities", "InternalServerException", "boom", http_status_code=500)
    with pytest.raises(DependencyUnavailable):
        det.detect("call 206-555-0199")
    stub.add_client_error("detect_pii_entities", "InvalidRequestException", "Invalid UTF-8", http_status_code=400)
    with pytest.raises(DocumentRejected) as info:
        det.detect("call 206-555-0199")
    assert info.value.status == "failed" and "InvalidRequestException" in info.value.reason


def test_blank_text_sends_nothing(comprehend, tmp_path):
    client, _ = comprehend
    det = ComprehendPiiDetector(client=client, settings=_settings(tmp_path))
    assert det.detect("   \n\n ") == [] and det.requests == 0


def test_pipeline_redacts_with_comprehend_findings(comprehend, make_app, tmp_path):
    client, stub = comprehend
    text = "Wire refunds to ES91 2100 0418 4502 0005 1332 and confirm with lucia@example.es."
    # the title (the file name's stem here) is checked first: a file may be named after a person
    stub.add_response("detect_pii_entities", {"Entities": []}, {"Text": "refunds", "LanguageCode": "en"})
    stub.add_response(
        "detect_pii_entities",
        {"Entities": [_entity("INTERNATIONAL_BANK_ACCOUNT_NUMBER", 16, 45), _entity("EMAIL", 63, 79)]},
        {"Text": text, "LanguageCode": "en"},
    )
    settings = _settings(tmp_path, pii_policy={"acme": "redact"}, jwt_secret="test-secret-0123456789abcdef0123456789")
    app = make_app(settings=settings, pii=ComprehendPiiDetector(client=client, settings=settings))
    out = app.pipeline.ingest(IngestItem(tenant="acme", key="refunds.txt", data=text.encode()))
    rec = app.registry.get("acme", out.doc_id)
    assert rec.pii == {"IBAN": 1, "EMAIL": 1}
    from ragline.models import Principal

    ans = app.ask(Principal(tenant="acme", user="u"), "Where do refunds go?", use_cache=False)
    assert ans.citations[0].snippet == "Wire refunds to [IBAN] and confirm with [EMAIL]."
