"""Bedrock adapters (technique: botocore Stubber on real boto3 clients, with response shapes
from the service model, which the Stubber validates; sleeps and clocks injected so retries take
no wall time). Two other techniques where a Stubber cannot show the behaviour:

* read timeouts: the stubbed client's method is wrapped to raise botocore's ReadTimeoutError;
* "only our loop retries": a local HTTP server on 127.0.0.1 answers 429 and counts requests,
  proving the client config sends exactly one HTTP request per attempt of our loop.
"""

from __future__ import annotations

import contextvars
import io
import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import numpy as np
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from ragline_testing import FakeTime

from ragline.adapters.aws import BedrockChatModel, BedrockEmbedder, BedrockReranker, RetryPolicy
from ragline.adapters.aws.bedrock import bedrock_config
from ragline.errors import ModelError
from ragline.models import Generation, SearchHit, Usage
from ragline.ports import ChatModel, Embedder, Reranker
from ragline.settings import Settings

TITAN = "amazon.titan-embed-text-v2:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
RERANK = "amazon.rerank-v1:0"




class MaxJitter(random.Random):
    """Full jitter at its ceiling, so a test can compute exactly when the budget runs out."""

    def uniform(self, a: float, b: float) -> float:
        return b


class JsonEq:
    """Matches a JSON string by value, not by key order."""

    def __init__(self, expected: dict):
        self.expected = expected

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (str, bytes)) and json.loads(other) == self.expected

    __hash__ = None  # compared, never hashed

    def __repr__(self) -> str:
        return f"JsonEq({self.expected!r})"


@pytest.fixture()
def settings(aws_region) -> Settings:
    return Settings(region=aws_region, embedding_dimensions=256)


@pytest.fixture()
def runtime(aws_region):
    client = boto3.session.Session().client(
        "bedrock-runtime", region_name=aws_region, config=bedrock_config()
    )
    with Stubber(client) as stubber:
        yield client, stubber


@pytest.fixture()
def agent_runtime(aws_region):
    client = boto3.session.Session().client(
        "bedrock-agent-runtime", region_name=aws_region, config=bedrock_config()
    )
    with Stubber(client) as stubber:
        yield client, stubber


def titan_response(vector: list[float], tokens: int) -> dict:
    payload = json.dumps(
        {"embedding": vector, "inputTextTokenCount": tokens, "embeddingsByType": {"float": vector}}
    ).encode()
    return {"body": StreamingBody(io.BytesIO(payload), len(payload)), "contentType": "application/json"}


def titan_request(text: str, dimensions: int = 256) -> dict:
    return {
        "modelId": TITAN,
        "body": JsonEq({"inputText": text, "dimensions": dimensions, "normalize": True}),
        "contentType": "application/json",
        "accept": "application/json",
    }


def throttle(
    stubber: Stubber, method: str, times: int = 1, code: str = "ThrottlingException", status: int = 429
):
    for _ in range(times):
        stubber.add_client_error(
            method, service_error_code=code, service_message="Too many requests", http_status_code=status
        )


def basis(i: int, d: int = 256, scale: float = 1.0) -> list[float]:
    v = [0.0] * d
    v[i] = scale
    return v


def make_embedder(client, settings, fake: FakeTime | None = None, **kwargs) -> BedrockEmbedder:
    fake = fake or FakeTime()
    embedder = BedrockEmbedder(client=client, settings=settings, sleep=fake.sleep, **kwargs)
    embedder._caller.clock = fake.clock
    return embedder


# --- embedder -----------------------------------------------------------------------------------


def test_embedder_implements_the_port(runtime, settings):
    embedder = BedrockEmbedder(client=runtime[0], settings=settings)
    assert isinstance(embedder, Embedder)
    assert (embedder.model_id, embedder.dimensions) == (TITAN, 256)


