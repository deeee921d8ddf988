"""Shared, synthesized-once Ragline stacks for the infra tests.

Every app is built exactly as ``cdk synth`` builds it (``infra_cdk.app.build_app`` with the
feature flags from ``cdk.json``) plus ``ragline:skipLayerBundling=true``, so nothing is
downloaded. Synthesizing costs seconds, so each configuration is synthesized once per session.
"""

from __future__ import annotations

import pytest
from _infra_support import PRODUCTION, SERVERLESS, Synth, synthesize


@pytest.fixture(scope="session")
def default_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def serverless_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("cdk-serverless"), SERVERLESS)


@pytest.fixture(scope="session")
def prod_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("cdk-prod"), PRODUCTION)


@pytest.fixture(scope="session", params=["default", "serverless", "prod"])
def any_synth(request: pytest.FixtureRequest) -> Synth:
    return request.getfixturevalue(f"{request.param}_synth")
