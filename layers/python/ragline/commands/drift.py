"""``ragline drift --tenant T``: retrieval-signal drift of a tenant (window vs baseline)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @app.command("drift")
    def drift(
        tenant: str = typer.Option(..., "--tenant", "-t"),
        window_days: float = typer.Option(1.0, "--window-days", min=0.01, help="Recent window compared"),
        baseline_days: float = typer.Option(7.0, "--baseline-days", min=0.01, help="Baseline before the window"),
        limit: int = typer.Option(50000, "--limit", min=1, help="Most recent logged queries to read"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Top-1 / mean top-k similarity and query-to-centroid distance: PSI and KS against the baseline.
        Exit code 3 when drift is detected (for cron and CI)."""
        from rich.console import Console

        from .. import factory
        from ..operations.drift import report

        app = factory.default()
        s = app.settings
        res = report(app.query_log.recent(tenant, limit), tenant=tenant, window_days=window_days,
                     baseline_days=baseline_days, psi_alarm=s.drift_psi_alarm, ks_alpha=s.drift_ks_alpha, emit=True)
        if as_json:
            print(json.dumps(res))
        else:
            con = Console(highlight=False)
            for sig in res["signals"]:
                colour = {"drift": "red", "stable": "green"}.get(sig["status"], "yellow")
                con.print(f"[{colour}]{sig['status']:>17}[/]  {sig['message']}")
            con.print(("[red]DRIFT[/]: " if res["drift"] else "") + res["message"])
        if res["drift"]:
            raise typer.Exit(3)
