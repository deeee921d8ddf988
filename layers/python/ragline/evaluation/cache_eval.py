"""Semantic-cache evaluation through the real ask path (``ragline eval cache``).

For each labelled question pair, on an empty cache: ask ``text1`` (a miss whose answer is
stored), then ask ``text2`` and record whether the cache answered it. Same-meaning pairs give
the hit rate, different-meaning pairs the false-hit rate. Pairs come as JSON lines with
``text1``, ``text2`` and either ``label`` (1 same, 0 different) or ``score`` (0-5: >= 4.5 same,
< 3.0 different, anything between is ignored, as the STS-B convention in bench/README.md).

With a corpus (a folder of documents, or a BEIR ``corpus.jsonl``) the corpus is ingested first,
so the retrieval-aware check compares real passages. Without one, a single neutral placeholder
document is ingested so that every answer has a context and is stored; every question then
retrieves the same passage, so the passage check is neutral and the figures measure the
embedding and the lexical verification alone (``retrieval_check: false`` in the output).

Several policies can be measured on one ingested index (the benchmark does).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..ingest.pipeline import IngestItem
from ..models import Principal
from ..settings import CacheSettings, Settings

TENANT = "cache-eval"
PLACEHOLDER = (
    "# Placeholder\n\nThis document stands in for a corpus during a cache evaluation without one. "
    "It answers no question; it only gives every question a passage so that answers are stored."
)


def load_pairs(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Labelled pairs (label 1/0) from a JSON-lines file; unlabelled middle scores dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file at {path}")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                t1, t2 = str(row["text1"]).strip(), str(row["text2"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: each line needs text1 and text2 ({exc})") from None
            if split and row.get("split") not in (None, split):
                continue
            if "label" in row:
                label = int(row["label"])
                if label not in (0, 1):
                    raise ValueError(f"{path}:{n}: label must be 0 or 1")
            elif "score" in row:
                score = float(row["score"])
                if score >= 4.5:
                    label = 1
                elif score < 3.0:
                    label = 0
                else:
                    continue
            else:
                raise ValueError(f"{path}:{n}: each line needs a label (0/1) or a score (0-5)")
            if t1 and t2:
                out.append({"text1": t1, "text2": t2, "label": label, "id": row.get("id", n)})
    return out


def _corpus_items(corpus: Path, tenant: str) -> Iterator[IngestItem]:
    from .beir import corpus_items

    corpus = Path(corpus)
    if corpus.is_file() and corpus.suffix == ".jsonl":
        yield from corpus_items(corpus, tenant)
    elif corpus.is_dir() and (corpus / "corpus.jsonl").is_file():
        yield from corpus_items(corpus / "corpus.jsonl", tenant)
    elif corpus.is_dir():
        for f in sorted(corpus.rglob("*")):
            if f.is_file() and not any(p.startswith(".") for p in f.relative_to(corpus).parts):
                yield IngestItem(tenant=tenant, key=f"tenants/{tenant}/{f.relative_to(corpus).as_posix()}",
                                 data=f.read_bytes())
    else:
        raise FileNotFoundError(f"no corpus at {corpus} (a folder of documents or a BEIR corpus.jsonl)")


def evaluate_cache(
    pairs: Sequence[dict[str, Any]],
    *,
    corpus: Path | None = None,
    policies: dict[str, CacheSettings] | None = None,
    settings: Settings | None = None,
    app=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure each policy (name -> CacheSettings) on ``pairs``; returns name -> figures."""
    from .. import factory
    from ..cache.semantic import SemanticCache

    policies = policies or {"default": (settings or Settings()).cache}
    with tempfile.TemporaryDirectory(prefix="ragline-cache-eval-") as tmp:
        if app is None:
            base = settings or Settings()
            app = factory.build(base.model_copy(update={"home": Path(tmp) / "home"}))
        t0 = time.perf_counter()
        items = list(_corpus_items(corpus, TENANT)) if corpus else [
            IngestItem(tenant=TENANT, key=f"tenants/{TENANT}/placeholder.md", data=PLACEHOLDER.encode())]
        for done, out in enumerate(app.pipeline.ingest_many(iter(items)), start=1):
            if progress:
                progress("ingest", done, len(items))
            if out.status == "failed":
                raise RuntimeError(f"corpus document {out.path} failed to ingest: {out.reason}")
        ingest_s = time.perf_counter() - t0
        principal = Principal(tenant=TENANT, user="cache-eval")
        results: dict[str, dict[str, Any]] = {}
        store = app.cache.store if app.cache is not None else None
        if store is None:
            raise RuntimeError("the semantic cache is disabled (RAGLINE_CACHE_ENABLED=false)")
        for name, policy in policies.items():
            # no clock margin: the evaluation asks right after ingesting, on one clock, and
            # measures the policy, not the stale-write guard (which a margin would turn off here)
            app.cache = SemanticCache(store, app.registry, settings=policy, clock_margin_s=0.0)
            hits = {0: 0, 1: 0}
            totals = {0: 0, 1: 0}
            reasons: dict[str, int] = {}
            examples: list[dict[str, Any]] = []
            outcomes: list[dict[str, Any]] = []
            for i, pair in enumerate(pairs):
                store.clear(TENANT)
                app.ask(principal, pair["text1"])
                ans = app.ask(principal, pair["text2"])
                totals[pair["label"]] += 1
                if ans.cached:
                    hits[pair["label"]] += 1
                    if pair["label"] == 0 and len(examples) < 20:
                        examples.append({"text1": pair["text1"], "text2": pair["text2"], "note": ans.notes[-1]})
                    key = "hit:" + ans.notes[-1].split("; ", 1)[-1].split(" ")[0]
                else:
                    key = "miss"
                reasons[key] = reasons.get(key, 0) + 1
                outcomes.append({"text1": pair["text1"], "text2": pair["text2"], "label": pair["label"],
                                 "cached": ans.cached})
                if progress:
                    progress(name, i + 1, len(pairs))
            store.clear(TENANT)
            results[name] = {
                "hit_rate": round(hits[1] / totals[1], 4) if totals[1] else None,
                "false_hit_rate": round(hits[0] / totals[0], 4) if totals[0] else None,
                "n_pos": totals[1], "n_neg": totals[0], "hits_pos": hits[1], "hits_neg": hits[0],
                "retrieval_check": corpus is not None,
                "policy": policy.model_dump(include={"threshold", "candidate_threshold", "min_content_overlap",
                                                     "min_passage_overlap", "verify"}),
                "ingest_s": round(ingest_s, 1), "false_hit_examples": examples, "outcomes": outcomes,
            }
        return results