def test_embed_documents_returns_unit_float32_rows_in_order_and_records_tokens(runtime, settings):
    client, stubber = runtime
    texts = ["alpha", "beta", "gamma"]
    for i, text in enumerate(texts):
        # a slightly off-unit vector: the adapter must hand back exact unit rows
        stubber.add_response(
            "invoke_model", titan_response(basis(i, scale=1.001), tokens=i + 2), titan_request(text)
        )
    seen: list[Usage] = []
    embedder = make_embedder(client, settings, concurrency=1, on_usage=seen.append)

    matrix = embedder.embed_documents(texts)

    stubber.assert_no_pending_responses()
    assert matrix.dtype == np.float32 and matrix.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-6)
    assert [int(np.argmax(row)) for row in matrix] == [0, 1, 2]
    assert embedder.last_usage == Usage(model_id=TITAN, purpose="embed_documents", input_tokens=2 + 3 + 4)
    assert seen == [embedder.last_usage]


def test_embed_query_returns_one_unit_vector(runtime, settings):
    client, stubber = runtime
    stubber.add_response("invoke_model", titan_response(basis(7), tokens=3), titan_request("what is x?"))
    embedder = make_embedder(client, settings)
    vector = embedder.embed_query("what is x?")
    assert vector.shape == (256,) and vector.dtype == np.float32 and vector[7] == pytest.approx(1.0)
    assert embedder.last_usage.purpose == "embed_query" and embedder.last_usage.input_tokens == 3


def test_a_titan_response_without_a_token_count_is_estimated_not_zero(runtime, settings):
    from ragline.tokens import count_tokens

    client, stubber = runtime
    payload = json.dumps({"embedding": basis(2)}).encode()  # no inputTextTokenCount
    stubber.add_response("invoke_model", {"body": StreamingBody(io.BytesIO(payload), len(payload)),
                                          "contentType": "application/json"}, titan_request("how long are invoices kept?"))
    embedder = make_embedder(client, settings)
    embedder.embed_query("how long are invoices kept?")
    usage = embedder.last_usage
    assert usage.estimated and usage.input_tokens == count_tokens("how long are invoices kept?") > 0


def test_embedder_refuses_a_wrong_sized_embedding_and_empty_input(runtime, settings):
    client, stubber = runtime
    stubber.add_response("invoke_model", titan_response([0.5] * 128, tokens=1), titan_request("x"))
    embedder = make_embedder(client, settings)
    with pytest.raises(
        ModelError, match=r"amazon.titan-embed-text-v2:0 returned an embedding of shape \(128,\)"
    ):
        embedder.embed_query("x")
    with pytest.raises(ValueError):
        embedder.embed_documents(["ok", "  "])
    assert embedder.embed_documents([]).shape == (0, 256)


def test_embedder_rejects_dimensions_titan_v2_does_not_offer(settings):
    with pytest.raises(ValueError, match="RAGLINE_EMBEDDING_DIMENSIONS"):
        BedrockEmbedder(settings=settings.model_copy(update={"embedding_dimensions": 384}))


class ParallelFakeRuntime:
    """A fake bedrock-runtime: every call waits at a barrier, so the batch only completes if
    ``parties`` calls are in flight at once; the embedding encodes which text it came from."""

    def __init__(self, texts: list[str], parties: int):
        self.index = {t: i for i, t in enumerate(texts)}
        self.barrier = threading.Barrier(parties, timeout=5)
        self.threads: set[str] = set()

    def invoke_model(self, *, modelId, body, contentType, accept):
        request = json.loads(body)
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()
        payload = json.dumps({"embedding": basis(self.index[request["inputText"]]), "inputTextTokenCount": 1})
        return {"body": io.BytesIO(payload.encode()), "contentType": "application/json"}


def test_embed_documents_runs_requests_in_parallel_and_keeps_input_order(settings):
    texts = [f"text {i}" for i in range(8)]
    fake = ParallelFakeRuntime(texts, parties=4)
    # the handler publishes the invocation's remaining time in a ContextVar; pool threads must see it
    remaining: contextvars.ContextVar[float] = contextvars.ContextVar("remaining", default=0.0)
    remaining.set(120.0)
    embedder = BedrockEmbedder(client=fake, settings=settings, concurrency=4, deadline=remaining.get)
    matrix = embedder.embed_documents(texts)  # would raise BrokenBarrierError if run one by one
    assert [int(np.argmax(row)) for row in matrix] == list(range(8))
    assert len(fake.threads) == 4 and embedder.last_usage.input_tokens == 8
    embedder.close()


# --- retries, budgets and errors ------------------------------------------------------------------


