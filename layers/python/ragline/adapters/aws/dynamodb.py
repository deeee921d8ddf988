"""DynamoDB implementations of the document registry, the query log and the cost ledger.

Every table uses string keys named ``pk`` (partition) and ``sk`` (sort). Items are written with
the low-level client (so tests can inject any client) through boto3's type serializer.

Table shapes (what the infrastructure must create):

* registry: ``pk`` = tenant, ``sk`` = doc_id, TTL attribute ``expires_at`` (set on tombstones only).
* query log: ``pk`` = tenant, ``sk`` = query_id, TTL attribute ``expires_at``; GSI
  ``by_tenant_time`` (``pk``, ``logged_at``) and GSI ``by_day_time`` (``log_day``, ``logged_at``),
  both projecting ALL.
* ledger: ``pk`` = ``tenant#<tenant>``, ``sk`` = ``req#...`` (one per recorded request, TTL
  attribute ``expires_at``) or ``day#<YYYY-MM-DD>#model#<model>#purpose#<purpose>`` (aggregates).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, NoReturn

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from ...errors import DependencyUnavailable, NotFound, StaleWrite  # StaleWrite re-exported
from ...models import DocStatus, DocumentRecord, Usage, net_rating, utcnow
from ...settings import Settings, get_settings
from ._boto import LazyClient, boto3_client_factory, client_config, error_code, raise_translated

log = logging.getLogger(__name__)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_UNSET: Any = object()




# --- conversion ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A Python value in the types DynamoDB can store (Decimal for numbers, lists for sets)."""
    if isinstance(value, Enum):  # before str: StrEnum members are str too
        return _plain(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes, int, Decimal, Binary)):
        return value
    if isinstance(value, float):  # float(): numpy.float64 is a float whose repr is "np.float64(...)"
        return Decimal(repr(float(value))) if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [_plain(v) for v in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(mode="json"))
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    """Serialize a flat mapping to a DynamoDB item, leaving out top-level None values."""
    return {
        k: _serializer.serialize(v) for k, v in ((k, _plain(v)) for k, v in data.items()) if v is not None
    }


def _native(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, dict):
        return {k: _native(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_native(v) for v in value]
    return value


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _native(_deserializer.deserialize(v)) for k, v in item.items()}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


class _Table:
    """Common parts: table name from settings, lazily built client, error translation."""

    setting_name = ""

    def __init__(self, table: str | None, client: Any | None, settings: Settings | None):
        settings_ = settings or get_settings()
        self.table = table or getattr(settings_, self.setting_name)
        if not self.table:
            raise ValueError(f"{type(self).__name__} needs a table (RAGLINE_{self.setting_name.upper()})")
        self._client = LazyClient(client, boto3_client_factory("dynamodb", settings_, client_config()))

    @property
    def client(self) -> Any:
        return self._client.get()

    def _fail(self, exc: BaseException) -> NoReturn:
        raise_translated(f"dynamodb table {self.table}", exc)

    def _query_all(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        try:
            for page in self.client.get_paginator("query").paginate(TableName=self.table, **kwargs):
                yield from page.get("Items", ())
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)


# --- document registry --------------------------------------------------------------------------


class _LeaseGone(Exception):
    """A budget lease a write expected was reclaimed (its request outlived the deadline)."""


