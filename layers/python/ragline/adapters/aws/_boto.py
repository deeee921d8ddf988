"""Shared boto3 plumbing for the AWS adapters: building clients lazily and classifying errors.

Kept private to the adapters package so the core never imports boto3.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ...errors import DependencyUnavailable
from ...settings import Settings, get_settings

T = TypeVar("T")

# Error codes that mean "the service is busy or briefly broken; the same request may succeed later".
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalServerException",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    # no connection: EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError
    BotoConnectionError,
    # the connection failed mid-request: ReadTimeoutError, ConnectionClosedError,
    # ResponseStreamingError, and a bare HTTPClientError for a connection reset by the peer
    HTTPClientError,
    IncompleteReadError,
)


def is_certificate_failure(exc: BaseException) -> bool:
    """The server's TLS certificate did not validate (a wrong CA bundle, an intercepting proxy):
    configuration that a retry cannot fix, unlike a TLS handshake cut short."""
    return isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed: throttling, 5xx, timeouts, dropped connections."""
    if is_certificate_failure(exc):
        return False
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if isinstance(exc, ClientError):
        status = http_status(exc)
        return error_code(exc) in TRANSIENT_CODES or (status is not None and status >= 500)
    return False


def client_config(
    *,
    total_attempts: int = 3,
    connect_timeout_s: float = 3.0,
    read_timeout_s: float = 10.0,
    pool: int = 20,
    **extra: Any,
) -> Config:
    """A botocore Config with explicit timeouts and attempt count.

    ``total_attempts`` counts the first request: 1 means botocore never retries. (botocore's
    ``max_attempts`` key counts *retries*, so ``{"max_attempts": 1}`` would send two requests.)
    """
    return Config(
        retries={"total_max_attempts": total_attempts, "mode": "standard"},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=pool,
        **extra,
    )


class LazyClient:
    """Holds an injected client, or builds the default one on first use (thread-safe).

    Construction never touches the network; neither does building a boto3 client.
    """

    def __init__(self, client: Any | None, factory: Callable[[], Any]):
        self._client = client
        self._factory = factory
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client


def boto3_client_factory(service: str, settings: Settings | None, config: Config,
                         region: str | None = None) -> Callable[[], Any]:
    """A factory for a boto3 client in ``region``, else the configured one (resolved when first called)."""

    def build() -> Any:
        region_name = region or (settings or get_settings()).region
        session = boto3.session.Session()
        return session.client(service, region_name=region_name, config=config)

    return build


def raise_translated(what: str, exc: BaseException) -> NoReturn:
    """Re-raise ``exc`` from an ``except`` block: a transient AWS failure becomes
    DependencyUnavailable (retry later), anything else propagates unchanged."""
    if isinstance(exc, (ClientError, BotoCoreError)) and is_transient(exc):
        reason = error_code(exc) or type(exc).__name__
        raise DependencyUnavailable(f"{what} is unavailable ({reason})") from exc
    raise exc
