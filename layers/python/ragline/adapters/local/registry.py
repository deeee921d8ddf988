"""SQLite document registry, query log and cost ledger (the local side of DynamoDB)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import StaleWrite
from ...ledger.budget import OPERATOR_PURPOSES
from ...models import DocumentRecord, Usage, net_rating, utcnow
from .sqlite import SqliteStore

log = logging.getLogger("ragline.ledger")

NANOS = 1_000_000_000


class SqliteRegistry(SqliteStore):
    """Document records in SQLite. A tombstone (a deleted document's record, which orders late
    events) is removed ``tombstone_days`` after it was written, when another tombstone of the
    same tenant is written (DynamoDB's TTL does this on AWS)."""

    def __init__(self, path, *, tombstone_days: int = 30):
        super().__init__(path)
        self.tombstone_days = tombstone_days

    schema = """
    CREATE TABLE IF NOT EXISTS documents (
      tenant TEXT NOT NULL, doc_id TEXT NOT NULL, version TEXT, status TEXT NOT NULL,
      source_key TEXT NOT NULL, record TEXT NOT NULL, updated_at TEXT NOT NULL,
      PRIMARY KEY (tenant, doc_id)
    );
    CREATE INDEX IF NOT EXISTS documents_by_status ON documents (tenant, status, updated_at);
    """

    _UNSET = object()

    def get(self, tenant: str, doc_id: str) -> DocumentRecord | None:
        row = self.conn().execute(
            "SELECT record FROM documents WHERE tenant=? AND doc_id=?", (tenant, doc_id)
        ).fetchone()
        return DocumentRecord.model_validate_json(row[0]) if row else None

    def put(self, record: DocumentRecord, *, expected_version: Any = _UNSET, expected_attempt: Any = _UNSET) -> None:
        """Write a record. With ``expected_version`` (None meaning "no record yet"), the write
        happens only if the stored version is still that one: a stale writer cannot overwrite a
        newer version. With ``expected_attempt`` the stored record's ingestion ``attempt`` must
        be that one (None: no record, or one without an attempt): the claim an ingestion holds
        on a document, which any other writer's claim replaces."""
        record.updated_at = utcnow()
        body = record.model_dump_json()
        with self.tx() as c:
            if expected_version is not self._UNSET or expected_attempt is not self._UNSET:
                row = c.execute(
                    "SELECT version, record FROM documents WHERE tenant=? AND doc_id=?", (record.tenant, record.doc_id)
                ).fetchone()
                current = row[0] if row else None
                if expected_version is not self._UNSET and (
                        (row is None and expected_version is not None) or (row is not None and current != expected_version)):
                    raise StaleWrite(
                        f"document {record.doc_id} is at version {str(current)[:12]}, not {str(expected_version)[:12]}"
                    )
                if expected_attempt is not self._UNSET:
                    attempt = json.loads(row[1]).get("attempt") if row else None
                    if (row is None and expected_attempt is not None) or (row is not None and attempt != expected_attempt):
                        raise StaleWrite(
                            f"document {record.doc_id} is held by ingestion attempt {attempt!r}, not {expected_attempt!r}"
                        )
            if record.status.value == "deleted":
                cutoff = (record.updated_at - timedelta(days=self.tombstone_days)).isoformat()
                c.execute("DELETE FROM documents WHERE tenant=? AND status='deleted' AND updated_at < ?",
                          (record.tenant, cutoff))
            c.execute(
                """INSERT INTO documents (tenant, doc_id, version, status, source_key, record, updated_at)
                   VALUES (?,?,?,?,?,?,?) ON CONFLICT(tenant, doc_id) DO UPDATE SET version=excluded.version,
                   status=excluded.status, source_key=excluded.source_key, record=excluded.record,
                   updated_at=excluded.updated_at""",
                (record.tenant, record.doc_id, record.version, record.status.value, record.source_key, body,
                 record.updated_at.isoformat()),
            )

    def list(self, tenant: str) -> list[DocumentRecord]:
        rows = self.conn().execute(
            "SELECT record FROM documents WHERE tenant=? ORDER BY source_key", (tenant,)
        ).fetchall()
        return [DocumentRecord.model_validate_json(r[0]) for r in rows]

    def delete(self, tenant: str, doc_id: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM documents WHERE tenant=? AND doc_id=?", (tenant, doc_id))

    def tenants(self) -> list[str]:
        """Every tenant with a document (operators' tools: index builds, stats)."""
        return [r[0] for r in self.conn().execute("SELECT DISTINCT tenant FROM documents ORDER BY tenant")]


class SqliteQueryLog(SqliteStore):
    """One row per answered query; feedback one row per (query, user), so a user re-rating a
    query replaces their rating and other users' stay (as on DynamoDB). Entries carry
    ``feedback`` (oldest first) and ``rating`` (:func:`ragline.models.net_rating`)."""

    schema = """
    CREATE TABLE IF NOT EXISTS queries (
      tenant TEXT NOT NULL, query_id TEXT NOT NULL, ts REAL NOT NULL, entry TEXT NOT NULL,
      rating INTEGER, feedback TEXT, PRIMARY KEY (tenant, query_id)
    );
    CREATE INDEX IF NOT EXISTS queries_ts ON queries(ts);
    CREATE TABLE IF NOT EXISTS query_feedback (
      tenant TEXT NOT NULL, query_id TEXT NOT NULL, user TEXT NOT NULL, rating INTEGER NOT NULL,
      comment TEXT, at TEXT NOT NULL, PRIMARY KEY (tenant, query_id, user)
    );
    """

    def append(self, entry: dict[str, Any]) -> None:
        """Store a query once: a retried append keeps the first entry and its feedback."""
        with self.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO queries (tenant, query_id, ts, entry) VALUES (?,?,?,?)",
                (entry["tenant"], entry["query_id"], entry.get("ts", time.time()), json.dumps(entry, default=str)),
            )

    def _with_feedback(self, rows: list[tuple]) -> list[dict[str, Any]]:
        """Entries from (tenant, query_id, entry, legacy rating, legacy feedback) rows."""
        out = []
        by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for tenant in {r[0] for r in rows}:
            ids = [r[1] for r in rows if r[0] == tenant]
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                for f in self.conn().execute(
                        f"SELECT query_id, user, rating, comment, at FROM query_feedback WHERE tenant=? "
                        f"AND query_id IN ({','.join('?' * len(part))}) ORDER BY at, user", [tenant, *part]):
                    by_key.setdefault((tenant, f[0]), []).append(
                        {"user": f[1], "rating": f[2], "comment": f[3], "at": f[4]})
        for tenant, query_id, body, legacy_rating, legacy_feedback in rows:
            e = json.loads(body)
            feedback = by_key.get((tenant, query_id), [])
            if not feedback and legacy_rating is not None:  # a log written before per-user feedback
                old = json.loads(legacy_feedback) if legacy_feedback else {}
                feedback = [{"user": old.get("user"), "rating": legacy_rating, "comment": old.get("comment"), "at": None}]
            e["feedback"] = feedback
            e["rating"] = net_rating(feedback)
            out.append(e)
        return out

    _COLUMNS = "tenant, query_id, entry, rating, feedback"

    def get(self, tenant: str, query_id: str) -> dict[str, Any] | None:
        rows = self.conn().execute(
            f"SELECT {self._COLUMNS} FROM queries WHERE tenant=? AND query_id=?", (tenant, query_id)
        ).fetchall()
        return self._with_feedback(rows)[0] if rows else None

    def recent(self, tenant: str | None, limit: int) -> list[dict[str, Any]]:
        if tenant is None:
            rows = self.conn().execute(
                f"SELECT {self._COLUMNS} FROM queries ORDER BY ts DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self.conn().execute(
                f"SELECT {self._COLUMNS} FROM queries WHERE tenant=? ORDER BY ts DESC LIMIT ?", (tenant, limit)
            ).fetchall()
        return self._with_feedback(rows)

    def add_feedback(self, tenant: str, query_id: str, user: str, rating: int, comment: str | None) -> None:
        from ...errors import NotFound

        if not user:
            raise ValueError("feedback needs a user")
        with self.tx() as c:
            if c.execute("SELECT 1 FROM queries WHERE tenant=? AND query_id=?", (tenant, query_id)).fetchone() is None:
                raise NotFound(f"no query {query_id}")
            c.execute(
                """INSERT INTO query_feedback (tenant, query_id, user, rating, comment, at) VALUES (?,?,?,?,?,?)
                   ON CONFLICT(tenant, query_id, user) DO UPDATE SET rating=excluded.rating,
                   comment=excluded.comment, at=excluded.at""",
                (tenant, query_id, user, int(rating), comment, utcnow().isoformat()),
            )


class SqliteLedger(SqliteStore):
    """Per-request usage records and per tenant/day/model/purpose aggregates, written in one
    transaction so the aggregates always equal the sum of the records. Costs are integer
    nano-dollars, as in the DynamoDB ledger (a short query's embedding costs ~1e-7 USD, which
    micro-dollars would round to zero)."""

    schema = """
    CREATE TABLE IF NOT EXISTS usage_records (
      id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, query_id TEXT NOT NULL, day TEXT NOT NULL,
      model_id TEXT NOT NULL, purpose TEXT NOT NULL, input_tokens INTEGER NOT NULL,
      output_tokens INTEGER NOT NULL, cost_nanos INTEGER NOT NULL, estimated INTEGER NOT NULL,
      price_version TEXT
    );
    CREATE TABLE IF NOT EXISTS usage_daily (
      tenant TEXT NOT NULL, day TEXT NOT NULL, model_id TEXT NOT NULL, purpose TEXT NOT NULL,
      input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
      cost_nanos INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0,
      estimated_calls INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (tenant, day, model_id, purpose)
    );
    CREATE TABLE IF NOT EXISTS usage_record_ids (
      tenant TEXT NOT NULL, record_id TEXT NOT NULL, PRIMARY KEY (tenant, record_id)
    );
    -- budget spend per tenant and UTC day: what was recorded (operator purposes aside) plus the
    -- worst-case cost of requests in flight, so concurrent requests cannot all pass a hard limit
    CREATE TABLE IF NOT EXISTS budget_spend (
      tenant TEXT NOT NULL, day TEXT NOT NULL, committed_nanos INTEGER NOT NULL DEFAULT 0,
      recorded_nanos INTEGER NOT NULL DEFAULT 0, seeded INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (tenant, day)
    );
    -- one row per reservation in flight, so a process that died holding one does not keep it
    -- counted all day: past its deadline it is reclaimed by the next request that does not fit
    CREATE TABLE IF NOT EXISTS budget_leases (
      tenant TEXT NOT NULL, day TEXT NOT NULL, lease_id TEXT NOT NULL, nanos INTEGER NOT NULL,
      deadline REAL NOT NULL, PRIMARY KEY (tenant, day, lease_id)
    );
    CREATE TABLE IF NOT EXISTS budget_alerts (
      tenant TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (tenant, day, kind)
    );
    """

    def __init__(self, path):
        self._migrate_micros(path)
        super().__init__(path)

    @staticmethod
    def _migrate_micros(path) -> None:
        """Ledgers written before costs moved to nano-dollars: rename and rescale in place."""
        import sqlite3
        from pathlib import Path

        if not Path(path).exists():
            return
        c = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            for table in ("usage_records", "usage_daily"):
                cols = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                if "cost_micros" in cols:
                    c.execute("BEGIN IMMEDIATE")
                    c.execute(f"ALTER TABLE {table} RENAME COLUMN cost_micros TO cost_nanos")
                    c.execute(f"UPDATE {table} SET cost_nanos = cost_nanos * 1000")
                    if table == "usage_records":
                        c.execute("ALTER TABLE usage_records ADD COLUMN price_version TEXT")
                    c.execute("COMMIT")
            cols = {r[1] for r in c.execute("PRAGMA table_info(usage_daily)")}
            if cols and "estimated_calls" not in cols:  # ledgers from before estimated calls were counted
                try:
                    c.execute("ALTER TABLE usage_daily ADD COLUMN estimated_calls INTEGER NOT NULL DEFAULT 0")
                except sqlite3.OperationalError:  # another process added it first
                    pass
        finally:
            c.close()

    @staticmethod
    def _add_committed(c, tenant: str, day: str, nanos: int, recorded: int = 0) -> None:
        if nanos or recorded:
            c.execute("""INSERT INTO budget_spend (tenant, day, committed_nanos, recorded_nanos) VALUES (?,?,?,?)
                         ON CONFLICT(tenant, day) DO UPDATE SET
                         committed_nanos = committed_nanos + excluded.committed_nanos,
                         recorded_nanos = recorded_nanos + excluded.recorded_nanos""",
                      (tenant, day, nanos, recorded))

    def reserve(self, tenant: str, day: str, nanos: int, limit_nanos: int, *,
                lease: tuple[str, float] | None = None) -> bool:
        """Add ``nanos`` to the day's committed spend if it stays within ``limit_nanos``. Until the
        day is *seeded*, spend recorded before budgets were reserved (the day of an upgrade) is
        added once: the day's aggregates (operator purposes aside) less what records added.
        With ``lease`` (id, deadline as epoch seconds) the reservation is held under that id
        until released or recorded; a request that does not fit first reclaims the day's leases
        past their deadline (requests that died holding them)."""
        with self.tx() as c:
            row = c.execute("SELECT committed_nanos, recorded_nanos, seeded FROM budget_spend WHERE tenant=? AND day=?",
                            (tenant, day)).fetchone()
            committed, recorded, seeded = (row[0], row[1], row[2]) if row else (0, 0, 0)
            if not seeded:
                spent = c.execute(
                    f"SELECT COALESCE(SUM(cost_nanos), 0) FROM usage_daily WHERE tenant=? AND day=? "
                    f"AND purpose NOT IN ({','.join('?' * len(OPERATOR_PURPOSES))})",
                    (tenant, day, *sorted(OPERATOR_PURPOSES))).fetchone()[0]
                committed += spent - recorded
                c.execute("""INSERT INTO budget_spend (tenant, day, committed_nanos, recorded_nanos, seeded)
                             VALUES (?,?,?,?,1) ON CONFLICT(tenant, day) DO UPDATE SET
                             committed_nanos = excluded.committed_nanos, seeded = 1""",
                          (tenant, day, committed, recorded))
            if committed + nanos > limit_nanos and lease is not None:
                committed -= self._reclaim(c, tenant, day)
            if committed + nanos > limit_nanos:
                return False
            self._add_committed(c, tenant, day, nanos)
            if lease is not None:
                c.execute("INSERT INTO budget_leases (tenant, day, lease_id, nanos, deadline) VALUES (?,?,?,?,?)",
                          (tenant, day, lease[0], nanos, float(lease[1])))
            return True

    def _reclaim(self, c, tenant: str, day: str) -> int:
        """Give back the day's reservations past their deadline; returns the nanos reclaimed."""
        rows = c.execute("SELECT lease_id, nanos FROM budget_leases WHERE tenant=? AND day=? AND deadline < ?",
                         (tenant, day, time.time())).fetchall()
        if not rows:
            return 0
        c.executemany("DELETE FROM budget_leases WHERE tenant=? AND day=? AND lease_id=?",
                      [(tenant, day, r[0]) for r in rows])
        total = sum(r[1] for r in rows)
        self._add_committed(c, tenant, day, -total)
        log.warning("budget reservations of dead requests reclaimed",
                    extra={"tenant": tenant, "day": day, "leases": len(rows), "nanos": total})
        return total

    def _give_back(self, c, tenant: str, day: str, nanos: int, lease_id: str | None) -> None:
        """Release a reservation: with a lease, only if it is still held (not reclaimed)."""
        if lease_id is not None and c.execute(
                "DELETE FROM budget_leases WHERE tenant=? AND day=? AND lease_id=?", (tenant, day, lease_id)).rowcount == 0:
            return  # reclaimed after its deadline: given back already
        self._add_committed(c, tenant, day, -nanos)

    def release(self, tenant: str, day: str, nanos: int, *, lease_id: str | None = None) -> None:
        with self.tx() as c:
            self._give_back(c, tenant, day, nanos, lease_id)

    def first_alert(self, tenant: str, day: str, kind: str) -> bool:
        """True for the first caller of the day only (an alert is raised once per tenant and day)."""
        with self.tx() as c:
            return c.execute("INSERT OR IGNORE INTO budget_alerts (tenant, day, kind) VALUES (?,?,?)",
                             (tenant, day, kind)).rowcount == 1

    def record(self, tenant: str, query_id: str, usages: Sequence[Usage], *, record_id: str | None = None,
               release: tuple[str, int] | tuple[str, int, str | None] | None = None) -> None:
        """Record a request's usage; ``release`` (day, nanos[, lease id]) gives its reservation
        back in the same transaction."""
        day = datetime.now(UTC).date().isoformat()
        if not usages:
            if release:
                self.release(tenant, release[0], release[1], lease_id=release[2] if len(release) > 2 else None)
            return
        with self.tx() as c:
            if record_id is not None and c.execute(
                    "INSERT OR IGNORE INTO usage_record_ids (tenant, record_id) VALUES (?, ?)",
                    (tenant, f"{query_id}#{record_id}")).rowcount == 0:
                return  # recorded before: not counted twice
            # the request's reservation becomes its real cost, in the same transaction
            cost = sum(round(u.cost_usd * NANOS) for u in usages if u.purpose not in OPERATOR_PURPOSES)
            self._add_committed(c, tenant, day, cost, cost)
            if release:
                self._give_back(c, tenant, release[0], release[1], release[2] if len(release) > 2 else None)
            for u in usages:
                nanos = round(u.cost_usd * NANOS)
                c.execute(
                    """INSERT INTO usage_records (tenant, query_id, day, model_id, purpose, input_tokens,
                       output_tokens, cost_nanos, estimated, price_version) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                    (tenant, query_id, day, u.model_id, u.purpose, u.input_tokens, u.output_tokens, nanos,
                     int(u.estimated), u.price_version),
                )
                c.execute(
                    """INSERT INTO usage_daily (tenant, day, model_id, purpose, input_tokens, output_tokens,
                       cost_nanos, calls, estimated_calls) VALUES (?,?,?,?,?,?,?,1,?)
                       ON CONFLICT(tenant, day, model_id, purpose) DO UPDATE SET
                       input_tokens = input_tokens + excluded.input_tokens,
                       output_tokens = output_tokens + excluded.output_tokens,
                       cost_nanos = cost_nanos + excluded.cost_nanos, calls = calls + 1,
                       estimated_calls = estimated_calls + excluded.estimated_calls""",
                    (tenant, day, u.model_id, u.purpose, u.input_tokens, u.output_tokens, nanos, int(u.estimated)),
                )

    def totals(self, tenant: str, days: int, *, consistent: bool = False) -> list[dict[str, Any]]:
        # SQLite reads are always consistent
        since = (datetime.now(UTC).date() - timedelta(days=max(days, 1) - 1)).isoformat()
        rows = self.conn().execute(
            """SELECT day, model_id, purpose, input_tokens, output_tokens, cost_nanos, calls, estimated_calls
               FROM usage_daily WHERE tenant=? AND day>=? ORDER BY day, model_id, purpose""",
            (tenant, since),
        ).fetchall()
        return [
            {"day": r[0], "model_id": r[1], "purpose": r[2], "input_tokens": r[3], "output_tokens": r[4],
             "cost_usd": r[5] / NANOS, "calls": r[6], "estimated_calls": r[7]}
            for r in rows
        ]

    def records(self, tenant: str, query_id: str | None = None) -> list[dict[str, Any]]:
        """Per-request records (newest last), for audits and the concurrency test."""
        sql = ("SELECT query_id, day, model_id, purpose, input_tokens, output_tokens, cost_nanos, estimated, "
               "price_version FROM usage_records WHERE tenant=?")
        args: list[Any] = [tenant]
        if query_id is not None:
            sql += " AND query_id=?"
            args.append(query_id)
        rows = self.conn().execute(sql + " ORDER BY id", args).fetchall()
        return [{"query_id": r[0], "day": r[1], "model_id": r[2], "purpose": r[3], "input_tokens": r[4],
                 "output_tokens": r[5], "cost_nanos": r[6], "estimated": bool(r[7]), "price_version": r[8]}
                for r in rows]
