"""``ragline eval cache``: hit rate and false-hit rate of the semantic cache on labelled
question pairs, through the real ask path and the real local embedder."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @eval_app.command("cache")
    def eval_cache(
        pairs: Path = typer.Option(..., "--pairs", help="JSON lines: text1, text2 and label (1/0) or score (0-5)"),
        split: str | None = typer.Option(None, "--split", help="Only pairs whose 'split' field is this"),
        corpus: Path | None = typer.Option(None, "--corpus", help="A folder of documents or a BEIR corpus.jsonl, ingested first"),
        threshold: float | None = typer.Option(None, "--threshold", min=0.3, max=1.0, help="Override the accept threshold"),
        candidate: float | None = typer.Option(None, "--candidate-threshold", min=0.3, max=1.0),
        plain: bool = typer.Option(False, "--plain", help="Plain cosine >= threshold, no verification (the baseline)"),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate the first N pairs only"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Semantic-cache hit rate (same-meaning pairs) and false-hit rate (different pairs)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ..evaluation.cache_eval import evaluate_cache, load_pairs
        from ..settings import Settings

        err = Console(stderr=True, highlight=False)
        try:
            rows = load_pairs(pairs, split)
        except (FileNotFoundError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2)
        if limit:
            rows = rows[:limit]
        if not rows:
            err.print(f"[red]error:[/red] no labelled pairs in {pairs}" + (f" for split {split!r}" if split else ""))
            raise typer.Exit(2)
        settings = Settings()
        update: dict = {}
        if threshold is not None:
            update["threshold"] = threshold
        if candidate is not None:
            update["candidate_threshold"] = candidate
        if plain:
            update["verify"] = False
        policy = settings.cache.model_copy(update=update)
        if policy.candidate_threshold > policy.threshold:
            policy = policy.model_copy(update={"candidate_threshold": policy.threshold})
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done)

            try:
                res = evaluate_cache(rows, corpus=corpus, policies={"policy": policy}, settings=settings,
                                     progress=progress)["policy"]
            except (FileNotFoundError, RuntimeError) as exc:
                err.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2)
        res.pop("outcomes", None)
        if as_json:
            print(json.dumps(res))
            return
        con = Console(highlight=False)
        for k in ("hit_rate", "false_hit_rate", "n_pos", "n_neg", "retrieval_check", "policy"):
            con.print(f"{k:>16}  {res[k]}")
