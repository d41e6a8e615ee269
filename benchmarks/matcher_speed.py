"""Matcher cost against a whole code system: index build, per-note coding time, notes/s, peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/matcher_speed.py --system icd10cm --release icd10cm-2018
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/matcher_speed.py --system icd10pcs --release icd10pcs-2018

One process per system (peak memory is the process's). Build (`--cold`): term texts gathered from the
ontology (GEM-linked synonyms; cached afterwards), then normalisation + index only (what editing a matching
table costs); always: loading the cached index. Coding: the CodiEsp dev notes (English translation) cut to
their first 300 words, one core, CPU time per note (process time, so other processes on a shared machine do
not inflate it) and wall-clock notes/s; `forward` with scores, spans and features, as for the predictor.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from icdcoder.data.sources.codiesp import iter_codiesp
from icdcoder.matching import terms
from icdcoder.models.base import Batch, ModelContext
from icdcoder.models.matcher import MatcherConfig, OntologyMatcher, index_for
from icdcoder.ontology.releases import release_codes


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", default="icd10cm")
    ap.add_argument("--release", default="icd10cm-2018")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--words", type=int, default=300)
    ap.add_argument("--cold", action="store_true", help="also time a build from nothing (minutes)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    keys = release_codes(args.system, args.release)
    out: dict[str, object] = {"system": args.system, "release": args.release, "codes": len(keys)}
    if args.cold:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.process_time()
            terms.cached_terms(keys, args.lang, Path(tmp))  # from the ontology (GEM-linked synonyms)
            out["build_term_texts_cpu_s"] = round(time.process_time() - t0, 1)
            t0 = time.process_time()
            index_for(keys, args.lang, Path(tmp))  # term texts now cached: normalisation + index
            out["build_tables_index_cpu_s"] = round(time.process_time() - t0, 1)
    index_for(keys, args.lang, None)  # make sure the user cache holds it
    t0 = time.process_time()
    model = OntologyMatcher(MatcherConfig(name="matcher", lang=args.lang), ModelContext(keys, vocab_size=2))
    out["load_cached_cpu_s"] = round(time.process_time() - t0, 1)
    out["terms"] = model.index.n_terms
    dev = [
        d
        for d in iter_codiesp(None, "D" if args.system == "icd10cm" else "P", "en", False)
        if d.split == "dev"
    ]
    notes = [" ".join(d.text.split()[: args.words]) for d in dev]
    model.eval()
    per_note = []
    wall0 = time.perf_counter()
    for text in notes:
        model._matches.clear()  # no help from the match cache: every note is coded from scratch
        batch = Batch(
            torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), torch.ones(1), [""]
        )
        batch.texts = [text]
        t0 = time.process_time()
        model(batch)
        per_note.append(1000 * (time.process_time() - t0))
    wall = time.perf_counter() - wall0
    per_note.sort()
    out.update(
        notes=len(notes),
        words_per_note=args.words,
        ms_per_note_cpu_median=round(statistics.median(per_note), 2),
        ms_per_note_cpu_p90=round(per_note[int(0.9 * len(per_note))], 2),
        notes_per_s_wall=round(len(notes) / wall, 1),
        peak_rss_mib=round(peak_mib(), 0),
    )
    print(json.dumps(out, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
