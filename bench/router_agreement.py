"""Agreement of the tier router with hand labels -> bench/results/router_agreement.json.

tests/data/router_labels.jsonl holds 76 questions labelled small/large by hand: the first 64
were written with the rule list in mind, the last 12 afterwards as a blind check (the rules
were not changed after seeing them). Usage: ``python bench/router_agreement.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "python"))
LABELS = ROOT / "tests" / "data" / "router_labels.jsonl"
OUT = ROOT / "bench" / "results" / "router_agreement.json"
BLIND_FROM = 64


def main() -> None:
    from ragline.generation.router import route

    rows = [json.loads(line) for line in LABELS.open(encoding="utf-8") if line.strip()]
    t0 = time.perf_counter()
    routed = [route(r["question"]) for r in rows]
    per_q_us = (time.perf_counter() - t0) / len(rows) * 1e6
    agree = [r["tier"] == x.tier for r, x in zip(rows, routed)]
    confusion = {f"{a}->{b}": 0 for a in ("small", "large") for b in ("small", "large")}
    for r, x in zip(rows, routed):
        confusion[f"{r['tier']}->{x.tier}"] += 1
    out = {
        "n": len(rows), "agreement": round(sum(agree) / len(rows), 4),
        "agreement_first_64": round(sum(agree[:BLIND_FROM]) / BLIND_FROM, 4),
        "agreement_blind_12": round(sum(agree[BLIND_FROM:]) / max(1, len(rows) - BLIND_FROM), 4),
        "confusion_label_to_route": confusion, "mean_route_us": round(per_q_us, 1),
        "disagreements": [{"question": r["question"], "label": r["tier"], "route": x.label()}
                          for r, x, ok in zip(rows, routed, agree) if not ok],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("n", "agreement", "agreement_first_64", "agreement_blind_12")}))


if __name__ == "__main__":
    main()
