"""S3 implementation of :class:`ragline.ports.BlobStore`.

The documents bucket is expected to be versioned: ``get`` can read an exact object version (the
one an S3 event named), and ``delete`` leaves a delete marker that the ingest pipeline sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...errors import InvalidInput, NotFound, ObjectTooLarge
from ...ports import Blob
from ...settings import Settings, get_settings
from ._boto import LazyClient, boto3_client_factory, client_config, error_code, raise_translated

_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600  # SigV4 upper bound


def _strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else etag


class S3BlobStore:
    """Blobs in one S3 bucket. ``client`` is a boto3 S3 client; the default is built on first use."""

    def __init__(
        self, bucket: str | None = None, *, client: Any | None = None, settings: Settings | None = None
    ):
        settings_ = settings or get_settings()
        self.bucket = bucket or settings_.documents_bucket
        if not self.bucket:
            raise ValueError("S3BlobStore needs a bucket (RAGLINE_DOCUMENTS_BUCKET)")
        self._client = LazyClient(
            client, boto3_client_factory("s3", settings_, client_config(read_timeout_s=30.0))
        )

    @property
    def client(self) -> Any:
        return self._client.get()

    def _what(self, key: str | None = None) -> str:
        return f"s3 bucket {self.bucket}" if key is None else f"s3 object {key}"

    def get(self, key: str, version_id: str | None = None, *, max_bytes: int | None = None) -> Blob:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            response = self.client.get_object(**kwargs)
            size = response.get("ContentLength")
            if max_bytes is not None and size is not None and size > max_bytes:
                # the headers are in, the body is not: close the stream unread
                response["Body"].close()
                raise ObjectTooLarge(key, int(size), max_bytes, version_id=response.get("VersionId"),
                                     metadata=dict(response.get("Metadata") or {}))
            data = response["Body"].read()
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                suffix = f" (version {version_id})" if version_id else ""
                raise NotFound(f"no object {key}{suffix}") from exc
            raise_translated(self._what(key), exc)
        except BotoCoreError as exc:
            raise_translated(self._what(key), exc)
        return Blob(
            key=key,
            data=data,
            version_id=response.get("VersionId"),
            etag=_strip_etag(response.get("ETag")),
            content_type=response.get("ContentType"),
            metadata=dict(response.get("Metadata") or {}),  # x-amz-meta-*, e.g. ragline-groups
        )

    def put(self, key: str, data: bytes, content_type: str | None = None) -> Blob:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        try:
            response = self.client.put_object(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise_translated(self._what(key), exc)
        return Blob(
            key=key,
            data=data,
            version_id=response.get("VersionId"),
            etag=_strip_etag(response.get("ETag")),
            content_type=content_type,
        )

    def delete(self, key: str) -> None:
        """Delete the current version (a delete marker on a versioned bucket). Missing keys are fine."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise_translated(self._what(key), exc)

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, page by page (S3 returns at most 1000 keys a page)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise_translated(self._what(), exc)

    def presign_put(self, key: str, content_type: str, max_bytes: int, expires_s: int,
                    metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """A presigned POST that S3 itself enforces: this key only, exactly this Content-Type,
        exactly this user metadata (``x-amz-meta-*``: the ACL groups the ingest reads), and a body of
        1..max_bytes bytes. (A presigned PUT URL cannot limit the size, so it is not used.)"""
        if not content_type:
            raise InvalidInput("an upload needs a content type")
        if max_bytes < 1:
            raise InvalidInput("max_bytes must be at least 1")
        if not 1 <= expires_s <= MAX_PRESIGN_EXPIRY_S:
            raise InvalidInput(f"expires_s must be between 1 and {MAX_PRESIGN_EXPIRY_S}")
        try:
            meta = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
            post = self.client.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type, **meta},
                # exact matches: an uploader cannot drop or widen the groups it was signed for
                Conditions=[{"Content-Type": content_type}, *({k: v} for k, v in meta.items()),
                            ["content-length-range", 1, max_bytes]],
                ExpiresIn=expires_s,
            )
        except (ClientError, BotoCoreError) as exc:
            raise_translated(self._what(key), exc)
        return {"url": post["url"], "fields": post["fields"], "method": "POST", "expires_in": expires_s}
