"""Scoring evidence spans against gold evidence: CodiEsp-X and MDACE.

The unit is an *evidence item*: (document, code, spans), spans being character offsets into the document
text (several for a discontinuous mention). A position is the interval from the start of its first
fragment to the end of its last (`"2787 2801;2810 2823"` -> [2787, 2823)). Three matching rules and one
rule-free measure:

- `codiesp` (the official CodiEsp-X rule, the headline; TeMU-BSC's `codiespX_evaluation.py`, copied in
  ../shared/tools/codiesp-official): the unit is a unique (document, code) pair. A gold pair is a true
  positive when some predicted interval of that pair *contains* some gold interval of it with at most 10
  characters of slack on each side (0 <= gold start - predicted start <= 10 and 0 <= predicted end -
  gold end <= 10); one correct reference suffices. P = TP / predicted pairs, R = TP / gold pairs, micro.
- `overlap` (a lenient reading, kept for comparison with older results): items, not pairs, are counted
  (duplicate rows with the same document, code and position count once on each side); a predicted item is
  a true positive when its interval overlaps a gold interval of the same code in the same document, one to
  one (a maximum matching), so one gold mention cannot reward ten predictions.
- `exact`: as `overlap`, but the intervals must be equal.
- `chars`: per (document, code), the characters covered by predicted spans against those covered by gold
  spans; precision = |P ∩ G| / |P|, recall = |P ∩ G| / |G|, summed over (document, code) pairs (a predicted
  code without gold evidence contributes only false-positive characters).

Readers: CodiEsp-X gold comes from prepared CodiEsp documents (`Document.evidence`, offsets into the
Spanish text, so the documents must be the Spanish ones, `lang: es`). MDACE (Cheng et al., ACL 2023) ships
character offsets into MIMIC-III NOTEEVENTS notes (`begin`/`end`, end exclusive: "PTSD" is [9603, 9607))
keyed by the note's ROW_ID; `read_mdace` pairs them with note texts read from the user's NOTEEVENTS file.

Command line (see docs/results/evidence.md):
    python -m icdcoder.inference.evidence_eval codiesp MODEL_DIR [--split test] [--out result.json]
    python -m icdcoder.inference.evidence_eval mdace MODEL_DIR --mdace DIR --noteevents FILE [--split test]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icdcoder.errors import DataError, IcdcoderError
from icdcoder.ontology.systems import Code

if TYPE_CHECKING:
    from icdcoder.data.document import Document
    from icdcoder.inference.predictor import Predictor

RULES: tuple[str, ...] = ("codiesp", "overlap", "exact", "chars")
X_SLACK = 10  # characters of slack the official CodiEsp-X rule allows on each side of a gold span
Span = tuple[int, int]


@dataclass(frozen=True)
class EvidenceItem:
    """One piece of evidence: `spans` index the text of document `doc_id`; `code` is a `system:code` key."""

    doc_id: str
    code: str
    spans: tuple[Span, ...]

    @property
    def interval(self) -> Span:
        """From the first fragment's start to the last fragment's end (CodiEsp-X's reference position)."""
        return (min(a for a, _ in self.spans), max(b for _, b in self.spans))


@dataclass
class SpanScores:
    rule: str
    tp: float
    n_pred: float
    n_gold: float
    precision: float
    recall: float
    f1: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _prf(rule: str, tp: float, n_pred: float, n_gold: float) -> SpanScores:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return SpanScores(rule, tp, n_pred, n_gold, round(p, 6), round(r, 6), round(f, 6))


def _max_matching(pred: list[Span], gold: list[Span], rule: str) -> int:
    """Size of a maximum one-to-one matching of predicted to gold intervals (Kuhn's augmenting paths;
    the groups are one code in one document, so a few items)."""

    def ok(p: Span, g: Span) -> bool:
        return p == g if rule == "exact" else p[0] < g[1] and g[0] < p[1]

    adj = [[j for j, g in enumerate(gold) if ok(p, g)] for p in pred]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in adj[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(pred)))


