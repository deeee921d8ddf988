"""SciFact test: nDCG@10, Recall@10/100, index time and query latency with the default
configuration, through the real pipeline (the same code as `ragline eval retrieval`).

    .venv/bin/python bench/retrieval_scifact.py [--split test]
"""

from __future__ import annotations

import argparse
import sys

from _common import DATA, need, write

from ragline.evaluation.beir import evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    data = need(DATA / "beir_scifact")
    res = evaluate(data, args.split, progress=lambda s, d, t: print(f"{s} {d}/{t}", file=sys.stderr, flush=True))
    res["dataset"] = "beir_scifact"
    res["targets"] = {"ndcg@10": ">= 0.74", "p99_ms": "<= 50"}
    write(f"retrieval_scifact_{args.split}", res)


if __name__ == "__main__":
    main()
