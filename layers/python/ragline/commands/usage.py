"""``ragline usage``: tokens and cost of a tenant per day, model and purpose, from the ledger."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @app.command("usage")
    def usage(
        tenant: str = typer.Option(..., "--tenant", "-t"),
        days: int = typer.Option(7, "--days", "-d", min=1, max=366, help="Days back, today included (UTC)"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Tokens and cost per day, model and purpose (the cost ledger)."""
        from rich.console import Console
        from rich.table import Table

        from .. import factory
        from ..errors import RaglineError
        from ..models import Principal

        try:
            app = factory.default()
            # whoever runs the CLI has the ledger on disk: an administrator of the tenant
            out = app.usage(Principal(tenant=tenant, user="cli", scopes=frozenset({app.settings.admin_scope})), days)
        except (RaglineError, ValueError) as exc:
            Console(stderr=True).print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
            raise typer.Exit(2)
        if as_json:
            print(json.dumps(out))
            return
        table = Table(title=f"usage of {tenant}, last {days} day(s)")
        # a finance reader needs every id whole: long ones wrap instead of being cut to "…"
        table.add_column("day", no_wrap=True, min_width=10)
        for col in ("model", "purpose"):
            table.add_column(col, overflow="fold", min_width=8, ratio=1)
        for col in ("calls", "in tok", "out tok", "USD"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in out["rows"]:
            # nano-dollars, the ledger's unit: a query embedding (~1e-7 USD) must not print as 0;
            # "*": some calls' tokens were counted by tiktoken because the provider reported none
            calls = f"{r['calls']}*" if r.get("estimated_calls") else str(r["calls"])
            table.add_row(r["day"], r["model_id"], r["purpose"], calls, str(r["input_tokens"]),
                          str(r["output_tokens"]), f"{r['cost_usd']:.9f}")
        con = Console(highlight=False)
        con.print(table)
        con.print(f"total: {out['total_input_tokens']} in, {out['total_output_tokens']} out, "
                  f"${out['total_cost_usd']:.9f}")
        estimated = sum(r.get("estimated_calls", 0) for r in out["rows"])
        if estimated:
            con.print(f"* {estimated} call(s) estimated with tiktoken (the provider reported no token counts)")
