"""Verifier probes that were measured and rejected -> bench/results/cache_verifier_probes.json.

The semantic cache's default policy (bench/cache_policy.py) misses the issue's question-set
target. This script measures two more signals a verifier could use, on the same pairs, so the
"rejected" rows of bench/README.md can be re-checked:

* contextual token alignment (BERTScore-style): each content word of a question is matched to
  its closest MiniLM token state in the other question; a pair passes when its *worst* match is
  >= w. It replaces or vetoes the content-overlap check in a simulated policy;
* answer-sentence agreement: the sentences of both questions' retrieved passages are embedded,
  and the pair agrees when each question's best-matching sentence is the same one;
* answer fit: the cached question's answer (the extractive answer over its top 5 passages) is
  embedded, and the new question should fit it about as well as the cached question does
  (cos(q1, answer) - cos(q2, answer) small); one dot product at lookup if it worked.

Pairs: STS-B train/test (no corpus) and the COVID-QA question pairs of bench/cache_policy.py with
the COVID-QA corpus ingested through the real pipeline. The simulated policies apply the real
``verify.conflicts`` and ``verify.content_overlap``; the passage overlap uses each question's
own retrieval (top 5). Takes ~8 minutes on 2 cores. Usage: ``python bench/cache_verifier_probes.py``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "python"))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "results" / "cache_verifier_probes.json"


def _token_states(model, text: str) -> list[tuple[str, np.ndarray]]:
    """(word, unit vector) for each word: the mean of its word pieces' last-layer states."""
    from ragline.adapters.local.minilm import _gelu, _layer_norm

    enc = model.tokenizer.encode(text)
    ids = np.array([enc.ids])
    b, n = ids.shape
    h = model.word[ids] + model.pos[:n][None] + model.tok_type
    h = _layer_norm(h, *model.emb_ln, model.eps)
    d = model.hidden // model.heads
    scale = np.float32(1 / np.sqrt(d))
    for qkv_w, qkv_b, o_w, o_b, ln1, i_w, i_b, f_w, f_b, ln2 in model.layers:
        q, k, v = (h @ qkv_w + qkv_b).reshape(b, n, 3, model.heads, d).transpose(2, 0, 3, 1, 4)
        att = q @ k.transpose(0, 1, 3, 2) * scale
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, model.hidden)
        h = _layer_norm(ctx @ o_w + o_b + h, *ln1, model.eps)
        h = _layer_norm(_gelu(h @ i_w + i_b) @ f_w + f_b + h, *ln2, model.eps)
    words: dict[int, list[int]] = defaultdict(list)
    for i, wid in enumerate(enc.word_ids):
        if wid is not None:
            words[wid].append(i)
    out = []
    for idx in words.values():
        vec = h[0][idx].mean(0)
        out.append((text[enc.offsets[idx[0]][0]:enc.offsets[idx[-1]][1]], vec / np.linalg.norm(vec)))
    return out


def _worst_alignment(model, t1: str, t2: str) -> float:
    from ragline.cache import verify

    def content(ws):
        return [v for w, v in ws if w.lower() not in verify.STOP and w.lower() not in verify.NEGATIONS
                and re.match(r"\w", w) and len(w) > 1]

    a, b = content(_token_states(model, t1)), content(_token_states(model, t2))
    if not a or not b:
        return 1.0
    sim = np.stack(a) @ np.stack(b).T
    return float(min(sim.max(1).min(), sim.max(0).min()))


def _rate(rows, fn):
    pos = [r for r in rows if r["label"] == 1]
    neg = [r for r in rows if r["label"] == 0]
    return {"hit_rate": round(sum(map(fn, pos)) / len(pos), 4), "false_hit_rate": round(sum(map(fn, neg)) / len(neg), 4),
            "hits_pos": sum(map(fn, pos)), "hits_neg": sum(map(fn, neg)), "n_pos": len(pos), "n_neg": len(neg)}


