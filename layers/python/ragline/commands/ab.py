"""``ragline ab report EXPERIMENT``: compare an experiment's variants from the query log."""

from __future__ import annotations

import json

import typer

ab_app = typer.Typer(no_args_is_help=True, help="A/B experiments: sticky variants by user, compared on feedback, evaluation and latency.")


@ab_app.command("report")
def ab_report(
    experiment: str = typer.Argument(..., help="Experiment name (settings.experiments)"),
    limit: int = typer.Option(20000, "--limit", min=1, help="Most recent logged queries to read"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per variant: thumbs-up rate, evaluation scores, latency, with 95% intervals."""
    from rich.console import Console

    from .. import factory
    from ..evaluation.ragas import ApproxScorer
    from ..operations.abtest import report

    app = factory.default()
    configured = {e.name: e for e in app.settings.experiments}
    exp = configured.get(experiment)
    res = report(app.query_log.recent(None, limit), experiment, [v.name for v in exp.variants] if exp else None,
                 scorer=ApproxScorer(app.retriever.embedder))
    if exp is None:
        res["note"] = f"experiment {experiment!r} is not in the current settings; reporting what the log holds"
    if as_json:
        print(json.dumps(res))
        return
    from rich.table import Table

    con = Console(highlight=False)
    t = Table(title=f"experiment {experiment}")
    for col in ("variant", "queries", "rated", "thumbs-up", "95% CI", "faithfulness", "latency mean", "p95"):
        t.add_column(col)
    for v, r in res["variants"].items():
        ev = r.get("evaluation") or {}
        t.add_row(v, str(r["queries"]), str(r["rated"]), str(r["thumbs_up_rate"]), str(r["thumbs_up_ci95"]),
                  str(ev.get("faithfulness")), f"{r['latency_mean_ms']} ms", f"{r['latency_p95_ms']} ms")
    con.print(t)
    if res.get("note"):
        con.print(res["note"])
    con.print(res["conclusion"])


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.add_typer(ab_app, name="ab")
