"""ISD's collapse of the shared representations in the first training steps, traced on real data (issue 17).

Builds the model of a config exactly as `icdcoder train` does (same data, vocabulary, word2vec, seed), then
takes `--steps` AdamW steps at the config's learning rate (constant, no warm-up: the setting in which
docs/results/isd.md saw the collapse within 10 steps) and every `--every` steps prints, on the first
`--notes` dev notes: the doc-to-doc cosine of the refined shared vectors H_S′ (same query, different notes;
1 = one note-independent vector), the mean |H| of the CNN states, and |s_c − prior_c| (how far the scores are
from the label prior). One row per `--set model.code_init=...` variant.

    python benchmarks/isd_collapse.py configs/codiesp-d/isd.yaml --variant seed --variant centred_prior
"""

from __future__ import annotations

import argparse

import torch

from icdcoder.models.base import build_model
from icdcoder.models.init import prior_log_odds
from icdcoder.training.config import load_config
from icdcoder.training.data import make_batch
from icdcoder.training.pipeline import prepare_inputs
from icdcoder.training.trainer import build_optimizer, set_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--variant", action="append", required=True, help="model.code_init value")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--notes", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ["train.warmup_ratio=0.0"])
    inputs = prepare_inputs(cfg)
    train, dev = inputs.splits["train"], inputs.splits["dev"]
    prior = prior_log_odds(inputs.labels.train_counts, len(train))
    print("| code_init | step | doc-to-doc cosine of H_S′ | mean abs H | mean abs(s − prior) | train loss |")
    print("|---|---|---|---|---|---|")
    for variant in args.variant:
        set_seed(cfg.train.seed)
        model = build_model({**cfg.model, "code_init": variant}, inputs.ctx)
        opt = build_optimizer(model, cfg.train)
        probe = make_batch(dev, list(range(args.notes)), model.n_labels)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        loss_value = float("nan")
        for step in range(args.steps + 1):
            if step % args.every == 0:
                model.eval()
                with torch.no_grad():
                    h = model.encode(probe.token_ids, probe.mask)
                    _, ref, _, _ = model.represent(h, probe.mask)
                    logits = model(probe).logits
                r = torch.nn.functional.normalize(ref, dim=-1).transpose(0, 1)  # [Nq, N, d]
                n = r.shape[1]
                cos = float(((r @ r.transpose(1, 2)).sum() - r.shape[0] * n) / (r.shape[0] * n * (n - 1)))
                habs = float(h.abs()[probe.mask].mean())
                gap = float((logits - prior).abs().mean())
                print(
                    f"| {variant} | {step} | {cos:.4f} | {habs:.3f} | {gap:.2f} | {loss_value:.4f} |",
                    flush=True,
                )
            if step == args.steps:
                break
            model.train()
            idx = torch.randperm(len(train), generator=gen)[: cfg.train.batch_size].tolist()
            batch = make_batch(train, idx, model.n_labels)
            loss = sum(model.losses(batch, model(batch)).values())
            assert isinstance(loss, torch.Tensor)
            opt.zero_grad()
            loss.backward()
            if cfg.train.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            opt.step()
            loss_value = float(loss.detach())


if __name__ == "__main__":
    main()
