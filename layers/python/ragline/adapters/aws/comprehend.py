"""Amazon Comprehend DetectPiiEntities as a :class:`ragline.ingest.pii.PiiDetector`.

DetectPiiEntities takes at most 100 KB of UTF-8 text per request and has no batch form (the
asynchronous job API needs S3 in and out, too slow for one document), so a long text is sent as
consecutive segments cut at whitespace (a paragraph break if one is near, else a line break, else
a space) each under the byte limit; the offsets Comprehend returns are per segment and are
shifted back onto the whole text. Throttling and server errors become DependencyUnavailable
(the ingest queue retries the document); a request Comprehend calls invalid is a property of the
document and becomes a ``failed`` status with the reason.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...errors import DocumentRejected
from ...ingest.pii import CREDIT_CARD, EMAIL, IBAN, IP_ADDRESS, PHONE, US_SSN, Finding, resolve_overlaps
from ...settings import Settings, get_settings
from ._boto import LazyClient, boto3_client_factory, client_config, error_code, is_transient, raise_translated

MAX_TEXT_BYTES = 100_000  # the service limit, in UTF-8 bytes
_SAFE_BYTES = 99_000  # what we send per request: a margin under the limit

# Comprehend's names -> ours, where a canonical name exists; others keep Comprehend's name
_TYPES = {
    "EMAIL": EMAIL,
    "PHONE": PHONE,
    "CREDIT_DEBIT_NUMBER": CREDIT_CARD,
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": IBAN,
    "SSN": US_SSN,
    "IP_ADDRESS": IP_ADDRESS,
}
# Not personal on their own, and so frequent that redacting them would wreck documents.
DEFAULT_IGNORED = frozenset({"DATE_TIME", "URL", "AGE"})
_INVALID_TEXT = {"InvalidRequestException", "TextSizeLimitExceededException", "UnsupportedLanguageException"}


def segments(text: str, max_bytes: int = _SAFE_BYTES) -> list[tuple[int, str]]:
    """``(char_offset, segment)`` pairs covering ``text`` in order, each at most ``max_bytes``
    UTF-8 bytes, cut at whitespace when there is some in the segment's last quarter."""
    out: list[tuple[int, str]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + max_bytes)  # a char is >= 1 byte, so never more chars than bytes
        if len(text[start:end].encode("utf-8")) > max_bytes:
            lo, hi = start + 1, end  # largest end whose slice fits: binary search
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(text[start:mid].encode("utf-8")) <= max_bytes:
                    lo = mid
                else:
                    hi = mid - 1
            end = lo
        if end < n:
            floor = start + (end - start) * 3 // 4
            for sep in ("\n\n", "\n", " "):
                cut = text.rfind(sep, floor, end)
                if cut > start:
                    end = cut + len(sep)
                    break
        out.append((start, text[start:end]))
        start = end
    return out


class ComprehendPiiDetector:
    name = "comprehend"

    def __init__(
        self,
        *,
        client: Any | None = None,
        settings: Settings | None = None,
        language: str | None = None,
        min_score: float | None = None,
        ignored_types: frozenset[str] = DEFAULT_IGNORED,
        max_bytes: int = _SAFE_BYTES,
    ):
        settings_ = settings or get_settings()
        if not 1 <= max_bytes <= MAX_TEXT_BYTES:
            raise ValueError(f"max_bytes must be between 1 and {MAX_TEXT_BYTES}")
        self.language = language or settings_.comprehend_language
        self.min_score = settings_.pii_min_score if min_score is None else min_score
        self.ignored_types = ignored_types
        self.max_bytes = max_bytes
        self._client = LazyClient(client, boto3_client_factory("comprehend", settings_, client_config(read_timeout_s=20.0)))
        self.requests = 0

    @property
    def client(self) -> Any:
        return self._client.get()

    def detect(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for offset, seg in segments(text, self.max_bytes):
            if not seg.strip():
                continue
            try:
                self.requests += 1
                resp = self.client.detect_pii_entities(Text=seg, LanguageCode=self.language)
            except (ClientError, BotoCoreError) as exc:
                if error_code(exc) in _INVALID_TEXT and not is_transient(exc):
                    raise DocumentRejected(
                        "failed", f"PII detection (Amazon Comprehend) rejected the text: {error_code(exc)}"
                    ) from None
                raise_translated("PII detection (Amazon Comprehend)", exc)
            for e in resp.get("Entities", []):
                kind = str(e.get("Type", ""))
                score = float(e.get("Score", 0.0))
                if kind in self.ignored_types or score < self.min_score:
                    continue
                begin, end = int(e["BeginOffset"]), int(e["EndOffset"])
                found.append(Finding(_TYPES.get(kind, kind), offset + begin, offset + end, score))
        return resolve_overlaps(found)
