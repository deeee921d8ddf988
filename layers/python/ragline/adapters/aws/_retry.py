"""The retry loop for model calls: exponential backoff with full jitter, inside a time budget.

botocore's own retries are switched off for the Bedrock clients (one attempt each) so that this
loop is the only one running: it knows the caller's deadline and names the model in its errors.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from ...errors import ModelError
from ._boto import NETWORK_ERRORS, error_code, http_status

T = TypeVar("T")

# error code -> how we describe it; all of these are worth another attempt
_RETRYABLE_CODES = {
    "ThrottlingException": "throttled",
    "TooManyRequestsException": "throttled",
    "ServiceUnavailableException": "unavailable",
    "ModelTimeoutException": "timed out",
    "ModelNotReadyException": "not ready",
    "InternalServerException": "failed with a server error",
    "BadGatewayException": "failed with a server error",
    "DependencyFailedException": "failed with a server error",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. ``reserve_s`` is kept back from the caller's deadline so that, when the
    model keeps failing, the caller still has time to answer (e.g. fall back, or return a 503)."""

    max_attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    reserve_s: float = 1.0
    default_budget_s: float = 30.0  # used when no deadline is given


def classify(exc: BaseException) -> tuple[bool, str]:
    """(retryable, reason) for an exception raised by a Bedrock client call."""
    if isinstance(exc, ReadTimeoutError):
        return True, "read timed out"
    if isinstance(exc, NETWORK_ERRORS):
        return True, "connection failed"
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = http_status(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        if code in _RETRYABLE_CODES:
            return True, _RETRYABLE_CODES[code]
        if status is not None and status >= 500:
            return True, f"failed with a server error ({code or status})"
        detail = f"{code}: {message}" if message else code or f"HTTP {status}"
        if code == "ValidationException":
            return False, f"rejected the request ({detail})"
        if code == "AccessDeniedException":
            return False, f"denied access ({detail})"
        if code == "ResourceNotFoundException":
            return False, f"was not found ({detail})"
        return False, f"failed ({detail})"
    return False, f"failed ({type(exc).__name__}: {exc})"


class ModelCaller:
    """Runs one model request with retries. ``deadline`` returns the seconds the caller has left
    (e.g. ``lambda: context.get_remaining_time_in_millis() / 1000``); ``timeout_s`` bounds this call."""

    def __init__(
        self,
        model_id: str,
        *,
        policy: RetryPolicy | None = None,
        deadline: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.model_id = model_id
        self.policy = policy or RetryPolicy()
        self.deadline = deadline
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(self.policy.max_delay_s, self.policy.base_delay_s * (2 ** (attempt - 1)))
        return self.rng.uniform(0.0, ceiling)

    def call(self, request: Callable[[], T], *, timeout_s: float | None = None) -> T:
        started = self.clock()
        budget = timeout_s if timeout_s is not None else self.policy.default_budget_s

        def remaining() -> float:
            left = budget - (self.clock() - started)
            if self.deadline is not None:
                left = min(left, self.deadline() - self.policy.reserve_s)
            return left

        attempt = 0
        while True:
            attempt += 1
            if remaining() <= 0:
                raise ModelError(
                    f"model {self.model_id} not called: time budget spent"
                    if attempt == 1
                    else f"model {self.model_id} gave up after {attempt - 1} attempts: time budget spent"
                )
            try:
                return request()
            except (ClientError, BotoCoreError, ValueError) as exc:  # ValueError: an unparsable body
                retryable, reason = classify(exc)
                if not retryable:
                    error = ModelError(f"model {self.model_id} {reason}")
                    error.transient = False  # the same request will fail again: do not requeue it
                    raise error from exc
                if attempt >= self.policy.max_attempts:
                    raise ModelError(f"model {self.model_id} {reason} after {attempt} attempts") from exc
                delay = self.backoff(attempt)
                if remaining() - delay <= 0:
                    raise ModelError(
                        f"model {self.model_id} {reason} after {attempt} attempts (time budget spent)"
                    ) from exc
                self.sleep(delay)
