"""JLAN experiments: label-noise robustness, ablation runs, and the denoising convergence plot.

    # 1. a CodiEsp-D copy with 20 % of the training code assignments replaced by wrong codes (dev/test clean)
    .venv/bin/python benchmarks/jlan_noise.py corrupt --rate 0.2 --seed 13 \
        --out runs/jlan/data/codiesp-d-noise20
    # 2. train variants (sequentially, one `icdcoder train` process each) on it, or on the clean data
    .venv/bin/python benchmarks/jlan_noise.py train --root runs/jlan/noise20 --seeds 0 \
        --variants jlan,no-denoise,sum,label,self \
        --set data.source=prepared --set data.path=runs/jlan/data/codiesp-d-noise20 [--set ...]
    # 3. how much of the clean score each variant keeps
    .venv/bin/python benchmarks/jlan_noise.py summary --clean runs/jlan/clean --noisy runs/jlan/noise20
    # 4. dev BCE and dev micro-F1 per epoch, with and without denoising (SVG + PNG, no plotting library)
    .venv/bin/python benchmarks/jlan_noise.py plot --svg docs/results/jlan_convergence.svg \
        --png docs/results/jlan_convergence.png --series "clean|JLAN|runs/jlan/clean/jlan/seed0" ...

Noise model (`corrupt`): each (training document, gold code) assignment is, with probability `rate`,
replaced by a code drawn from the training code distribution (frequency-weighted, so code marginals stay
realistic) that the document does not already carry. A replacement flips two entries of the label matrix
(the true code 1 → 0, a wrong code 0 → 1): a coder choosing a wrong code. Documents are visited in id order
and codes in sorted order with one numpy Generator(seed), so the corruption is reproducible. Evidence spans of
replaced codes are dropped. Dev and test are left untouched (model selection and scores stay on clean labels).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, list[str]] = {
    "jlan": [],  # joint attention + truncation loss (the full model)
    "no-denoise": ["model.denoise=false"],  # Fig. 8
    "sum": ["model.attention=sum"],  # Fig. 7: self + label attention added, no joint learning
    "label": ["model.attention=label"],  # Fig. 6: label attention only
    "self": ["model.attention=self"],  # Fig. 6: self-attention only
}


# -- corruption ------------------------------------------------------------------------------------------


def corrupt_labels(docs: list[Any], rate: float, seed: int) -> tuple[list[Any], dict[str, Any]]:
    """Replace each training (document, code) assignment with probability `rate` by another training code.

    `docs` are icdcoder Documents; returns new Documents (non-train ones unchanged) and a report."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    train = [d for d in docs if d.split == "train"]
    counts = Counter(c for d in train for c in d.codes)
    pool = sorted(counts)
    weights = np.array([counts[c] for c in pool], dtype=np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    replaced: dict[str, list[str]] = {}
    n_assign = n_changed = 0
    for doc in sorted(train, key=lambda d: d.id):
        gold = sorted(set(doc.codes))
        taken = set(gold)
        new: list[str] = []
        for code in gold:
            n_assign += 1
            if rng.random() < rate and len(taken) < len(pool):
                while True:
                    wrong = pool[int(rng.choice(len(pool), p=weights))]
                    if wrong not in taken:
                        break
                taken.add(wrong)
                new.append(wrong)
                n_changed += 1
            else:
                new.append(code)
        replaced[doc.id] = new
    out = []
    for doc in docs:
        if doc.id in replaced:
            codes = replaced[doc.id]
            evidence = [e for e in doc.evidence if e.code in codes]
            doc = dataclasses.replace(doc, codes=codes, evidence=evidence)
        out.append(doc)
    report = {
        "rate": rate,
        "seed": seed,
        "train_assignments": n_assign,
        "replaced": n_changed,
        "replaced_share": round(n_changed / max(n_assign, 1), 4),
    }
    return out, report


def cmd_corrupt(args: argparse.Namespace) -> None:
    from icdcoder.data.prepared import write_prepared
    from icdcoder.training.config import DataConfig
    from icdcoder.training.pipeline import open_dataset

    if args.source:
        from icdcoder.data.prepared import PreparedDataset

        dataset = PreparedDataset.open(args.source)
    else:
        dataset = open_dataset(DataConfig(source="codiesp", task=args.task, lang="en"))
    docs = [d for s in dataset.splits for d in dataset.load(s)]
    noisy, report = corrupt_labels(docs, args.rate, args.seed)
    stats = write_prepared(
        args.out,
        noisy,
        source="jlan-label-noise",
        options={"base_fingerprint": dataset.fingerprint, **report},
        overwrite=args.overwrite,
    )
    print(json.dumps({**report, "out": str(args.out), "fingerprint": stats.get("fingerprint")}, indent=2))


# -- training runs ---------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> None:
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in variants:
            run = Path(args.root) / variant / f"seed{seed}"
            if (run / "run.json").exists():
                print(f"skip {run} (done)", flush=True)
                continue
            name = args.dataset_name + ("" if variant == "jlan" else f" ({variant})")
            sets = [f"train.seed={seed}", f"dataset_name={name}", "train.progress=false", *args.set]
            sets += VARIANTS[variant]
            cmd = [sys.executable, "-m", "icdcoder", "train", args.config, "--out", str(run), "--overwrite"]
            for s in sets:
                cmd += ["--set", s]
            print(" ".join(cmd), flush=True)
            run.parent.mkdir(parents=True, exist_ok=True)
            with open(run.parent / f"seed{seed}.log", "w", encoding="utf-8") as log:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
            print(f"{run}: exit {proc.returncode}", flush=True)


# -- summary ---------------------------------------------------------------------------------------------


def _runs(root: Path, variant: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((root / variant).glob("seed*/run.json")):
        out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def cmd_summary(args: argparse.Namespace) -> None:
    clean_root, noisy_root = Path(args.clean), Path(args.noisy)
    metrics = args.metrics.split(",")
    head = ["variant", "seeds"]
    for m in metrics:
        head += [f"clean {m}", f"noisy {m}", f"kept {m}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for variant in VARIANTS:
        clean, noisy = _runs(clean_root, variant), _runs(noisy_root, variant)
        seeds = sorted({r["seed"] for r in clean} & {r["seed"] for r in noisy})
        if not seeds:
            continue
        cells = [variant, ",".join(map(str, seeds))]
        for m in metrics:
            c = float(np.mean([r["test"][m] for r in clean if r["seed"] in seeds]))
            n = float(np.mean([r["test"][m] for r in noisy if r["seed"] in seeds]))
            cells += [f"{100 * c:.1f}", f"{100 * n:.1f}", f"{100 * n / c:.0f} %" if c else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Test metrics in % (mean over the seeds run in both settings); kept = noisy / clean.")
    print("\n".join(lines))


# -- plot: a tiny SVG/PNG line-chart renderer (matplotlib is not a dependency) --------------------------

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]

# 5×7 bitmap glyphs (rows top to bottom, 5 bits each) for the PNG; lower case is drawn as upper case.
_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}


class Canvas:
    """Drawing primitives recorded once, rendered to SVG (vector) and PNG (numpy raster)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.items: list[tuple[Any, ...]] = []

    def line(self, pts: list[tuple[float, float]], color: tuple[int, int, int], width: float = 1.0) -> None:
        self.items.append(("line", pts, color, width))

    def text(
        self, x: float, y: float, s: str, size: int = 12, anchor: str = "start", rotate: bool = False
    ) -> None:
        self.items.append(("text", x, y, s, size, anchor, rotate))

    def svg(self) -> str:
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="DejaVu Sans, Arial, sans-serif">',
            f'<rect width="{self.width}" height="{self.height}" fill="white"/>',
        ]
        for item in self.items:
            if item[0] == "line":
                _, pts, color, width = item
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(
                    f'<polyline points="{path}" fill="none" stroke="rgb{color}" stroke-width="{width}" '
                    'stroke-linejoin="round" stroke-linecap="round"/>'
                )
            else:
                _, x, y, s, size, anchor, rotate = item
                esc = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                rot = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
                out.append(
                    f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                    f'dominant-baseline="middle"{rot}>{esc}</text>'
                )
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def png(self, scale: int = 2) -> bytes:
        w, h = self.width * scale, self.height * scale
        img = np.full((h, w, 3), 255, dtype=np.uint8)
        for item in self.items:
            if item[0] == "line":
                _, pts, color, width = item
                for (x0, y0), (x1, y1) in itertools.pairwise(pts):
                    _stamp_segment(
                        img, x0 * scale, y0 * scale, x1 * scale, y1 * scale, width * scale / 2, color
                    )
            else:
                _, x, y, s, size, anchor, rotate = item
                _draw_text(img, x * scale, y * scale, s, max(1, round(size * scale / 9)), anchor, rotate)
        return _encode_png(img)


def _stamp_segment(
    img: np.ndarray, x0: float, y0: float, x1: float, y1: float, radius: float, color: tuple[int, int, int]
) -> None:
    n = max(2, int(np.hypot(x1 - x0, y1 - y0) * 2))
    r = max(radius, 0.5)
    ri = int(np.ceil(r))
    offs = [
        (dx, dy)
        for dx in range(-ri, ri + 1)
        for dy in range(-ri, ri + 1)
        if dx * dx + dy * dy <= r * r + 0.25
    ]
    for t in np.linspace(0.0, 1.0, n):
        cx, cy = round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t)
        for dx, dy in offs:
            px, py = cx + dx, cy + dy
            if 0 <= px < img.shape[1] and 0 <= py < img.shape[0]:
                img[py, px] = color


def _draw_text(img: np.ndarray, x: float, y: float, s: str, px: int, anchor: str, rotate: bool) -> None:
    s = s.upper()
    width = (len(s) * 6 - 1) * px
    tile = np.zeros((7 * px, max(width, 1)), dtype=bool)
    for i, ch in enumerate(s):
        rows = _GLYPHS.get(ch, _GLYPHS["?"]).split()
        glyph = np.array([[c == "1" for c in row] for row in rows], dtype=bool)
        tile[:, i * 6 * px : i * 6 * px + 5 * px] = np.kron(glyph, np.ones((px, px), dtype=bool))
    if rotate:
        tile = np.rot90(tile)
    th, tw = tile.shape
    if rotate:  # the text runs upwards; anchor along the vertical axis
        top = y - (th if anchor == "start" else th / 2 if anchor == "middle" else 0)
        left = x - tw / 2
    else:
        left = x - (0 if anchor == "start" else tw / 2 if anchor == "middle" else tw)
        top = y - th / 2
    top_i, left_i = round(top), round(left)
    ys, xs = np.nonzero(tile)
    ys, xs = ys + top_i, xs + left_i
    ok = (ys >= 0) & (ys < img.shape[0]) & (xs >= 0) & (xs < img.shape[1])
    img[ys[ok], xs[ok]] = 0


def _encode_png(img: np.ndarray) -> bytes:
    import struct

    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(start, hi + step * 1e-9, step)]


def _fmt_tick(v: float, step: float) -> str:
    digits = max(0, int(-np.floor(np.log10(step))) if step < 1 else 0)
    return f"{v:.{digits}f}"


def panel(
    cv: Canvas,
    box: tuple[float, float, float, float],
    series: list[tuple[str, tuple[int, int, int], list[list[float]]]],
    title: str,
    ylabel: str,
    legend_low: bool = False,
) -> None:
    """One line chart in box (x, y, w, h): each series is (name, colour, per-seed y values by epoch); a thin
    line per seed and a thick line for the mean over seeds (over the epochs every seed reached). The legend
    sits in the upper right corner, or the lower right one (`legend_low`) for rising curves."""
    x, y, w, h = box
    ys = [v for _, _, runs in series for r in runs for v in r]
    n_epochs = max((len(r) for _, _, runs in series for r in runs), default=1)
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad
    yt = _nice_ticks(lo, hi)
    lo, hi = min(lo, yt[0]), max(hi, yt[-1])
    left, bottom = x + 62, y + h - 40
    pw, ph = w - 72, h - 70

    def px(epoch: float, val: float) -> tuple[float, float]:
        fx = (epoch - 1) / max(n_epochs - 1, 1)
        return left + fx * pw, bottom - (val - lo) / (hi - lo) * ph

    grey = (200, 200, 200)
    for v in yt:
        cv.line([px(1, v), px(n_epochs, v)], grey, 0.6)
        cv.text(left - 6, px(1, v)[1], _fmt_tick(v, yt[1] - yt[0] if len(yt) > 1 else 1.0), 10, "end")
    for e in _nice_ticks(1, n_epochs, min(n_epochs - 1, 8) or 1):
        if float(e).is_integer() and 1 <= e <= n_epochs:
            cv.text(px(e, lo)[0], bottom + 12, str(int(e)), 10, "middle")
    cv.line([(left, bottom - ph), (left, bottom), (left + pw, bottom)], (0, 0, 0), 1.0)
    cv.text(left + pw / 2, y + 12, title, 13, "middle")
    cv.text(left + pw / 2, bottom + 28, "epoch", 11, "middle")
    cv.text(x + 12, bottom - ph / 2, ylabel, 11, "middle", rotate=True)
    # legend block right-aligned to the plot: wide enough for the longest label (~7 px per character at 10 px)
    lx = left + pw - 30 - 7 * max((len(f"{n} (n={len(r)})") for n, _, r in series), default=0)
    for i, (name, color, runs) in enumerate(series):
        light = (int(color[0] * 0.4 + 153), int(color[1] * 0.4 + 153), int(color[2] * 0.4 + 153))
        for r in runs:
            if len(runs) > 1:
                cv.line([px(e + 1, v) for e, v in enumerate(r)], light, 1.0)
        common = min(len(r) for r in runs)
        mean = [float(np.mean([r[e] for r in runs])) for e in range(common)]
        cv.line([px(e + 1, v) for e, v in enumerate(mean)], color, 2.2)
        ly = (bottom - 12 - 16 * (len(series) - 1 - i)) if legend_low else (y + 30 + 16 * i)
        cv.line([(lx, ly), (lx + 22, ly)], color, 2.2)
        cv.text(lx + 28, ly, f"{name} (n={len(runs)})", 10)


def dev_curve(run: Path, key: str) -> list[float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x]
    return [float(r[key]) for r in records if r.get("kind") == "dev" and key in r]


def curves_table(rows: dict[str, list[tuple[str, list[Path]]]], metrics: list[tuple[str, str]]) -> str:
    """Markdown: per series, the mean over seeds of each metric at every epoch all its seeds reached."""
    lines = []
    for key, label in metrics:
        lines += [f"{label} per epoch (mean over seeds):", ""]
        curves = {
            (row, name): [dev_curve(p, key) for p in paths]
            for row, items in rows.items()
            for name, paths in items
        }
        n = max((min(len(c) for c in cs) for cs in curves.values() if cs), default=0)
        lines.append("| series | seeds | " + " | ".join(str(e + 1) for e in range(n)) + " |")
        lines.append("|---|---|" + "---|" * n)
        for (row, name), cs in curves.items():
            common = min(len(c) for c in cs)
            cells = [f"{np.mean([c[e] for c in cs]):.4f}" if e < common else "" for e in range(n)]
            lines.append(f"| {row}: {name} | {len(cs)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def cmd_plot(args: argparse.Namespace) -> None:
    rows: dict[str, list[tuple[str, list[Path]]]] = {}
    for spec in args.series:
        row, name, runs = spec.split("|")
        rows.setdefault(row, []).append((name, [Path(p) for p in runs.split(",") if p]))
    metrics = [("dev_bce", "dev BCE"), ("dev_f1_micro", "dev micro-F1")]
    pw, ph = 460, 300
    cv = Canvas(pw * len(metrics), ph * len(rows) + 30)
    cv.text(cv.width / 2, 15, args.title, 14, "middle")
    for r, (row, items) in enumerate(rows.items()):
        for c, (key, label) in enumerate(metrics):
            series = [
                (name, PALETTE[i % len(PALETTE)], [dev_curve(p, key) for p in paths])
                for i, (name, paths) in enumerate(items)
            ]
            box = (c * pw, 30 + r * ph, pw, ph)
            panel(cv, box, series, f"{row}: {label}", label, legend_low=key != "dev_bce")
    print(curves_table(rows, metrics))
    if args.svg:
        Path(args.svg).write_text(cv.svg(), encoding="utf-8")
    if args.png:
        Path(args.png).write_bytes(cv.png())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corrupt", help="write a prepared dataset copy with noisy training labels")
    c.add_argument("--rate", type=float, default=0.2)
    c.add_argument("--seed", type=int, default=13)
    c.add_argument("--task", default="D", choices=["D", "P"])
    c.add_argument("--source", help="a prepared dataset directory (default: the embedded CodiEsp, English)")
    c.add_argument("--out", required=True)
    c.add_argument("--overwrite", action="store_true")
    t = sub.add_parser("train", help="train JLAN variants sequentially")
    t.add_argument("--root", required=True, help="runs go to ROOT/VARIANT/seedN")
    t.add_argument("--config", default="configs/codiesp-d/jlan.yaml")
    t.add_argument("--dataset-name", default="codiesp-d")
    t.add_argument("--variants", default=",".join(VARIANTS))
    t.add_argument("--seeds", default="0")
    t.add_argument("--set", action="append", default=[], help="extra config overrides (repeatable)")
    s = sub.add_parser("summary", help="share of the clean test score each variant keeps under noise")
    s.add_argument("--clean", required=True)
    s.add_argument("--noisy", required=True)
    s.add_argument("--metrics", default="f1_micro,f1_macro,p@5")
    p = sub.add_parser("plot", help="dev BCE and dev micro-F1 per epoch")
    p.add_argument("--series", action="append", required=True, help="ROW|NAME|run1,run2,...")
    p.add_argument("--title", default="JLAN on CodiEsp-D: with and without the truncation loss")
    p.add_argument("--svg")
    p.add_argument("--png")
    args = ap.parse_args()
    {"corrupt": cmd_corrupt, "train": cmd_train, "summary": cmd_summary, "plot": cmd_plot}[args.cmd](args)


if __name__ == "__main__":
    main()
