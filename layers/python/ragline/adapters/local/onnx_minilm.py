"""all-MiniLM-L6-v2 through ONNX Runtime, for the query path when it is installed.

Why: the numpy engine (``minilm.py``) spends its ~11-13 ms per query in OpenBLAS products of a
~15 x 384 activation with each layer's weights, which OpenBLAS runs poorly at that shape. ONNX
Runtime runs the same graph, the same float32 weights, in ~6 ms p50 / ~7-8 ms p99 on one thread
here (``bench/cache_hit_latency.py`` prints both engines), with vectors equal to the numpy
engine's within float32 rounding (a test holds them to cosine > 0.9999), so every tuned cache
threshold still holds. No quantisation: int8 would move the vectors and with them the thresholds.

The ``.onnx`` file is exported once, at ``make setup``, from the very weights the numpy engine
loads (``python -m ragline.adapters.local.onnx_minilm --export``, which needs torch and onnx,
both in the local extra). It records a fingerprint of its source model; a file exported from
other weights is ignored with a warning and the numpy engine answers instead. Nothing here runs
in Lambda: the AWS path embeds with Bedrock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .minilm import padded_batches

log = logging.getLogger(__name__)

FINGERPRINT_KEY = "ragline.source_fingerprint"
FILE_NAME = "all-MiniLM-L6-v2.onnx"


def default_path() -> Path:
    """Where setup writes the exported model: ``RAGLINE_ONNX_MODEL`` or the environment's share dir."""
    env = os.environ.get("RAGLINE_ONNX_MODEL")
    return Path(env) if env else Path(sys.prefix) / "share" / "ragline" / FILE_NAME


def fingerprint(model_dir: Path) -> str:
    """A cheap identity of the source model: its config, the weights' size and first and last MiB
    (hashing all 90 MB would add ~0.13 s to every process start)."""
    h = hashlib.sha256((model_dir / "config.json").read_bytes())
    weights = model_dir / "model.safetensors"
    size = weights.stat().st_size
    h.update(str(size).encode())
    with weights.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()


class StaleModel(ValueError):
    """The ONNX file was exported from other weights than the installed model's."""


class OnnxMiniLM:
    def __init__(self, onnx_path: Path, model_dir: Path, max_seq_length: int | None = None):
        import json

        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        # one thread, no spinning: a query is latency-bound and tiny, as in numpy's one_blas_thread
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get(FINGERPRINT_KEY) != fingerprint(model_dir):
            raise StaleModel(f"{onnx_path} was exported from other weights than {model_dir}; "
                             "re-export it with `make setup`")
        st_cfg_path = model_dir / "sentence_bert_config.json"
        st_cfg = json.loads(st_cfg_path.read_text()) if st_cfg_path.exists() else {}
        self.max_len = int(max_seq_length or st_cfg.get("max_seq_length", 256))
        self.hidden = int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_len)
        self.tokenizer.no_padding()

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        for idx, ids, mask in padded_batches(self.tokenizer, texts, batch_size, np.int64):
            out[idx] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def export(model_dir: Path, out: Path) -> Path:
    """Export the model with mean pooling and L2 normalisation (as sentence-transformers' modules
    for this model do) to ``out``, atomically, with the source fingerprint in its metadata."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    import onnx
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    ids = torch.ones(2, 12, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(bert), (ids, torch.ones_like(ids)), str(tmp),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                          "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    model = onnx.load(str(tmp))
    entry = model.metadata_props.add()
    entry.key, entry.value = FINGERPRINT_KEY, fingerprint(model_dir)
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .embedder import model_dir as installed_model_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", action="store_true", help="export the installed model")
    ap.add_argument("--out", type=Path, default=None, help=f"default: {default_path()}")
    ap.add_argument("--if-missing", action="store_true", help="keep a current export")
    args = ap.parse_args(argv)
    if not args.export:
        ap.error("nothing to do: pass --export")
    out = args.out or default_path()
    src = installed_model_dir()
    if args.if_missing and out.exists():
        try:
            OnnxMiniLM(out, src)
            print(f"{out} is current")
            return 0
        except Exception as exc:  # noqa: BLE001 - stale or unreadable: export again
            print(f"{out} is not usable ({exc}); exporting again")
    export(src, out)
    print(f"exported {src} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
