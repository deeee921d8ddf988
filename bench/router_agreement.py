"""Agreement of the tier router with hand labels -> bench/results/router_agreement.json.

Two hand-labelled files (small/large):

* ``tests/data/router_labels.jsonl`` (130 questions), the development set: the first 64 were
  written with the first rule list in mind; 65-76 were a blind check of it (58% agreement);
  77-106 a second blind check (the old rules: 70%); 107-130 a third (75%). Each time the rules
  then learnt from the misses (open-ended requests, either-or choices, advice; then summaries,
  checklists, lessons, priorities, "differ in"), so none of these is blind any more.
* ``tests/data/router_labels_blind.jsonl`` (24 questions), written after the last change and
  not used to change the rules (by the rules' author, so it carries their cues);
* ``tests/data/router_labels_blind2.jsonl`` (60 questions), written on 2026-12-07 by a helper
  agent that never saw the router or its labels, asked for varied phrasings without the usual
  cue words: the more honest blind figure. The rules then learnt from its misses (hypotheticals,
  consequences, synthesis across documents, premises applied to a case, preambles);
* ``tests/data/router_labels_blind3.jsonl`` (60 questions), written on 2026-12-07 by another
  helper agent, the same brief, after those rules were written and measured before anyone read
  it (82%); the rules then learnt from it too;
* ``tests/data/router_labels_blind4.jsonl`` (60 questions), written by a third helper after
  that, not used to change the rules: the current blind figure.

Usage: ``python bench/router_agreement.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "python"))
DEV = ROOT / "tests" / "data" / "router_labels.jsonl"
BLIND = ROOT / "tests" / "data" / "router_labels_blind.jsonl"
BLIND2 = ROOT / "tests" / "data" / "router_labels_blind2.jsonl"
BLIND3 = ROOT / "tests" / "data" / "router_labels_blind3.jsonl"
BLIND4 = ROOT / "tests" / "data" / "router_labels_blind4.jsonl"
OUT = ROOT / "bench" / "results" / "router_agreement.json"


def _score(path: Path) -> dict:
    from ragline.generation.router import route

    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    routed = [route(r["question"]) for r in rows]
    agree = [r["tier"] == x.tier for r, x in zip(rows, routed)]
    confusion = {f"{a}->{b}": 0 for a in ("small", "large") for b in ("small", "large")}
    for r, x in zip(rows, routed):
        confusion[f"{r['tier']}->{x.tier}"] += 1
    return {
        "file": str(path.relative_to(ROOT)), "n": len(rows), "agreement": round(sum(agree) / len(rows), 4),
        "confusion_label_to_route": confusion,
        "disagreements": [{"question": r["question"], "label": r["tier"], "route": x.label()}
                          for r, x, ok in zip(rows, routed, agree) if not ok],
    }


def main() -> None:
    from ragline.generation.router import route

    route("warm-up: loads the tokenizer once")
    t0 = time.perf_counter()
    sets = {"development": DEV, "blind": BLIND, "blind_helper": BLIND2, "blind_helper_2": BLIND3,
            "blind_helper_3": BLIND4}
    out = {name: _score(path) for name, path in sets.items()}
    per_q_us = (time.perf_counter() - t0) / sum(v["n"] for v in out.values()) * 1e6
    out["mean_route_us"] = round(per_q_us, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({name: [out[name]["n"], out[name]["agreement"]] for name in sets}
                     | {"mean_route_us": out["mean_route_us"]}))


if __name__ == "__main__":
    main()
