"""Coding notes with evidence: per-code evidence on request (`IcdModel.evidence_rows`) vs the full [B, C, T]
evidence tensor from `forward`, in one process on the same notes (CPU time, one thread).

    .venv/bin/python benchmarks/lazy_evidence.py MODEL_DIR PREPARED_DATA_DIR [--notes 40] [--top-k 10]

Only models that implement `evidence_rows` (TF-IDF) have the on-request path; the spans must be identical.
"""

from __future__ import annotations

import argparse
import time

import torch

from icdcoder.data.prepared import PreparedDataset
from icdcoder.inference.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("data_dir")
    ap.add_argument("--notes", type=int, default=40)
    ap.add_argument("--top-k", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(1)
    notes = [(d.id, d.text) for d in PreparedDataset.open(a.data_dir).load("test")][: a.notes]
    p = Predictor(a.model_dir)
    if not p.loaded.model.has_evidence_rows():
        raise SystemExit(f"{a.model_dir}: this model has no per-code evidence path (evidence_rows)")
    p.predict(notes[:4], top_k=a.top_k)  # warm-up
    cpu, spans = {}, {}
    for lazy in (True, False):
        p._lazy_evidence = lazy
        c = time.process_time()
        out = p.predict(notes, top_k=a.top_k)
        cpu[lazy] = time.process_time() - c
        spans[lazy] = [[(cp.key, [(s.start, s.end) for s in cp.evidence]) for cp in n.codes] for n in out]
    n_spans = sum(len(s) for note in spans[True] for _, s in note)
    print(f"{len(notes)} notes, {len(p.labels)} codes, top-{a.top_k}, {n_spans} evidence spans")
    print(f"evidence on request: {len(notes) / cpu[True]:.2f} notes/CPU-s")
    print(f"full [B, C, T] evidence: {len(notes) / cpu[False]:.2f} notes/CPU-s")
    print(f"speed-up: {cpu[False] / cpu[True]:.1f}x; identical spans: {spans[True] == spans[False]}")


if __name__ == "__main__":
    main()
