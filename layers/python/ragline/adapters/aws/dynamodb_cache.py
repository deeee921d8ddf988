"""The semantic-cache store on DynamoDB (the AWS side of ``SqliteCacheStore``).

Table shape (string ``pk``/``sk``, TTL attribute ``expires_at``):

* entry: ``pk`` = ``cache#<tenant>``, ``sk`` = ``acl#<acl_key>#<entry_id>``; the query vector as
  float32 bytes, the entry as JSON, ``qkey`` (the question's exact-repeat key), ``expires``
  (epoch seconds, checked on read; DynamoDB's TTL deletes within ~48 h, so expiry is never left
  to it alone); the entry id starts with the write time in milliseconds, so entries sort by
  time within a scope;
* cited document: ``pk`` = ``cachedoc#<tenant>#<doc_id>``, ``sk`` = ``<acl_key>#<entry_id>``,
  one per document an entry cites, so invalidating a document is one Query plus batch deletes;
* change counters: ``pk`` = ``cachegen#<tenant>``, ``sk`` = ``counters``, with ``puts`` (ADDed
  after every stored entry) and ``removals`` (ADDed after every invalidation or clear).

``nearest`` ranks in numpy over an in-memory copy of one tenant + ACL scope, kept per warm
Lambda container the way the SQLite store keeps its matrix: each lookup reads the tenant's
counter item (one strongly consistent GetItem, 1 read unit) and then

* nothing more when neither counter moved (the common case: a hit or a miss costs one small
  read instead of a Query over every cached entry of the tenant);
* when ``puts`` moved, a Query for the entries written since the last refresh (minus
  ``overlap_s``, for writes in flight and clock skew between containers);
* when ``removals`` moved, or the copy is older than ``max_age_s``, or there is none, the full
  Query of the scope, as before.

A question that misses the exact-repeat lookup (:meth:`exact`) goes on, once embedded, to
:meth:`nearest` on the same scope; that ``nearest`` call uses the copy ``exact`` just refreshed
instead of reading the counters again (once, on the same thread, within ``reuse_s``), so a
lookup costs one counter read, not two. The copy it reuses is at most ``reuse_s`` older, as if
the question had arrived that much earlier; candidates' cited versions are checked in the
registry regardless.

A removal always reloads, so an invalidated entry leaves every container's copy at its next
lookup (and the cache checks each candidate's cited versions in the registry anyway). A put
that the incremental read misses (in flight longer than ``overlap_s``) only costs hits until the
next full reload. An exact scan over a few thousand 1024-d vectors is a few ms; a tenant with a
much larger cache would move to an OpenSearch k-NN index behind the same port.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from ...settings import Settings
from .dynamodb import _s, _Table


@dataclass
class _Scope:
    """One tenant + ACL key's cached entries as read from the table."""

    puts: int
    removals: int
    loaded_at: float
    high_ms: int = 0  # the newest entry's write time seen (ms)
    sks: list[str] = field(default_factory=list)
    by_key: dict[str, int] = field(default_factory=dict)  # question key -> newest entry's position
    raw: list[str] = field(default_factory=list)  # entry JSON, parsed only when returned
    expires: list[int] = field(default_factory=list)
    vectors: list[bytes] = field(default_factory=list)
    _mat: np.ndarray | None = None

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        known = set(self.sks)
        for item in items:
            sk = item["sk"]["S"]
            if sk in known:
                continue
            known.add(sk)
            self.sks.append(sk)
            self.raw.append(item["entry"]["S"])
            self.expires.append(int(item["expires"]["N"]))
            self.vectors.append(bytes(item["vector"]["B"]))
            if "qkey" in item:
                prev = self.by_key.get(item["qkey"]["S"])
                if prev is None or self.sks[prev] < sk:
                    self.by_key[item["qkey"]["S"]] = len(self.sks) - 1
            self.high_ms = max(self.high_ms, _written_ms(sk))
            self._mat = None

    def matrix(self, dim: int) -> np.ndarray:
        if self._mat is None:
            self._mat = (np.frombuffer(b"".join(self.vectors), dtype=np.float32).reshape(len(self.vectors), dim)
                         if self.vectors else np.zeros((0, dim), dtype=np.float32))
        return self._mat


