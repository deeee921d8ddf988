"""Logger, Tracer and Metrics, created once for the process (one Lambda container).

Outside Lambda the tracer is disabled unless asked for (POWERTOOLS_TRACE_DISABLED defaults to
true here) and metrics are not flushed to stdout unless a handler decorates with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

SERVICE = os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "ragline")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Ragline")
if "AWS_LAMBDA_FUNCTION_NAME" not in os.environ:
    # outside Lambda: no X-Ray daemon, and EMF metrics would only clutter stdout
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


@lru_cache(maxsize=1)
def logger():
    from aws_lambda_powertools import Logger

    return Logger(service=SERVICE, level=os.environ.get("RAGLINE_LOG_LEVEL", os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING")))


def tracing_disabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in {"1", "true"}


class _Untraced:
    """Stands in for Powertools' Tracer when tracing is off. A disabled ``Tracer`` still imports
    the X-Ray SDK (and through it botocore's patching machinery), which measured 0.2-0.5 s of
    every cold start (bench/cold_start.py) for nothing. Same decorator signatures, no-ops."""

    disabled = True

    def capture_lambda_handler(self, lambda_handler=None, capture_response=None, capture_error=None):
        return (lambda fn: fn) if lambda_handler is None else lambda_handler

    def capture_method(self, method=None, capture_response=None, capture_error=None):
        return (lambda fn: fn) if method is None else method

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        return None


@lru_cache(maxsize=1)
def tracer():
    if tracing_disabled():
        return _Untraced()
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


@lru_cache(maxsize=1)
def metrics():
    from aws_lambda_powertools import Metrics

    return Metrics(service=SERVICE)


@contextmanager
def segment(name: str) -> Iterator[Any]:
    """An X-Ray subsegment around a step (embed, search, rerank, cache, generate); a no-op
    when tracing is disabled."""
    if tracing_disabled():
        yield None
        return
    with tracer().provider.in_subsegment(f"## {name}") as sub:
        yield sub


def metric(name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None:
    """Add one EMF metric. Without ``dimensions`` it joins the handler's batch (dimension:
    service only). With them (kept to one or two low-cardinality keys such as ``tenant`` or
    ``reason`` — every distinct value is a billed CloudWatch metric) it is flushed on its own."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() in {"1", "true"}:
        # Powertools still flushes its buffer to stdout every 100 metrics when disabled; outside
        # Lambda that would litter the CLI's and the local server's output
        return
    try:
        # by value: "Count", "Milliseconds", "Seconds", "None" (MetricUnit.NoUnit), ...
        unit_ = MetricUnit(unit)
        if not dimensions:
            metrics().add_metric(name=name, unit=unit_, value=value)
            return
        items = list(dimensions.items())
        with single_metric(name=name, unit=unit_, value=value,
                           namespace=os.environ["POWERTOOLS_METRICS_NAMESPACE"]) as m:
            m.add_dimension(name="service", value=SERVICE)
            for k, v in items[:2]:
                m.add_dimension(name=k, value=str(v)[:250] or "-")
    except Exception:  # noqa: BLE001 - metrics never break a request
        logger().debug("metric dropped", extra={"metric": name})


def reason_class(reason: str | None, status: str) -> str:
    """A small, fixed set of failure classes for the ingestion failure metric's dimension
    (the free-text reason goes to the log, never into a dimension)."""
    r = (reason or "").lower()
    for cls, words in (
        ("encrypted", ("encrypt", "password")),
        ("corrupt", ("corrupt", "could not be parsed", "invalid", "damaged", "malformed")),
        ("too_large", ("limit", "too large", "more than")),
        ("unreadable", ("could not be read",)),
    ):
        if any(w in r for w in words):
            return cls
    return status if status in ("unsupported", "no_text") else "other"
