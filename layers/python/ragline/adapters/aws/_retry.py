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

from ...errors import DependencyUnavailable, ModelError
from ._boto import NETWORK_ERRORS, error_code, http_status, is_certificate_failure

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
    min_attempt_s: float = 0.25  # an attempt with less time left could not finish: it is not sent


def classify(exc: BaseException) -> tuple[bool, str]:
    """(retryable, reason) for an exception raised by a Bedrock client call."""
    if isinstance(exc, ReadTimeoutError):
        return True, "read timed out"
    if is_certificate_failure(exc):
        return False, f"failed TLS certificate validation ({exc})"
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

    def call(
        self,
        request: Callable[[], T],
        *,
        timeout_s: float | None = None,
        acquire: Callable[[float], float] | None = None,
    ) -> T:
        return self.call_timed(lambda _left: request(), timeout_s=timeout_s, acquire=acquire)

    def call_timed(
        self,
        request: Callable[[float], T],
        *,
        timeout_s: float | None = None,
        acquire: Callable[[float], float] | None = None,
    ) -> T:
        """As :meth:`call`, but ``request`` gets the seconds its attempt may take, so it can bound the
        attempt (a retry late in the budget must not run for the whole call's timeout). ``acquire``,
        when given, is called with those seconds before every attempt (a rate-limit token per request
        sent, retries included) and returns the seconds it waited, which the attempt loses."""
        started = self.clock()
        budget = timeout_s if timeout_s is not None else self.policy.default_budget_s

        def remaining() -> float:
            left = budget - (self.clock() - started)
            if self.deadline is not None:
                left = min(left, self.deadline() - self.policy.reserve_s)
            return left

        attempt = 0
        reason = ""
        while True:
            attempt += 1
            left = remaining()
            if acquire is not None and left >= self.policy.min_attempt_s:
                try:
                    waited = acquire(left)
                except DependencyUnavailable as exc:
                    if attempt == 1:
                        raise
                    raise ModelError(
                        f"model {self.model_id} {reason} after {attempt - 1} attempts, then {exc.message}"
                    ) from exc
                # counted from the returned wait too: the limiter may sleep on another clock than ours
                left = min(remaining(), left - waited)
            if left < self.policy.min_attempt_s:  # (a token taken just now is wasted: rare, and harmless)
                raise ModelError(
                    f"model {self.model_id} not called: time budget spent"
                    if attempt == 1
                    else f"model {self.model_id} gave up after {attempt - 1} attempts: time budget spent"
                )
            try:
                return request(left)
            except (ClientError, BotoCoreError, ValueError) as exc:  # ValueError: an unparsable body
                retryable, reason = classify(exc)
                if not retryable:
                    error = ModelError(f"model {self.model_id} {reason}")
                    error.transient = False  # the same request will fail again: do not requeue it
                    raise error from exc
                if attempt >= self.policy.max_attempts:
                    raise ModelError(f"model {self.model_id} {reason} after {attempt} attempts") from exc
                delay = self.backoff(attempt)
                if remaining() - delay < self.policy.min_attempt_s:
                    raise ModelError(
                        f"model {self.model_id} {reason} after {attempt} attempts (time budget spent)"
                    ) from exc
                self.sleep(delay)
