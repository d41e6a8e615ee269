"""Benchmark PLANT: peak memory and time per note against note length (stateful vs read-at-once), and the
cost of each stage (MI brain, L2R, LM pre-training, fine-tuning) on CodiEsp-D.

    .venv/bin/python benchmarks/plant_cost.py length --lengths 1000 4000 16000 --codes 2000
    .venv/bin/python benchmarks/plant_cost.py stages --config configs/codiesp-d/plant.yaml

`length`: synthetic notes of T random tokens (batch 1), the CodiEsp-sized PLANT of
configs/codiesp-d/plant.yaml (AWD-LSTM 100/256 × 2, L2R 100 factors, C codes, a random sparse brain). Each
(mode, T) runs in a fresh child process: one warm-up training step (forward, BCE, backward), then `--steps`
timed training steps and one timed inference forward. Modes: `stateful` (bptt 72, gradients through the last
40 segments) and `at_once` (the whole note as one segment with full back-propagation: what a truncating model
does up to its cut). Peak memory is the child's ru_maxrss; the delta subtracts the RSS just before the first
step.

`stages`: prepares CodiEsp-D as the config says, then times the MI brain, `--l2r-epochs` epochs of L2R
training, one LM epoch over the first `--lm-tokens` tokens of the LM corpus, and `--ft-steps` fine-tuning
steps; per-unit rates are printed with the extrapolation to the config's full settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SMALL = {
    "name": "plant",
    "emb_dim": 100,
    "hidden": 256,
    "n_layers": 2,
    "l2r_dim": 100,
    "diff_inattn": 30,
    "static_inattn": 5,
    "bptt": 72,
    "grad_segments": 40,
    "lm_pretrain": False,
    "gradual_unfreezing": False,
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def length_worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from icdcoder.models.base import Batch, ModelContext, build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab, codes, t = args.vocab, args.codes, args.length
    ctx = ModelContext(label_keys=[f"icd10cm:X{i}" for i in range(codes)], vocab_size=vocab)
    model = build_model({**SMALL, "stateful": args.mode == "stateful"}, ctx)
    with torch.no_grad():  # a random sparse brain: 200 tokens per code with positive values
        model.brain_ids[:, :200] = torch.from_numpy(rng.integers(2, vocab, size=(codes, 200)))
        model.brain_values[:, :200] = torch.rand(codes, 200)
    ids = torch.from_numpy(rng.integers(2, vocab, size=(1, t)))
    mask = torch.ones(1, t, dtype=torch.bool)
    y = torch.zeros(1, codes)
    y[0, rng.integers(0, codes, size=10)] = 1.0
    batch = Batch(ids, mask, mask.sum(1), ["n"], y)
    model.train()

    def step() -> None:
        out = model(batch)
        loss = sum(model.losses(batch, out).values())
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        model.zero_grad(set_to_none=True)

    base = _rss_bytes()
    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), model.scores_only():
        model(batch)
    infer = time.perf_counter() - t0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "mode": args.mode,
                "tokens": t,
                "codes": codes,
                "train_step_s": statistics.median(times),
                "infer_s": infer,
                "peak_rss_mb": peak / 2**20,
                "peak_delta_mb": (peak - base) / 2**20,
            }
        )
    )


def run_length(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for mode in args.modes:
        for t in args.lengths:
            cmd = [sys.executable, __file__, "_length_worker", "--mode", mode, "--length", str(t)]
            cmd += ["--codes", str(args.codes), "--vocab", str(args.vocab), "--steps", str(args.steps)]
            cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                rows.append({"mode": mode, "tokens": t, "error": res.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| mode | tokens | train step (s) | inference (s) | peak RSS (MB) | peak Δ (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['tokens']} | failed: {r['error']} | | | |")
        else:
            print(
                f"| {r['mode']} | {r['tokens']:,} | {r['train_step_s']:.2f} | {r['infer_s']:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['peak_delta_mb']:.0f} |"
            )
    return rows


def run_stages(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from icdcoder.models.awd_lstm import AWDLanguageModel, LMTrainConfig, pretrain_language_model
    from icdcoder.models.base import build_model
    from icdcoder.models.plant import _LM_DROPS, PLANTConfig, _awd
    from icdcoder.models.plant_l2r import L2RTrainConfig, train_l2r
    from icdcoder.models.plant_mi import compute_brain
    from icdcoder.training.config import load_config
    from icdcoder.training.data import make_batch
    from icdcoder.training.pipeline import prepare_inputs

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    mcfg = PLANTConfig.model_validate(cfg.model)
    out: dict[str, Any] = {"config": args.config, "threads": args.threads}
    t0 = time.perf_counter()
    inputs = prepare_inputs(cfg)
    out["prepare_s"] = time.perf_counter() - t0
    train = inputs.splits["train"]
    v, c = len(inputs.vocab), len(inputs.labels)
    out.update(
        vocab=v, codes=c, train_notes=len(train), train_tokens=int(sum(len(x) for x in train.token_ids))
    )
    t0 = time.perf_counter()
    brain = compute_brain(
        train.token_ids, train.targets, v, c, kind=mcfg.brain, top_tokens=mcfg.brain_top_tokens
    )
    out["mi_s"] = time.perf_counter() - t0
    model = build_model(cfg.model, inputs.ctx)
    l2r = model.branches[0].l2r  # type: ignore[union-attr]
    t0 = time.perf_counter()
    hist = train_l2r(l2r, brain, v, L2RTrainConfig(epochs=args.l2r_epochs, lr=mcfg.l2r_lr, k=mcfg.l2r_k))
    per_epoch = (time.perf_counter() - t0) / args.l2r_epochs
    out.update(l2r_epoch_s=per_epoch, l2r_full_s_est=per_epoch * mcfg.l2r_epochs, l2r_ndcg=hist)
    from icdcoder.data.sources.codiesp import iter_background_texts

    extra = [
        np.asarray(inputs.vocab.encode(inputs.tokenizer.words(x)), dtype=np.int64)
        for x in iter_background_texts()
    ]
    corpus = list(train.token_ids) + extra
    total = int(sum(len(x) for x in corpus))
    lm = AWDLanguageModel(v, _awd(mcfg, _LM_DROPS, 1.0))
    lm_cfg = LMTrainConfig(
        epochs=1, bptt=mcfg.lm_bptt, batch_size=mcfg.lm_batch_size, max_tokens=args.lm_tokens
    )
    t0 = time.perf_counter()
    lm_hist = pretrain_language_model(lm, corpus, lm_cfg)
    sec = time.perf_counter() - t0
    per_tok = sec / min(total, args.lm_tokens)
    out.update(
        lm_corpus_tokens=total,
        lm_tokens_timed=min(total, args.lm_tokens),
        lm_s_per_1k_tokens=per_tok * 1000,
        lm_epoch_s_est=per_tok * total,
        lm_full_s_est=per_tok * total * mcfg.lm_epochs,
        lm_ppl_after_timed_part=lm_hist[-1]["ppl"],
    )
    with torch.no_grad():
        model.brain_ids.copy_(torch.from_numpy(brain.token_ids))  # type: ignore[operator]
        model.brain_values.copy_(torch.from_numpy(np.maximum(brain.values, 0)))  # type: ignore[operator]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    order = np.argsort([len(x) for x in train.token_ids])
    bs = cfg.train.batch_size
    times = []
    for s in range(args.ft_steps):
        idx = order[(s * 97) % max(1, len(order) - bs) :][:bs].tolist()  # spread over lengths
        batch = make_batch(train, idx, c)
        t0 = time.perf_counter()
        loss = sum(model.losses(batch, model(batch)).values())
        assert isinstance(loss, torch.Tensor)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    steps_per_epoch = -(-len(train) // bs)
    out.update(
        ft_step_s=statistics.mean(times),
        ft_epoch_s_est=statistics.mean(times) * steps_per_epoch,
        ft_full_s_est=statistics.mean(times) * steps_per_epoch * cfg.train.epochs,
    )
    print(json.dumps(out, indent=2))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("length")
    lp.add_argument("--lengths", type=int, nargs="+", default=[1000, 4000, 16000])
    lp.add_argument("--modes", nargs="+", default=["stateful", "at_once"])
    lp.add_argument("--codes", type=int, default=2000)
    lp.add_argument("--vocab", type=int, default=20000)
    lp.add_argument("--steps", type=int, default=1)
    lp.add_argument("--threads", type=int, default=1)
    lp.add_argument("--json", type=Path)
    w = sub.add_parser("_length_worker")
    w.add_argument("--mode", required=True)
    w.add_argument("--length", type=int, required=True)
    w.add_argument("--codes", type=int, default=2000)
    w.add_argument("--vocab", type=int, default=20000)
    w.add_argument("--steps", type=int, default=1)
    w.add_argument("--threads", type=int, default=1)
    sp = sub.add_parser("stages")
    sp.add_argument("--config", default="configs/codiesp-d/plant.yaml")
    sp.add_argument("--l2r-epochs", type=int, default=3)
    sp.add_argument("--lm-tokens", type=int, default=50_000)
    sp.add_argument("--ft-steps", type=int, default=3)
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.cmd == "_length_worker":
        length_worker(args)
        return
    result: Any = run_length(args) if args.cmd == "length" else run_stages(args)
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine(), "argv": sys.argv}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "result": result}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
