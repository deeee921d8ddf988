"""The current invocation's time budget. Handlers are wrapped in :func:`invocation_deadline`,
which sets it from the Lambda context for the invocation and clears it afterwards; adapters built
once per container read it through :func:`remaining_s`, so retries never outlive the invocation."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

_deadline: ContextVar[float | None] = ContextVar("ragline_deadline", default=None)
_budget: ContextVar[float | None] = ContextVar("ragline_budget", default=None)  # seconds at the start


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
        deadline = _deadline_of(context)
        token = _deadline.set(deadline)
        budget = _budget.set(None if deadline is None else max(0.0, deadline - time.monotonic()))
        try:
            return handler(event, context)
        finally:
            _budget.reset(budget)
            _deadline.reset(token)

    return wrapper


@contextlib.contextmanager
def time_budget(left_s: float, budget_s: float | None = None) -> Iterator[None]:
    """Run a block as if inside an invocation with ``left_s`` seconds left of ``budget_s`` (the
    whole invocation's, default the same): for drivers outside Lambda and for tests."""
    token = _deadline.set(time.monotonic() + left_s)
    budget = _budget.set(left_s if budget_s is None else budget_s)
    try:
        yield
    finally:
        _budget.reset(budget)
        _deadline.reset(token)


def time_left() -> tuple[float, float] | None:
    """(seconds left, seconds the invocation had at its start), or None outside an invocation."""
    d, b = _deadline.get(), _budget.get()
    if d is None:
        return None
    left = max(0.0, d - time.monotonic())
    return left, (left if b is None else b)


def remaining_s(default: float = 30.0) -> float:
    d = _deadline.get()
    return default if d is None else max(0.0, d - time.monotonic())
