"""``ragline index``: blue-green index versions on the local stack (versions, build, validate,
promote, rollback, snapshot, restore)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

index_app = typer.Typer(no_args_is_help=True, help="Blue-green index versions: build beside the live one, validate, switch, roll back.")


def _app():
    from .. import factory

    return factory.default()


def _run(fn):
    """Run an operation; a domain error is a clear message and exit 1, never a traceback."""
    from rich.console import Console

    from ..errors import RaglineError

    try:
        return fn()
    except RaglineError as exc:
        Console(stderr=True, highlight=False).print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1)
    except FileNotFoundError as exc:
        Console(stderr=True, highlight=False).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)


def _print(data, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=str))
        return
    from rich.console import Console

    con = Console(highlight=False)
    for k, v in data.items():
        con.print(f"{k:>24}  {v}")


@index_app.command("versions")
def versions(as_json: bool = typer.Option(False, "--json")) -> None:
    """Index versions, which one is live and which is the rollback target."""
    from ..operations.index_versions import versions_of

    rows = _run(lambda: versions_of(_app())[0].describe())
    if as_json:
        print(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="index versions")
    for col in ("name", "alias", "chunks", "documents", "built", "embedding_model", "chunker", "bytes"):
        t.add_column(col)
    for r in rows:
        alias = "live" if r["live"] else "previous" if r["previous"] else ""
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["built_at"])) if r["built_at"] else ""
        t.add_row(r["name"], alias, str(r["chunks"] or ""), str(r["documents"] or ""), built,
                  r["embedding_model"] or "", r["chunker"] or "", str(r["bytes"]))
    Console().print(t)


@index_app.command("build")
def build(name: str | None = typer.Option(None, "--name", help="Version name (default v001, v002, ...)"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Re-embed every current document into a new version (the live one keeps serving)."""
    from ..operations.index_versions import build as run

    _print(_run(lambda: run(_app())), as_json)


@index_app.command("validate")
def validate(candidate: str = typer.Argument(..., help="The version to check"),
             baseline: str | None = typer.Option(None, "--baseline", help="Compare with (default: the live version)"),
             data: Path | None = typer.Option(None, "--data", help="A BEIR folder whose corpus is ingested under --tenant"),
             tenant: str = typer.Option("eval", "--tenant", "-t"),
             queries: int = typer.Option(200, "--queries", min=1, help="Recent logged questions to replay (without --data)"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Retrieval on both versions side by side (BEIR nDCG, or overlap on logged questions)."""
    from ..operations.index_versions import validate as run

    _print(_run(lambda: run(_app(), candidate, baseline=baseline, data=data, tenant=tenant, queries=queries)), as_json)


@index_app.command("promote")
def promote(name: str, force: bool = typer.Option(False, "--force", help="Promote even if documents changed since the build"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Switch the read alias to NAME (atomically)."""
    from ..operations.index_versions import promote as run

    _print(_run(lambda: run(_app(), name, force=force)), as_json)


@index_app.command("rollback")
def rollback(as_json: bool = typer.Option(False, "--json")) -> None:
    """Switch the alias back to the previous version."""
    from ..operations.index_versions import rollback as run

    _print(_run(lambda: run(_app())), as_json)


@index_app.command("snapshot")
def snapshot(name: str | None = typer.Argument(None, help="Version (default: the live one)"),
             to: Path | None = typer.Option(None, "--to", help="Snapshot file (default under RAGLINE_HOME/snapshots)")) -> None:
    """A consistent copy of a version (SQLite online backup)."""
    from ..operations.index_versions import versions_of

    def go():
        v, _ = versions_of(_app())
        src = name or v.live()
        dest = to or v.home / "snapshots" / f"{src}-{time.strftime('%Y%m%dT%H%M%S')}.db"
        return v.snapshot(src, dest)

    print(_run(go))


@index_app.command("restore")
def restore(snapshot_file: Path = typer.Argument(..., help="A snapshot file"),
            name: str | None = typer.Option(None, "--name", help="New version name")) -> None:
    """A new version from a snapshot (promote it to serve it)."""
    from ..operations.index_versions import versions_of

    print(_run(lambda: versions_of(_app())[0].restore(snapshot_file, name)))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
