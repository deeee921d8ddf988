"""Evaluate Lambda: an EventBridge schedule samples the query log and publishes the quality
and latency figures computable without gold answers (see ragline.evaluation.online)."""

from __future__ import annotations

from ragline import factory
from ragline.evaluation.online import evaluate_recent
from ragline.observability import logger, metrics, tracer
from ragline.runtime import invocation_deadline


@logger().inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler(capture_response=False)
@metrics().log_metrics
@invocation_deadline
def lambda_handler(event: dict, context) -> dict:
    limit = int((event or {}).get("detail", {}).get("sample", 500)) if isinstance(event, dict) else 500
    result = evaluate_recent(factory.default(), limit=max(1, min(limit, 5000)))
    logger().info("evaluation", extra={"result": result})
    return result
