"""The query and cache Lambdas' cold start with backend=aws loads no code they never use and
touches no network (technique: a fresh interpreter per handler, the child process of
bench/cold_start.py, with the socket layer patched to refuse and record any attempt)."""

from __future__ import annotations

import importlib.util

import pytest
from ragline_testing import REPO


@pytest.fixture(scope="module")
def cold_start():
    spec = importlib.util.spec_from_file_location("ragline_bench_cold_start", REPO / "bench" / "cold_start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("handler", ["query", "cache"])
def test_cold_start_is_offline_and_lean(cold_start, handler):
    result = cold_start.run_once(handler, cold_start.child_env())  # the child asserts no network attempt
    assert result["network_attempts"] == 0
    # tracing is off: no X-Ray SDK; these Lambdas never chunk: no tokenizer; no OpenSearch
    # client until the first search; no local model stack
    unwanted = {"aws_xray_sdk", "tiktoken", "opensearchpy", "torch", "sentence_transformers"}
    assert unwanted.isdisjoint(result["heavy_modules"]), result["heavy_modules"]


def test_a_broken_local_model_is_an_unavailable_dependency_not_a_crash(tmp_path):
    from ragline.adapters.local.embedder import MiniLMEmbedder
    from ragline.errors import DependencyUnavailable

    (tmp_path / "config.json").write_text("{}")  # a half-installed model folder
    for engine in ("numpy", "torch"):
        with pytest.raises(DependencyUnavailable, match="cannot be loaded"):
            MiniLMEmbedder(tmp_path, engine=engine).embed_query("invoices?")
