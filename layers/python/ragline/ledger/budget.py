"""Per-tenant daily budgets, read from the ledger's own aggregates.

Soft limit: the request goes ahead; a ``BudgetSoftLimit`` metric and a warning log (the alert's
source) are emitted. Hard limit: the request is refused with 429 naming the budget, or, with
``hard_limit_action = "downgrade"``, answered by the cheaper tier (and refused once spending
reaches twice the hard limit, so a downgrade cannot run up an unbounded bill).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BudgetExceeded
from ..observability import logger, metric
from ..ports import Ledger
from ..settings import CostSettings


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


class BudgetGuard:
    def __init__(self, settings: CostSettings, ledger: Ledger):
        self.settings = settings
        self.ledger = ledger

    # Spend an operator causes (re-embedding a tenant's documents for a new index version) is in
    # the ledger for cost allocation, but must not use up the budget of the tenant's own requests.
    OPERATOR_PURPOSES = frozenset({INDEX_BUILD_PURPOSE})

    def spent_today(self, tenant: str) -> float:
        return sum(r["cost_usd"] for r in self.ledger.totals(tenant, 1) if r.get("purpose") not in self.OPERATOR_PURPOSES)

    def check(self, tenant: str) -> BudgetState:
        soft = self.settings.budget(self.settings.soft_budget_usd, tenant)
        hard = self.settings.budget(self.settings.hard_budget_usd, tenant)
        if soft is None and hard is None:
            return BudgetState(0.0, None, None)
        spent = self.spent_today(tenant)
        if soft is not None and spent >= soft:
            metric("BudgetSoftLimit", 1)
            logger().warning("tenant over its soft budget", extra={
                "alert": "BudgetSoftLimit", "tenant": tenant, "spent_usd": round(spent, 6), "soft_budget_usd": soft})
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
