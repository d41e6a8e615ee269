"""CodiEsp table for knowledge models (mention memory, matcher) and their sum, from saved model directories.

For each model directory (and each `A+B` sum of two of them, a plain sum of their calibrated
probabilities), on the CodiEsp dev and test notes of one task and language:
- official MAP: codes ranked by score to depth 1000, precision at each gold hit, divided by the number of
  gold codes of the note (codes a model cannot propose count as misses), mean over notes with gold codes;
- micro-F1 at a global threshold tuned on dev (the best dev micro-F1 cut; gold codes never proposed are
  false negatives);
- recall@50 and @200 of the gold (note, code) pairs, overall and for codes never seen in the train split
  (zero-shot);
- with `--lang es`: CodiEsp-X micro P/R/F1 under the official rule (`evidence_eval.score_spans(...,
  "codiesp")`) of the dev-threshold decisions with every span that fired, and its counts, so D and P
  can be added up into the track's joint score.
Dev is used for the threshold only; the models' own choices were made on dev when they were trained.

    python benchmarks/knowledge_models_table.py --task D --lang es \
        --codiesp-path ../shared/datasets/codiesp/raw/final_dataset_v4_to_publish \
        --model memory=runs/mm/d-es/model [--model matcher=DIR --sum matcher+memory] --out result.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from icdcoder.data.sources.codiesp import iter_codiesp
from icdcoder.inference.evidence_eval import EvidenceItem, gold_from_documents, score_spans
from icdcoder.inference.predictor import Predictor

DEPTH = 1000
Scores = list[dict[str, float]]  # per note: code -> score
Spans = list[dict[str, list[tuple[int, int]]]]  # per note: code -> spans


def run_model(model_dir: Path, notes: list[tuple[str, str]], evidence: bool) -> tuple[Scores, Spans, float]:
    pred = Predictor(model_dir)
    t0 = time.perf_counter()
    out = pred.predict(notes, top_k=DEPTH, evidence=evidence, batch_size=16)
    secs = time.perf_counter() - t0
    scores = [{c.key: float(c.probability) for c in r.codes} for r in out]
    spans = [{c.key: [(e.start, e.end) for e in c.evidence] for c in r.codes if c.evidence} for r in out]
    return scores, spans, len(notes) / secs if secs > 0 else 0.0


def official_map(scores: Scores, gold: list[set[str]]) -> float:
    aps = []
    for sc, g in zip(scores, gold, strict=True):
        if not g:
            continue
        ranked = sorted(sc, key=lambda c: (-sc[c], c))[:DEPTH]
        hits, total = 0, 0.0
        for rank, code in enumerate(ranked, start=1):
            if code in g:
                hits += 1
                total += hits / rank
        aps.append(total / len(g))
    return sum(aps) / len(aps) if aps else 0.0


def tune_threshold(scores: Scores, gold: list[set[str]]) -> float:
    """The cut with the best micro-F1 on these notes (decide score >= threshold)."""
    n_gold = sum(len(g) for g in gold)
    pairs = sorted(
        ((s, c in g) for sc, g in zip(scores, gold, strict=True) for c, s in sc.items()), reverse=True
    )
    best, best_t, tp = -1.0, 1.0, 0
    for k, (s, hit) in enumerate(pairs, start=1):
        tp += hit
        if k < len(pairs) and pairs[k][0] == s:
            continue  # only cut between distinct scores
        f1 = 2 * tp / (k + n_gold) if k + n_gold else 0.0
        if f1 > best:
            best, best_t = f1, s
    return best_t


def micro_prf(scores: Scores, gold: list[set[str]], threshold: float) -> dict[str, float]:
    tp = fp = fn = 0
    for sc, g in zip(scores, gold, strict=True):
        pos = {c for c, s in sc.items() if s >= threshold}
        tp += len(pos & g)
        fp += len(pos - g)
        fn += len(g - pos)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def recall_at(scores: Scores, gold: list[set[str]], k: int, only: set[str] | None = None) -> float:
    found = total = 0
    for sc, g in zip(scores, gold, strict=True):
        top = set(sorted(sc, key=lambda c: (-sc[c], c))[:k])
        for c in g:
            if only is None or c in only:
                total += 1
                found += c in top
    return found / total if total else 0.0


def x_items(doc_ids: list[str], scores: Scores, spans: Spans, threshold: float) -> list[EvidenceItem]:
    return [
        EvidenceItem(doc, code, (span,))
        for doc, sc, sp in zip(doc_ids, scores, spans, strict=True)
        for code, s in sc.items()
        if s >= threshold
        for span in sp.get(code, [])
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["D", "P"], required=True)
    ap.add_argument("--lang", choices=["en", "es"], required=True)
    ap.add_argument("--codiesp-path", type=Path, default=None, help="full release (needed for es)")
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR")
    ap.add_argument("--sum", action="append", default=[], help="NAME_A+NAME_B")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    splits = {
        s: list(iter_codiesp(args.codiesp_path, args.task, args.lang, splits=(s,)))
        for s in ("train", "dev", "test")
    }
    train_codes = {c for d in splits["train"] for c in d.codes}
    gold = {s: [set(d.codes) for d in splits[s]] for s in ("dev", "test")}
    zero_shot = {c for g in gold["test"] for c in g} - train_codes
    evidence = args.lang == "es"
    raw: dict[str, dict[str, tuple[Scores, Spans, float]]] = {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        raw[name] = {
            s: run_model(Path(path), [(d.id, d.text) for d in splits[s]], evidence) for s in ("dev", "test")
        }
        print(f"scored {name}", file=sys.stderr)
    for spec in args.sum:
        a, b = spec.split("+")
        raw[spec] = {}
        for s in ("dev", "test"):
            sa, pa, _ = raw[a][s]
            sb, pb, _ = raw[b][s]
            summed = [
                {c: x.get(c, 0.0) + y.get(c, 0.0) for c in x.keys() | y.keys()}
                for x, y in zip(sa, sb, strict=True)
            ]
            spans = [
                {c: sorted(set(x.get(c, []) + y.get(c, []))) for c in x.keys() | y.keys()}
                for x, y in zip(pa, pb, strict=True)
            ]
            raw[spec][s] = (summed, spans, 0.0)
    gold_x = {s: gold_from_documents(splits[s]) for s in ("dev", "test")} if evidence else {}
    rows: dict[str, Any] = {}
    for name, by_split in raw.items():
        dev_scores, _, _ = by_split["dev"]
        test_scores, test_spans, nps = by_split["test"]
        th = tune_threshold(dev_scores, gold["dev"])
        row: dict[str, Any] = {
            "dev_map": official_map(dev_scores, gold["dev"]),
            "map": official_map(test_scores, gold["test"]),
            "threshold_dev": th,
            "micro": micro_prf(test_scores, gold["test"], th),
            "recall@50": recall_at(test_scores, gold["test"], 50),
            "recall@200": recall_at(test_scores, gold["test"], 200),
            "zero_shot_recall@50": recall_at(test_scores, gold["test"], 50, zero_shot),
            "zero_shot_recall@200": recall_at(test_scores, gold["test"], 200, zero_shot),
            "test_notes_per_second": round(nps, 2),
        }
        if evidence:
            dev_sc, dev_sp, _ = by_split["dev"]
            ids = {s: [d.id for d in splits[s]] for s in ("dev", "test")}
            row["x_dev"] = score_spans(
                gold_x["dev"], x_items(ids["dev"], dev_sc, dev_sp, th), "codiesp"
            ).to_json()
            row["x"] = score_spans(
                gold_x["test"], x_items(ids["test"], test_scores, test_spans, th), "codiesp"
            ).to_json()
        rows[name] = row
    result = {
        "task": args.task,
        "lang": args.lang,
        "test_notes": len(splits["test"]),
        "test_gold_pairs": sum(len(g) for g in gold["test"]),
        "zero_shot_test_codes": len(zero_shot),
        "zero_shot_test_pairs": sum(len(g & zero_shot) for g in gold["test"]),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
