"""Benchmark: `icdcoder data prepare mimic3 --split full` on MIMIC-III-sized synthetic raw CSVs.

    .venv/bin/python benchmarks/prepare_mimic_scale.py              # full size: 52,726 admissions
    .venv/bin/python benchmarks/prepare_mimic_scale.py --scale 0.1  # a quick run

Writes NOTEEVENTS / DIAGNOSES_ICD / PROCEDURES_ICD in MIMIC-III v1.4's schema with the synthetic generator
(about 1,500 words per discharge summary, an 8,929-code ICD-9 label space, addenda and non-discharge notes
to filter out; HADM_IDs from the shipped CAML split files), then runs the prepare in a child process
(`python -m icdcoder data prepare mimic3`) and measures its wall time and peak RSS (the child's
`ru_maxrss` from wait4). Generation is timed separately. Prints a Markdown table row and writes a JSON
result. Acceptance target: peak RSS <= 4 GB at full size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIMIC3_FULL_ADMISSIONS = 47723 + 1631 + 3372  # the shipped CAML full split files
MIMIC3_FULL_CODES = 8929
RSS_TARGET_BYTES = 4 * 1024**3
ROOT = Path(__file__).resolve().parents[1]


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return info


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return res.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run `cmd`; return its exit status, wall and CPU seconds, peak RSS and output tail."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode("utf-8", errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; keep Popen from waiting again
    return {
        "exit_status": proc.returncode,
        "wall_seconds": round(wall, 1),
        # CPU time is the figure to compare across runs on a shared machine; wall time depends on the load.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # ru_maxrss is in KiB on Linux
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "output_tail": output.strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of MIMIC-III's 52,726 admissions")
    ap.add_argument("--words", type=int, default=1500, help="mean words per discharge summary")
    ap.add_argument("--codes", type=int, default=MIMIC3_FULL_CODES, help="ICD-9 label space size")
    ap.add_argument("--other-notes", type=float, default=0.5, help="non-discharge notes per admission")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, help="keep raw CSVs and output here (default: a temp dir)")
    ap.add_argument("--reuse-raw", action="store_true", help="skip generation if WORKDIR/raw exists")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    from icdcoder.data.sources.synthetic import write_mimic3_csvs

    n_notes = max(1, round(MIMIC3_FULL_ADMISSIONS * args.scale))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="icdcoder-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    raw, out = workdir / "raw", workdir / "prepared"
    result: dict[str, Any] = {
        "benchmark": "prepare_mimic3_full",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": _machine(),
        "params": {
            "scale": args.scale,
            "admissions": n_notes,
            "words_per_note": args.words,
            "codes": args.codes,
            "other_notes_per_admission": args.other_notes,
            "seed": args.seed,
        },
    }
    try:
        if args.reuse_raw and (raw / "NOTEEVENTS.csv.gz").is_file():
            result["generation"] = {"reused": True}
        else:
            print(f"generating {n_notes:,} admissions into {raw} ...", file=sys.stderr, flush=True)
            t0, cpu0 = time.perf_counter(), time.process_time()
            summary = write_mimic3_csvs(
                raw,
                n_notes,
                words_per_note=args.words,
                n_codes=args.codes,
                seed=args.seed,
                other_notes_per_admission=args.other_notes,
                overwrite=True,
            )
            result["generation"] = {
                "seconds": round(time.perf_counter() - t0, 1),
                "cpu_seconds": round(time.process_time() - cpu0, 1),
                "rows": summary["rows"],
                "addenda": summary["addenda"],
                "other_notes": summary["other_notes"],
            }
        result["raw_bytes"] = {p.name: p.stat().st_size for p in sorted(raw.glob("*.csv.gz"))}

        cmd = [sys.executable, "-m", "icdcoder", "data", "prepare", "mimic3"]
        cmd += ["--mimic-dir", str(raw), "--split", "full", "--out", str(out), "--overwrite"]
        print(f"running: {' '.join(cmd)}", file=sys.stderr, flush=True)
        measured = _run_measured(cmd)
        rc, peak = measured["exit_status"], measured["peak_rss_bytes"]
        result["prepare"] = {
            "command": "icdcoder data prepare mimic3 --mimic-dir RAW --split full --out OUT",
            **measured,
            "peak_rss_gib": round(peak / 1024**3, 3),
        }
        if rc == 0:
            stats = json.loads((out / "stats.json").read_text())
            result["prepared"] = {
                "documents": {s: v["documents"] for s, v in stats["splits"].items()},
                "distinct_codes": stats["total"]["distinct_codes"],
                "bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
            }
        result["target"] = {
            "peak_rss_max_bytes": RSS_TARGET_BYTES,
            "met": rc == 0 and peak <= RSS_TARGET_BYTES,
        }
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    json_path = args.json or ROOT / "benchmarks" / "results" / f"prepare_mimic3_scale{args.scale:g}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    gen = result["generation"].get("seconds", "reused")
    prep = result["prepare"]
    notes_mb = result["raw_bytes"].get("NOTEEVENTS.csv.gz", 0) / 1024**2
    header = (
        "| date | scale | admissions | NOTEEVENTS.csv.gz | generation s | prepare wall s (CPU s) | peak RSS |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['date'][:10]} | {args.scale:g} | {n_notes:,} | {notes_mb:,.0f} MiB | {gen} | "
        f"{prep['wall_seconds']} ({prep.get('cpu_seconds', '?')}) | {prep['peak_rss_gib']:.2f} GiB "
        f"({'meets' if result['target']['met'] else 'MISSES'} the 4 GB target) |"
    )
    print(f"result: {json_path}", file=sys.stderr)
    return 0 if prep["exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
