"""Failover of the generation service over Bedrock (technique: botocore Stubber on real
bedrock-runtime clients, one per model, with the Converse shapes the Stubber validates; sleeps and
clocks injected so backoff takes no wall time; the local SQLite ledger records the usage).
Proves: throttling is retried with backoff on the primary; a primary that keeps throttling,
timing out or failing with 5xx hands over to the fallback model, which the answer and the
ledger name; when every model fails, a 503 names each model and why, or, if configured, the
passages come back labelled as such; per-request budgets bound the retries."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from ragline_testing import FakeTime

from ragline.adapters.aws import BedrockChatModel, RetryPolicy
from ragline.adapters.aws.bedrock import bedrock_config
from ragline.adapters.local.registry import SqliteLedger
from ragline.errors import ModelError
from ragline.generation.service import GenerationService
from ragline.models import SearchHit
from ragline.settings import CostSettings, GenerationSettings, Settings

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"




def converse_ok(text: str, tin: int, tout: int) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout},
        "metrics": {"latencyMs": 300},
    }


def fail(stubber: Stubber, code: str, status: int, times: int = 1) -> None:
    for _ in range(times):
        stubber.add_client_error("converse", service_error_code=code, service_message=code, http_status_code=status)


@pytest.fixture()
def stubs(aws_region):
    pairs = []
    for _ in range(2):
        client = boto3.session.Session().client("bedrock-runtime", region_name=aws_region, config=bedrock_config())
        stubber = Stubber(client)
        stubber.activate()
        pairs.append((client, stubber))
    yield pairs
    for _, s in pairs:
        s.deactivate()


HITS = [SearchHit(chunk_id=f"d:v:{i:05d}", doc_id="d", version="v", text=f"Invoices are kept for {i + 9} years. More text.",
                  source_key="policy.md", score=1.0 - i / 10) for i in range(3)]


def service(stubs, tmp_path, fake: FakeTime, **gen):
    (c1, _), (c2, _) = stubs
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.2, max_delay_s=1.0, reserve_s=0.0)
    primary = BedrockChatModel(HAIKU, client=c1, retry=policy, sleep=fake.sleep)
    primary._caller.clock = fake.clock
    fallback = BedrockChatModel(NOVA, client=c2, retry=policy, sleep=fake.sleep)
    fallback._caller.clock = fake.clock
    settings = Settings(home=tmp_path, costs=CostSettings(price_table="test"), generation=GenerationSettings(**gen))
    ledger = SqliteLedger(tmp_path / "ledger.db")
    svc = GenerationService(settings, ledger=ledger, small=primary, large=primary, fallback=fallback,
                            embedder_id=None, select_context=lambda hits, budget: hits,
                            deadline=lambda default: default,  # no Lambda deadline in these tests
                            clock=fake.clock)  # the budget counts the fake backoffs, not a loaded machine's wall time
    return svc, ledger


def test_throttling_is_retried_with_backoff_on_the_primary(stubs, tmp_path):
    fake = FakeTime()
    svc, ledger = service(stubs, tmp_path, fake)
    (_, s1), (_, s2) = stubs
    fail(s1, "ThrottlingException", 429, times=2)
    s1.add_response("converse", converse_ok("Ten years [1].", 900, 6))
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    assert out.generation.model_id == HAIKU and out.notes == []
    assert len(fake.sleeps) == 2  # two backoffs, no wall time
    [usage] = svc.settle("acme", "q1", "How long are invoices kept?", [], out.usages)
    assert usage.purpose == "generation" and not usage.estimated and usage.input_tokens == 900
    assert usage.cost_usd == pytest.approx((900 * 0.00025 + 6 * 0.00125) / 1000)
    assert ledger.records("acme", "q1")[0]["model_id"] == HAIKU
    s1.assert_no_pending_responses()
    s2.assert_no_pending_responses()


@pytest.mark.parametrize("code,status,reason", [
    ("ThrottlingException", 429, "throttled"),
    ("ModelTimeoutException", 408, "timed out"),
    ("InternalServerException", 500, "server error"),
])
def test_a_failing_primary_hands_over_to_the_fallback(stubs, tmp_path, code, status, reason):
    fake = FakeTime()
    svc, ledger = service(stubs, tmp_path, fake)
    (_, s1), (_, s2) = stubs
    fail(s1, code, status, times=3)
    s2.add_response("converse", converse_ok("Ten years [1].", 700, 5))
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    assert out.generation.model_id == NOVA
    assert any(f"fallback model {NOVA}" in n and HAIKU in n and reason in n for n in out.notes)
    priced = svc.settle("acme", "q2", "How long are invoices kept?", [], out.usages)
    assert [(u.model_id, u.purpose) for u in priced] == [(NOVA, "generation_fallback")]
    assert ledger.totals("acme", 1)[0]["purpose"] == "generation_fallback"
    s1.assert_no_pending_responses()


def test_a_non_retryable_error_goes_straight_to_the_fallback(stubs, tmp_path):
    fake = FakeTime()
    svc, _ = service(stubs, tmp_path, fake)
    (_, s1), (_, s2) = stubs
    fail(s1, "AccessDeniedException", 403)
    s2.add_response("converse", converse_ok("Ten years [1].", 700, 5))
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    assert out.generation.model_id == NOVA and fake.sleeps == []
    assert "denied access" in out.notes[0]


def test_every_model_failing_is_a_503_that_names_them(stubs, tmp_path):
    fake = FakeTime()
    svc, ledger = service(stubs, tmp_path, fake)
    (_, s1), (_, s2) = stubs
    fail(s1, "ServiceUnavailableException", 503, times=3)
    fail(s2, "ThrottlingException", 429, times=3)
    with pytest.raises(ModelError) as err:
        svc.answer("acme", "How long are invoices kept?", HITS)
    assert err.value.http_status == 503
    msg = err.value.message
    assert f"model {HAIKU} unavailable after 3 attempts" in msg and f"model {NOVA} throttled after 3 attempts" in msg
    assert ledger.totals("acme", 1) == []  # failed calls are not billed


def test_every_model_failing_can_return_labelled_passages(stubs, tmp_path):
    fake = FakeTime()
    svc, _ = service(stubs, tmp_path, fake, unavailable_mode="passages")
    (_, s1), (_, s2) = stubs
    fail(s1, "InternalServerException", 500, times=3)
    fail(s2, "InternalServerException", 500, times=3)
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    assert out.generation.model_id == "ragline/passages-only" and not out.generation.generative
    assert out.generation.text.startswith("Generation is unavailable") and "years" in out.generation.text
    assert out.usages == [] and "every model failed" in out.notes[-1]


def test_the_request_time_budget_bounds_retries_and_the_fallback(stubs, tmp_path):
    fake = FakeTime()
    svc, _ = service(stubs, tmp_path, fake, timeout_s=0.5)
    (_, s1), (_, s2) = stubs
    fail(s1, "ThrottlingException", 429, times=3)
    s2.add_response("converse", converse_ok("Ten years [1].", 700, 5))
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    # the primary got 60% of 0.5 s: its backoff cannot exceed that, and the fallback still ran
    assert sum(fake.sleeps) <= 0.3 + 1e-9
    assert out.generation.model_id == NOVA


def test_the_same_model_in_another_region_is_a_fallback(monkeypatch):
    """Fake client factory (no network): Haiku in us-east-1 answers 503, Haiku in us-west-2 is
    tried next and answers; its client was built for its own region."""
    from botocore.exceptions import ClientError

    from ragline.adapters.aws import BedrockChatModel
    from ragline.adapters.aws import bedrock as bedrock_module
    from ragline.generation.service import GenerationService
    from ragline.models import SearchHit
    from ragline.settings import Settings

    regions = []

    class Client:
        def __init__(self, region):
            self.region = region

        def converse(self, **kwargs):
            if self.region == "us-east-1":
                raise ClientError({"Error": {"Code": "ServiceUnavailableException", "Message": "down"},
                                   "ResponseMetadata": {"HTTPStatusCode": 503}}, "Converse")
            return {"output": {"message": {"role": "assistant", "content": [{"text": "Ten years [1]."}]}},
                    "stopReason": "end_turn", "usage": {"inputTokens": 50, "outputTokens": 4, "totalTokens": 54}}

    def factory(service, settings, config, region=None):
        def build():
            regions.append(region or settings.region)
            return Client(region or settings.region)
        return build

    monkeypatch.setattr(bedrock_module, "boto3_client_factory", factory)
    settings = Settings(region="us-east-1", jwt_secret="x" * 40)
    haiku = "anthropic.claude-3-haiku-20240307-v1:0"
    primary = BedrockChatModel(haiku, settings=settings, sleep=lambda s: None)
    fallback = BedrockChatModel(haiku, settings=settings, sleep=lambda s: None, region="us-west-2")
    assert primary.endpoint == f"us-east-1/{haiku}" and fallback.endpoint == f"us-west-2/{haiku}"

    class NoLedger:
        def record(self, *a, **k):
            pass

        def totals(self, tenant, days):
            return []

    service = GenerationService(settings, ledger=NoLedger(), small=primary, fallback=fallback,
                                select_context=lambda hits, budget: hits)
    hit = SearchHit(chunk_id="c1", doc_id="d1", version="v1", text="Invoices are kept ten years.", score=1.0,
                    source_key="k", title="t")
    result = service.answer("acme", "How long are invoices kept?", [hit])
    assert result.generation.text == "Ten years [1]." and result.usages[0].purpose == "generation_fallback"
    assert "us-west-2" in regions and any("fallback" in n for n in result.notes)


def test_a_tier_configured_with_another_model_than_it_calls_is_refused():
    from ragline.adapters.local.chat import LocalTemplateChatModel
    from ragline.generation.service import GenerationService
    from ragline.settings import GenerationSettings, Settings, TierSettings

    settings = Settings(jwt_secret="x" * 40, generation=GenerationSettings(
        large=TierSettings(model="amazon.nova-pro-v1:0")))
    with pytest.raises(ValueError, match="generation.large.model is 'amazon.nova-pro-v1:0'"):
        GenerationService(settings, ledger=None, small=LocalTemplateChatModel("ragline/local-small"),
                          large=LocalTemplateChatModel("ragline/local-large"), select_context=lambda h, b: h)


def test_the_aws_wiring_calls_the_model_a_tier_is_configured_with():
    from ragline.adapters.aws.wiring import build_ports
    from ragline.settings import GenerationSettings, Settings, TierSettings

    settings = Settings(backend="aws", region="us-east-1", documents_bucket="b", registry_table="r",
                        ledger_table="l", query_log_table="q", opensearch_endpoint="https://search.example",
                        jwt_secret="x" * 40, bedrock_chat_model_fallback_region="us-west-2",
                        generation=GenerationSettings(large=TierSettings(model="amazon.nova-pro-v1:0")))
    ports = build_ports(settings)  # builds clients lazily: no network
    assert ports["chat_large"].model_id == "amazon.nova-pro-v1:0"
    assert ports["chat"].model_id == settings.bedrock_chat_model_small
    assert ports["chat_fallback"].endpoint == "us-west-2/amazon.nova-lite-v1:0"


def _no_text(tin: int, tout: int) -> dict:
    # Converse's shape when the output budget ran out inside a reasoning block: no text, billed
    return {"output": {"message": {"role": "assistant", "content": []}}, "stopReason": "max_tokens",
            "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout}, "metrics": {"latencyMs": 900}}


def test_a_primary_that_was_billed_but_returned_no_text_is_in_the_ledger_beside_the_fallback(stubs, tmp_path):
    """Stubber: the primary answers with usage and no text block; the fallback answers."""
    fake = FakeTime()
    svc, ledger = service(stubs, tmp_path, fake)
    (_, s1), (_, s2) = stubs
    s1.add_response("converse", _no_text(900, 512))
    s2.add_response("converse", converse_ok("Ten years [1].", 700, 5))
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    assert out.generation.model_id == NOVA
    priced = svc.settle("acme", "q5", "How long are invoices kept?", [], out.usages)
    assert [(u.model_id, u.purpose, u.input_tokens, u.output_tokens) for u in priced] == [
        (HAIKU, "generation_failed", 900, 512), (NOVA, "generation_fallback", 700, 5)]
    assert {r["model_id"] for r in ledger.records("acme", "q5")} == {HAIKU, NOVA}


def test_when_every_model_fails_the_billed_failures_travel_with_the_503(stubs, tmp_path):
    """Stubber: both models billed and returned no text; the error carries their usage."""
    fake = FakeTime()
    svc, _ = service(stubs, tmp_path, fake)
    (_, s1), (_, s2) = stubs
    s1.add_response("converse", _no_text(900, 512))
    s2.add_response("converse", _no_text(700, 300))
    with pytest.raises(ModelError, match="every model failed") as err:
        svc.answer("acme", "How long are invoices kept?", HITS)
    assert [(u.model_id, u.output_tokens) for u in err.value.usages] == [(HAIKU, 512), (NOVA, 300)]
