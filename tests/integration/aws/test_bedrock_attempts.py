"""Each attempt of a Bedrock chat call, not just the call: bounded by the time left, one rate-limit
token each, connection failures retried, malformed usage estimated (techniques: botocore Stubber
on a real bedrock-runtime client; where a Stubber cannot raise the failure, its client's converse
is wrapped, or a fake client stands in; fake clock and sleeps, so no wall time passes)."""

from __future__ import annotations

import random

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.stub import Stubber
from ragline_testing import FakeTime

from ragline.adapters.aws import BedrockChatModel, RetryPolicy, bedrock
from ragline.adapters.aws._boto import is_transient
from ragline.adapters.aws.bedrock import bedrock_config
from ragline.adapters.local.chat import LocalTemplateChatModel
from ragline.adapters.local.registry import SqliteLedger
from ragline.errors import ModelError
from ragline.generation.ratelimit import RateLimiter
from ragline.generation.service import GenerationService
from ragline.models import SearchHit
from ragline.settings import CostSettings, GenerationSettings, Settings

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse"
HITS = [SearchHit(chunk_id=f"d:v:{i:05d}", doc_id="d", version="v", text=f"Invoices are kept for {i + 9} years.",
                  source_key="policy.md", score=1.0 - i / 10) for i in range(3)]




def converse_ok(text: str = "Ten years [1].", tin: int = 700, tout: int = 5) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout},
        "metrics": {"latencyMs": 300},
    }


def throttled() -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                        "ResponseMetadata": {"HTTPStatusCode": 429}}, "Converse")


@pytest.fixture()
def runtime(aws_region):
    client = boto3.session.Session().client("bedrock-runtime", region_name=aws_region, config=bedrock_config())
    with Stubber(client) as stubber:
        yield client, stubber


def chat(fake: FakeTime, **kwargs) -> BedrockChatModel:
    kwargs.setdefault("retry", RetryPolicy(reserve_s=0.0))
    model = BedrockChatModel(kwargs.pop("model_id", HAIKU), sleep=fake.sleep, rng=random.Random(1), **kwargs)
    model._caller.clock = fake.clock
    return model


def settings(tmp_path, **gen) -> Settings:
    return Settings(home=tmp_path, costs=CostSettings(price_table="test"), generation=GenerationSettings(**gen))


# --- bug 1: every attempt fits in the time left ---------------------------------------------------------


class TimedClients:
    """A fake client factory: each client's converse follows a per-model script and, on "stall",
    burns its connect + read timeouts on the fake clock, as botocore does when the model never answers."""

    def __init__(self, fake: FakeTime, script: dict[str, list[str]]):
        self.fake, self.script, self.calls = fake, script, []

    def __call__(self, service, settings, config, region=None):
        timeouts = (config.connect_timeout, config.read_timeout)
        return lambda: _TimedClient(self, timeouts)


class _TimedClient:
    def __init__(self, clients: TimedClients, timeouts: tuple[float, float]):
        self.clients, self.timeouts = clients, timeouts

    def converse(self, **kwargs):
        fake, mid = self.clients.fake, kwargs["modelId"]
        step = self.clients.script[mid].pop(0) if self.clients.script[mid] else "stall"
        self.clients.calls.append((mid, fake.now, step, self.timeouts))
        if step == "throttle":
            raise throttled()
        if step == "ok":
            return converse_ok()
        fake.now += sum(self.timeouts)
        raise ReadTimeoutError(endpoint_url=URL)


def test_a_late_retry_is_bounded_by_the_time_left_not_the_whole_call(monkeypatch, aws_region):
    """Fake client factory (the production client_for path, not an injected client)."""
    fake = FakeTime()
    clients = TimedClients(fake, {HAIKU: ["throttle", "throttle", "stall", "stall"]})
    monkeypatch.setattr(bedrock, "boto3_client_factory", clients)
    model = chat(fake, settings=Settings(region=aws_region))
    with pytest.raises(ModelError, match=f"^model {HAIKU} read timed out after .* attempts"):
        model.generate("s", "p", max_tokens=10, timeout_s=3.0)
    assert fake.now <= 3.0
    for _, started, _, (connect, read) in clients.calls:
        assert started + connect + read <= 3.0 + 1e-9  # no attempt could outlive the budget
    assert clients.calls[2][3] != clients.calls[0][3]  # the stalled retry got shorter timeouts


def test_an_attempt_that_cannot_finish_is_not_sent(runtime):
    """Stubber with nothing queued: an attempt would fail the test."""
    client, _ = runtime
    fake = FakeTime()
    model = chat(fake, client=client, retry=RetryPolicy(reserve_s=0.0, min_attempt_s=0.25))
    with pytest.raises(ModelError, match=f"^model {HAIKU} not called: time budget spent$"):
        model.generate("s", "p", max_tokens=10, timeout_s=0.2)