def test_throttling_then_success_retries_with_full_jitter(runtime, settings):
    client, stubber = runtime
    throttle(stubber, "invoke_model", times=2)
    stubber.add_response("invoke_model", titan_response(basis(0), tokens=1), titan_request("x"))
    fake = FakeTime()
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=10)
    embedder = make_embedder(client, settings, fake, retry=policy, rng=random.Random(7))
    assert embedder.embed_query("x")[0] == pytest.approx(1.0)
    assert len(fake.sleeps) == 2
    assert 0 <= fake.sleeps[0] <= 0.5 and 0 <= fake.sleeps[1] <= 1.0  # full jitter: [0, base * 2^n]
    stubber.assert_no_pending_responses()


def test_throttling_past_the_time_budget_raises_model_error_naming_the_model(runtime, settings):
    client, stubber = runtime
    throttle(stubber, "invoke_model", times=10)
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=1.0, reserve_s=0.0)
    embedder = make_embedder(
        client, settings, fake, retry=policy, rng=MaxJitter(), deadline=lambda: 2.5 - fake.now
    )  # 2.5 s left in the (fake) Lambda
    with pytest.raises(ModelError) as info:
        embedder.embed_query("x")
    # attempt 1 at t=0, sleep 1; attempt 2 at t=1, sleep 1; attempt 3 at t=2: another 1 s sleep
    # would pass the deadline, so it stops there instead of sleeping into a Lambda timeout
    assert info.value.message == f"model {TITAN} throttled after 3 attempts (time budget spent)"
    assert fake.sleeps == [1.0, 1.0] and fake.now <= 2.5
    assert info.value.transient


def test_deadline_reserve_is_kept_for_the_caller(runtime, settings):
    client, _ = runtime
    fake = FakeTime()
    embedder = make_embedder(client, settings, fake, retry=RetryPolicy(reserve_s=1.0), deadline=lambda: 0.8)
    with pytest.raises(ModelError, match=f"model {TITAN} not called: time budget spent"):
        embedder.embed_query("x")  # no request at all: the stubber has nothing queued


def test_too_many_attempts_raises_with_the_reason(runtime, settings):
    client, stubber = runtime
    throttle(stubber, "invoke_model", times=4, code="ServiceUnavailableException", status=503)
    embedder = make_embedder(client, settings, retry=RetryPolicy(max_attempts=4))
    with pytest.raises(ModelError, match=f"^model {TITAN} unavailable after 4 attempts$"):
        embedder.embed_query("x")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("ModelTimeoutException", 408, "timed out"),
        ("InternalServerException", 500, "failed with a server error"),
        ("SomethingNew", 502, "failed with a server error (SomethingNew)"),
    ],
)
def test_timeouts_and_5xx_are_retried(runtime, settings, code, status, reason):
    client, stubber = runtime
    throttle(stubber, "invoke_model", times=1, code=code, status=status)
    stubber.add_response("invoke_model", titan_response(basis(1), tokens=1), titan_request("x"))
    fake = FakeTime()
    embedder = make_embedder(client, settings, fake)
    assert embedder.embed_query("x")[1] == pytest.approx(1.0)
    assert len(fake.sleeps) == 1
    # and when they persist, the reason is named
    throttle(stubber, "invoke_model", times=4, code=code, status=status)
    with pytest.raises(ModelError, match=re.escape(f"model {TITAN} {reason} after 4 attempts")):
        embedder.embed_query("x")


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("ValidationException", 400, "rejected the request (ValidationException: bad input)"),
        ("AccessDeniedException", 403, "denied access (AccessDeniedException: bad input)"),
    ],
)
def test_client_errors_are_not_retried(runtime, settings, code, status, reason):
    client, stubber = runtime
    stubber.add_client_error(
        "invoke_model", service_error_code=code, service_message="bad input", http_status_code=status
    )
    fake = FakeTime()
    embedder = make_embedder(client, settings, fake)
    with pytest.raises(ModelError) as info:
        embedder.embed_query("x")
    assert info.value.message == f"model {TITAN} {reason}"
    assert fake.sleeps == [] and not info.value.transient
    stubber.assert_no_pending_responses()


def converse_response(
    text_blocks: list[dict], tokens_in: int, tokens_out: int, stop: str = "end_turn"
) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": text_blocks}},
        "stopReason": stop,
        "usage": {
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
            "totalTokens": tokens_in + tokens_out,
        },
        "metrics": {"latencyMs": 420},
    }


