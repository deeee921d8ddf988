"""The semantic-cache store on DynamoDB (the AWS side of ``SqliteCacheStore``).

Table shape (string ``pk``/``sk``, TTL attribute ``expires_at``):

* entry: ``pk`` = ``cache#<tenant>``, ``sk`` = ``acl#<acl_key>#<entry_id>``; the query vector as
  float32 bytes, the entry as JSON, ``expires`` (epoch seconds, checked on read; DynamoDB's TTL
  deletes within ~48 h, so expiry is never left to it alone);
* cited document: ``pk`` = ``cachedoc#<tenant>#<doc_id>``, ``sk`` = ``<acl_key>#<entry_id>``,
  one per document an entry cites, so invalidating a document is one Query plus batch deletes.

``nearest`` reads one tenant + ACL scope with a Query and ranks in numpy: a tenant's cache is
small (bounded by TTL), and an exact scan over a few thousand 1024-d vectors is a few ms. A
tenant with a much larger cache would move to an OpenSearch k-NN index behind the same port.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from ...settings import Settings
from .dynamodb import _s, _Table


class DynamoCacheStore(_Table):
    setting_name = "cache_table"

    def __init__(self, table: str | None = None, *, dimensions: int, client: Any | None = None,
                 settings: Settings | None = None):
        super().__init__(table, client, settings)
        self.dim = dimensions

    def put(self, entry: dict[str, Any], vector: Any) -> None:
        vec = np.asarray(vector, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise ValueError(f"cache vector has shape {vec.shape}, expected ({self.dim},)")
        now = time.time()
        expires = int(now + float(entry.get("ttl_s", 86400)))
        eid = f"{int(now * 1000):013d}-{uuid.uuid4().hex[:8]}"
        tenant, acl = entry["tenant"], entry["acl_key"]
        items = [{
            "pk": _s(f"cache#{tenant}"), "sk": _s(f"acl#{acl}#{eid}"), "entry": _s(json.dumps(entry, default=str)),
            "vector": {"B": vec.tobytes()}, "expires": {"N": str(expires)}, "expires_at": {"N": str(expires)},
        }]
        for doc_id in entry.get("doc_versions", {}):
            items.append({"pk": _s(f"cachedoc#{tenant}#{doc_id}"), "sk": _s(f"{acl}#{eid}"),
                          "expires_at": {"N": str(expires)}})
        self._write(items, [])

    def nearest(self, tenant: str, acl_key: str, vector: Any, k: int) -> list[tuple[dict[str, Any], float]]:
        now = int(time.time())
        rows = [
            item for item in self._query_all(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :acl)",
                ExpressionAttributeValues={":pk": _s(f"cache#{tenant}"), ":acl": _s(f"acl#{acl_key}#")},
            )
            if int(item["expires"]["N"]) > now
        ]
        if not rows:
            return []
        mat = np.frombuffer(b"".join(bytes(r["vector"]["B"]) for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        sims = mat @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-sims)[:k]
        return [(json.loads(rows[i]["entry"]["S"]) | {"entry_id": rows[i]["sk"]["S"]}, float(sims[i])) for i in order]

    def invalidate_document(self, tenant: str, doc_id: str) -> int:
        refs = list(self._query_all(KeyConditionExpression="pk = :pk",
                                    ExpressionAttributeValues={":pk": _s(f"cachedoc#{tenant}#{doc_id}")}))
        keys = []
        for ref in refs:
            acl, eid = ref["sk"]["S"].split("#", 1)
            keys.append({"pk": _s(f"cache#{tenant}"), "sk": _s(f"acl#{acl}#{eid}")})
            keys.append({"pk": ref["pk"], "sk": ref["sk"]})
        self._write([], keys)
        return len(refs)

    def clear(self, tenant: str) -> int:
        entries = list(self._query_all(KeyConditionExpression="pk = :pk",
                                       ExpressionAttributeValues={":pk": _s(f"cache#{tenant}")},
                                       ProjectionExpression="pk, sk, entry"))
        keys = []
        for e in entries:
            keys.append({"pk": e["pk"], "sk": e["sk"]})
            acl, eid = e["sk"]["S"][len("acl#"):].split("#", 1)
            for doc_id in json.loads(e["entry"]["S"]).get("doc_versions", {}):
                keys.append({"pk": _s(f"cachedoc#{tenant}#{doc_id}"), "sk": _s(f"{acl}#{eid}")})
        self._write([], keys)
        return len(entries)

    def _write(self, puts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": i}} for i in puts] + [{"DeleteRequest": {"Key": k}} for k in deletes]
        try:
            for start in range(0, len(requests), 25):
                pending = {self.table: requests[start:start + 25]}
                for attempt in range(8):
                    out = self.client.batch_write_item(RequestItems=pending)
                    pending = out.get("UnprocessedItems") or {}
                    if not pending:
                        break
                    time.sleep(min(1.0, 0.05 * 2 ** attempt))
                else:
                    raise ClientError({"Error": {"Code": "UnprocessedItems", "Message": "batch write kept throttling"}},
                                      "BatchWriteItem")
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