def _written_ms(sk: str) -> int:
    try:
        return int(sk.rsplit("#", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return 0


class DynamoCacheStore(_Table):
    setting_name = "cache_table"

    def __init__(self, table: str | None = None, *, dimensions: int, client: Any | None = None,
                 settings: Settings | None = None, overlap_s: float = 30.0, max_age_s: float = 300.0,
                 max_scopes: int = 64, reuse_s: float = 1.0):
        super().__init__(table, client, settings)
        self.dim = dimensions
        self.overlap_s = overlap_s
        self.max_age_s = max_age_s
        self.max_scopes = max_scopes
        self._scopes: OrderedDict[tuple[str, str], _Scope] = OrderedDict()
        self.reuse_s = reuse_s
        self._lock = threading.Lock()
        # the scope the last missing exact() on this thread refreshed, for the nearest() after it
        self._handoff = threading.local()
        # how the last lookup (nearest or exact) read the table: "counters", "incremental", "full",
        # or "reused" (a nearest() on the copy its exact() had just refreshed)
        self.last_read = ""

    # ------------------------------------------------------------------ writes
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
        if entry.get("question_key"):
            items[0]["qkey"] = _s(entry["question_key"])
        # the document links first, every one acknowledged, then the entry in a call of its own
        # (inside one BatchWriteItem DynamoDB may write the entry and hand the links back
        # unprocessed): a write that fails part-way leaves links to nothing, never an entry no
        # invalidation can find
        links = [{"pk": _s(f"cachedoc#{tenant}#{doc_id}"), "sk": _s(f"{acl}#{eid}"), "expires_at": {"N": str(expires)}}
                 for doc_id in entry.get("doc_versions", {})]
        if links:
            self._write(links, [])
        self._write(items, [])
        self._bump(tenant, "puts")  # after the write: a reader that sees the count finds the entry

    def invalidate_document(self, tenant: str, doc_id: str) -> int:
        """Remove every entry that cited the document, with all of its document links (not
        only this document's), so invalidating another document it cited later counts only
        entries that still exist, as the SQLite store does. Returns the entries removed."""
        refs = list(self._query_all(ConsistentRead=True, KeyConditionExpression="pk = :pk",
                                    ExpressionAttributeValues={":pk": _s(f"cachedoc#{tenant}#{doc_id}")}))
        entry_keys = []
        keys = []
        for ref in refs:
            acl, eid = ref["sk"]["S"].split("#", 1)
            entry_keys.append({"pk": _s(f"cache#{tenant}"), "sk": _s(f"acl#{acl}#{eid}")})
            keys.append({"pk": ref["pk"], "sk": ref["sk"]})
        found = self._get_many(entry_keys, "sk, entry")
        for item in found:  # the entry's links to the other documents it cited
            acl, eid = item["sk"]["S"][len("acl#"):].split("#", 1)
            for other in json.loads(item["entry"]["S"]).get("doc_versions", {}):
                if other != doc_id:
                    keys.append({"pk": _s(f"cachedoc#{tenant}#{other}"), "sk": _s(f"{acl}#{eid}")})
        self._write([], entry_keys + keys)
        if refs:  # the query reads consistently: nothing found is nothing to reload
            self._bump(tenant, "removals")
        return len(found)

    def _get_many(self, keys: Sequence[dict[str, Any]], projection: str) -> list[dict[str, Any]]:
        """BatchGetItem in pages of 100, retrying unprocessed keys; the items that exist."""
        out: list[dict[str, Any]] = []
        try:
            for start in range(0, len(keys), 100):
                page = {self.table: {"Keys": list(keys[start:start + 100]), "ProjectionExpression": projection,
                                     "ConsistentRead": True}}
                for resp in self._drain("batch_get_item", page, "UnprocessedKeys"):
                    out.extend(resp.get("Responses", {}).get(self.table, []))
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        return out

    def _drain(self, operation: str, request: dict[str, Any], leftover: str) -> list[dict[str, Any]]:
        """Run one batch request until DynamoDB has taken all of it (what it throttled comes
        back under ``leftover``), backing off between rounds; the responses, in order."""
        responses = []
        for attempt in range(8):
            resp = getattr(self.client, operation)(RequestItems=request)
            responses.append(resp)
            request = resp.get(leftover) or {}
            if not request:
                return responses
            time.sleep(min(1.0, 0.05 * 2 ** attempt))
        raise ClientError({"Error": {"Code": leftover, "Message": f"{operation} kept throttling"}}, operation)

    def clear(self, tenant: str) -> int:
        entries = list(self._query_all(ConsistentRead=True, KeyConditionExpression="pk = :pk",
                                       ExpressionAttributeValues={":pk": _s(f"cache#{tenant}")},
                                       ProjectionExpression="pk, sk, entry"))
        keys = []
        for e in entries:
            keys.append({"pk": e["pk"], "sk": e["sk"]})
            acl, eid = e["sk"]["S"][len("acl#"):].split("#", 1)
            for doc_id in json.loads(e["entry"]["S"]).get("doc_versions", {}):
                keys.append({"pk": _s(f"cachedoc#{tenant}#{doc_id}"), "sk": _s(f"{acl}#{eid}")})
        self._write([], keys)
        self._bump(tenant, "removals")
        return len(entries)

    # ------------------------------------------------------------------ reads
    def nearest(self, tenant: str, acl_key: str, vector: Any, k: int) -> list[tuple[dict[str, Any], float]]:
        scope = self._taken_over(tenant, acl_key) or self._refresh(tenant, acl_key)
        with self._lock:  # a consistent snapshot, should another thread be adding to the scope
            mat, expires = scope.matrix(self.dim), np.asarray(scope.expires)
            sks, raw = scope.sks[: len(expires)], scope.raw[: len(expires)]
        if not sks:
            return []
        sims = mat @ np.asarray(vector, dtype=np.float32)
        live = expires > int(time.time())
        sims = np.where(live, sims, -np.inf)
        order = [int(i) for i in np.argsort(-sims)[:k] if live[i]]
        return [(json.loads(raw[i]) | {"entry_id": sks[i]}, float(sims[i])) for i in order]

    def exact(self, tenant: str, acl_key: str, key: str) -> dict[str, Any] | None:
        """The newest live entry of this scope stored under this question key (from the same
        in-memory copy ``nearest`` uses, so it costs the counter read alone), with its stored
        query vector under ``vector`` (for the query log's drift signal)."""
        scope = self._refresh(tenant, acl_key)
        with self._lock:
            i = scope.by_key.get(key)
            if i is None or scope.expires[i] <= int(time.time()):
                # a miss: the caller embeds the question and calls nearest() next
                self._handoff.last = (tenant, acl_key, time.monotonic(), scope)
                return None
            return json.loads(scope.raw[i]) | {"entry_id": scope.sks[i],
                                               "vector": np.frombuffer(scope.vectors[i], dtype=np.float32)}

    def _taken_over(self, tenant: str, acl_key: str) -> _Scope | None:
        """The copy the preceding missing exact() on this thread refreshed for this scope, if it
        was within ``reuse_s``; consumed, so only the very next nearest() skips the counter read."""
        last = getattr(self._handoff, "last", None)
        self._handoff.last = None
        if last is None or last[:2] != (tenant, acl_key) or time.monotonic() - last[2] > self.reuse_s:
            return None
        self.last_read = "reused"
        return last[3]

    def _refresh(self, tenant: str, acl_key: str) -> _Scope:
        puts, removals = self._counters(tenant)
        key = (tenant, acl_key)
        with self._lock:
            scope = self._scopes.get(key)
            if scope is not None:
                self._scopes.move_to_end(key)
        now = time.time()
        if (scope is not None and scope.removals == removals and now - scope.loaded_at < self.max_age_s):
            if scope.puts == puts:
                self.last_read = "counters"
                return scope
            # entries written since the last refresh, minus the overlap for writes in flight
            since = max(0, int(scope.high_ms - self.overlap_s * 1000))
            items = self._query_all(
                ConsistentRead=True,  # as SQLite reads: a write just acknowledged is seen
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={":pk": _s(f"cache#{tenant}"), ":lo": _s(f"acl#{acl_key}#{since:013d}"),
                                           ":hi": _s(f"acl#{acl_key}#~")},
            )
            with self._lock:
                scope.add(items)
                scope.puts = puts
            self.last_read = "incremental"
            return scope
        fresh = _Scope(puts=puts, removals=removals, loaded_at=now)
        fresh.add(self._query_all(
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :acl)",
            ExpressionAttributeValues={":pk": _s(f"cache#{tenant}"), ":acl": _s(f"acl#{acl_key}#")},
        ))
        with self._lock:
            self._scopes[key] = fresh
            self._scopes.move_to_end(key)
            while len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)
        self.last_read = "full"
        return fresh

    def _counters(self, tenant: str) -> tuple[int, int]:
        try:
            item = self.client.get_item(TableName=self.table, Key=self._counter_key(tenant), ConsistentRead=True,
                                        ProjectionExpression="puts, removals").get("Item") or {}
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        return int(item.get("puts", {}).get("N", 0)), int(item.get("removals", {}).get("N", 0))

    def _bump(self, tenant: str, counter: str) -> None:
        try:
            self.client.update_item(TableName=self.table, Key=self._counter_key(tenant),
                                    UpdateExpression="ADD #c :one", ExpressionAttributeNames={"#c": counter},
                                    ExpressionAttributeValues={":one": {"N": "1"}})
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)

    @staticmethod
    def _counter_key(tenant: str) -> dict[str, Any]:
        return {"pk": _s(f"cachegen#{tenant}"), "sk": _s("counters")}

    def _write(self, puts: Sequence[dict[str, Any]], deletes: Sequence[dict[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": i}} for i in puts] + [{"DeleteRequest": {"Key": k}} for k in deletes]
        try:
            for start in range(0, len(requests), 25):
                self._drain("batch_write_item", {self.table: requests[start:start + 25]}, "UnprocessedItems")
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
