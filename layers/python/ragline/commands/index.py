"""``ragline index``: blue-green index versions (versions, build, validate, promote, rollback,
delete, snapshot, restore) on the configured backend: index files behind an alias file locally,
OpenSearch version indexes behind the read alias on AWS (RAGLINE_BACKEND=aws)."""

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
def versions(as_json: bool = typer.Option(False, "--json"),
             index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """Index versions, which one is live and which is the rollback target."""
    from ..operations.index_versions import describe

    rows = _run(lambda: describe(_app(), index_of=index_of))
    if as_json:
        print(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="index versions")
    for col in ("name", "alias"):
        t.add_column(col, no_wrap=True)
    for col in ("chunks", "docs"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("built", no_wrap=True)
    for col in ("model", "chunker"):  # long ids wrap instead of being cut to an ellipsis
        t.add_column(col, overflow="fold", min_width=8, ratio=1)
    t.add_column("bytes", justify="right", no_wrap=True)
    for r in rows:
        alias = "live" if r["live"] else "previous" if r["previous"] else ""
        built = time.strftime("%m-%d %H:%M", time.localtime(r["built_at"])) if r["built_at"] else ""
        t.add_row(r["name"], alias, str(r["chunks"] or ""), str(r["documents"] or ""), built,
                  r["embedding_model"] or "", r["chunker"] or "", "" if r["bytes"] is None else str(r["bytes"]))
    Console().print(t)


@index_app.command("build")
def build(name: str | None = typer.Option(None, "--name", help="Version name (default v001, v002, ...)"),
          as_json: bool = typer.Option(False, "--json"),
          index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """Re-embed every current document into a new version (the live one keeps serving). The
    shared index holds every tenant without an index of its own; --index-of builds that tenant's."""
    from ..operations.index_versions import build as run

    _print(_run(lambda: run(_app(), name, index_of=index_of)), as_json)


@index_app.command("validate")
def validate(candidate: str = typer.Argument(..., help="The version to check"),
             baseline: str | None = typer.Option(None, "--baseline", help="Compare with (default: the live version)"),
             data: Path | None = typer.Option(None, "--data", help="A BEIR folder whose corpus is ingested under --tenant"),
             tenant: str = typer.Option("eval", "--tenant", "-t"),
             queries: int = typer.Option(200, "--queries", min=1, help="Recent logged questions to replay (without --data)"),
             qa: Path | None = typer.Option(None, "--qa", help="JSON lines of question + answers, asked as --tenant: "
                                            "support@1/3/5 and answer token F1 on both versions"),
             qa_limit: int | None = typer.Option(None, "--qa-limit", min=1, help="Deterministic subset of N questions"),
             as_json: bool = typer.Option(False, "--json"),
             index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """Retrieval on both versions side by side (BEIR nDCG, or overlap on logged questions), and
    with --qa the QA evaluation of both and the deltas."""
    from ..operations.index_versions import validate as run

    _print(_run(lambda: run(_app(), candidate, baseline=baseline, data=data, tenant=tenant, queries=queries,
                            qa=qa, qa_limit=qa_limit, index_of=index_of)), as_json)


@index_app.command("promote")
def promote(name: str, force: bool = typer.Option(False, "--force", help="Promote even if documents changed since the build"),
            as_json: bool = typer.Option(False, "--json"),
            index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """Switch the read alias to NAME (atomically)."""
    from ..operations.index_versions import promote as run

    _print(_run(lambda: run(_app(), name, force=force, index_of=index_of)), as_json)


@index_app.command("rollback")
def rollback(as_json: bool = typer.Option(False, "--json"),
             index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """Switch the alias back to the previous version."""
    from ..operations.index_versions import rollback as run

    _print(_run(lambda: run(_app(), index_of=index_of)), as_json)


@index_app.command("delete")
def delete(name: str = typer.Argument(..., help="A version that is neither live nor the rollback target"),
           as_json: bool = typer.Option(False, "--json"),
           index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """Delete an old version (its index and manifest)."""
    from ..operations.index_versions import delete as run

    _print(_run(lambda: run(_app(), name, index_of=index_of)), as_json)


@index_app.command("snapshot")
def snapshot(name: str | None = typer.Argument(None, help="Version (default: the live one)"),
             to: Path | None = typer.Option(None, "--to", help="Snapshot file (local; default under RAGLINE_HOME/snapshots)"),
             repository: str | None = typer.Option(None, "--repository", help="OpenSearch snapshot repository (AWS; "
                                                   "default RAGLINE_INDEX_SNAPSHOT_REPOSITORY)"),
             index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """A consistent copy of a version: SQLite online backup locally, an OpenSearch snapshot to S3 on AWS."""
    from ..operations.index_versions import snapshot as run

    out = _run(lambda: run(_app(), name, to=to, repository=repository, index_of=index_of))
    print(json.dumps(out) if isinstance(out, dict) else out)


@index_app.command("restore")
def restore(snapshot_ref: str = typer.Argument(..., metavar="SNAPSHOT",
                                               help="A snapshot file (local) or snapshot id (AWS)"),
            name: str | None = typer.Option(None, "--name", help="New version name"),
            repository: str | None = typer.Option(None, "--repository", help="OpenSearch snapshot repository (AWS)"),
            source: str | None = typer.Option(None, "--source", help="The snapshotted version (AWS; default from the id)"),
            index_of: str | None = typer.Option(None, "--index-of", metavar="TENANT", help="A tenant with an index of its own: its versions")) -> None:
    """A new version from a snapshot (promote it to serve it)."""
    from ..operations.index_versions import restore as run

    print(_run(lambda: run(_app(), snapshot_ref, name, repository=repository, source=source, index_of=index_of)))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
