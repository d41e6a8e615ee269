"""Benchmark: MSMN training-step time and peak memory, lean form vs the seed's naive (reference) form.

    .venv/bin/python benchmarks/msmn_memory.py                          # 50 and 8,929 codes
    .venv/bin/python benchmarks/msmn_memory.py --codes 50 --tokens 500  # a quick run

Synthetic MIMIC-shaped batches: B notes of T tokens (all real, no padding), C codes × M synonyms of 1-12
tokens (random ids), the seed's MIMIC-III full model (100-d embeddings, 2-layer BiLSTM rnn_dim 256, h 512,
M = 4, R-Drop on: the text side runs twice). Each (form, C) runs in a fresh child process: one warm-up
training step (forward, losses, backward, AdamW step), then `--steps` timed steps. Peak memory is the
child's `ru_maxrss` from wait4; the delta subtracts the RSS measured just before the first step (model,
optimizer state and batch already allocated). Prints a Markdown table with lean/reference ratios and writes
a JSON result next to it (`--json`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIMIC3_FULL_CODES = 8929


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from icdcoder.models.base import Batch, ModelContext, build_model
    from icdcoder.training.config import TrainConfig
    from icdcoder.training.trainer import build_optimizer

    if args.max_gb:  # a form that does not fit fails in its own process instead of starving the machine
        import resource

        limit = int(args.max_gb * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_codes = int(args.codes[0])
    rng = np.random.default_rng(0)
    vocab = args.vocab
    syn = [
        [[int(x) for x in rng.integers(2, vocab, size=int(rng.integers(1, 13)))] for _ in range(args.m)]
        for _ in range(n_codes)
    ]
    ctx = ModelContext(
        label_keys=[f"icd9cm-dx:{i}" for i in range(n_codes)], vocab_size=vocab, label_synonym_token_ids=syn
    )
    cfg = {
        "name": "msmn",
        "rnn_dim": args.rnn_dim,
        "num_layers": args.layers,
        "attention_dim": args.hidden,
        "synonyms": args.m,
        "label_chunk_size": args.label_chunk,
    }
    model = build_model(cfg, ctx)
    model.reference = args.form == "reference"
    model.train()
    opt = build_optimizer(model, TrainConfig(lr=5e-4, weight_decay=0.01))
    ids = torch.randint(2, vocab, (args.batch, args.tokens))
    mask = torch.ones_like(ids, dtype=torch.bool)
    targets = (torch.rand(args.batch, n_codes) < 0.002).float()
    batch = Batch(ids, mask, mask.sum(1), [str(i) for i in range(args.batch)], targets)

    def step() -> float:
        out = model(batch)
        loss = sum(model.losses(batch, out).values())
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    for p in model.parameters():  # allocate AdamW state before the baseline
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    baseline = _rss_bytes()
    t0 = time.perf_counter()
    step()
    warm = time.perf_counter() - t0
    times, cpu, losses = [], [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(
        json.dumps(
            {"baseline_rss": baseline, "warmup_s": warm, "step_s": times, "cpu_s": cpu, "losses": losses}
        )
    )


def run_child(form: str, codes: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", "--form", form, "--codes", str(codes)]
    for k in (
        "tokens",
        "batch",
        "m",
        "hidden",
        "rnn_dim",
        "layers",
        "steps",
        "threads",
        "vocab",
        "label_chunk",
    ):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        tail = err.strip().splitlines()[-3:]
        return {"form": form, "codes": codes, "failed": " | ".join(tail), "peak_rss": usage.ru_maxrss * 1024}
    res = json.loads(out.strip().splitlines()[-1])
    res.update({"form": form, "codes": codes, "peak_rss": usage.ru_maxrss * 1024})
    res["peak_delta"] = res["peak_rss"] - res["baseline_rss"]
    res["step_median_s"] = statistics.median(res["step_s"])
    res["cpu_median_s"] = statistics.median(res["cpu_s"])
    return res


def _gb(n: float) -> str:
    return f"{n / 1024**3:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--form", choices=("lean", "reference"), default="lean", help=argparse.SUPPRESS)
    ap.add_argument("--codes", type=int, nargs="+", default=[50, MIMIC3_FULL_CODES])
    ap.add_argument("--tokens", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512, help="attention_dim h")
    ap.add_argument("--rnn-dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--label-chunk", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--forms", nargs="+", default=["lean", "reference"])
    ap.add_argument("--max-gb", type=float, default=16.0, help="address-space limit per child (0 = none)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    for codes in args.codes:
        for form in args.forms:
            res = run_child(form, codes, args)
            results.append(res)
            print(json.dumps({k: v for k, v in res.items() if k not in ("losses",)}), file=sys.stderr)
    print(
        f"B={args.batch} (×2 with R-Drop), T={args.tokens}, M={args.m}, h={args.hidden}, "
        f"rnn_dim={args.rnn_dim}×{args.layers} layers, {args.threads} thread(s), "
        f"label chunk {args.label_chunk}\n"
    )
    print("| codes | form | step wall (s) | step CPU (s) | peak RSS (GB) | peak − baseline (GB) |")
    print("|---|---|---|---|---|---|")
    by = {(r["codes"], r["form"]): r for r in results}
    for r in results:
        if "failed" in r:
            print(
                f"| {r['codes']} | {r['form']} | failed: {r['failed'][:60]} | – | {_gb(r['peak_rss'])} | – |"
            )
            continue
        print(
            f"| {r['codes']} | {r['form']} | {r['step_median_s']:.2f} | {r['cpu_median_s']:.2f} | "
            f"{_gb(r['peak_rss'])} | {_gb(r['peak_delta'])} |"
        )
    print("\n| codes | reference / lean: wall time | CPU time | peak RSS | peak − baseline |")
    print("|---|---|---|---|---|")
    for codes in args.codes:
        lean, ref = by.get((codes, "lean")), by.get((codes, "reference"))
        if not lean or not ref or "failed" in lean or "failed" in ref:
            continue
        print(
            f"| {codes} | {ref['step_median_s'] / lean['step_median_s']:.2f}× | "
            f"{ref['cpu_median_s'] / lean['cpu_median_s']:.2f}× | "
            f"{ref['peak_rss'] / lean['peak_rss']:.2f}× | {ref['peak_delta'] / lean['peak_delta']:.2f}× |"
        )
    if args.json:
        meta = {
            "date": dt.date.today().isoformat(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
