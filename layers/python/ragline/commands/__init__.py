"""Command groups beyond the core ones in :mod:`ragline.cli`. Each module here exposes
``register(app: typer.Typer, eval_app: typer.Typer) -> None`` and is picked up automatically, so capabilities
(cache, usage, stats, drift, index versions, ...) add their commands without editing cli.py."""
