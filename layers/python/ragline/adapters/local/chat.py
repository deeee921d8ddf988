"""A deterministic local chat model: the priced test model of the local backend.

It is not a language model. It reads the ``<passage id=...>`` blocks of the structured prompt
and answers with the first sentence of each (up to ``max_passages``), each cited with its id,
and reports token usage like a provider does (tiktoken counts of the system + prompt and of its
answer). With a price in the price table it makes costs non-zero, which is what the tests of the
ledger, budgets, routing and failover need without any network. ``failures`` queues exceptions to
raise on the next calls, for failover tests.

The local default stays the extractive answerer: no generative model is configured locally.
"""

from __future__ import annotations

import html
import math
import re
import threading
import time
from collections.abc import Callable, Iterable

from ...errors import ModelError
from ...models import Generation
from ...tokens import count_tokens

_PASSAGE = re.compile(r'<passage id="(\d+)"[^>]*>\n(.*?)\n</passage>', re.DOTALL)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class LocalTemplateChatModel:
    def __init__(self, model_id: str = "ragline/local-small", *, max_passages: int = 2, report_usage: bool = True,
                 failures: Iterable[BaseException] = (), latency_s: float = 0.0):
        self.model_id = model_id
        self.max_passages = max_passages
        self.report_usage = report_usage
        self.latency_s = latency_s
        self._failures = list(failures)
        self._lock = threading.Lock()
        self.calls = 0

    def fail_next(self, *errors: BaseException) -> None:
        with self._lock:
            self._failures.extend(errors)

    def generate(self, system: str, prompt: str, *, max_tokens: int, timeout_s: float | None,
                 acquire: Callable[[float], float] | None = None) -> Generation:
        if acquire is not None:  # one attempt, one token; the wait is part of the call's time
            waited = acquire(timeout_s if timeout_s is not None else math.inf)
            timeout_s = timeout_s - waited if timeout_s is not None else None
        with self._lock:
            self.calls += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            raise failure
        if timeout_s is not None and timeout_s <= 0:
            raise ModelError(f"model {self.model_id} not called: time budget spent")
        if self.latency_s:
            time.sleep(self.latency_s)
        parts = []
        for pid, body in _PASSAGE.findall(prompt)[: self.max_passages]:
            text = html.unescape(" ".join(body.split()))
            first = _SENTENCE.split(text, 1)[0]
            parts.append(f"{first} [{pid}]")
        text = " ".join(parts) if parts else "I don't know: the passages do not contain the answer."
        out_tokens = count_tokens(text)
        if out_tokens > max_tokens:
            from ...tokens import encoding

            text = encoding().decode(encoding().encode(text, disallowed_special=())[:max_tokens])
            out_tokens = max_tokens
        used = sorted({int(p) for p in re.findall(r"\[(\d+)\]", text)})
        return Generation(
            text=text, model_id=self.model_id,
            input_tokens=count_tokens(system) + count_tokens(prompt) if self.report_usage else 0,
            output_tokens=out_tokens if self.report_usage else 0,
            generative=True, used_citations=used, usage_reported=self.report_usage,
        )