class DynamoRegistry(_Table):
    """Document provenance, one item per (tenant, doc_id).

    ``chunk_ids`` are stored zlib-compressed in ``chunk_ids_z``: a document may have up to 20,000
    chunks (~1 MB of ids) and an item may not exceed 400 KB. The ids share long prefixes, so they
    compress to a few bytes each.
    """

    setting_name = "registry_table"

    def __init__(
        self, table: str | None = None, *, client: Any | None = None, settings: Settings | None = None
    ):
        super().__init__(table, client, settings)
        self.tombstone_days = (settings or get_settings()).tombstone_days

    def _to_item(self, record: DocumentRecord) -> dict[str, Any]:
        data = record.model_dump(mode="json")
        chunk_ids = data.pop("chunk_ids")
        data.update(
            pk=record.tenant,
            sk=record.doc_id,
            chunk_count=len(chunk_ids),
            chunk_ids_z=zlib.compress(json.dumps(chunk_ids, separators=(",", ":")).encode(), 6),
        )
        if record.status == DocStatus.DELETED:
            # a tombstone expires (the table's TTL attribute); any later write replaces the item
            # whole, so a document uploaded again carries no expiry
            data["expires_at"] = int(time.time()) + self.tombstone_days * 86400
        return to_item(data)

    @staticmethod
    def _from_item(item: Mapping[str, Any]) -> DocumentRecord:
        data = from_item(item)
        for key in ("pk", "sk", "chunk_count", "expires_at"):
            data.pop(key, None)
        packed = data.pop("chunk_ids_z", None)
        data["chunk_ids"] = json.loads(zlib.decompress(packed)) if packed else []
        return DocumentRecord.model_validate(data)

    def get(self, tenant: str, doc_id: str) -> DocumentRecord | None:
        try:
            response = self.client.get_item(
                TableName=self.table, Key={"pk": _s(tenant), "sk": _s(doc_id)}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        item = response.get("Item")
        return self._from_item(item) if item else None

    def put(self, record: DocumentRecord, *, expected_version: str | None = _UNSET,
            expected_attempt: str | None = _UNSET) -> None:
        """Write ``record``. With ``expected_version`` the write only happens if the stored record
        is absent or still at that version (``None``: absent or never versioned), so a worker
        holding a stale read can never overwrite a newer write; it gets :class:`StaleWrite`.
        With ``expected_attempt`` the stored record must hold that ingestion ``attempt`` (the
        claim an ingestion has on the document; ``None``: absent, or a record without one)."""
        record.updated_at = utcnow()  # as the SQLite registry does: the time of this write
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": self._to_item(record)}
        conditions: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if expected_version is not _UNSET:
            names["#v"] = "version"
            if expected_version is None:
                conditions.append("attribute_not_exists(pk) OR attribute_not_exists(#v)")
            else:
                conditions.append("attribute_not_exists(pk) OR #v = :expected")
                values[":expected"] = _s(expected_version)
        if expected_attempt is not _UNSET:
            names["#a"] = "attempt"
            if expected_attempt is None:
                conditions.append("attribute_not_exists(pk) OR attribute_not_exists(#a)")
            else:
                conditions.append("#a = :attempt")  # absent fails: the document was deleted meanwhile
                values[":attempt"] = _s(expected_attempt)
        if conditions:
            kwargs["ConditionExpression"] = " AND ".join(f"({c})" for c in conditions)
            kwargs["ExpressionAttributeNames"] = names
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
            if values:
                kwargs["ExpressionAttributeValues"] = values
        try:
            self.client.put_item(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old = from_item(exc.response.get("Item") or {})
                raise StaleWrite(
                    f"document {record.doc_id} was changed by another writer "
                    + (f"(expected version {expected_version!r}, found {old.get('version')!r})"
                       if expected_version is not _UNSET else
                       f"(expected attempt {expected_attempt!r}, found {old.get('attempt')!r})")
                ) from exc
            self._fail(exc)
        except BotoCoreError as exc:
            self._fail(exc)

    def list(self, tenant: str) -> list[DocumentRecord]:
        items = self._query_all(
            KeyConditionExpression="pk = :t", ExpressionAttributeValues={":t": _s(tenant)}
        )
        # by source key, as the SQLite registry lists them (the sort key is the doc_id hash)
        return sorted((self._from_item(item) for item in items), key=lambda r: (r.source_key, r.doc_id))

    def tenants(self, *, page_size: int | None = None) -> list[str]:
        """Every tenant with a document (operators' tools: index builds, stats). A consistent
        scan of the partition keys only, page by page (1 MB a page); the table has no index
        of tenants, and these tools run rarely, so a scan beats keeping one up to date."""
        seen: set[str] = set()
        try:
            pages = self.client.get_paginator("scan").paginate(
                TableName=self.table, ProjectionExpression="pk", ConsistentRead=True,
                PaginationConfig={"PageSize": page_size} if page_size else {},
            )
            for page in pages:
                seen.update(item["pk"]["S"] for item in page.get("Items", ()))
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        return sorted(seen)

    def delete(self, tenant: str, doc_id: str) -> None:
        try:
            self.client.delete_item(TableName=self.table, Key={"pk": _s(tenant), "sk": _s(doc_id)})
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)


# --- query log ----------------------------------------------------------------------------------

_LOG_INTERNAL = ("pk", "sk", "log_day", "expires_at")
_LOG_RESERVED = (*_LOG_INTERNAL, "feedback", "logged_at")
_FEEDBACK_PREFIX = "fb#"


class DynamoQueryLog(_Table):
    """One item per answered query, expiring after ``ttl_days`` (DynamoDB TTL on ``expires_at``).

    Feedback is kept as one attribute per user (``fb#<user>``), so a user re-rating a query
    replaces their earlier rating atomically instead of piling up duplicates.
    """

    setting_name = "query_log_table"
    BY_TENANT = "by_tenant_time"
    BY_DAY = "by_day_time"

    def __init__(
        self,
        table: str | None = None,
        *,
        client: Any | None = None,
        settings: Settings | None = None,
        ttl_days: int = 90,
        now: Callable[[], datetime] = utcnow,
    ):
        super().__init__(table, client, settings)
        if ttl_days < 1:
            raise ValueError("ttl_days must be at least 1")
        self.ttl_days = ttl_days
        self.now = now

    def append(self, entry: dict[str, Any]) -> None:
        """Store a query once. Appending the same (tenant, query_id) again changes nothing, so a
        retried request cannot wipe the feedback already given on it."""
        tenant, query_id = entry.get("tenant"), entry.get("query_id")
        if not tenant or not query_id:
            raise ValueError("a query log entry needs a tenant and a query_id")
        now = self.now()
        bad = [k for k in entry if k in _LOG_RESERVED or k.startswith(_FEEDBACK_PREFIX)]
        if bad:
            raise ValueError(f"query log entry uses reserved attribute names: {bad}")
        data = dict(entry)
        data.update(
            pk=tenant,
            sk=query_id,
            logged_at=now.isoformat(),
            log_day=now.date().isoformat(),
            expires_at=int((now + timedelta(days=self.ttl_days)).timestamp()),
        )
        try:
            self.client.put_item(
                TableName=self.table, Item=to_item(data), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                log.info("query %s already logged; keeping the first entry", query_id)
                return
            self._fail(exc)
        except BotoCoreError as exc:
            self._fail(exc)

    @staticmethod
    def _entry(item: Mapping[str, Any]) -> dict[str, Any]:
        data = from_item(item)
        feedback = [data.pop(k) for k in [k for k in data if k.startswith(_FEEDBACK_PREFIX)]]
        for key in _LOG_INTERNAL:
            data.pop(key, None)
        data["feedback"] = sorted(feedback, key=lambda f: (f.get("at", ""), f.get("user", "")))
        data["rating"] = net_rating(data["feedback"])  # what the online evaluation and A/B tests count
        return data

    def get(self, tenant: str, query_id: str) -> dict[str, Any] | None:
        try:
            response = self.client.get_item(
                TableName=self.table, Key={"pk": _s(tenant), "sk": _s(query_id)}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc)
        item = response.get("Item")
        return self._entry(item) if item else None

    def _newest(self, index: str, key: str, value: str, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":v": _s(value)},
            "ScanIndexForward": False,
        }
        while len(out) < limit:
            kwargs["Limit"] = limit - len(out)
            try:
                page = self.client.query(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                self._fail(exc)
            out.extend(self._entry(item) for item in page.get("Items", ()))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out

    def recent(self, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first. One tenant reads its own index partition; ``None`` (operators) walks the
        per-day index backwards until ``limit`` entries or the retention window is covered."""
        if limit <= 0:
            return []
        if tenant is not None:
            return self._newest(self.BY_TENANT, "pk", tenant, limit)
        out: list[dict[str, Any]] = []
        today = self.now().date()
        for back in range(self.ttl_days + 1):
            day = (today - timedelta(days=back)).isoformat()
            out.extend(self._newest(self.BY_DAY, "log_day", day, limit - len(out)))
            if len(out) >= limit:
                break
        return out

    def add_feedback(self, tenant: str, query_id: str, user: str, rating: int, comment: str | None) -> None:
        if not user:
            raise ValueError("feedback needs a user")
        feedback = {"user": user, "rating": int(rating), "comment": comment, "at": self.now().isoformat()}
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(tenant), "sk": _s(query_id)},
                UpdateExpression="SET #fb = :fb",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#fb": _FEEDBACK_PREFIX + user},
                ExpressionAttributeValues={":fb": _serializer.serialize(_plain(feedback))},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise NotFound(f"no query {query_id}") from exc
            self._fail(exc)
        except BotoCoreError as exc:
            self._fail(exc)


# --- cost ledger --------------------------------------------------------------------------------

# Costs are stored as integer nano-dollars: exact under ADD, and fine enough for per-token prices
# (an embedding of a short query costs ~1e-7 USD, which micro-dollars would round to zero).
NANOS = 1_000_000_000
_MAX_TRANSACT_ITEMS = 100


def _as_usage(value: Any) -> Usage:
    return value if isinstance(value, Usage) else Usage.model_validate(value)


class DynamoLedgerStore(_Table):
    """Token usage and cost per tenant, per day, per model, per purpose.

    ``record`` writes, in one TransactWriteItems, a per-request item (conditional on not
    existing) and an atomic ``ADD`` to each affected daily aggregate. So the aggregates are always
    exactly the sum of the per-request items, and the same transaction sent twice (a retry after
    an ambiguous failure) is a no-op instead of a double charge. Costs are integer nano-dollars so
    ADD is exact. Each usage row keeps its price-table version; each aggregate counts its
    tiktoken-estimated calls (``estimated_calls``).
    """

    setting_name = "ledger_table"

    def __init__(
        self,
        table: str | None = None,
        *,
        client: Any | None = None,
        settings: Settings | None = None,
        record_ttl_days: int = 400,
        now: Callable[[], datetime] = utcnow,
        conflict_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(table, client, settings)
        self.record_ttl_days = record_ttl_days
        self.now = now
        self.conflict_attempts = conflict_attempts
        self.sleep = sleep
        self._rng = random.Random()

    @staticmethod
    def _pk(tenant: str) -> str:
        return f"tenant#{tenant}"

    @staticmethod
    def _aggregate_sk(day: str, model_id: str, purpose: str) -> str:
        return f"day#{day}#model#{model_id}#purpose#{purpose}"

    @staticmethod
    def _request_sk(query_id: str, record_id: str | None) -> str:
        """Per-record() key: the query id plus the caller's idempotency key, else a fresh id. The
        same transaction sent again (a retry after an ambiguous failure) collides with itself, and
        so does a second record() with the same ``record_id``; a second record() without one (a
        judge scoring one answer three times, with the same token counts) is a second charge, as
        it is in SQLite."""
        return f"req#{query_id}#{record_id or uuid.uuid4().hex[:16]}"

    @staticmethod
    def _budget_sk(day: str) -> str:
        # sorts before "day#...", so totals() never reads it
        return f"budget#{day}"

    def _budget_update(self, tenant: str, day: str, nanos: int, recorded: int = 0) -> dict[str, Any]:
        """ADD ``nanos`` to the day's committed spend (and ``recorded`` to what records added)."""
        values = {":tenant": _s(tenant), ":day": _s(day), ":n": {"N": str(nanos)},
                  ":exp": {"N": str(int((self.now() + timedelta(days=3)).timestamp()))}}
        add = "ADD #c :n"
        if recorded:
            add += ", #r :rec"
            values[":rec"] = {"N": str(recorded)}
        return {
            "TableName": self.table,
            "Key": {"pk": _s(self._pk(tenant)), "sk": _s(self._budget_sk(day))},
            "UpdateExpression": f"SET #tenant = :tenant, #day = :day, #exp = if_not_exists(#exp, :exp) {add}",
            "ExpressionAttributeNames": {"#tenant": "tenant", "#day": "day", "#exp": "expires_at",
                                         "#c": "committed_nanos", "#r": "recorded_nanos", "#s": "seeded"},
            "ExpressionAttributeValues": values,
        }

    def _update_budget(self, update: dict[str, Any]) -> bool:
        """One UpdateItem on a budget item: True when written, False when its condition failed.
        The item is also in every record()'s transaction, so a TransactionConflict is retried."""
        if "#r" not in update["UpdateExpression"] and "#r" not in update.get("ConditionExpression", ""):
            update["ExpressionAttributeNames"].pop("#r", None)
        if "#s" not in update["UpdateExpression"] and "#s" not in update.get("ConditionExpression", ""):
            update["ExpressionAttributeNames"].pop("#s", None)
        for attempt in range(1, self.conflict_attempts + 1):
            try:
                self.client.update_item(**update)
                return True
            except ClientError as exc:
                code = error_code(exc)
                if code == "ConditionalCheckFailedException":
                    return False
                if code != "TransactionConflictException" or attempt == self.conflict_attempts:
                    self._fail(exc)
            except BotoCoreError as exc:
                self._fail(exc)
            self.sleep(self._rng.uniform(0, min(1.0, 0.02 * 2**attempt)))
        return False

    @staticmethod
    def _lease_sk(day: str, lease_id: str) -> str:
        # "lease#..." sorts after every "day#..." aggregate key, so totals() never reads it
        return f"lease#{day}#{lease_id}"

    def _lease_key(self, tenant: str, day: str, lease_id: str) -> dict[str, Any]:
        return {"pk": _s(self._pk(tenant)), "sk": _s(self._lease_sk(day, lease_id))}

    def _transact_budget(self, items: list[dict[str, Any]]) -> bool:
        """A budget transaction: True when written, False when any condition failed; retried on
        TransactionConflict (records write the same budget item)."""
        for attempt in range(1, self.conflict_attempts + 1):
            try:
                self.client.transact_write_items(TransactItems=items)
                return True
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    self._fail(exc)
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons", ())]
                if "ConditionalCheckFailed" in codes:
                    return False
                if "TransactionConflict" not in codes or attempt == self.conflict_attempts:
                    raise DependencyUnavailable(
                        f"dynamodb table {self.table}: budget write cancelled ({', '.join(filter(None, codes))})"
                    ) from exc
            except BotoCoreError as exc:
                self._fail(exc)
            self.sleep(self._rng.uniform(0, min(1.0, 0.02 * 2**attempt)))
        return False

    def _clean(self, update: dict[str, Any]) -> dict[str, Any]:
        """Drop the attribute names an update does not use (DynamoDB refuses unused ones)."""
        for name in ("#r", "#s"):
            if name not in update["UpdateExpression"] and name not in update.get("ConditionExpression", ""):
                update["ExpressionAttributeNames"].pop(name, None)
        return update

    def _reclaim(self, tenant: str, day: str) -> int:
        """Give back the day's reservations whose lease deadline has passed (requests that died
        holding them): each in a transaction that deletes the lease, conditionally on it still
        being there and expired, and ADDs its amount back, so a reservation is given back once
        whoever else (its own release, another reclaimer) races this. Returns the nanos."""
        now = self.now().timestamp()
        leases = self._query_all(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": _s(self._pk(tenant)), ":prefix": _s(f"lease#{day}#")},
            ConsistentRead=True,
        )
        total = 0
        for item in leases:
            data = from_item(item)
            if float(data.get("deadline", now)) >= now:
                continue
            nanos = int(data["nanos"])
            delete = {"Delete": {
                "TableName": self.table, "Key": {"pk": item["pk"], "sk": item["sk"]},
                "ConditionExpression": "attribute_exists(pk) AND #dl < :now",
                "ExpressionAttributeNames": {"#dl": "deadline"},
                "ExpressionAttributeValues": {":now": {"N": repr(now)}}}}
            if self._transact_budget([delete, {"Update": self._clean(self._budget_update(tenant, day, -nanos))}]):
                total += nanos
        if total:
            log.warning("budget reservations of dead requests reclaimed",
                        extra={"tenant": tenant, "day": day, "nanos": total})
        return total

    def reserve(self, tenant: str, day: str, nanos: int, limit_nanos: int, *,
                lease: tuple[str, float] | None = None) -> bool:
        """Add ``nanos`` to the day's committed spend (recorded spend plus requests in flight) if
        it stays within ``limit_nanos``: one conditional ADD, so concurrent requests serialise.
        Until a day's item is *seeded*, spend recorded before budgets were reserved (the day of
        an upgrade) is added to it once: the day's aggregates (operator purposes aside) less
        what records already added (``recorded_nanos``), conditional on neither changing.
        With ``lease`` (id, deadline as epoch seconds) the ADD and a lease item are one
        transaction; a request that does not fit first reclaims the day's expired leases."""
        from ...ledger.budget import OPERATOR_PURPOSES

        update = self._budget_update(tenant, day, nanos)
        update["ConditionExpression"] = "attribute_exists(#s) AND #c <= :room"
        update["ExpressionAttributeValues"][":room"] = {"N": str(limit_nanos - nanos)}
        lease_put = None
        if lease is not None:
            lease_put = {"Put": {"TableName": self.table, "Item": to_item({
                "pk": self._pk(tenant), "sk": self._lease_sk(day, lease[0]), "tenant": tenant, "day": day,
                "nanos": nanos, "deadline": float(lease[1]),
                "expires_at": int((self.now() + timedelta(days=3)).timestamp())})}}
        key = {"pk": _s(self._pk(tenant)), "sk": _s(self._budget_sk(day))}
        reclaimed = False
        for _ in range(8):
            if lease_put is None and self._update_budget(update):
                return True
            if lease_put is not None and self._transact_budget([{"Update": self._clean(dict(update))}, lease_put]):
                return True
            try:
                item = self.client.get_item(TableName=self.table, ConsistentRead=True, Key=key).get("Item")
            except (ClientError, BotoCoreError) as exc:
                self._fail(exc)
            if item is not None and "seeded" in item:
                if int(item["committed_nanos"]["N"]) + nanos > limit_nanos:
                    if lease_put is not None and not reclaimed:
                        reclaimed = True
                        if self._reclaim(tenant, day):
                            continue  # dead requests' reservations given back: try again
                    return False  # the day's spend is known and this request does not fit
                continue  # released since our update: try again
            recorded = int(item["recorded_nanos"]["N"]) if item and "recorded_nanos" in item else 0
            spent = sum(round(r["cost_usd"] * NANOS) for r in self.totals(tenant, 1, consistent=True)
                        if r["purpose"] not in OPERATOR_PURPOSES and r["day"] == day)
            seed = self._budget_update(tenant, day, spent - recorded)
            seed["UpdateExpression"] = seed["UpdateExpression"].replace("SET ", "SET #s = :true, ", 1)
            seed["ExpressionAttributeValues"][":true"] = {"BOOL": True}
            seed["ConditionExpression"] = "attribute_not_exists(#s) AND (attribute_not_exists(#r) OR #r = :rec0)"
            seed["ExpressionAttributeValues"][":rec0"] = {"N": str(recorded)}
            self._update_budget(seed)  # a failed condition: seeded, or recorded meanwhile; look again
        return False

    def release(self, tenant: str, day: str, nanos: int, *, lease_id: str | None = None) -> None:
        """Give a reservation back; with its lease, only while the lease is held (a reservation
        reclaimed after its deadline was given back already)."""
        if lease_id is None:
            self._update_budget(self._budget_update(tenant, day, -nanos))
            return
        delete = {"Delete": {"TableName": self.table, "Key": self._lease_key(tenant, day, lease_id),
                             "ConditionExpression": "attribute_exists(pk)"}}
        self._transact_budget([delete, {"Update": self._clean(self._budget_update(tenant, day, -nanos))}])

    def first_alert(self, tenant: str, day: str, kind: str) -> bool:
        """True for the first caller of the day only (a conditional put)."""
        try:
            self.client.put_item(
                TableName=self.table, ConditionExpression="attribute_not_exists(pk)",
                Item=to_item({"pk": self._pk(tenant), "sk": f"alert#{day}#{kind}", "tenant": tenant, "day": day,
                              "expires_at": int((self.now() + timedelta(days=3)).timestamp())}))
            return True
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            self._fail(exc)
        except BotoCoreError as exc:
            self._fail(exc)

    def record(self, tenant: str, query_id: str, usages: Sequence[Any], *, record_id: str | None = None,
               release: tuple[str, int] | tuple[str, int, str | None] | None = None) -> None:
        """Record a request's usage in one transaction; ``release`` (day, nanos[, lease id])
        gives its reservation back in it (the lease deleted, conditionally on it still being
        held: if it was reclaimed meanwhile, the record is written without the release)."""
        if not tenant or not query_id:
            raise ValueError("a ledger record needs a tenant and a query_id")
        parsed = [_as_usage(u) for u in usages]
        lease_id = release[2] if release and len(release) > 2 else None
        if not parsed:
            if release:
                self.release(tenant, release[0], release[1], lease_id=lease_id)
            return
        rows = [
            {
                "model_id": u.model_id,
                "purpose": u.purpose,
                "input_tokens": int(u.input_tokens),
                "output_tokens": int(u.output_tokens),
                "cost_usd_nanos": round(u.cost_usd * NANOS),
                "estimated": bool(u.estimated),
                **({"price_version": u.price_version} if u.price_version else {}),
            }
            for u in parsed
        ]
        groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for row in rows:
            g = groups[(row["model_id"], row["purpose"])]
            g[0] += row["input_tokens"]
            g[1] += row["output_tokens"]
            g[2] += row["cost_usd_nanos"]
            g[3] += 1
            g[4] += int(row["estimated"])
        if len(groups) + 4 > _MAX_TRANSACT_ITEMS:  # + the request item, up to two budget days, a lease
            raise ValueError(f"too many (model, purpose) pairs in one record: {len(groups)}")

        now = self.now().astimezone(UTC)
        day = now.date().isoformat()
        pk = self._pk(tenant)
        request_item = {
            "pk": pk,
            "sk": self._request_sk(query_id, record_id),
            "tenant": tenant,
            "query_id": query_id,
            "day": day,
            "recorded_at": now.isoformat(),
            "usages": rows,
            "expires_at": int((now + timedelta(days=self.record_ttl_days)).timestamp()),
        }
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item(request_item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        for (model_id, purpose), (tin, tout, nanos, calls, estimated) in sorted(groups.items()):
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"pk": _s(pk), "sk": _s(self._aggregate_sk(day, model_id, purpose))},
                        "UpdateExpression": (
                            "SET #tenant = :tenant, #day = :day, #model = :model, #purpose = :purpose "
                            "ADD #in :i, #out :o, #cost :c, #calls :n, #est :e"
                        ),
                        "ExpressionAttributeNames": {
                            "#tenant": "tenant",
                            "#day": "day",
                            "#model": "model_id",
                            "#purpose": "purpose",
                            "#in": "input_tokens",
                            "#out": "output_tokens",
                            "#cost": "cost_usd_nanos",
                            "#calls": "calls",
                            "#est": "estimated_calls",
                        },
                        "ExpressionAttributeValues": {
                            ":tenant": _s(tenant),
                            ":day": _s(day),
                            ":model": _s(model_id),
                            ":purpose": _s(purpose),
                            ":i": {"N": str(tin)},
                            ":o": {"N": str(tout)},
                            ":c": {"N": str(nanos)},
                            ":n": {"N": str(calls)},
                            ":e": {"N": str(estimated)},
                        },
                    }
                }
            )
        # the day's committed budget spend: this record's cost (operator purposes aside), less the
        # reservation it releases, in the same transaction
        from ...ledger.budget import OPERATOR_PURPOSES

        cost = sum(r["cost_usd_nanos"] for r in rows if r["purpose"] not in OPERATOR_PURPOSES)
        budget = {day: [cost, cost]}  # day -> [committed delta, recorded delta]
        if release:
            budget.setdefault(release[0], [0, 0])[0] -= release[1]
        def budget_items(with_release: bool) -> list[dict[str, Any]]:
            deltas = {day: [cost, cost]}  # day -> [committed delta, recorded delta]
            if release and with_release:
                deltas.setdefault(release[0], [0, 0])[0] -= release[1]
            out = [{"Update": self._clean(self._budget_update(tenant, d, n, rec))}
                   for d, (n, rec) in sorted(deltas.items()) if n or rec]
            if release and with_release and lease_id is not None:
                out.append({"Delete": {"TableName": self.table, "Key": self._lease_key(tenant, release[0], lease_id),
                                       "ConditionExpression": "attribute_exists(pk)"}})
            return out

        try:
            self._transact(items + budget_items(True), query_id, lease_index=len(items) + len(budget_items(True)) - 1
                           if lease_id is not None else None)
        except _LeaseGone:
            # reclaimed after its deadline (the request outlived its lease): given back already
            self._transact(items + budget_items(False), query_id)

    def _transact(self, items: list[dict[str, Any]], query_id: str, *, lease_index: int | None = None) -> None:
        """Run the transaction; retry on TransactionConflict (concurrent writers on the same
        aggregate), treat a failed condition on the request item as 'already recorded' and one
        on the lease at ``lease_index`` as :class:`_LeaseGone`."""
        for attempt in range(1, self.conflict_attempts + 1):
            try:
                self.client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    self._fail(exc)
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons", ())]
                if codes and codes[0] == "ConditionalCheckFailed":
                    log.info("usage of query %s already recorded; not counting it twice", query_id)
                    return
                if lease_index is not None and len(codes) > lease_index and codes[lease_index] == "ConditionalCheckFailed":
                    raise _LeaseGone from exc
                retryable = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
                if not any(c in retryable for c in codes) or attempt == self.conflict_attempts:
                    raise DependencyUnavailable(
                        f"dynamodb table {self.table} did not record usage ({', '.join(filter(None, codes))})"
                    ) from exc
                self.sleep(self._rng.uniform(0, min(1.0, 0.02 * 2**attempt)))
            except BotoCoreError as exc:
                self._fail(exc)

    def totals(self, tenant: str, days: int, *, consistent: bool = False) -> list[dict[str, Any]]:
        """Daily aggregates for the last ``days`` days (today included), oldest first."""
        if days < 1:
            return []
        today = self.now().astimezone(UTC).date()
        first = today - timedelta(days=days - 1)
        # aggregate keys are "day#<date>#model#..."; "day#<tomorrow>" sorts after all of today's
        items = self._query_all(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": _s(self._pk(tenant)),
                ":lo": _s(f"day#{first.isoformat()}"),
                ":hi": _s(f"day#{(today + timedelta(days=1)).isoformat()}"),
            },
            ConsistentRead=consistent,
        )
        out = []
        for item in items:
            data = from_item(item)
            out.append(
                {
                    "day": data["day"],
                    "model_id": data["model_id"],
                    "purpose": data["purpose"],
                    "input_tokens": int(data.get("input_tokens", 0)),
                    "output_tokens": int(data.get("output_tokens", 0)),
                    "cost_usd": int(data.get("cost_usd_nanos", 0)) / NANOS,
                    "calls": int(data.get("calls", 0)),
                    "estimated_calls": int(data.get("estimated_calls", 0)),
                }
            )
        return sorted(out, key=lambda r: (r["day"], r["model_id"], r["purpose"]))
