"""Matcher results table from finished training runs (`icdcoder train configs/codiesp-*/matcher*.yaml`).

    .venv/bin/python benchmarks/matcher_table.py runs/matcher-d-en runs/matcher-d-es ... [--json OUT]

Per run, on the split the run scored once (test): the headline MAP (the organisers' definition, from
test_metrics.json: AP over the ranked codes to depth 1000 divided by the note's number of gold codes, codes
outside the label space score 0) and micro-F1 at the dev-tuned threshold (test_metrics.json), and from
predictions_test.parquet (each note's top 1000 codes): recall@50 and @200 of the gold (note, code) pairs,
overall and for codes never seen in the train split (train count 0 in the model's labels.json, or outside
its label space).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq


def table_row(run: Path) -> dict[str, float | str]:
    metrics = json.loads((run / "test_metrics.json").read_text())
    labels = json.loads((run / "model" / "labels.json").read_text())["codes"]
    keys = [c["key"] for c in labels]
    seen = {c["key"] for c in labels if c["train_count"] > 0}
    table = pq.read_table(run / "predictions_test.parquet")
    gold = table.column("gold").to_pylist()
    tops = table.column("top_codes").to_pylist()
    row: dict[str, float | str] = {
        "run": str(run),
        "map": metrics["map"],
        "f1_micro": metrics["f1_micro"],
        "threshold": metrics.get("threshold", float("nan")),
    }
    for k in (50, 200):
        hit = tot = zhit = ztot = 0
        for g, top in zip(gold, tops, strict=True):
            ranked = {keys[i] for i in top[:k]}
            for code in set(g):
                tot += 1
                hit += code in ranked
                if code not in seen:
                    ztot += 1
                    zhit += code in ranked
        row[f"recall@{k}"] = hit / max(tot, 1)
        row[f"zero_shot_recall@{k}"] = zhit / max(ztot, 1)
        row["zero_shot_gold"] = ztot
        row["gold"] = tot
    return row


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if "--json" in args:
        i = args.index("--json")
        out = Path(args[i + 1])
        args = args[:i] + args[i + 2 :]
    rows = [table_row(Path(a)) for a in args]
    cols = ["map", "f1_micro", "recall@50", "recall@200", "zero_shot_recall@50", "zero_shot_recall@200"]
    print("| run | " + " | ".join(cols) + " | zero-shot gold / gold |")
    print("|---" * (len(cols) + 2) + "|")
    for r in rows:
        vals = " | ".join(f"{float(r[c]):.3f}" for c in cols)
        print(f"| {r['run']} | {vals} | {r['zero_shot_gold']} / {r['gold']} |")
    if out is not None:
        out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
