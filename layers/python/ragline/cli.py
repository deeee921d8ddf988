"""``ragline``: the command line for the embedded local stack (and operators' tools)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Ragline: retrieval-augmented answers over your documents.")
docs_app = typer.Typer(no_args_is_help=True, help="List, show and delete documents.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval and answers.")
app.add_typer(docs_app, name="docs")
app.add_typer(eval_app, name="eval")

_SKIP_DIRS = {".git", "__pycache__", ".ragline", ".venv", "node_modules"}


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _groups(groups: str | None) -> list[str]:
    return [g.strip() for g in (groups or "").split(",") if g.strip()]


def _app():
    from . import factory

    return factory.default()


def _settings():
    from .settings import get_settings

    return get_settings()


def _fail(message: str, code: int = 2) -> None:
    _console(stderr=True).print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _principal(tenant: str, user: str, groups: str | None):
    from .models import Principal
    from .settings import get_settings

    # whoever runs the CLI has the store on disk: an administrator of the tenant
    return Principal(tenant=tenant, user=user, groups=frozenset(_groups(groups)),
                     scopes=frozenset({get_settings().admin_scope}))


def _size(f: Path) -> int | None:
    try:
        return f.stat().st_size
    except OSError:
        return None  # the read reports it


def _walk(paths: list[Path]) -> list[tuple[Path, str]]:
    """Files to ingest with their source keys (relative to the argument they came from)."""
    out: list[tuple[Path, str]] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(part in _SKIP_DIRS or part.startswith(".") for part in f.relative_to(p).parts):
                    out.append((f, f"{p.resolve().name}/{f.relative_to(p).as_posix()}"))
        elif p.is_file():
            out.append((p, p.name))
        else:
            _fail(f"no such file or folder: {p}")
    return out


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files or folders (walked recursively)"),
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant that owns the documents"),
    groups: str | None = typer.Option(None, "--groups", "-g", help="Comma-separated groups allowed to see them (default: the whole tenant)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout"),
) -> None:
    """Ingest documents: extract, chunk, embed and index them (idempotent by content)."""
    from .errors import RaglineError
    from .ingest.pipeline import IngestItem

    files = _walk(paths)
    grp = tuple(_groups(groups))
    try:
        from .ingest.events import tenant_of

        # the same rule the ingest Lambda applies to object keys: no "../x", no empty tenant
        parsed = tenant_of(f"tenants/{tenant}/x")
        if parsed is None or parsed[0] != tenant:
            raise ValueError(f"{tenant!r} is not a tenant name (letters, digits and . _ @ : + -, up to 128)")
        ragline = _app()
        for g in grp:
            _principal(tenant, "cli", g)  # validates the names
    except (RaglineError, ValueError) as exc:
        _fail(str(exc))

    def items():
        for f, rel in files:
            key = f"tenants/{tenant}/{rel}"

            def load(f=f, key=key):
                data = f.read_bytes()
                ragline.blobs.put(key, data)
                return data

            yield IngestItem(tenant=tenant, key=key, loader=load, size=_size(f), groups=grp, label=str(f))

    outcomes = []
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), transient=True, disable=not files) as bar:
        task = bar.add_task("ingest", total=len(files))
        try:
            for out in ragline.pipeline.ingest_many(items()):
                outcomes.append(out)
                bar.advance(task)
                if as_json:
                    print(json.dumps(out.as_dict()), flush=True)
        except RaglineError as exc:
            _fail(f"ingestion stopped: {exc.message} ({len(outcomes)} of {len(files)} files done; run again to resume)", 3)
    if not as_json:
        _summary(outcomes)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def _summary(outcomes) -> None:
    """One row per file: its name (the folder too when names repeat), status, chunks and, for
    anything not indexed, the reason wrapped in its column; flags (injection attempts, PII,
    invisible characters) in words. Then the totals per status."""
    from collections import Counter
    from pathlib import PurePath

    from rich.table import Table

    con = _console()
    names = [PurePath(o.path).name for o in outcomes]
    repeated = {n for n, c in Counter(names).items() if c > 1}
    names = [("/".join(PurePath(o.path).parts[-2:]) if n in repeated else n) for n, o in zip(names, outcomes)]
    table = Table(title=f"{len(outcomes)} file(s)", show_lines=False)
    table.add_column("status", no_wrap=True)
    table.add_column("file", no_wrap=True, min_width=min(max((len(n) for n in names), default=4), 60), overflow="ellipsis")
    table.add_column("chunks", justify="right", no_wrap=True)
    table.add_column("reason / notes", overflow="fold", ratio=1, min_width=24)
    colour = {"indexed": "green", "unchanged": "cyan", "failed": "red", "unsupported": "yellow", "no_text": "yellow"}
    for o, name in zip(outcomes, names):
        notes = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted((o.flags or {}).items()))
        reason = "; ".join(x for x in (o.reason, notes) if x)
        table.add_row(f"[{colour.get(o.status, 'white')}]{o.status}[/]", name, str(o.chunks), reason)
    con.print(table)
    counts = Counter(o.status for o in outcomes)
    con.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question"),
    tenant: str = typer.Option(..., "--tenant", "-t"),
    user: str = typer.Option("cli", "--user", "-u"),
    groups: str | None = typer.Option(None, "--groups", "-g"),
    top_k: int | None = typer.Option(None, "--top-k", min=1, max=20),
    no_cache: bool = typer.Option(False, "--no-cache", help="Skip the semantic cache"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ask a question; the answer cites the passages it came from."""
    from .errors import RaglineError

    try:
        ans = _app().ask(_principal(tenant, user, groups), question, top_k=top_k, use_cache=not no_cache)
    except RaglineError as exc:
        _fail(exc.message, 1)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        print(ans.model_dump_json(indent=2))
        return
    con = _console()
    con.print(ans.answer)
    con.print()
    for c in ans.citations:
        page = f" p.{c.page}" if c.page else ""
        con.print(f"[{c.id}] {c.source}{page}  (score {c.score:.3f}, doc {c.doc_id}, chunk {c.chunk_id})")
    con.print(f"\n[dim]{ans.model} · {'cached · ' if ans.cached else ''}{ans.latency_ms:.0f} ms · ${ans.cost_usd:.6f}[/dim]")


