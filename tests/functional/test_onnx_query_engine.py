"""The ONNX Runtime query engine: exported from the installed MiniLM weights, equal to the numpy
engine's vectors, and never trusted when it was exported from other weights (slow: real model)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEXTS = [
    "How long are invoices kept?",
    "What is rule number 17 for invoices in office 3?",
    "Parcels to Norway need a customs form. " * 60,  # past the 256-token truncation
    "数据 résumé naïve — ¿qué?",
    "a",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ragline.adapters.local import onnx_minilm
    from ragline.adapters.local.embedder import model_dir

    return onnx_minilm.export(model_dir(), tmp_path_factory.mktemp("onnx") / "minilm.onnx")


def test_exported_engine_gives_the_numpy_engines_vectors(exported):
    from ragline.adapters.local.embedder import MiniLMEmbedder, model_dir
    from ragline.adapters.local.minilm import NumpyMiniLM
    from ragline.adapters.local.onnx_minilm import OnnxMiniLM

    ref = NumpyMiniLM(model_dir()).encode(TEXTS)
    batched = OnnxMiniLM(exported, model_dir()).encode(TEXTS)  # one padded batch of five lengths
    assert batched.shape == ref.shape == (5, 384)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(batched * ref, axis=1)) > 0.9999
    emb = MiniLMEmbedder(onnx_path=exported)
    for text, want in zip(TEXTS, ref, strict=True):
        assert float(emb.embed_query(text) @ want) > 0.9999
    assert emb.query_engine_used == "onnx"
    # and the vectors still mean something: a paraphrase is nearer than an unrelated sentence
    a, b, c = (emb.embed_query(t) for t in ("How long do we keep invoices?", "Invoice retention period",
                                             "The duck swims in the lake"))
    assert a @ b > a @ c + 0.2


def _model_copy_with_other_config(tmp_path):
    """The installed model's files, but a config.json that differs (as another model's would)."""
    from ragline.adapters.local.embedder import model_dir

    src = model_dir()
    dst = tmp_path / "model"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json":
            (dst / f.name).symlink_to(f)
        elif f.is_dir():
            shutil.copytree(f, dst / f.name)
    (dst / "config.json").write_text((src / "config.json").read_text() + "\n\n")  # same JSON, other bytes
    return dst


def test_an_export_of_other_weights_is_ignored_or_refused(exported, tmp_path, caplog):
    from ragline.adapters.local.embedder import MiniLMEmbedder
    from ragline.errors import DependencyUnavailable

    other = _model_copy_with_other_config(tmp_path)
    with caplog.at_level(logging.WARNING):
        emb = MiniLMEmbedder(other, onnx_path=exported)
        v = emb.embed_query("How long are invoices kept?")
    assert emb.query_engine_used == "numpy" and v.shape == (384,)
    assert "other weights" in caplog.text
    with pytest.raises(DependencyUnavailable, match="other weights"):
        MiniLMEmbedder(other, onnx_path=exported, query_engine="onnx").embed_query("invoices?")


def test_a_missing_or_corrupt_export_falls_back_to_numpy_with_a_reason(tmp_path, caplog):
    from ragline.adapters.local.embedder import MiniLMEmbedder
    from ragline.errors import DependencyUnavailable

    missing = tmp_path / "nothing.onnx"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    for path, why in ((missing, "does not exist"), (corrupt, "cannot be loaded")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            emb = MiniLMEmbedder(onnx_path=path)
            emb.embed_query("invoices?")
        assert emb.query_engine_used == "numpy"
        assert why in caplog.text
        with pytest.raises(DependencyUnavailable, match=why):
            MiniLMEmbedder(onnx_path=path, query_engine="onnx").embed_query("invoices?")
    assert MiniLMEmbedder(query_engine="numpy").embed_query("x").shape == (384,)
    with pytest.raises(ValueError, match="auto, onnx or numpy"):
        MiniLMEmbedder(query_engine="cuda")


def test_setup_exported_the_default_engine(monkeypatch):
    """`make setup` writes the export where the default embedder looks; the app then uses it."""
    from ragline.adapters.local import onnx_minilm
    from ragline.adapters.local.embedder import MiniLMEmbedder

    monkeypatch.delenv("RAGLINE_ONNX_MODEL", raising=False)
    monkeypatch.delenv("RAGLINE_QUERY_ENGINE", raising=False)
    assert onnx_minilm.default_path().exists(), "run `make setup`: it exports the ONNX query model"
    emb = MiniLMEmbedder()
    emb.embed_query("How long are invoices kept?")
    assert emb.query_engine_used == "onnx"
    # the exporter's --if-missing keeps a current file (setup runs it on every install)
    before = onnx_minilm.default_path().stat().st_mtime_ns
    assert onnx_minilm.main(["--export", "--if-missing"]) == 0
    assert onnx_minilm.default_path().stat().st_mtime_ns == before
