"""Amazon Bedrock adapters: Titan Text Embeddings v2, chat through the Converse API, and
Bedrock Rerank.

Request and response shapes (pinned from the AWS documentation):

* Titan Text Embeddings v2, InvokeModel body ``{"inputText", "dimensions", "normalize"}``;
  response ``{"embedding": [...], "inputTextTokenCount": n}``; dimensions 1024, 512 or 256.
  https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html
* Converse: ``system=[{"text"}]``, ``messages=[{"role": "user", "content": [{"text"}]}]``,
  ``inferenceConfig={"maxTokens"}``; response ``output.message.content[].text`` and
  ``usage.inputTokens / outputTokens``.
  https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
* Rerank (bedrock-agent-runtime): ``queries=[{"type": "TEXT", "textQuery": {"text"}}]``,
  ``sources=[{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text"}}}]``
  (1..1000 sources, text up to 32,000 characters), ``rerankingConfiguration`` of type
  ``BEDROCK_RERANKING_MODEL``; response ``results[].index / relevanceScore``.
  https://docs.aws.amazon.com/AWSJavaScriptSDK/v3/latest/client/bedrock-agent-runtime/command/RerankCommand

Every call goes through :class:`ModelCaller` (backoff with full jitter within the caller's
deadline). The clients are built with botocore retries off so that loop is the only one.
"""

from __future__ import annotations

import contextvars
import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import numpy as np

from ...errors import ModelError
from ...models import Generation, SearchHit, Usage
from ...settings import Settings, get_settings
from ...tokens import count_tokens
from ._boto import LazyClient, boto3_client_factory, client_config
from ._retry import ModelCaller, RetryPolicy

TITAN_V2_DIMENSIONS = (256, 512, 1024)
RERANK_MAX_SOURCES = 1000
RERANK_MAX_TEXT_CHARS = 32000
CONNECT_TIMEOUT_S = 3.0


def _attempt_seconds(seconds: float) -> float:
    """``seconds`` rounded *down* (an attempt must not outlive its budget) to a step coarse enough
    that few clients are cached: 0.05 s under 1 s, 0.25 s under 5 s, whole seconds above."""
    step = 0.05 if seconds < 1 else 0.25 if seconds < 5 else 1.0
    return max(round(math.floor(seconds / step + 1e-9) * step, 2), 0.05)


def _token_count(usage: Any, key: str) -> int | None:
    """A token count from a Converse ``usage``, or None when it is absent or not a count."""
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def bedrock_config(
    *, connect_timeout_s: float = CONNECT_TIMEOUT_S, read_timeout_s: float = 60.0, pool: int = 16
) -> Any:
    """One attempt per botocore call (our loop retries), explicit timeouts."""
    return client_config(
        total_attempts=1, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s, pool=pool
    )


class _BedrockBase:
    service = "bedrock-runtime"

    def __init__(
        self,
        model_id: str,
        *,
        client: Any | None,
        settings: Settings | None,
        deadline: Callable[[], float] | None,
        retry: RetryPolicy | None,
        sleep: Callable[[float], None],
        rng: random.Random | None,
        read_timeout_s: float,
        pool: int = 16,
        region: str | None = None,
    ):
        if not model_id:
            raise ValueError(f"{type(self).__name__} needs a model id")
        self.model_id = model_id
        self.region = region  # None: the configured region
        self._settings = settings
        self._injected = client is not None
        self._read_timeout_s = read_timeout_s
        self._pool_size = pool
        self._client = LazyClient(
            client,
            boto3_client_factory(
                self.service, settings, bedrock_config(read_timeout_s=read_timeout_s, pool=pool), region
            ),
        )
        self._short_clients: dict[float, Any] = {}
        self._short_lock = threading.Lock()
        self._caller = ModelCaller(model_id, policy=retry, deadline=deadline, sleep=sleep, rng=rng)

    @property
    def client(self) -> Any:
        return self._client.get()

    def client_for(self, timeout_s: float | None) -> Any:
        """The client for one attempt that must finish within ``timeout_s``. boto3 cannot shorten one
        request's timeouts, so a default-built client is swapped for one whose connect + read timeouts
        add up to ``timeout_s`` rounded down (cached per step): a stalled model then fails in time for
        a retry or the fallback, instead of hanging past the deadline. Injected clients are used as is."""
        if self._injected or timeout_s is None:
            return self.client
        seconds = _attempt_seconds(timeout_s)
        if seconds >= CONNECT_TIMEOUT_S + self._read_timeout_s:
            return self.client
        with self._short_lock:
            if seconds not in self._short_clients:
                connect = min(CONNECT_TIMEOUT_S, round(seconds / 5, 3))  # connecting takes ms; a pooled connection none
                config = bedrock_config(
                    connect_timeout_s=connect, read_timeout_s=round(seconds - connect, 3), pool=self._pool_size
                )
                self._short_clients[seconds] = boto3_client_factory(self.service, self._settings, config, self.region)()
            return self._short_clients[seconds]


