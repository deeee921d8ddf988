"""Domain errors. The HTTP layer maps these to status codes in exactly one place
(:mod:`ragline.api.http`); the ingest handler uses ``transient`` to decide retry vs. record."""

from __future__ import annotations


class RaglineError(Exception):
    """Base class. ``message`` is safe to show to the caller: it never carries another
    tenant's data nor a stack trace."""

    http_status = 500
    code = "internal_error"
    transient = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(RaglineError):
    http_status = 400
    code = "invalid_input"


class Unauthorized(RaglineError):
    http_status = 401
    code = "unauthorized"


class Forbidden(RaglineError):
    http_status = 403
    code = "forbidden"


class NotFound(RaglineError):
    http_status = 404
    code = "not_found"


class StaleWrite(RaglineError):
    """A conditional write lost: the record changed since the caller read it. Not transient;
    the newer write wins and the caller must re-read before deciding anything."""

    http_status = 409
    code = "stale_write"


class PayloadTooLarge(RaglineError):
    http_status = 413
    code = "payload_too_large"


class ObjectTooLarge(PayloadTooLarge):
    """A stored object is bigger than the caller's limit; raised before its body is read (an
    object uploaded straight to the bucket, not through the size-checked presigned URL)."""

    def __init__(self, key: str, size: int, limit: int, *, version_id: str | None = None,
                 metadata: dict[str, str] | None = None):
        super().__init__(f"object {key} is {size} bytes, more than the limit of {limit}")
        self.size = size
        self.limit = limit
        # what the headers said of the object (its ACL groups are user metadata): a refused
        # version keeps its document's groups and its place in the version order
        self.version_id = version_id
        self.metadata = dict(metadata or {})


class BudgetExceeded(RaglineError):
    http_status = 429
    code = "budget_exceeded"


class DependencyUnavailable(RaglineError):
    """A backend (search, model, store) cannot serve right now. Retrying later may work."""

    http_status = 503
    code = "dependency_unavailable"
    transient = True


class OutOfTime(DependencyUnavailable):
    """Not enough of this invocation's time is left to start a piece of work that would fit a
    fresh one (the ingest handler puts the message back on its queue). Nothing was claimed."""

    code = "out_of_time"


class ModelError(DependencyUnavailable):
    """A model call failed; the message names the model and the reason."""

    code = "model_unavailable"


class DocumentRejected(RaglineError):
    """A document that can never be ingested as it is (corrupt, encrypted, unsupported).
    Permanent: ingestion records it with a status and reason and does not retry."""

    http_status = 422
    code = "document_rejected"

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