def test_the_request_budget_holds_with_a_stalling_primary_and_fallback(monkeypatch, tmp_path):
    """Fake client factory through GenerationService: both models stall, the 503 comes in time."""
    fake = FakeTime()
    clients = TimedClients(fake, {HAIKU: ["throttle", "throttle", "stall"], NOVA: ["stall"]})
    monkeypatch.setattr(bedrock, "boto3_client_factory", clients)
    s = settings(tmp_path, timeout_s=5.0)
    svc = GenerationService(s, ledger=SqliteLedger(tmp_path / "l.db"), small=chat(fake, settings=s),
                            large=chat(fake, settings=s), fallback=chat(fake, settings=s, model_id=NOVA),
                            select_context=lambda h, b: h, deadline=lambda d: d, clock=fake.clock)
    with pytest.raises(ModelError, match="every model failed"):
        svc.answer("acme", "How long are invoices kept?", HITS)
    assert {c[0] for c in clients.calls} == {HAIKU, NOVA} and fake.now <= 5.0


# --- bug 2: a rate-limit token per attempt ----------------------------------------------------------------


def test_four_attempts_take_four_tokens(runtime):
    """Stubber: three throttles then an answer, through a 1/s, burst-1 bucket on the fake clock."""
    client, stubber = runtime
    for _ in range(3):
        stubber.add_client_error("converse", service_error_code="ThrottlingException",
                                 service_message="Too many requests", http_status_code=429)
    stubber.add_response("converse", converse_ok())
    fake = FakeTime()
    sent: list[float] = []
    client.meta.events.register("before-parameter-build.bedrock-runtime.Converse", lambda **kw: sent.append(fake.now))
    limiter = RateLimiter({HAIKU: (1.0, 1)}, max_wait_s=2.0, clock=fake.clock, sleep=fake.sleep)
    take = limiter.acquirer(HAIKU)
    tokens: list[float] = []

    def acquire(left: float) -> float:
        tokens.append(left)
        return take(left)

    out = chat(fake, client=client).generate("s", "p", max_tokens=10, timeout_s=10.0, acquire=acquire)
    assert out.text == "Ten years [1]." and len(tokens) == 4 and len(sent) == 4
    assert all(t >= i - 1e-9 for i, t in enumerate(sent))  # never faster than the bucket: 1 + 1/s
    stubber.assert_no_pending_responses()


def test_the_token_wait_counts_against_the_attempt(runtime):
    """Stubber with nothing queued; the limiter reports a wait its own clock measured."""
    client, _ = runtime
    fake = FakeTime()
    with pytest.raises(ModelError, match="not called: time budget spent"):
        chat(fake, client=client).generate("s", "p", max_tokens=10, timeout_s=2.0, acquire=lambda left: 1.9)


def test_no_token_for_a_retry_names_the_first_failure(runtime):
    """Stubber: one throttle; the bucket then refuses (ModelError), the call fails over as usual."""
    client, stubber = runtime
    stubber.add_client_error("converse", service_error_code="ThrottlingException",
                             service_message="Too many requests", http_status_code=429)
    limiter = RateLimiter({HAIKU: (0.01, 1)}, max_wait_s=2.0, clock=FakeTime().clock, sleep=FakeTime().sleep)
    with pytest.raises(ModelError) as info:
        chat(FakeTime(), client=client).generate("s", "p", max_tokens=10, timeout_s=10.0,
                                                 acquire=limiter.acquirer(HAIKU))
    assert info.value.message.startswith(f"model {HAIKU} throttled after 1 attempts, then model {HAIKU} is rate limited")
    assert info.value.transient


def test_the_local_chat_model_takes_a_token_and_counts_its_wait():
    """The local template model (no network): one attempt, one token."""
    tokens: list[float] = []
    model = LocalTemplateChatModel(HAIKU)
    model.generate("s", "p", max_tokens=10, timeout_s=5.0, acquire=lambda left: tokens.append(left) or 0.0)
    assert tokens == [5.0]
    with pytest.raises(ModelError, match="time budget spent"):
        model.generate("s", "p", max_tokens=10, timeout_s=1.0, acquire=lambda left: 1.0)


# --- bug 3: connection failures are transient ------------------------------------------------------------


@pytest.mark.parametrize("error", [
    ProxyConnectionError(proxy_url="http://proxy:3128", error="Tunnel connection failed: 503"),
    SSLError(endpoint_url=URL, error="EOF occurred in violation of protocol"),
    HTTPClientError(error=ConnectionResetError(104, "Connection reset by peer")),
    EndpointConnectionError(endpoint_url=URL),
], ids=lambda e: type(e).__name__)
def test_connection_failures_are_retried(runtime, error):
    """Stubber for the answer; its converse wrapped to raise the connection failure first."""
    client, stubber = runtime
    stubber.add_response("converse", converse_ok())
    real, raised = client.converse, []

    def flaky(**kwargs):
        if not raised:
            raised.append(error)
            raise error
        return real(**kwargs)

    client.converse = flaky
    fake = FakeTime()
    assert chat(fake, client=client).generate("s", "p", max_tokens=10, timeout_s=10.0).text == "Ten years [1]."
    assert len(fake.sleeps) == 1 and is_transient(error)


