"""AWS adapters for the ports in :mod:`ragline.ports`: S3, DynamoDB, Bedrock and OpenSearch.

Exports are resolved on first use, so a Lambda that needs only S3 and DynamoDB does not pay for
importing opensearch-py at cold start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "S3BlobStore": "s3",
    "DynamoRegistry": "dynamodb",
    "DynamoQueryLog": "dynamodb",
    "DynamoLedgerStore": "dynamodb",
    "DynamoCacheStore": "dynamodb_cache",
    "StaleWrite": "dynamodb",
    "BedrockEmbedder": "bedrock",
    "BedrockChatModel": "bedrock",
    "BedrockReranker": "bedrock",
    "OpenSearchIndex": "opensearch",
    "IndexWriteRejected": "opensearch",
    "RetryPolicy": "_retry",
    "ComprehendPiiDetector": "comprehend",
}

__all__ = [
    "BedrockChatModel",
    "BedrockEmbedder",
    "BedrockReranker",
    "ComprehendPiiDetector",
    "DynamoCacheStore",
    "DynamoLedgerStore",
    "DynamoQueryLog",
    "DynamoRegistry",
    "IndexWriteRejected",
    "OpenSearchIndex",
    "RetryPolicy",
    "S3BlobStore",
    "StaleWrite",
]

if TYPE_CHECKING:
    from ._retry import RetryPolicy
    from .bedrock import BedrockChatModel, BedrockEmbedder, BedrockReranker
    from .comprehend import ComprehendPiiDetector
    from .dynamodb import DynamoLedgerStore, DynamoQueryLog, DynamoRegistry, StaleWrite
    from .dynamodb_cache import DynamoCacheStore
    from .opensearch import IndexWriteRejected, OpenSearchIndex
    from .s3 import S3BlobStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
