"""ISD's training-step cost relative to LAAT, and Table 6's attention sharpness of trained ISD runs.

    python benchmarks/isd_cost.py cost [--batch 8] [--tokens 300] [--codes 1767] [--steps 5] [--threads 1]
    python benchmarks/isd_cost.py sharpness RUN_DIR [RUN_DIR ...] [--split test]

`cost` builds ISD (the seed's defaults, plus its ablation variants) and LAAT (its published defaults) on the
same synthetic batch in one process, times forward + losses + backward + AdamW step (median of `--steps`
after one warm-up step) and prints the ratio to LAAT. Sizes default to CodiEsp-D (1,767 codes, ~300 words
per note, a 15k-word vocabulary).

`sharpness` loads each run's model directory and prints the mean over documents and shared queries of the
standard deviation of the shared-attention weights over the note's tokens (the paper's Table 6), and the mean
cosine similarity between different documents' refined shared vectors of the same query (near 1 means the
representations carry almost nothing document-specific).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icdcoder.models.base import Batch, IcdModel, ModelContext, build_model

ISD_VARIANTS: dict[str, dict[str, Any]] = {
    "isd": {},
    "isd w/o self-distillation": {"self_distillation": "off"},
    "isd w/o code completion": {"completion_tasks": False},
    "isd w/o decoder": {"decoder_layers": 0, "completion_tasks": False},
    "isd student only (no teacher, no completion)": {"self_distillation": "off", "completion_tasks": False},
}


def synthetic(batch: int, tokens: int, codes: int, vocab: int, seed: int = 0) -> tuple[ModelContext, Batch]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(vocab, 100)).astype(np.float32)
    emb[0] = 0
    titles = [[int(x) for x in rng.integers(1, vocab, size=rng.integers(3, 12))] for _ in range(codes)]
    ctx = ModelContext(
        label_keys=[f"icd10cm:X{i:04d}" for i in range(codes)],
        vocab_size=vocab,
        embeddings=emb,
        label_token_ids=titles,
    )
    lengths = rng.integers(tokens // 2, tokens * 3 // 2, size=batch)
    width = int(lengths.max())
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    targets = torch.zeros(batch, codes)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.from_numpy(rng.integers(1, vocab, size=n))
        mask[i, :n] = True
        targets[i, rng.choice(codes, size=11, replace=False)] = 1.0  # CodiEsp-D: ~11 codes per note
    b = Batch(ids, mask, mask.sum(1), [f"d{i}" for i in range(batch)], targets)
    return ctx, b


def step_seconds(model: IcdModel, batch: Batch, steps: int) -> float:
    """Median CPU seconds of one training step (process time: robust to other processes sharing the CPU)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.process_time()
        opt.zero_grad()
        out = model(batch)
        loss = sum(model.losses(batch, out).values())
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()
        if i:  # the first step warms caches and allocators
            times.append(time.process_time() - t0)
    return statistics.median(times)


def cost(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    ctx, batch = synthetic(args.batch, args.tokens, args.codes, args.vocab)
    torch.manual_seed(0)
    laat = step_seconds(build_model({"name": "laat"}, ctx), batch, args.steps)
    print(f"batch {args.batch} × ~{args.tokens} tokens, {args.codes} codes, {args.threads} thread(s)")
    print("| model | CPU s / step | × LAAT |\n|---|---|---|")
    print(f"| laat | {laat:.3f} | 1.00 |")
    for name, overrides in ISD_VARIANTS.items():
        torch.manual_seed(0)
        secs = step_seconds(build_model({"name": "isd", **overrides}, ctx), batch, args.steps)
        print(f"| {name} | {secs:.3f} | {secs / laat:.2f} |")


@torch.no_grad()
def sharpness(args: argparse.Namespace) -> None:
    from icdcoder.modeldir import load_model_dir
    from icdcoder.models.isd import ISD, attention_std
    from icdcoder.training.data import encode_split, length_sorted_batches, make_batch
    from icdcoder.training.pipeline import open_dataset

    torch.set_num_threads(args.threads)
    print(
        f"| run | self_distillation | mean std of shared attention ({args.split}) | "
        "doc-to-doc cosine of H_S′ |\n|---|---|---|---|"
    )
    for run in args.runs:
        lm = load_model_dir(Path(run) / "model")
        model = lm.model
        assert isinstance(model, ISD), f"{run} is not an ISD run"
        docs = open_dataset(lm.config.data).load(args.split)
        words = [lm.tokenizer.words(d.text)[: lm.config.data.max_tokens] for d in docs]
        split = encode_split(docs, [lm.vocab.encode(w) for w in words], lm.labels, lm.config.data.max_tokens)
        stds, refined = [], []
        for idx in length_sorted_batches(split.lengths, 16):
            batch = make_batch(split, idx, model.n_labels)
            h = model.encode(batch.token_ids, batch.mask)
            _, ref, alpha, _ = model.represent(h, batch.mask)
            stds.append(attention_std(alpha, batch.mask).mean(dim=1))
            refined.append(torch.nn.functional.normalize(ref, dim=-1))
        value = float(torch.cat(stds).mean())
        # Collapse check: cosine between different documents' refined vectors of the same query.
        r = torch.cat(refined).transpose(0, 1)  # [Nq, N, d]
        n = r.shape[1]
        cos = float(((r @ r.transpose(1, 2)).sum() - r.shape[0] * n) / (r.shape[0] * n * (n - 1)))
        print(f"| {run} | {model.cfg.self_distillation} | {value:.6f} | {cos:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--tokens", type=int, default=300)
    c.add_argument("--codes", type=int, default=1767)
    c.add_argument("--vocab", type=int, default=15000)
    c.add_argument("--steps", type=int, default=5)
    c.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("sharpness")
    s.add_argument("runs", nargs="+")
    s.add_argument("--split", default="test")
    s.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    (cost if args.command == "cost" else sharpness)(args)


if __name__ == "__main__":
    main()