def converse_request(
    system: str = "Answer from the passages.", prompt: str = "Q?", max_tokens: int = 300
) -> dict:
    return {
        "modelId": HAIKU,
        "system": [{"text": system}],
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
    }


def make_chat(client, fake: FakeTime | None = None, **kwargs) -> BedrockChatModel:
    fake = fake or FakeTime()
    chat = BedrockChatModel(HAIKU, client=client, settings=Settings(), sleep=fake.sleep, **kwargs)
    chat._caller.clock = fake.clock
    return chat


def test_converse_returns_text_and_token_usage(runtime):
    client, stubber = runtime
    stubber.add_response(
        "converse", converse_response([{"text": "It is 42 [1]."}], 812, 9), converse_request()
    )
    chat = make_chat(client)
    assert isinstance(chat, ChatModel)
    generation = chat.generate("Answer from the passages.", "Q?", max_tokens=300, timeout_s=10)
    assert generation == Generation(text="It is 42 [1].", model_id=HAIKU, input_tokens=812, output_tokens=9)
    stubber.assert_no_pending_responses()


def test_converse_skips_a_leading_reasoning_block(runtime):
    client, stubber = runtime
    blocks = [{"reasoningContent": {"reasoningText": {"text": "thinking..."}}}, {"text": "Answer."}]
    stubber.add_response("converse", converse_response(blocks, 5, 3), converse_request())
    assert (
        make_chat(client).generate("Answer from the passages.", "Q?", max_tokens=300, timeout_s=None).text
        == "Answer."
    )


def test_converse_with_no_text_is_a_model_error(runtime):
    client, stubber = runtime
    stubber.add_response("converse", converse_response([], 5, 0, stop="content_filtered"), converse_request())
    with pytest.raises(ModelError, match=f"model {HAIKU} returned no text \\(stopReason=content_filtered\\)"):
        make_chat(client).generate("Answer from the passages.", "Q?", max_tokens=300, timeout_s=None)


def test_read_timeout_is_retried_then_succeeds(runtime):
    client, stubber = runtime
    stubber.add_response("converse", converse_response([{"text": "ok"}], 1, 1), converse_request())
    real = client.converse
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise ReadTimeoutError(
                endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse"
            )
        return real(**kwargs)

    client.converse = flaky
    fake = FakeTime()
    generation = make_chat(client, fake).generate(
        "Answer from the passages.", "Q?", max_tokens=300, timeout_s=30
    )
    assert generation.text == "ok" and len(calls) == 2 and len(fake.sleeps) == 1


def test_persistent_read_timeouts_stop_within_the_call_timeout(runtime):
    client, _ = runtime

    def always_times_out(**kwargs):
        fake.now += 2.0  # each attempt burns 2 s before timing out
        raise ReadTimeoutError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com")

    client.converse = always_times_out
    fake = FakeTime()
    chat = make_chat(
        client, fake, retry=RetryPolicy(max_attempts=10, base_delay_s=0.5, max_delay_s=0.5), rng=MaxJitter()
    )
    with pytest.raises(ModelError) as info:
        chat.generate("s", "p", max_tokens=10, timeout_s=5.0)
    # t=2 fail, sleep .5; t=4.5 fail, a further .5 s sleep leaves 0 s: stop
    assert info.value.message == f"model {HAIKU} read timed out after 2 attempts (time budget spent)"
    assert fake.now <= 5.0


# --- reranker -----------------------------------------------------------------------------------


def _hit(i: int, text: str) -> SearchHit:
    return SearchHit(
        chunk_id=f"c{i}", doc_id=f"d{i}", version="v", text=text, source_key=f"k{i}", score=0.1 * i
    )


def rerank_request(query: str, texts: list[str], k: int, region: str) -> dict:
    return {
        "queries": [{"type": "TEXT", "textQuery": {"text": query}}],
        "sources": [
            {"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": t}}}
            for t in texts
        ],
        "rerankingConfiguration": {
            "type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {
                "modelConfiguration": {"modelArn": f"arn:aws:bedrock:{region}::foundation-model/{RERANK}"},
                "numberOfResults": k,
            },
        },
    }