def _passages(r):
    if not r.get("h1"):
        return None
    return len(set(r["h1"]) & set(r["h2"])) / len(set(r["h1"]))


_QUESTION = re.compile(r"^\s*(what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|should)\b",
                       re.IGNORECASE)


def _is_question(text: str) -> bool:
    return text.strip().endswith("?") or bool(_QUESTION.match(text))


def _policy(cand=0.84, acc=0.89, mco=0.65, mpo=0.6, worst_min=None, veto_worst=None, veto_below=0.92,
            question_overlap=None, question_passages=None):
    """The default policy's decision on precomputed features; ``worst_min`` lets a pair through
    the band on token alignment instead of content overlap, ``veto_worst`` rejects pairs below
    ``veto_below`` whose worst alignment is lower; ``question_overlap`` lets two questions through
    the band on a lower content overlap when their passages agree (>= ``question_passages``)."""
    def decide(r):
        if r["cos"] < cand or r["conflict"]:
            return False
        if veto_worst is not None and r["cos"] < veto_below and r["worst"] < veto_worst:
            return False
        if r["cos"] >= acc:
            return True
        p = _passages(r)
        if (question_overlap is not None and r["overlap"] < mco and r["overlap"] >= question_overlap
                and _is_question(r["text1"]) and _is_question(r["text2"])):
            return p is not None and p >= question_passages
        if r["overlap"] < mco and not (worst_min is not None and r["worst"] >= worst_min):
            return False
        return p is None or p >= mpo
    return decide