class BedrockEmbedder(_BedrockBase):
    """Titan Text Embeddings v2. The model embeds one text per request, so a batch is issued as
    parallel requests on a small thread pool (kept for the life of the container).

    ``deadline`` is read on every call; in Lambda pass a callable that reads the *current*
    invocation's remaining time, since this object outlives a single invocation.
    """

    def __init__(
        self,
        model_id: str | None = None,
        *,
        dimensions: int | None = None,
        client: Any | None = None,
        settings: Settings | None = None,
        deadline: Callable[[], float] | None = None,
        on_usage: Callable[[Usage], None] | None = None,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        read_timeout_s: float = 20.0,
    ):
        settings_ = settings or get_settings()
        dims = dimensions if dimensions is not None else settings_.embedding_dimensions
        if dims not in TITAN_V2_DIMENSIONS:
            raise ValueError(
                f"Titan Text Embeddings v2 supports dimensions {TITAN_V2_DIMENSIONS}, not {dims} "
                "(set RAGLINE_EMBEDDING_DIMENSIONS)"
            )
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        super().__init__(
            model_id or settings_.bedrock_embedding_model,
            client=client,
            settings=settings_,
            deadline=deadline,
            retry=retry,
            sleep=sleep,
            rng=rng,
            read_timeout_s=read_timeout_s,
            pool=max(concurrency, 10),
        )
        self.dimensions = dims
        self.on_usage = on_usage
        self.last_usage: Usage | None = None
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="bedrock-embed")
        return self._pool

    def _embed_one(self, text: str) -> tuple[np.ndarray, int | None]:
        body = json.dumps({"inputText": text, "dimensions": self.dimensions, "normalize": True})

        def request(left: float) -> dict[str, Any]:
            # each attempt on a client whose timeouts fit the time left, as the chat model's do
            response = self.client_for(left).invoke_model(
                modelId=self.model_id, body=body, contentType="application/json", accept="application/json"
            )
            return json.loads(response["body"].read())

        payload = self._caller.call_timed(request)
        vector = np.asarray(payload.get("embedding") or (), dtype=np.float32)
        if vector.shape != (self.dimensions,):
            raise ModelError(
                f"model {self.model_id} returned an embedding of shape {vector.shape}, "
                f"expected ({self.dimensions},)"
            )
        tokens = payload.get("inputTextTokenCount")
        return vector, int(tokens) if tokens is not None else None

    def _embed(self, texts: Sequence[str], purpose: str) -> np.ndarray:
        return self._embed_counted(texts, purpose)[0]

    def _embed_counted(self, texts: Sequence[str], purpose: str) -> tuple[np.ndarray, list[int | None]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"cannot embed an empty text (item {i})")
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), []
        if len(texts) == 1 or self.concurrency == 1:
            results = [self._embed_one(t) for t in texts]
        else:
            # each task runs in a copy of the caller's context, so a deadline (or logger, tracer)
            # that reads a ContextVar set by the handler sees the same values in the pool threads
            futures: list[Future[tuple[np.ndarray, int | None]]] = [
                self._executor().submit(contextvars.copy_context().run, self._embed_one, t) for t in texts
            ]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
            if failed is not None:
                wait(pending)  # let in-flight calls finish before we return control
                raise failed.exception()  # type: ignore[misc]
            results = [f.result() for f in futures]
        matrix = np.vstack([r[0] for r in results]).astype(np.float32, copy=False)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ModelError(f"model {self.model_id} returned a zero embedding")
        matrix /= norms  # Titan normalizes already; this removes float drift
        counts = [r[1] for r in results]
        # a response without inputTextTokenCount is billed all the same: tiktoken estimates it
        usage = Usage(
            model_id=self.model_id,
            purpose=purpose,
            input_tokens=sum(c if c is not None else count_tokens(t) for c, t in zip(counts, texts, strict=True)),
            estimated=any(c is None for c in counts),
        )
        self.last_usage = usage
        if self.on_usage is not None:
            self.on_usage(usage)
        return matrix, counts

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32, unit rows, in the order of ``texts``."""
        return self._embed(list(texts), "embed_documents")

    def embed_documents_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int | None]]:
        """The vectors and each text's ``inputTextTokenCount`` (``None`` where a response had
        none), so ingestion can charge every document to its own tenant."""
        return self._embed_counted(list(texts), "embed_documents")

    def embed_query(self, text: str) -> np.ndarray:
        """(d,) float32, unit length."""
        return self._embed([text], "embed_query")[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class BedrockChatModel(_BedrockBase):
    """A chat model through the Converse API (works the same for every Bedrock chat model)."""

    def __init__(
        self,
        model_id: str,
        *,
        client: Any | None = None,
        settings: Settings | None = None,
        deadline: Callable[[], float] | None = None,
        temperature: float | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        read_timeout_s: float = 60.0,
        region: str | None = None,
    ):
        super().__init__(
            model_id,
            client=client,
            settings=settings,
            deadline=deadline,
            retry=retry,
            sleep=sleep,
            rng=rng,
            read_timeout_s=read_timeout_s,
            region=region,
        )
        self.temperature = temperature

    @property
    def endpoint(self) -> str:
        """Model and region: the same model in another region is another endpoint to fail over to."""
        return f"{self.region or (self._settings or get_settings()).region}/{self.model_id}"

    def generate(
        self,
        system: str,
        prompt: str,
        *,
        max_tokens: int,
        timeout_s: float | None,
        acquire: Callable[[float], float] | None = None,
    ) -> Generation:
        """One user turn. ``timeout_s`` bounds the whole call including retries; the caller's
        ``deadline`` (minus a reserve) bounds it too, whichever is sooner. ``acquire`` (a rate-limit
        token) is called before every attempt; its wait counts against the time left."""
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        kwargs: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": max_tokens},
        }
        if system:
            kwargs["system"] = [{"text": system}]
        if self.temperature is not None:
            kwargs["inferenceConfig"]["temperature"] = self.temperature

        # each attempt on a client whose timeouts fit the time left, not the whole call's timeout
        response = self._caller.call_timed(
            lambda left: self.client_for(left).converse(**kwargs), timeout_s=timeout_s, acquire=acquire
        )
        content = response.get("output", {}).get("message", {}).get("content", [])
        # Some models put a reasoning block before the answer, so take every text block, not [0].
        text = "".join(block["text"] for block in content if "text" in block)
        usage = response.get("usage")
        tokens_in, tokens_out = _token_count(usage, "inputTokens"), _token_count(usage, "outputTokens")
        if not text:
            # billed all the same (a reasoning block cut off by max_tokens, a guardrail stop): the
            # counts go with the error, so the ledger records what the failed call cost
            err = ModelError(f"model {self.model_id} returned no text (stopReason={response.get('stopReason')})")
            err.billed = (tokens_in, tokens_out)
            raise err
        # a missing or malformed count is "not reported" (the ledger estimates both), never a 500
        reported = tokens_in is not None and tokens_out is not None
        return Generation(
            text=text,
            model_id=self.model_id,
            input_tokens=tokens_in if reported else 0,
            output_tokens=tokens_out if reported else 0,
            generative=True,
            usage_reported=reported,
        )


class BedrockReranker(_BedrockBase):
    """Bedrock Rerank (e.g. ``amazon.rerank-v1:0``) over the retrieved passages' text."""

    service = "bedrock-agent-runtime"

    def __init__(
        self,
        model_id: str | None = None,
        *,
        client: Any | None = None,
        settings: Settings | None = None,
        deadline: Callable[[], float] | None = None,
        on_usage: Callable[[Usage], None] | None = None,
        region: str | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        read_timeout_s: float = 20.0,
    ):
        settings_ = settings or get_settings()
        super().__init__(
            model_id or settings_.bedrock_rerank_model or "",
            client=client,
            settings=settings_,
            deadline=deadline,
            retry=retry,
            sleep=sleep,
            rng=rng,
            read_timeout_s=read_timeout_s,
        )
        self._region = region or settings_.region
        self.on_usage = on_usage
        self.last_usage: Usage | None = None

    @property
    def model_arn(self) -> str:
        """Rerank takes a model ARN; a bare model id becomes the foundation-model ARN."""
        if self.model_id.startswith("arn:"):
            return self.model_id
        region = self._region or self.client.meta.region_name
        return f"arn:aws:bedrock:{region}::foundation-model/{self.model_id}"

    def rerank(self, query: str, hits: list[SearchHit], top_k: int) -> list[SearchHit]:
        """The ``top_k`` most relevant hits, best first, ``score`` replaced by the relevance score.
        At most the first 1000 hits are considered (the API's limit)."""
        if not hits or top_k <= 0:
            return []
        candidates = hits[:RERANK_MAX_SOURCES]
        k = min(top_k, len(candidates))
        kwargs = {
            "queries": [{"type": "TEXT", "textQuery": {"text": query}}],
            "sources": [
                {
                    "type": "INLINE",
                    "inlineDocumentSource": {
                        "type": "TEXT",
                        "textDocument": {"text": hit.text[:RERANK_MAX_TEXT_CHARS] or " "},
                    },
                }
                for hit in candidates
            ],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "modelConfiguration": {"modelArn": self.model_arn},
                    "numberOfResults": k,
                },
            },
        }
        # each attempt bounded by the time left (a stalled call must not outlive the request)
        response = self._caller.call_timed(lambda left: self.client_for(left).rerank(**kwargs))
        out: list[SearchHit] = []
        for result in response.get("results", []):
            index = int(result["index"])
            if not 0 <= index < len(candidates):
                raise ModelError(f"model {self.model_id} returned an unknown source index {index}")
            out.append(replace(candidates[index], score=float(result["relevanceScore"])))
        out.sort(key=lambda h: h.score, reverse=True)
        usage = Usage(model_id=self.model_id, purpose="rerank")
        self.last_usage = usage
        if self.on_usage is not None:
            self.on_usage(usage)
        return out[:k]