def test_rerank_maps_results_back_to_hits_best_first(agent_runtime, aws_region):
    client, stubber = agent_runtime
    hits = [_hit(0, "cats purr"), _hit(1, "dogs bark"), _hit(2, "cats and dogs")]
    stubber.add_response(
        "rerank",
        {"results": [{"index": 2, "relevanceScore": 0.91}, {"index": 0, "relevanceScore": 0.35}]},
        rerank_request("do cats purr?", [h.text for h in hits], k=2, region=aws_region),
    )
    seen: list[Usage] = []
    reranker = BedrockReranker(client=client, settings=Settings(region=aws_region), on_usage=seen.append)
    assert isinstance(reranker, Reranker)
    ranked = reranker.rerank("do cats purr?", hits, top_k=2)
    assert [(h.chunk_id, h.score) for h in ranked] == [("c2", 0.91), ("c0", 0.35)]
    assert ranked[0].text == "cats and dogs" and ranked[0].doc_id == "d2"
    assert seen == [Usage(model_id=RERANK, purpose="rerank")]
    assert reranker.rerank("q", [], top_k=3) == []


def test_rerank_throttled_then_ok_and_bad_index_is_an_error(agent_runtime, aws_region):
    client, stubber = agent_runtime
    hits = [_hit(0, "a"), _hit(1, "b")]
    throttle(stubber, "rerank")
    stubber.add_response(
        "rerank",
        {"results": [{"index": 1, "relevanceScore": 0.5}]},
        rerank_request("q", ["a", "b"], k=2, region=aws_region),
    )
    stubber.add_response("rerank", {"results": [{"index": 5, "relevanceScore": 0.5}]})
    fake = FakeTime()
    reranker = BedrockReranker(client=client, settings=Settings(region=aws_region), sleep=fake.sleep)
    assert [h.chunk_id for h in reranker.rerank("q", hits, top_k=5)] == ["c1"]
    assert len(fake.sleeps) == 1
    with pytest.raises(ModelError, match=f"model {RERANK} returned an unknown source index 5"):
        reranker.rerank("q", hits, top_k=5)


# --- client configuration -----------------------------------------------------------------------


class _Throttler(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"message":"Too many requests, please wait before trying again."}'
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/coral/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_only_our_retry_loop_retries(aws_region, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = boto3.session.Session().client(
            "bedrock-runtime",
            region_name=aws_region,
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            config=bedrock_config(),
        )
        embedder = make_embedder(client, settings, retry=RetryPolicy(max_attempts=3))
        with pytest.raises(ModelError, match=f"^model {TITAN} throttled after 3 attempts$"):
            embedder.embed_query("x")
        assert _Throttler.hits == 3  # botocore added none of its own
    finally:
        server.shutdown()
        thread.join()


def test_default_clients_are_built_lazily_with_one_attempt_and_timeouts(settings):
    embedder = BedrockEmbedder(settings=settings)
    assert embedder._client._client is None  # construction made no client, no network
    config = embedder.client.meta.config
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3.0, 20.0)
    assert embedder.client.meta.region_name == settings.region
    reranker = BedrockReranker(settings=settings)
    assert reranker.client.meta.service_model.service_name == "bedrock-agent-runtime"


def test_a_short_call_timeout_caps_the_timeouts_of_default_clients(aws_region, runtime):
    chat = BedrockChatModel(HAIKU, settings=Settings(region=aws_region))
    assert chat.client.meta.config.read_timeout == 60.0
    assert chat.client_for(None) is chat.client and chat.client_for(90) is chat.client
    short = chat.client_for(5.9)
    config = short.meta.config
    # rounded down, never up: connect + read fit in the 5.9 s the attempt has
    assert (config.connect_timeout, config.read_timeout) == (1.0, 4.0)
    assert config.retries["total_max_attempts"] == 1
    assert chat.client_for(5.2) is short  # cached per step (whole seconds from 5 s)
    tiny = chat.client_for(0.93).meta.config
    assert tiny.connect_timeout + tiny.read_timeout == pytest.approx(0.9)
    injected = BedrockChatModel(HAIKU, client=runtime[0], settings=Settings(region=aws_region))
    assert injected.client_for(5.2) is runtime[0]  # tests and callers that inject keep their client
