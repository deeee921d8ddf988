"""``ragline stats``: the operating figures from the local store."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @app.command("stats")
    def stats(
        tenant: str | None = typer.Option(None, "--tenant", "-t", help="One tenant (default: all)"),
        days: int = typer.Option(7, "--days", min=1, max=366),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Latency p50/p95/p99, empty-result, cache-hit and feedback rates, documents by status,
        tokens and cost per tenant and day, evaluation scores, drift."""
        from rich.console import Console
        from rich.table import Table

        from .. import factory
        from ..operations.figures import figures

        res = figures(factory.default(), tenant, days=days)
        if as_json:
            print(json.dumps(res, default=str))
            return
        con = Console(highlight=False)
        q = res["queries"]
        con.print(f"[bold]queries[/] ({res['tenant']}, last {days} days): {q.get('queries', 0)}")
        for k in ("p50_ms", "p95_ms", "p99_ms", "empty_result_rate", "idk_rate", "cache_hit_rate", "feedback_rate",
                  "positive_feedback_rate"):
            if k in q:
                con.print(f"  {k:>24}  {q[k]}")
        t = Table(title="documents by status")
        t.add_column("tenant")
        t.add_column("status")
        for ten, counts in res["documents"].items():
            t.add_row(ten, "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-")
        con.print(t)
        c = Table(title="tokens and cost per tenant and day")
        c.add_column("tenant", overflow="fold", min_width=6)
        c.add_column("day", no_wrap=True, min_width=10)
        for col in ("queries", "in tok", "out tok", "USD", "USD/query"):  # numbers are never cut
            c.add_column(col, justify="right", no_wrap=True)
        for r in res["cost"]:
            c.add_row(r["tenant"], r["day"], str(r["queries"]), str(r["input_tokens"]), str(r["output_tokens"]),
                      f"{r['cost_usd']:.6f}", "" if r["cost_per_query_usd"] is None else f"{r['cost_per_query_usd']:.8f}")
        con.print(c)
        ev = res["evaluation"]
        con.print(f"[bold]evaluation[/] ({ev.get('sampled', 0)} sampled answers): "
                  + "  ".join(f"{k} {ev.get(k)}" for k in ("faithfulness", "answer_relevancy", "context_precision")))
        if ev.get("method"):
            con.print(f"  [dim]{ev['method']}[/dim]")
        for ten, d in res["drift"].items():
            con.print(f"[bold]drift[/] {ten}: {d['message']}")
