"""A directory as the blob store. Keys map to paths below the root; a key can never escape it."""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...errors import InvalidInput, NotFound, ObjectTooLarge
from ...ports import Blob


class DirectoryBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root not in p.parents:
            raise InvalidInput(f"invalid object key: {key!r}")
        return p

    def get(self, key: str, version_id: str | None = None, *, max_bytes: int | None = None) -> Blob:
        p = self._path(key)
        if not p.is_file():
            raise NotFound(f"no object {key!r}")
        if max_bytes is not None and (size := p.stat().st_size) > max_bytes:
            raise ObjectTooLarge(key, size, max_bytes)
        data = p.read_bytes()
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return Blob(key=key, data=data, version_id=None, etag=etag, content_type=mimetypes.guess_type(key)[0])

    def put(self, key: str, data: bytes, content_type: str | None = None) -> Blob:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return Blob(key=key, data=data, etag=hashlib.md5(data, usedforsecurity=False).hexdigest(), content_type=content_type)

    def delete(self, key: str) -> None:
        p = self._path(key)
        if p.is_file():
            p.unlink()

    def list(self, prefix: str) -> Iterable[str]:
        base = self.root
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.endswith(".tmp"):
                key = p.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def presign_put(self, key: str, content_type: str, max_bytes: int, expires_s: int,
                    metadata: dict[str, str] | None = None) -> dict[str, Any]:
        # Locally there is no presigning service: the answer says where the object would go and
        # how to put it there with the CLI instead.
        self._path(key)
        return {
            "method": "LOCAL",
            "key": key,
            "url": None,
            "fields": {"Content-Type": content_type, **{f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}},
            "max_bytes": max_bytes,
            "expires_in": expires_s,
            "note": f"local backend: run `ragline ingest FILE --tenant ...` (object key {key})",
        }
