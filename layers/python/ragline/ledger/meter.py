"""Per-request collection of model usage.

Adapters that are built once per container (the Bedrock embedder and reranker) report each
call's usage through an ``on_usage`` callback; :func:`record` appends it to the collector of the
request running in this context (a ContextVar), so concurrent requests never see each other's
usage. Outside a request nothing is collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..models import Usage

_current: ContextVar[list[Usage] | None] = ContextVar("ragline_usage_collector", default=None)


@contextmanager
def collecting() -> Iterator[list[Usage]]:
    calls: list[Usage] = []
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)


def record(usage: Usage) -> None:
    calls = _current.get()
    if calls is not None:
        calls.append(usage.model_copy())
