"""The current invocation's time budget. Handlers are wrapped in :func:`invocation_deadline`,
which sets it from the Lambda context for the invocation and clears it afterwards; adapters built
once per container read it through :func:`remaining_s`, so retries never outlive the invocation."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_deadline: ContextVar[float | None] = ContextVar("ragline_deadline", default=None)


def _deadline_of(context) -> float | None:
    try:
        ms = int(context.get_remaining_time_in_millis())
    except Exception:  # noqa: BLE001 - no context (tests, CLI): no deadline
        return None
    return time.monotonic() + ms / 1000.0


def invocation_deadline(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Decorate a Lambda handler: the deadline (monotonic clock) holds while it runs and is reset
    when it returns, so a spent budget never leaks into later work on the same thread (the local
    server's handlers, tests, a CLI in the same process)."""

    @functools.wraps(handler)
    def wrapper(event, context):
        token = _deadline.set(_deadline_of(context))
        try:
            return handler(event, context)
        finally:
            _deadline.reset(token)

    return wrapper


def remaining_s(default: float = 30.0) -> float:
    d = _deadline.get()
    return default if d is None else max(0.0, d - time.monotonic())