@docs_app.command("list")
def docs_list(tenant: str = typer.Option(..., "--tenant", "-t"), groups: str | None = typer.Option(None, "--groups", "-g"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Documents of a tenant with status and reason."""
    recs = _app().list_documents(_principal(tenant, "cli", groups))
    if as_json:
        print(json.dumps([r.public_view() for r in recs], indent=2))
        return
    from rich.table import Table

    t = Table(title=f"{len(recs)} document(s) in {tenant}")
    t.add_column("doc_id", no_wrap=True, min_width=28)  # whole: it is what `docs show/delete` take
    t.add_column("status", no_wrap=True)
    t.add_column("source", overflow="fold", ratio=1, min_width=10)
    t.add_column("chunks", justify="right", no_wrap=True)
    t.add_column("reason", overflow="fold", ratio=1, min_width=8)
    for r in recs:
        t.add_row(r.doc_id, r.status.value, r.source_key, str(len(r.chunk_ids)), r.reason or "")
    _console().print(t)


@docs_app.command("show")
def docs_show(doc_id: str, tenant: str = typer.Option(..., "--tenant", "-t"),
              groups: str | None = typer.Option(None, "--groups", "-g")) -> None:
    """One document's provenance."""
    from .errors import RaglineError

    try:
        rec = _app().get_document(_principal(tenant, "cli", groups), doc_id)
    except RaglineError as exc:
        _fail(exc.message, 1)
    print(json.dumps(rec.model_dump(mode="json"), indent=2))


@docs_app.command("delete")
def docs_delete(doc_id: str, tenant: str = typer.Option(..., "--tenant", "-t"),
                groups: str | None = typer.Option(None, "--groups", "-g")) -> None:
    """Delete a document, its chunks and its cached answers."""
    from .errors import RaglineError

    try:
        out = _app().delete_document(_principal(tenant, "cli", groups), doc_id)
    except RaglineError as exc:
        _fail(exc.message, 1)
    print(json.dumps(out))


@app.command()
def token(tenant: str = typer.Option(..., "--tenant", "-t"), user: str = typer.Option(..., "--user", "-u"),
          groups: str | None = typer.Option(None, "--groups", "-g"),
          admin: bool = typer.Option(False, "--admin", help="Add the admin scope"),
          ttl: int = typer.Option(43200, "--ttl", help="Lifetime in seconds")) -> None:
    """Print a locally signed JWT for the local API."""
    from .auth import mint_token

    s = _settings()
    try:
        print(mint_token(s, tenant, user, _groups(groups), [s.admin_scope] if admin else None, ttl_s=ttl))
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def serve(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8080, "--port")) -> None:
    """Run the local HTTP API: requests become API Gateway v2 events for the query Lambda handler."""
    from .server import serve as run

    run(host, port)


@eval_app.command("retrieval")
def eval_retrieval(
    data: Path = typer.Option(..., "--data", help="A BEIR-format folder"),
    split: str = typer.Option("test", "--split"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """nDCG@10, Recall@10/100, index time and query latency on a BEIR dataset."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .evaluation.beir import evaluate

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            res = evaluate(data, split, progress=progress)
        except FileNotFoundError as exc:
            _fail(str(exc))
    if as_json:
        print(json.dumps(res))
        return
    con = _console()
    for k in ("documents", "queries", "ndcg@10", "recall@10", "recall@100", "index_s", "p50_ms", "p95_ms", "p99_ms"):
        con.print(f"{k:>12}  {res[k]}")


def _register_command_modules() -> None:
    import importlib
    import pkgutil

    from . import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app, eval_app)


_register_command_modules()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from .errors import RaglineError

        msg = exc.message if isinstance(exc, RaglineError) else f"{type(exc).__name__}: {exc}"
        print(f"error: {msg}", file=sys.stderr)
        if os.environ.get("RAGLINE_DEBUG"):
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
