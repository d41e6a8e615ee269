"""Quantification error of CC, PCC, ACC, PACC and the MLP quantifier for model directories on a prepared
dataset (issue 15): dev rates and the MLP are fitted on dev (in memory: nothing is written into the model
directories), then AE and RAE are averaged over random test subsets of random size (the seed: 1,000).

    .venv/bin/python benchmarks/quantification_table.py MODEL_DIR... --data DATA [--subsets 1000]
        [--mlp-samples 5000] [--seed 0] [--out runs/bench/quantification.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--subsets", type=int, default=1000)
    ap.add_argument("--mlp-samples", type=int, default=5000)
    ap.add_argument("--mlp-hidden", type=int, default=32)
    ap.add_argument("--mlp-epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/quantification.json"))
    args = ap.parse_args()

    import torch

    from icdcoder.evaluation.quantification import (
        METHODS,
        evaluate_quantifiers,
        fit_quant_stats,
        random_subsets,
    )
    from icdcoder.inference.quantify import mlp_estimator, split_matrices
    from icdcoder.modeldir import load_model_dir
    from icdcoder.training.quantifier import train_mlp_quantifier

    torch.set_num_threads(1)
    results = {}
    for model_dir in args.models:
        try:
            lm = load_model_dir(model_dir)
        except Exception as exc:  # report it and go on with the other models
            print(json.dumps({"model_dir": str(model_dir), "error": str(exc)}), flush=True)
            continue
        dev_p, dev_d, dev_y = split_matrices(lm, args.data, "dev")
        stats = fit_quant_stats(dev_p, dev_d, dev_y)
        mlp, info = train_mlp_quantifier(
            dev_p,
            dev_y,
            hidden=args.mlp_hidden,
            n_samples=args.mlp_samples,
            epochs=args.mlp_epochs,
            seed=args.seed,
        )
        test_p, test_d, test_y = split_matrices(lm, args.data, "test")
        samples = random_subsets(len(test_p), args.subsets, seed=args.seed)
        res = evaluate_quantifiers(
            test_p, test_d, test_y, samples, stats, METHODS, extra={"mlp": mlp_estimator(mlp)}
        )
        results[str(model_dir)] = {"model": lm.metadata.get("model"), "errors": res, "mlp": info}
        print(json.dumps({"model_dir": str(model_dir), **res}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"data": str(args.data), "subsets": args.subsets, "results": results}, indent=2)
    )
    names = [*METHODS, "mlp"]
    print("| model | " + " | ".join(f"{m.upper()} AE | {m.upper()} RAE" for m in names) + " |")
    for d, r in results.items():
        cells = " | ".join(f"{r['errors'][m]['ae']:.4f} | {r['errors'][m]['rae']:.3f}" for m in names)
        print(f"| {r['model']} ({Path(d).parent.name}) | {cells} |")


if __name__ == "__main__":
    main()
