"""Train-step and inference throughput (notes/s) and peak memory of every baseline on synthetic
MIMIC-shaped notes, at 50 and ~9,000 codes, with the published MIMIC-III dimensions.

Each (model, code count) runs in a fresh subprocess so peak RSS (ru_maxrss of the child) is its own; the
figures are ratios-ready: all models see the same notes (same seed) in the same run.

    .venv/bin/python benchmarks/baseline_throughput.py [--codes 50 8921] [--batch 4] [--words 2500]
        [--models tfidf caml ...] [--threads 2] [--out runs/bench/baselines.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PUBLISHED = {  # MIMIC-III full dimensions (model modules' docstrings)
    "tfidf": {},
    "caml": {"kernel_size": 10, "num_filters": 50},
    "dr_caml": {"kernel_size": 10, "num_filters": 50},
    "multirescnn": {},
    "laat": {"hidden_size": 512, "d_a": 512},
    "joint_laat": {"hidden_size": 512, "d_a": 512},
    "plm_icd": {"chunk_size": 128},
    # "+ckpt": the same model with activation (gradient) checkpointing in the encoder
    "plm_icd+ckpt": {"chunk_size": 128, "gradient_checkpointing": True},
}
# PLM-ICD's encoder at RoBERTa-base size (the published backbone was RoBERTa-base-PM-M3-Voc), randomly
# initialised: no clinical weights exist offline, and the cost does not depend on the values.
ROBERTA_BASE = {
    "model_type": "bert",
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
}


def child(model: str, n_codes: int, batch: int, words: int, steps: int, threads: int) -> dict[str, float]:
    import numpy as np
    import torch

    from icdcoder.data.sources.synthetic import generate
    from icdcoder.models.base import ModelContext, build_model
    from icdcoder.text.tokenizer import Tokenizer
    from icdcoder.text.vocab import Vocab
    from icdcoder.training.data import encode_split, make_batch
    from icdcoder.training.labels import LabelSpace

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    docs = list(generate(batch * (steps + 1), words_per_note=words, n_codes=n_codes, seed=0))
    tok = Tokenizer()
    words_per_doc = [tok.words(d.text)[:4000] for d in docs]
    vocab = Vocab.build(words_per_doc)
    keys = sorted({k for d in docs for k in d.codes})
    # the label space is the generator's full code list: pad with unseen codes up to n_codes
    keys = (keys + [f"icd9cm-dx:X{i:05d}" for i in range(n_codes)])[:n_codes] if len(keys) < n_codes else keys
    labels = LabelSpace(keys)
    split = encode_split(docs, [vocab.encode(w) for w in words_per_doc], labels, 4000)
    ctx = ModelContext(
        label_keys=keys,
        vocab_size=len(vocab),
        label_token_ids=[[2, 3, 4]] * len(keys),
        token_doc_freq=list(vocab.doc_freq or []),
        n_train_docs=len(docs),
    )
    if model.startswith("plm_icd"):
        ctx.extras = {"hf_config": dict(ROBERTA_BASE), "hf_special": {"cls": 0, "sep": 2, "pad": 1, "unk": 3}}
    m = build_model({"name": model.split("+")[0], **PUBLISHED[model]}, ctx)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    batches = [list(range(i * batch, (i + 1) * batch)) for i in range(steps + 1)]
    m.train()
    times, cpu = [], []
    for i, idx in enumerate(batches):
        b = make_batch(split, idx, len(keys))
        t, c = time.perf_counter(), time.process_time()
        loss = sum(m.losses(b, m(b)).values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if i:  # the first step warms up allocators
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m.eval()
    inf, inf_cpu, ev_cpu = [], [], []
    with torch.no_grad():
        for idx in batches[1:]:
            b = make_batch(split, idx, len(keys))
            t, c = time.perf_counter(), time.process_time()
            with m.scores_only():  # what evaluation and batch coding without evidence run
                m(b)
            inf.append(time.perf_counter() - t)
            inf_cpu.append(time.process_time() - c)
            c = time.process_time()
            m(b)  # with the [B, C, T] attention/evidence output the coder page and `predict --evidence` use
            ev_cpu.append(time.process_time() - c)
    tokens = float(np.mean([len(t) for t in split.token_ids]))
    return {
        "train_notes_per_s": batch / float(np.mean(times)),
        "infer_notes_per_s": batch / float(np.mean(inf)),
        # notes per CPU-second: robust to other load on a shared machine (the figure the docs quote)
        "train_notes_per_cpu_s": batch / float(np.mean(cpu)),
        "infer_notes_per_cpu_s": batch / float(np.mean(inf_cpu)),
        "infer_evidence_notes_per_cpu_s": batch / float(np.mean(ev_cpu)),
        "peak_rss_train_mb": train_rss,
        "tokens_per_note": tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codes", type=int, nargs="+", default=[50, 8921])
    ap.add_argument("--models", nargs="+", default=list(PUBLISHED))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--words", type=int, default=2500)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/baselines.json"))
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CODES"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.batch, a.words, a.steps, a.threads)))
        return
    rows = []
    for n in a.codes:
        for model in a.models:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                model,
                str(n),
                "--batch",
                str(a.batch),
                "--words",
                str(a.words),
                "--steps",
                str(a.steps),
                "--threads",
                str(a.threads),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = {"model": model, "codes": n, **json.loads(res.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(
                f"{model:12s} {n:5d} codes  train {row['train_notes_per_s']:7.2f} notes/s  "
                f"infer {row['infer_notes_per_s']:7.2f} notes/s  peak {row['peak_rss_train_mb']:7.0f} MB",
                flush=True,
            )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {"args": {k: v for k, v in vars(a).items() if k != "out" and k != "child"}, "rows": rows},
            indent=2,
            default=str,
        )
    )
    print(
        "| model | codes | train notes/CPU-s | × CAML | inference notes/CPU-s | × CAML | "
        "inference with evidence notes/CPU-s | train notes/s (wall) | inference notes/s (wall) | "
        "peak RSS (train) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ref = {r["codes"]: r for r in rows if r["model"] == "caml"}
    for r in rows:
        base = ref.get(r["codes"])
        tr = f"{r['train_notes_per_cpu_s'] / base['train_notes_per_cpu_s']:.2f}" if base else "–"
        inf = f"{r['infer_notes_per_cpu_s'] / base['infer_notes_per_cpu_s']:.2f}" if base else "–"
        print(
            f"| {r['model']} | {r['codes']} | {r['train_notes_per_cpu_s']:.2f} | {tr} | "
            f"{r['infer_notes_per_cpu_s']:.2f} | {inf} | {r['infer_evidence_notes_per_cpu_s']:.2f} | "
            f"{r['train_notes_per_s']:.2f} | {r['infer_notes_per_s']:.2f} | "
            f"{r['peak_rss_train_mb'] / 1024:.2f} GB |"
        )


if __name__ == "__main__":
    main()
