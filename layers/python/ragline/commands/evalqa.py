"""``ragline eval qa``: question answering quality against gold answers (support@k, token F1,
RAGAS-style scores)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @eval_app.command("qa")
    def eval_qa(
        data: Path = typer.Option(..., "--data", help="JSON lines: question, answers[{text, gold_paragraph}]"),
        corpus: Path | None = typer.Option(None, "--corpus", help="Folder or BEIR corpus.jsonl to ingest first (into a throwaway store)"),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Deterministic subset of N questions"),
        tenant: str = typer.Option("eval", "--tenant", "-t", help="Tenant to search (without --corpus: your local store)"),
        max_passages: int | None = typer.Option(None, "--max-passages", min=1, max=50,
                                                help="Passages packed per question (a tier's max_passages)"),
        context_budget: int | None = typer.Option(None, "--context-budget", min=100,
                                                  help="Context token budget (a tier's context_token_budget)"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """support@1/3/5, answer token F1 and RAGAS-style scores on a QA set; --max-passages and
        --context-budget set the context packing, so runs can compare them."""
        from rich.console import Console

        from ..evaluation.qa import evaluate_qa

        err = Console(stderr=True, highlight=False)
        try:
            with err.status("evaluating…"):
                res = evaluate_qa(data, corpus, limit=limit, tenant=tenant, max_passages=max_passages,
                                  context_budget=context_budget)
        except (FileNotFoundError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2)
        if as_json:
            print(json.dumps(res))
            return
        con = Console(highlight=False)
        for k in ("questions", "support@1", "support@3", "support@5", "answer_f1", "answerer", "p50_ms", "p95_ms"):
            con.print(f"{k:>18}  {res[k]}")
        ctx = res["context"]
        con.print(f"{'context':>18}  {ctx['mean_passages']} passages on average "
                  f"(at most {ctx['max_passages']}, budget {ctx['token_budget']} tokens)")
        for k, v in res["ragas"].items():
            if not k.endswith("_n"):
                con.print(f"{k:>18}  {v}")
