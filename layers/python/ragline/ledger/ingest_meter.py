"""Metering of ingestion-time embedding calls, per tenant.

The ingestion pipeline embeds the chunks of several documents (possibly of several tenants, in
the ingest Lambda's SQS batch) in one model call, so the call's usage cannot be charged as a
whole: each text's tokens are counted and every document is charged its own chunks' tokens, to
its own tenant. Token counts come from, in order of preference:

- the embedder's own per-text counts, through an optional method
  ``embed_documents_counted(texts) -> (vectors, counts)``: Titan v2 returns
  ``inputTextTokenCount`` per request (a ``None`` where a response lacked it); the local MiniLM
  counts with its own tokenizer (exactly what the model consumed, after its truncation);
- tiktoken, for an embedder without that method (or a missing provider count), and the usage
  record then says ``estimated=True``.

Each batch is written as one ledger record per tenant (one usage row per document, priced from
the versioned price table), so the ledger's usual atomicity holds: a SQLite transaction locally,
one TransactWriteItems with ``ADD`` on the daily aggregates in DynamoDB. Unchanged documents never
reach the embedder and so are never charged. Hand-written (a few lines over the ledger port)
because no library knows our ledger or price table.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models import Usage
from ..ports import Embedder, Ledger
from ..tokens import count_tokens
from .pricing import PriceTable

INGEST_PURPOSE = "ingest_embedding"


@dataclass(frozen=True, slots=True)
class TextCounts:
    tokens: list[int]
    estimated: list[bool]


def embed_counted(embedder: Embedder, texts: Sequence[str]) -> tuple[Any, TextCounts]:
    """Embed ``texts`` and count each one's input tokens (provider/tokenizer count when the
    embedder offers one, tiktoken otherwise)."""
    counted = getattr(embedder, "embed_documents_counted", None)
    if counted is not None:
        vectors, raw = counted(texts)
    else:
        vectors, raw = embedder.embed_documents(texts), [None] * len(texts)
    tokens: list[int] = []
    estimated: list[bool] = []
    for text, n in zip(texts, raw, strict=True):
        if n is None:
            tokens.append(count_tokens(text))
            estimated.append(True)
        else:
            tokens.append(int(n))
            estimated.append(False)
    return vectors, TextCounts(tokens, estimated)


class IngestMeter:
    """Charges ingestion embedding calls to the tenants whose documents they embedded."""

    def __init__(self, ledger: Ledger, prices: PriceTable, *, purpose: str = INGEST_PURPOSE):
        self.ledger = ledger
        self.prices = prices
        self.purpose = purpose

    def for_purpose(self, purpose: str) -> IngestMeter:
        return IngestMeter(self.ledger, self.prices, purpose=purpose)

    def embed(self, embedder: Embedder, texts: Sequence[str]) -> tuple[Any, TextCounts]:
        return embed_counted(embedder, texts)

    def charge(self, model_id: str, documents: Sequence[tuple[str, int]], counts: TextCounts) -> dict[str, list[Usage]]:
        """``documents``: (tenant, number of texts) per document, in the order of the texts the
        call embedded. Writes one ledger record per tenant; returns the priced usages by tenant."""
        by_tenant: dict[str, list[Usage]] = {}
        offset = 0
        for tenant, n in documents:
            if n <= 0:
                continue
            usage = Usage(
                model_id=model_id, purpose=self.purpose,
                input_tokens=sum(counts.tokens[offset:offset + n]),
                estimated=any(counts.estimated[offset:offset + n]),
            )
            offset += n
            by_tenant.setdefault(tenant, []).append(self.prices.priced(usage))
        if offset != len(counts.tokens):
            raise ValueError(f"ingest metering: {offset} texts attributed, {len(counts.tokens)} embedded")
        for tenant, usages in by_tenant.items():
            # a fresh id per model call: two real calls (a retried batch, content that changed
            # back) are two charges, while the ledger's own retry of this write stays idempotent
            self.ledger.record(tenant, f"ingest_{uuid.uuid4().hex[:20]}", usages)
        return by_tenant
