"""Per-tenant daily budgets, read from the ledger's own aggregates.

Soft limit: the request goes ahead; a ``BudgetSoftLimit`` metric and a warning log (the alert's
source) are emitted once per tenant and UTC day, by the first request that finds the limit
passed (or the one whose record passes it). Hard limit: the request is refused with 429 naming
the budget, or, with ``hard_limit_action = "downgrade"``, answered by the cheaper tier (and
refused once spending reaches twice the hard limit, so a downgrade cannot run up an unbounded
bill).

Concurrent requests: checking the day's spend before each request lets every request in flight
pass a hard limit together. So, where the ledger offers it (both shipped ledgers do), a request
that is about to call a model first *reserves* its worst-case cost (its prompt's tokens plus the
tier's maximum output, at the dearest model it may fail over to) against the limit, atomically
(a transaction in SQLite, a conditional ``ADD`` in DynamoDB); recording its real usage releases
the reservation in the same write. A request whose worst case does not fit is refused (in downgrade
mode it is answered by the cheaper tier, whose worst case may reach twice the limit, and
refused past that). What a request spends before its reservation (the query embedding, a
rerank) is not reserved, so concurrent requests can pass the limit by those small amounts. Each
reservation is held as a lease (``reservation_lease_s``, longer than a request can live): a
process that dies between reserving and recording leaves its reservation counted only until
that deadline, after which the next request that does not fit reclaims it. A reservation
released after it was reclaimed gives nothing back twice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import BudgetExceeded
from ..observability import logger, metric
from ..ports import Ledger
from ..settings import CostSettings
from .pricing import NANOS


@dataclass(frozen=True, slots=True)
class BudgetState:
    spent_usd: float
    soft_usd: float | None
    hard_usd: float | None
    downgrade: bool = False
    note: str | None = None


def usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 1 else f"${x:.6g}"


INDEX_BUILD_PURPOSE = "index_build"  # ledger purpose of index builds (ragline index build)
# Spend an operator causes (re-embedding a tenant's documents for a new index version) is in the
# ledger for cost allocation, but must not use up the budget of the tenant's own requests.
OPERATOR_PURPOSES = frozenset({INDEX_BUILD_PURPOSE})


def today() -> str:
    return datetime.now(UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class Reservation:
    day: str
    nanos: int
    lease_id: str | None = None

    def release_args(self) -> tuple[str, int, str | None]:
        return (self.day, self.nanos, self.lease_id)


class BudgetGuard:
    def __init__(self, settings: CostSettings, ledger: Ledger):
        self.settings = settings
        self.ledger = ledger
        self._alerted: set[tuple[str, str]] = set()  # (tenant, day) whose soft alert this process saw raised

    OPERATOR_PURPOSES = OPERATOR_PURPOSES

    def spent_today(self, tenant: str, *, consistent: bool = False) -> float:
        rows = self.ledger.totals(tenant, 1, consistent=True) if consistent else self.ledger.totals(tenant, 1)
        return sum(r["cost_usd"] for r in rows if r.get("purpose") not in self.OPERATOR_PURPOSES)

    def _soft_alert(self, tenant: str, spent: float, soft: float) -> None:
        day = today()
        if (tenant, day) in self._alerted:
            return  # this process saw it raised today: no write per request to learn it again
        first = getattr(self.ledger, "first_alert", None)
        try:
            fresh = first is None or first(tenant, day, "soft")
        except Exception:  # noqa: BLE001 - the alert's bookkeeping must not fail the request
            logger().exception("soft budget alert bookkeeping failed", extra={"tenant": tenant})
            return
        if len(self._alerted) > 10_000:
            self._alerted = set()  # a new set, not a filtered copy another thread could be adding to
        self._alerted.add((tenant, day))
        if not fresh:
            return  # raised already today (by another process)
        metric("BudgetSoftLimit", 1)
        logger().warning("tenant over its soft budget", extra={
            "alert": "BudgetSoftLimit", "tenant": tenant, "spent_usd": round(spent, 6), "soft_budget_usd": soft})

    def can_reserve(self, state: BudgetState) -> bool:
        return state.hard_usd is not None and getattr(self.ledger, "reserve", None) is not None

    def try_reserve(self, tenant: str, worst_case_usd: float, ceiling_usd: float) -> Reservation | None:
        """Reserve ``worst_case_usd`` if today's committed spend stays within ``ceiling_usd``
        (None when it does not fit)."""
        nanos = max(1, round(worst_case_usd * NANOS))
        day = today()
        lease_id = uuid.uuid4().hex
        lease = (lease_id, time.time() + self.settings.reservation_lease_s)
        ok = self.ledger.reserve(tenant, day, nanos, round(ceiling_usd * NANOS), lease=lease)
        return Reservation(day, nanos, lease_id) if ok else None

    def refuse(self, tenant: str, state: BudgetState, worst_case_usd: float, ceiling_usd: float) -> BudgetExceeded:
        metric("BudgetHardLimit", 1)
        what = (f"daily budget of {usd(state.hard_usd)} for tenant {tenant}" if ceiling_usd == state.hard_usd else
                f"downgrade ceiling of {usd(ceiling_usd)} (twice the daily budget of {usd(state.hard_usd)}) for tenant {tenant}")
        if worst_case_usd > ceiling_usd:
            return BudgetExceeded(
                f"this request could cost up to {usd(worst_case_usd)}, more than the whole {what}: it can never "
                "fit; raise the budget or lower the tier's max_output_tokens or context_token_budget")
        return BudgetExceeded(
            f"{what} would be passed by this request (up to {usd(worst_case_usd)}) on top of what is spent and in "
            f"flight today ({usd(state.spent_usd)} recorded before it); requests resume as spending settles, "
            "tomorrow (UTC), or when the budget is raised")

    def release(self, tenant: str, reservation: Reservation | None) -> None:
        if reservation is not None:
            self.ledger.release(tenant, reservation.day, reservation.nanos, lease_id=reservation.lease_id)

    def after_record(self, tenant: str) -> None:
        """The request whose record passes the soft limit raises the alert (once a day)."""
        soft = self.settings.budget(self.settings.soft_budget_usd, tenant)
        if soft is not None:
            # a consistent read: the record just written must be in it, or the crossing is missed
            spent = self.spent_today(tenant, consistent=True)
            if spent >= soft:
                self._soft_alert(tenant, spent, soft)

    def check(self, tenant: str) -> BudgetState:
        soft = self.settings.budget(self.settings.soft_budget_usd, tenant)
        hard = self.settings.budget(self.settings.hard_budget_usd, tenant)
        if soft is None and hard is None:
            return BudgetState(0.0, None, None)
        spent = self.spent_today(tenant)
        if soft is not None and spent >= soft:
            self._soft_alert(tenant, spent, soft)
        if hard is not None and spent >= hard:
            metric("BudgetHardLimit", 1)
            if self.settings.hard_limit_action == "downgrade" and spent < 2 * hard:
                return BudgetState(spent, soft, hard, downgrade=True,
                                   note=f"daily budget of {usd(hard)} for tenant {tenant} is spent; answered by the cheaper tier")
            raise BudgetExceeded(
                f"daily budget of {usd(hard)} for tenant {tenant} is spent ({usd(spent)} today); "
                "requests resume tomorrow (UTC) or when the budget is raised"
            )
        return BudgetState(spent, soft, hard)