def main() -> None:
    from cache_policy import COVID_CORPUS, STSB, covid_pairs

    from ragline import factory
    from ragline.adapters.local.embedder import MiniLMEmbedder
    from ragline.cache import verify
    from ragline.evaluation.cache_eval import TENANT, _corpus_items, load_pairs
    from ragline.generation.extractive import ExtractiveAnswerer, split_sentences
    from ragline.models import TenantScope
    from ragline.settings import Settings

    for need in (STSB, COVID_CORPUS):
        if not need.exists():
            raise SystemExit(f"missing evaluation data: {need} (../shared/data)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragline-probes-") as tmp:
        app = factory.build(Settings(home=Path(tmp)))
        ingested = sum(1 for _ in app.pipeline.ingest_many(iter(list(_corpus_items(COVID_CORPUS, TENANT)))))
        scope = TenantScope(TENANT)
        embedder = MiniLMEmbedder()
        model = embedder._numpy()
        rows = []
        for p in covid_pairs():
            rows.append({**p, "set": "covid"})
        for split in ("train", "test"):
            for p in load_pairs(STSB, split):
                rows.append({**p, "set": f"stsb_{split}"})
        texts = sorted({r["text1"] for r in rows} | {r["text2"] for r in rows})
        vec = dict(zip(texts, embedder.embed_documents(texts)))
        hits_of: dict[str, list[str]] = {}
        found_of: dict[str, list] = {}
        chunk_text: dict[str, str] = {}
        for r in rows:
            f1, f2 = verify.features(r["text1"]), verify.features(r["text2"])
            r["cos"] = float(vec[r["text1"]] @ vec[r["text2"]])
            r["conflict"] = verify.conflicts(f1, f2)
            r["overlap"] = verify.content_overlap(f1, f2)
            r["worst"] = _worst_alignment(model, r["text1"], r["text2"])
            if r["set"] == "covid":
                for key, t in (("h1", r["text1"]), ("h2", r["text2"])):
                    if t not in hits_of:
                        found = app.retriever.search(scope, t, vector=vec[t])[0]
                        hits_of[t] = [h.chunk_id for h in found]
                        found_of[t] = found
                        chunk_text.update((h.chunk_id, h.text) for h in found)
                    r[key] = hits_of[t]
        # answer-sentence agreement on the COVID pairs that reach the candidate stage
        sentences: dict[str, list[str]] = {cid: [s for s in split_sentences(t) if len(s.split()) >= 4]
                                           for cid, t in chunk_text.items()}
        flat = sorted({s for ss in sentences.values() for s in ss})
        sent_vec = dict(zip(flat, embedder.embed_documents(flat)))
        agree = {"pos": [], "neg": [], "heavy": []}
        for r in rows:
            if r["set"] != "covid" or r["cos"] < 0.8 or r["conflict"]:
                continue
            cands = sorted({s for cid in r["h1"] + r["h2"] for s in sentences[cid]})
            if not cands:
                continue
            mat = np.stack([sent_vec[s] for s in cands])
            same = int((mat @ vec[r["text1"]]).argmax() == (mat @ vec[r["text2"]]).argmax())
            agree["pos" if r["label"] == 1 else "neg"].append(same)
            if r.get("style") == "heavy":
                agree["heavy"].append(same)

        # answer fit on the COVID pairs that reach a low candidate stage
        answerer = ExtractiveAnswerer()
        fit: dict[str, list[float]] = {"pos": [], "neg": [], "heavy": []}
        answer_vec: dict[str, np.ndarray] = {}
        for r in rows:
            if r["set"] != "covid" or r["cos"] < 0.75 or r["conflict"]:
                continue
            q1 = r["text1"]
            if q1 not in answer_vec:
                text = ExtractiveAnswerer.quoted_text(answerer.answer(q1, found_of[q1][:5]).text)
                answer_vec[q1] = embedder.embed_documents([text])[0]
            d = float(vec[q1] @ answer_vec[q1] - vec[r["text2"]] @ answer_vec[q1])
            fit["pos" if r["label"] == 1 else "neg"].append(d)
            if r.get("style") == "heavy":
                fit["heavy"].append(d)

    sets = {name: [r for r in rows if r["set"] == name] for name in ("stsb_train", "stsb_test", "covid")}
    variants = {"default": _policy(), "plain_0.92": lambda r: r["cos"] >= 0.92}
    for w in (0.4, 0.45, 0.5, 0.55):
        variants[f"band_on_alignment_w{w}"] = _policy(worst_min=w)
    for vw in (0.25, 0.3, 0.35):
        variants[f"veto_alignment_below_{vw}"] = _policy(veto_worst=vw)
        variants[f"veto_{vw}_cand0.82_acc0.89_band_w0.55"] = _policy(cand=0.82, veto_worst=vw, worst_min=0.55)
    for y in (0.3, 0.4, 0.5):
        for pp in (0.6, 0.8, 1.0):
            variants[f"questions_band_overlap{y}_passages{pp}"] = _policy(question_overlap=y, question_passages=pp)
    out = {
        "policies": {name: {s: _rate(rs, fn) for s, rs in sets.items()} for name, fn in variants.items()},
        "answer_fit_drop_cos_ge_0.75_percentiles_10_50_90": {
            k: {"n": len(v), "p": [round(float(x), 3) for x in np.percentile(v, [10, 50, 90])] if v else None}
            for k, v in fit.items()},
        "answer_sentence_agreement_cos_ge_0.8": {k: {"n": len(v), "same_best_sentence": round(float(np.mean(v)), 4) if v else None}
                                                 for k, v in agree.items()},
        "worst_alignment_heavy_paraphrases": sorted(round(r["worst"], 2) for r in sets["covid"]
                                                     if r.get("style") == "heavy" and r["cos"] >= 0.8),
        "corpus_documents": ingested,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for name, per in out["policies"].items():
        print(name.ljust(40), " | ".join(f"{s} {v['hit_rate']:.3f}/{v['false_hit_rate']:.4f}" for s, v in per.items()))
    print("answer-sentence agreement:", out["answer_sentence_agreement_cos_ge_0.8"])
    print("answer fit drop (10/50/90th percentile):", out["answer_fit_drop_cos_ge_0.75_percentiles_10_50_90"])


if __name__ == "__main__":
    main()
