"""The current invocation's time budget. Handlers set it from the Lambda context; adapters
built once per container read it through :func:`remaining_s`, so retries never outlive the
invocation."""

from __future__ import annotations

import time
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("ragline_deadline", default=None)


def set_deadline_from(context) -> None:
    """Record when the invocation must end (monotonic clock), from a Lambda context."""
    try:
        ms = int(context.get_remaining_time_in_millis())
    except Exception:  # noqa: BLE001 - no context (tests, CLI): no deadline
        _deadline.set(None)
        return
    _deadline.set(time.monotonic() + ms / 1000.0)


def remaining_s(default: float = 30.0) -> float:
    d = _deadline.get()
    return default if d is None else max(0.0, d - time.monotonic())
