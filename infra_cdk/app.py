"""CDK entry point: ``python -m infra_cdk.app`` (what ``cdk.json`` runs).

Reads the ``ragline:*`` context (see config.py / README.md), builds ``RaglineStack`` and
registers cdk-nag's AwsSolutions pack as a validation plugin, so every synth fails on a
finding that is not acknowledged (with a reason) in the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from .config import RaglineConfig
from .stack import RaglineStack


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> tuple[App, RaglineStack]:
    """The app and its one stack; tests pass ``context`` (and an ``outdir``) directly."""
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    config = RaglineConfig.from_context(app.node)
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    env = Environment(account=account, region=region) if account and region else None
    stack = RaglineStack(
        app,
        config.stack_name,
        config=config,
        env=env,
        description=f"Ragline RAG service ({config.stage}): ingestion, retrieval, cache, generation, observability",
    )
    # Also copies each acknowledgment (rule id and reason) into the template's resource
    # Metadata (cdk_nag.rules_to_suppress), so the audit trail ships with the template.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