def _covered(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersection(x: list[Span], y: list[Span]) -> int:
    total, i, j = 0, 0, 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        total += max(0, hi - lo)
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def _contains_with_slack(pred: Span, gold: Span, slack: int = X_SLACK) -> bool:
    """The official CodiEsp-X test: `pred` contains `gold`, overshooting by at most `slack` on each side."""
    return 0 <= gold[0] - pred[0] <= slack and 0 <= pred[1] - gold[1] <= slack


def score_spans(
    gold: Iterable[EvidenceItem], pred: Iterable[EvidenceItem], rule: str = "codiesp"
) -> SpanScores:
    """Precision / recall / F1 of predicted evidence against gold evidence under `rule` (module docstring)."""
    if rule not in RULES:
        raise IcdcoderError(
            f"unknown evidence matching rule {rule!r}.", fix=f"use one of {', '.join(RULES)}."
        )
    g_groups: dict[tuple[str, str], list[EvidenceItem]] = defaultdict(list)
    p_groups: dict[tuple[str, str], list[EvidenceItem]] = defaultdict(list)
    for it in gold:
        g_groups[(it.doc_id, it.code)].append(it)
    for it in pred:
        p_groups[(it.doc_id, it.code)].append(it)
    if rule == "chars":
        tp = n_pred = n_gold = 0
        for key in set(g_groups) | set(p_groups):
            gc = _covered(s for it in g_groups.get(key, []) for s in it.spans)
            pc = _covered(s for it in p_groups.get(key, []) for s in it.spans)
            tp += _intersection(gc, pc)
            n_gold += sum(b - a for a, b in gc)
            n_pred += sum(b - a for a, b in pc)
        return _prf(rule, tp, n_pred, n_gold)
    if rule == "codiesp":
        hit = 0
        for key, g_items in g_groups.items():
            p_iv = {it.interval for it in p_groups.get(key, [])}
            if any(_contains_with_slack(p, g.interval) for g in g_items for p in p_iv):
                hit += 1
        return _prf(rule, hit, len(p_groups), len(g_groups))
    tp = n_pred = n_gold = 0
    for key in set(g_groups) | set(p_groups):
        gi = sorted({it.interval for it in g_groups.get(key, [])})
        pi = sorted({it.interval for it in p_groups.get(key, [])})
        n_gold += len(gi)
        n_pred += len(pi)
        if gi and pi:
            tp += _max_matching(pi, gi, rule)
    return _prf(rule, tp, n_pred, n_gold)


def score_all(gold: Sequence[EvidenceItem], pred: Sequence[EvidenceItem]) -> dict[str, dict[str, Any]]:
    return {rule: score_spans(gold, pred, rule).to_json() for rule in RULES}


# --------------------------------------------------------------------------------------------------
# Gold evidence readers


def gold_from_documents(docs: Iterable[Document]) -> list[EvidenceItem]:
    """Gold items from documents' evidence whose offsets index the document text itself."""
    items: list[EvidenceItem] = []
    for d in docs:
        for ev in d.evidence:
            if ev.offsets_in != "text":
                raise DataError(
                    f"document {d.id!r}: evidence offsets index {ev.offsets_in!r}, not this text.",
                    fix="score CodiEsp-X on the Spanish documents (data.lang: es with the full release).",
                )
            spans = tuple((a, b) for a, b in ev.spans if b > a)  # a few gold rows have empty offsets
            if spans:
                items.append(EvidenceItem(d.id, ev.code, spans))
    return items


MDACE_SYSTEMS: dict[str, str] = {
    "ICD-9-CM": "icd9cm-dx",
    "ICD-9-PCS": "icd9cm-proc",
    "ICD-10-CM": "icd10cm",
    "ICD-10-PCS": "icd10pcs",
}


@dataclass
class MdaceNotes:
    """MDACE gold evidence paired with note texts: one evaluation document per annotated note."""

    texts: dict[str, str]  # note id (NOTEEVENTS ROW_ID) -> text
    hadm_of: dict[str, int]
    gold: list[EvidenceItem]
    report: dict[str, Any] = field(default_factory=dict)


def _mdace_data_dir(root: Path, setting: str, version: str) -> Path:
    for base in (root, root / "raw", root / "raw" / "data", root / "data"):
        d = base / setting / version / "1.0"
        if d.is_dir():
            return d
        d = base / "data" / setting / version / "1.0"
        if d.is_dir():
            return d
    raise DataError(
        f"MDACE annotations for {setting}/{version} not found.",
        path=root,
        fix="pass the MDACE folder (holding data/<Inpatient|Profee>/<ICD-9|ICD-10>/1.0/*.json).",
    )


def mdace_split_ids(root: Path, setting: str, split: str) -> set[int]:
    """HADM_IDs of MDACE's evidence-task split (`splits/<setting>/MDace-ev-<train|val|test>.csv`)."""
    name = {"dev": "val"}.get(split, split)
    for base in (root, root / "raw"):
        p = base / "splits" / setting / f"MDace-ev-{name}.csv"
        if p.is_file():
            ids = set()
            for line in p.read_text(encoding="utf-8").split():
                if line.strip().isdigit():
                    ids.add(int(line))
            return ids
    raise DataError(f"MDACE split {split!r} not found.", path=root, fix="use train, val (dev) or test.")


def _read_noteevents(path: Path, note_ids: set[int]) -> dict[int, str]:
    """Texts of the NOTEEVENTS rows whose ROW_ID is in `note_ids` (streamed; MIMIC's own CSV schema)."""
    import numpy as np
    import pyarrow as pa

    from icdcoder.data.sources.mimic_common import (
        CsvSpec,
        decode_text,
        iter_csv,
        parse_ints,
        read_header,
        resolve_columns,
    )

    spec = CsvSpec(
        label="MIMIC-III NOTEEVENTS",
        stem="NOTEEVENTS",
        schema=("ROW_ID", "SUBJECT_ID", "HADM_ID", "CATEGORY", "DESCRIPTION", "TEXT"),
        required=("ROW_ID", "TEXT"),
        binary=("TEXT",),
        where="NOTEEVENTS.csv.gz of MIMIC-III v1.4",
    )
    if not path.is_file():
        raise DataError("NOTEEVENTS file not found.", path=path, fix="pass MIMIC-III's NOTEEVENTS.csv(.gz).")
    cols = resolve_columns(spec, path, read_header(spec, path))
    wanted = np.fromiter(note_ids, dtype=np.int64)
    out: dict[int, str] = {}
    for start, batch in iter_csv(spec, path, cols):
        rows = np.arange(start + 1, start + 1 + batch.num_rows)
        row_ids, ok = parse_ints(batch["ROW_ID"], spec=spec, path=path, column=cols["ROW_ID"], rows=rows)
        sel = np.flatnonzero(ok & np.isin(row_ids, wanted))
        if len(sel) == 0:
            continue
        texts = decode_text(
            batch["TEXT"].take(pa.array(sel)), spec=spec, path=path, column=cols["TEXT"], rows=rows[sel]
        )
        for rid, text in zip(row_ids[sel].tolist(), texts.to_pylist(), strict=True):
            out[int(rid)] = text or ""
    return out


def read_mdace(
    root: str | Path,
    noteevents: str | Path,
    *,
    setting: str = "Inpatient",
    version: str = "ICD-9",
    split: str | None = "test",
    categories: Sequence[str] | None = ("Discharge summary",),
    include_mapped: bool = True,
) -> MdaceNotes:
    """MDACE annotations of `setting`/`version` (restricted to the evidence-task `split`, or all charts when
    None) on notes of the given categories, paired with their NOTEEVENTS texts.

    Codes become `system:code` keys (ICD-9-CM -> icd9cm-dx, ICD-9-PCS -> icd9cm-proc, ICD-10-CM/PCS);
    CPT annotations are skipped. In the ICD-9 view most annotations were mapped from ICD-10 (`type`
    `MapType.*`); `include_mapped=False` keeps only the coders' own (`Human`). Annotations whose offsets
    fall outside the note, and notes missing from NOTEEVENTS, are counted in `report` and left out."""
    root = Path(root)
    data_dir = _mdace_data_dir(root, setting, version)
    keep_ids = mdace_split_ids(root, setting, split) if split is not None else None
    cats = None if categories is None else {c.strip().lower() for c in categories}
    report: dict[str, int] = defaultdict(int)
    raw: dict[int, list[tuple[str, Span]]] = defaultdict(list)
    hadm_of: dict[str, int] = {}
    for f in sorted(data_dir.glob("*.json")):
        try:
            chart = json.loads(f.read_text(encoding="utf-8"))
            hadm = int(chart["hadm_id"])
            notes = chart["notes"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"not an MDACE chart file ({type(exc).__name__}).", path=f) from None
        if keep_ids is not None and hadm not in keep_ids:
            continue
        report["charts"] += 1
        for note in notes:
            if cats is not None and str(note.get("category", "")).strip().lower() not in cats:
                report["annotations_other_categories"] += len(note.get("annotations", []))
                continue
            nid = int(note["note_id"])
            for a in note.get("annotations", []):
                system = MDACE_SYSTEMS.get(str(a.get("code_system", "")))
                if system is None:
                    report["annotations_other_systems"] += 1
                    continue
                if not include_mapped and a.get("type") != "Human":
                    report["annotations_mapped_skipped"] += 1
                    continue
                begin, end = int(a["begin"]), int(a["end"])
                raw[nid].append((Code.of(system, str(a["code"])).key, (begin, end)))
                hadm_of[str(nid)] = hadm
    texts_by_id = _read_noteevents(Path(noteevents), set(raw))
    gold: list[EvidenceItem] = []
    texts: dict[str, str] = {}
    for nid, anns in sorted(raw.items()):
        text = texts_by_id.get(nid)
        if text is None:
            report["notes_missing_from_noteevents"] += 1
            report["annotations_on_missing_notes"] += len(anns)
            continue
        texts[str(nid)] = text
        for key, (a, b) in anns:
            if not 0 <= a < b <= len(text):
                report["annotations_out_of_range"] += 1
                continue
            gold.append(EvidenceItem(str(nid), key, ((a, b),)))
    report["notes"] = len(texts)
    report["annotations"] = len(gold)
    return MdaceNotes(texts, {k: v for k, v in hadm_of.items() if k in texts}, gold, dict(report))


# --------------------------------------------------------------------------------------------------
# Evaluating a model


def predicted_evidence(
    predictor: Predictor,
    notes: list[tuple[str, str]],
    *,
    spans_per_code: int = 1,
    evidence_method: str = "auto",
    batch_size: int = 8,
    evidence_tokens: int = 3,
    evidence_window: int = 2,
) -> list[EvidenceItem]:
    """System evidence, as a CodiEsp-X submission: every code the model decides positive, with its
    `spans_per_code` strongest evidence spans (one item each)."""
    items: list[EvidenceItem] = []
    for r in predictor.predict(
        notes,
        top_k=1,
        evidence=True,
        batch_size=batch_size,
        evidence_method=evidence_method,
        evidence_tokens=evidence_tokens,
        evidence_window=evidence_window,
    ):
        for c in r.codes:
            if c.decision:
                items.extend(
                    EvidenceItem(r.id, c.key, ((s.start, s.end),)) for s in c.evidence[:spans_per_code]
                )
    return items


def oracle_evidence(
    predictor: Predictor,
    notes: list[tuple[str, str]],
    gold: Sequence[EvidenceItem],
    *,
    spans_per_code: int = 1,
    evidence_method: str = "auto",
    batch_size: int = 8,
    evidence_tokens: int = 3,
    evidence_window: int = 2,
) -> list[EvidenceItem]:
    """Evidence localisation alone: the model's spans for each gold code it can predict."""
    codes: dict[str, list[str]] = defaultdict(list)
    for it in gold:
        codes[it.doc_id].append(it.code)
    explained = predictor.explain(
        notes,
        [codes.get(d, []) for d, _ in notes],
        batch_size=batch_size,
        evidence_method=evidence_method,
        evidence_tokens=evidence_tokens,
        evidence_window=evidence_window,
    )
    return [
        EvidenceItem(doc_id, key, ((s.start, s.end),))
        for (doc_id, _), per_code in zip(notes, explained, strict=True)
        for key, spans in per_code.items()
        for s in spans[:spans_per_code]
    ]


def random_evidence(
    predictor: Predictor, notes: list[tuple[str, str]], model_items: Sequence[EvidenceItem], *, seed: int = 0
) -> list[EvidenceItem]:
    """Chance level for `oracle_evidence`: the model's own spans (same codes, same number of tokens each)
    moved to random places in their note."""
    rng = random.Random(seed)
    texts = dict(notes)
    tok = predictor.loaded.tokenizer
    cache: dict[str, list[Any]] = {}
    items: list[EvidenceItem] = []
    for it in model_items:
        if it.doc_id not in cache:
            cache[it.doc_id] = tok.tokenize(texts[it.doc_id])[: predictor.max_tokens]
        toks = cache[it.doc_id]
        if not toks:
            continue
        a, b = it.interval
        k = min(len(toks), max(1, sum(1 for t in toks if a <= t.start < b)))
        i = rng.randrange(len(toks) - k + 1)
        items.append(EvidenceItem(it.doc_id, it.code, ((toks[i].start, toks[i + k - 1].end),)))
    return items


def mention_dictionary(docs: Iterable[tuple[str, Sequence[EvidenceItem]]]) -> dict[str, set[str]]:
    """code -> lower-cased gold mentions (continuous ones of 3+ characters) from (text, gold items) pairs,
    e.g. the train split: the string-matching baseline's dictionary."""
    out: dict[str, set[str]] = defaultdict(set)
    for text, items in docs:
        for it in items:
            if len(it.spans) == 1:
                mention = text[it.spans[0][0] : it.spans[0][1]].strip().lower()
                if len(mention) >= 3:
                    out[it.code].add(mention)
    return dict(out)


def dictionary_evidence(
    dictionary: dict[str, set[str]],
    notes: list[tuple[str, str]],
    gold: Sequence[EvidenceItem],
    *,
    spans_per_code: int = 1,
) -> list[EvidenceItem]:
    """A reference point for `oracle_evidence`: for each gold code of a note, the first occurrences (whole
    words, case-insensitive, longest mention first) of the code's mentions in the dictionary."""
    import re

    texts = dict(notes)
    wanted: dict[str, list[str]] = defaultdict(list)
    for it in gold:
        if it.code not in wanted[it.doc_id]:
            wanted[it.doc_id].append(it.code)
    items: list[EvidenceItem] = []
    for doc_id, codes in wanted.items():
        low = texts[doc_id].lower()
        for code in codes:
            found: list[Span] = []
            for mention in sorted(dictionary.get(code, ()), key=len, reverse=True):
                for m in re.finditer(r"(?<!\w)" + re.escape(mention) + r"(?!\w)", low):
                    if not any(a < m.end() and m.start() < b for a, b in found):
                        found.append((m.start(), m.end()))
            found.sort()
            items.extend(EvidenceItem(doc_id, code, (sp,)) for sp in found[:spans_per_code])
    return items


def evaluate_evidence(
    predictor: Predictor,
    notes: list[tuple[str, str]],
    gold: Sequence[EvidenceItem],
    *,
    spans_per_code: Sequence[int] = (1, 3),
    evidence_method: str = "auto",
    batch_size: int = 8,
    evidence_tokens: int = 3,
    evidence_window: int = 2,
    dictionary: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Scores of the system (decided codes + spans), of the oracle-code localisation, of the same spans at
    random places and (given a mention `dictionary`) of string matching, under every rule, for each number
    of spans per code."""
    in_space = [g for g in gold if g.code in set(predictor.labels)]
    out: dict[str, Any] = {
        "documents": len(notes),
        "gold_items": len(gold),
        "gold_items_in_label_space": len(in_space),
        "evidence_method": evidence_method,
        "evidence_tokens": evidence_tokens,
        "evidence_window": evidence_window,
        "results": {},
    }
    opts: dict[str, Any] = {
        "evidence_method": evidence_method,
        "batch_size": batch_size,
        "evidence_tokens": evidence_tokens,
        "evidence_window": evidence_window,
    }
    for k in spans_per_code:
        system = predicted_evidence(predictor, notes, spans_per_code=k, **opts)
        oracle = oracle_evidence(predictor, notes, gold, spans_per_code=k, **opts)
        rand = random_evidence(predictor, notes, oracle)
        block = {
            "system": score_all(gold, system),
            # Localisation is judged on the codes the model can predict at all.
            "oracle_codes": score_all(in_space, oracle),
            "random_spans": score_all(in_space, rand),
        }
        if dictionary is not None:
            block["dictionary"] = score_all(
                in_space, dictionary_evidence(dictionary, notes, in_space, spans_per_code=k)
            )
        out["results"][f"spans_per_code={k}"] = block
    return out


def _codiesp_notes(
    predictor: Predictor, split: str, path: str | None
) -> tuple[list[tuple[str, str]], list[EvidenceItem], dict[str, set[str]]]:
    from icdcoder.data.sources.codiesp import iter_codiesp

    data = predictor.loaded.config.data
    root = path or data.codiesp_path
    if data.lang != "es":
        raise DataError(
            "CodiEsp-X offsets index the Spanish text, but this model reads the English translation.",
            fix="train on the Spanish text (--set data.lang=es --set data.codiesp_path=<full release>).",
        )
    if root is None:
        raise DataError(
            "the embedded CodiEsp copy has no Spanish text.", fix="pass --codiesp-path <full release folder>."
        )
    docs = list(iter_codiesp(Path(root), task=data.task, lang="es", splits=(split,)))
    train = [
        (d.text, gold_from_documents([d]))
        for d in iter_codiesp(Path(root), task=data.task, lang="es", splits=("train",))
    ]
    return [(d.id, d.text) for d in docs], gold_from_documents(docs), mention_dictionary(train)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m icdcoder.inference.evidence_eval", description=__doc__.split("\n")[0]
    )
    ap.add_argument("dataset", choices=["codiesp", "mdace"])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--codiesp-path", default=None, help="CodiEsp release folder (default: the model's).")
    ap.add_argument("--mdace", type=Path, help="MDACE folder (holding data/ and splits/).")
    ap.add_argument("--noteevents", type=Path, help="MIMIC-III NOTEEVENTS.csv(.gz).")
    ap.add_argument("--mdace-version", default="ICD-9", choices=["ICD-9", "ICD-10"])
    ap.add_argument("--evidence-method", default="auto", choices=["auto", "attention", "occlusion"])
    ap.add_argument("--spans-per-code", default="1,3")
    ap.add_argument("--evidence-tokens", type=int, default=3, help="Strongest tokens seeding spans.")
    ap.add_argument("--evidence-window", type=int, default=2, help="Tokens added on each side of a seed.")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = ap.parse_args(argv)
    import torch

    from icdcoder.inference.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        predictor = Predictor(args.model_dir)
        dictionary = None
        if args.dataset == "codiesp":
            notes, gold, dictionary = _codiesp_notes(predictor, args.split, args.codiesp_path)
        else:
            if args.mdace is None or args.noteevents is None:
                raise IcdcoderError("mdace needs --mdace DIR and --noteevents FILE.")
            md = read_mdace(args.mdace, args.noteevents, version=args.mdace_version, split=args.split)
            notes, gold = sorted(md.texts.items()), md.gold
        result = evaluate_evidence(
            predictor,
            notes,
            gold,
            spans_per_code=[int(x) for x in args.spans_per_code.split(",")],
            evidence_method=args.evidence_method,
            evidence_tokens=args.evidence_tokens,
            evidence_window=args.evidence_window,
            dictionary=dictionary,
        )
    except IcdcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.update({"dataset": args.dataset, "split": args.split, "model_dir": str(args.model_dir)})
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        from icdcoder.io import atomic_write

        with atomic_write(args.out) as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