def test_a_tls_certificate_failure_is_permanent(runtime):
    """Stubber with nothing queued; converse wrapped to fail certificate validation."""
    client, _ = runtime
    error = SSLError(endpoint_url=URL, error="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

    def bad_cert(**kwargs):
        raise error

    client.converse = bad_cert
    fake = FakeTime()
    with pytest.raises(ModelError, match=f"^model {HAIKU} failed TLS certificate validation") as info:
        chat(fake, client=client).generate("s", "p", max_tokens=10, timeout_s=10.0)
    assert not info.value.transient and fake.sleeps == [] and not is_transient(error)


# --- bug 4: a malformed usage is estimated, not a 500 ---------------------------------------------------


class UsageClient:
    """A fake client (the Stubber refuses a null usage field, which is the point)."""

    def __init__(self, usage):
        self.usage = usage

    def converse(self, **kwargs):
        body = converse_ok()
        body["usage"] = self.usage
        return body


@pytest.mark.parametrize("usage", [
    {"inputTokens": None, "outputTokens": 5}, {"inputTokens": 700, "outputTokens": None},
    {"inputTokens": "700", "outputTokens": 5}, {"inputTokens": 700}, {}, None,
], ids=repr)
def test_a_malformed_usage_is_not_reported(usage):
    out = chat(FakeTime(), client=UsageClient(usage)).generate("s", "p", max_tokens=10, timeout_s=10.0)
    assert out.text == "Ten years [1]." and not out.usage_reported
    assert (out.input_tokens, out.output_tokens) == (0, 0)


def test_a_null_usage_is_estimated_by_the_service(tmp_path):
    """A fake client through GenerationService: the answer comes back, its usage estimated."""
    fake = FakeTime()
    model = chat(fake, client=UsageClient({"inputTokens": None, "outputTokens": None}))
    svc = GenerationService(settings(tmp_path), ledger=SqliteLedger(tmp_path / "l.db"), small=model, large=model,
                            select_context=lambda h, b: h, deadline=lambda d: d, clock=fake.clock)
    out = svc.answer("acme", "How long are invoices kept?", HITS)
    [usage] = out.usages
    assert usage.estimated and usage.input_tokens > 0 and usage.output_tokens > 0


# --- the embedder's and the reranker's attempts are bounded the same way --------------------------


class _StallingClient:
    """Every call stalls: it burns this client's connect + read timeouts on the fake clock."""

    def __init__(self, fake: FakeTime, timeouts: tuple[float, float], calls: list):
        self.fake, self.timeouts, self.calls = fake, timeouts, calls

    def _stall(self, **kwargs):
        self.calls.append((self.fake.now, self.timeouts))
        self.fake.now += sum(self.timeouts)
        raise ReadTimeoutError(endpoint_url=URL)

    invoke_model = _stall
    rerank = _stall


@pytest.mark.parametrize("kind", ["embedder", "reranker"])
def test_embedding_and_rerank_attempts_fit_the_time_left(monkeypatch, aws_region, kind):
    """Fake client factory (the production client_for path): with 4 s left every attempt is
    built to end by then; before, each ran on the 20 s default client and outlived the request."""
    from ragline.adapters.aws import BedrockEmbedder, BedrockReranker

    fake, calls = FakeTime(), []
    monkeypatch.setattr(bedrock, "boto3_client_factory", lambda service, settings, config, region=None: (
        lambda: _StallingClient(fake, (config.connect_timeout, config.read_timeout), calls)))
    deadline = lambda: 4.0 - fake.now
    kw = {"settings": Settings(region=aws_region), "deadline": deadline, "sleep": fake.sleep,
          "retry": RetryPolicy(reserve_s=0.0)}
    if kind == "embedder":
        model = BedrockEmbedder("amazon.titan-embed-text-v2:0", dimensions=256, concurrency=1, **kw)
        model._caller.clock = fake.clock
        call = lambda: model.embed_query("How long are invoices kept?")
    else:
        model = BedrockReranker("amazon.rerank-v1:0", **kw)
        model._caller.clock = fake.clock
        call = lambda: model.rerank("How long are invoices kept?", HITS, 2)
    with pytest.raises(ModelError, match="timed out|time budget spent"):
        call()
    assert calls and fake.now <= 4.0 + 1e-9
    for started, (connect, read) in calls:
        assert started + connect + read <= 4.0 + 1e-9  # no attempt could outlive the time left
