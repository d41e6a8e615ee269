"""MSAM's synonym selection on a real label space: the exact MDP solver against greedy + swap and a random
M-subset, per M: objective (sum of pairwise cosine distances), gap, proven optimality and time.

Embeddings: the mean initial word vector (word2vec of the dataset config, from icdcoder's cache), as
`synonym_selection: mdp` uses with a CPU encoder; candidates: the offline ontology's lists after MSMN's
cleaning (models/diverse_synonyms.py).

    .venv/bin/python benchmarks/mdp_gap.py configs/codiesp-d/msam.yaml --m 2 4 8 [--time-limit 10]
        [--out runs/bench/mdp_gap.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--m", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--exact-max", type=int, default=30)
    ap.add_argument("--out", default="runs/bench/mdp_gap.json")
    args = ap.parse_args()

    import torch

    from icdcoder.models.diverse_synonyms import (
        MAX_CANDIDATES,
        cosine_distances,
        objective,
        solve_exact,
        solve_greedy_swap,
    )
    from icdcoder.ontology.label_synonyms import build_label_synonyms
    from icdcoder.training.config import load_config
    from icdcoder.training.pipeline import MAX_LABEL_TEXT_TOKENS, prepare_inputs

    torch.set_num_threads(1)
    cfg = load_config(args.config, overrides=["model.synonym_selection=random"])
    inputs = prepare_inputs(cfg)  # tokens, vocabulary and word2vec (cached); random synonyms skip the MDP
    emb = np.asarray(inputs.ctx.embeddings, dtype=np.float64)
    vocab, tok = inputs.vocab, inputs.tokenizer

    def embed(text: str) -> np.ndarray:
        ids = [i for i in vocab.encode(tok.words(text))[:MAX_LABEL_TEXT_TOKENS] if i > 1]
        return emb[ids].mean(0) if ids else np.zeros(emb.shape[1])

    pool = build_label_synonyms(
        inputs.labels.keys, MAX_CANDIDATES, titles=inputs.labels.titles, policy="drop", selection="ranked"
    )
    cands = [[t for t in row if t is not None] for row in pool.texts]
    sizes = np.array([len(c) for c in cands])
    rows = []
    rng = np.random.default_rng(0)
    for m in args.m:
        exact_obj, greedy_obj, rand_obj, optimal, t_exact, t_greedy, skipped = [], [], [], 0, 0.0, 0.0, 0
        for row in cands:
            if len(row) <= m:
                continue
            if len(row) > args.exact_max:
                skipped += 1
                continue
            vecs = [v for v in (embed(t) for t in row) if np.any(v)]  # as the model: embedded candidates only
            if len(vecs) <= m:
                continue
            dist = cosine_distances(np.stack(vecs))
            e = solve_exact(dist, m, time_limit=args.time_limit)
            g = solve_greedy_swap(dist, m)
            exact_obj.append(e.objective)
            greedy_obj.append(g.objective)
            rand_obj.append(objective(dist, rng.choice(len(vecs), m, replace=False)))
            optimal += e.optimal
            t_exact += e.seconds
            t_greedy += g.seconds
        ex, gr, ra = np.array(exact_obj), np.array(greedy_obj), np.array(rand_obj)
        rel = (ex - gr) / np.where(ex > 0, ex, 1)
        rows.append(
            {
                "m": m,
                "codes": len(cands),
                "codes_with_more_than_m": int((sizes > m).sum()),
                "solved": len(ex),
                "skipped_over_exact_max": skipped,
                "exact_proven_optimal": int(optimal),
                "mean_objective_exact": float(ex.mean()) if len(ex) else float("nan"),
                "mean_objective_greedy_swap": float(gr.mean()) if len(ex) else float("nan"),
                "mean_objective_random": float(ra.mean()) if len(ex) else float("nan"),
                "greedy_below_exact_codes": int((rel > 1e-9).sum()),
                "mean_relative_gap_greedy": float(rel.mean()) if len(ex) else float("nan"),
                "max_relative_gap_greedy": float(rel.max()) if len(ex) else float("nan"),
                "seconds_exact": round(t_exact, 2),
                "seconds_greedy_swap": round(t_greedy, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "config": args.config,
        "candidates_per_code": {
            "median": float(np.median(sizes)),
            "mean": float(sizes.mean()),
            "max": int(sizes.max()),
        },
        "time_limit": args.time_limit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["candidates_per_code"]))


if __name__ == "__main__":
    main()
