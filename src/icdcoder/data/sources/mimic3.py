"""MIMIC-III v1.4: discharge summaries with their ICD-9-CM codes, in the three benchmark splits.

Input (PhysioNet `mimiciii/1.4`, credentialed; `.csv` or `.csv.gz`, upper- or lower-case names, columns
in either case): NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD.

What a document is (the choices of the seed papers, followed so the published counts come out):
- **Text**: the notes with CATEGORY "Discharge summary" of one admission (HADM_ID), raw (no
  lower-casing; the text pipeline does that). The main report(s) (DESCRIPTION "Report") come first, then
  the addenda, each group in CHARTDATE order, ties in file order, joined by one space. This is Edin et
  al.'s `merge_reports_addendum` (sort by DESCRIPTION descending, CHARTDATE ascending; `" ".join`). CAML
  also joined every discharge note of an admission with a space, but in file order. Notes flagged ISERROR
  are kept, as both did. Other categories (nursing, radiology, …) are ignored.
- **Codes**: DIAGNOSES_ICD → `icd9cm-dx` (dot after 3 characters, after 4 for E codes), PROCEDURES_ICD →
  `icd9cm-proc` (dot after 2), de-duplicated, diagnoses first, each in SEQ_NUM order. Rows with an
  empty ICD9_CODE are dropped and counted.
- **Splits**:
  - `full`: membership from Mullenbach's (CAML) `*_full_hadm_ids.csv`, filtered to admissions that have a
    discharge summary and at least one code, as Edin et al. describe ("filters them to the admissions
    that are available"). CAML's train list has 47,723 ids, 4 more than the published 47,719
    (`caml_full_extra_train_ids`; Edin's `mimiciii_full` split has exactly the published ids and equals
    CAML's dev/test lists). The filter is expected to drop those 4 on real MIMIC-III, giving 47,719 /
    1,631 / 3,372; the stats say for each of the 4 whether it was dropped and why, and
    `matches_published_counts` flags any difference.
  - `50`: admissions from CAML's `*_50_hadm_ids.csv` (8,066 / 1,573 / 1,729), codes restricted to the
    top 50. The top 50 are counted as CAML did: over every admission with a discharge summary in the
    input (all splits), each code once per admission; ties are broken by the `system:code` key so the
    list does not depend on file order (CAML's stable sort kept file order; stats record whether a tie
    crosses rank 50). LAAT's top-50 differs from CAML's in one code (93.90 instead of 37.23): pass
    `top_codes_file` (e.g. CAML's TOP_50_CODES.csv) to use an explicit list. Admissions are kept as the
    ID files list them, even if left without a code (counted in stats).
  - `rare50`: the MIMIC-III-rare50 few-shot setting of Yang et al. (KEPT, 2022), PLANT's Table 5: the
    admissions of the shipped `resources/mimic3_rare50/rare50_split.csv` (249 / 20 / 142) in its splits, the
    label space its 50 rare codes, each admission's codes read from DIAGNOSES_ICD / PROCEDURES_ICD and
    restricted to them. Admissions are kept as listed; the stats count those whose codes differ from the
    file's (`rare50_code_mismatches`).
  - `clean`: Edin et al. Codes occurring in fewer than `min_code_count` (10) admissions, counted over
    every admission with a discharge summary in the input (before splitting), are removed, then
    admissions without codes; membership from Edin's `mimiciii_clean_splits.feather` (38,401 / 5,577 /
    8,734).
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from icdcoder.data.document import SPLITS, Document
from icdcoder.data.sources.mimic_common import (
    PUBLISHED_COUNTS,
    CodeIndex,
    CodeRows,
    Corpus,
    CsvSpec,
    MimicReader,
    NoteSpill,
    SplitMembership,
    boundary_tie,
    caml_full_extra_train_ids,
    caml_split_ids,
    check_output_free,
    decode_text,
    find_csv,
    frequent_codes,
    iter_csv,
    load_split_ids,
    lower_trim,
    overlap_hint,
    parse_ints,
    read_codes,
    read_header,
    resolve_columns,
    split_report,
    top_codes,
    write_corpus,
)
from icdcoder.errors import DataError, IcdcoderError
from icdcoder.ontology.systems import Code, is_well_formed, normalize_code

__all__ = [
    "MIMIC3_PUBLISHED_COUNTS",
    "MIMIC3_SPLITS",
    "iter_mimic3",
    "load_mimic3",
    "prepare_mimic3",
    "read_code_list",
]

MIMIC3_SPLITS: tuple[str, ...] = ("full", "50", "clean", "rare50")
MIMIC3_PUBLISHED_COUNTS: dict[str, dict[str, int]] = {
    s: PUBLISHED_COUNTS[f"mimic3-{s}"] for s in MIMIC3_SPLITS
}
ADDENDUM_SEPARATOR = " "  # Edin's merge_reports_addendum and CAML's concat_data both join with a space

_WHERE = "MIMIC-III v1.4 (physionet.org/content/mimiciii/1.4)"
NOTEEVENTS = CsvSpec(
    label="MIMIC-III NOTEEVENTS",
    stem="NOTEEVENTS",
    schema=(
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "CGID",
        "ISERROR",
        "TEXT",
    ),
    required=("SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "DESCRIPTION", "TEXT"),
    binary=("TEXT",),
    where=f"NOTEEVENTS.csv.gz of {_WHERE}",
)
DIAGNOSES_ICD = CsvSpec(
    label="MIMIC-III DIAGNOSES_ICD",
    stem="DIAGNOSES_ICD",
    schema=("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    required=("HADM_ID", "ICD9_CODE"),
    optional=("SEQ_NUM",),
    where=f"DIAGNOSES_ICD.csv.gz of {_WHERE}",
)
PROCEDURES_ICD = CsvSpec(
    label="MIMIC-III PROCEDURES_ICD",
    stem="PROCEDURES_ICD",
    schema=("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    required=("HADM_ID", "ICD9_CODE"),
    optional=("SEQ_NUM",),
    where=f"PROCEDURES_ICD.csv.gz of {_WHERE}",
)


def _check_split(split: str) -> str:
    s = str(split).strip().lower()
    if s not in MIMIC3_SPLITS:
        raise DataError(f"unknown MIMIC-III split {split!r}.", fix="use --split full, 50, clean or rare50.")
    return s


def _membership(split: str) -> SplitMembership:
    if split == "full":
        return SplitMembership.from_ids("mimic3-full (CAML)", caml_split_ids("full"))
    if split == "50":
        return SplitMembership.from_ids("mimic3-50", caml_split_ids("50"))
    if split == "rare50":
        table: dict[str, list[int]] = {s: [] for s in SPLITS}
        for hadm, (part, _) in rare50_table().items():
            table[part].append(hadm)
        return SplitMembership.from_ids("mimic3-rare50", table)
    return SplitMembership.from_ids("mimic3-clean", load_split_ids("mimic3-clean"))


@functools.cache
def rare50_table() -> dict[int, tuple[str, tuple[str, ...]]]:
    """The shipped MIMIC-III-rare50 split: HADM_ID → (split, its rare codes as `system:code` keys)."""
    res = importlib.resources.files("icdcoder") / "resources" / "mimic3_rare50" / "rare50_split.csv"
    where = "icdcoder/resources/mimic3_rare50/rare50_split.csv"
    out: dict[int, tuple[str, tuple[str, ...]]] = {}
    reader = csv.DictReader(io.StringIO(res.read_text(encoding="utf-8")))
    for lineno, row in enumerate(reader, start=2):
        try:
            hadm, part = int(row["HADM_ID"]), row["split"].strip()
        except (KeyError, TypeError, ValueError):
            raise DataError("bad row in the rare50 split file.", path=where, line=lineno) from None
        keys = []
        for raw in (row.get("codes") or "").split(";"):
            key = _code_list_key(raw.strip()) if raw.strip() else None
            if key is None or part not in SPLITS or hadm in out:
                raise DataError("bad code, split or repeated HADM_ID.", path=where, line=lineno)
            keys.append(key)
        out[hadm] = (part, tuple(keys))
    return out


def read_code_list(path: Path) -> list[str]:
    """An explicit label space: one code per line, as `system:code` keys or as dotted ICD-9 codes the way
    CAML's TOP_50_CODES.csv writes them (`401.9` diagnosis, `96.04` procedure; an undotted code is a
    diagnosis if it has 3 characters or starts with V/E, a procedure if it has 2). Blank lines, `#`
    comments and a `code` header are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError("code list file not found.", path=path) from None
    except UnicodeDecodeError:
        raise DataError("code list is not valid UTF-8.", path=path, fix="save it as UTF-8.") from None
    keys: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        raw = line.split(",")[0].strip().strip('"')
        if (
            not raw
            or raw.startswith("#")
            or (lineno == 1 and raw.lower() in ("code", "codes", "icd9_code", "key"))
        ):
            continue
        key = _code_list_key(raw)
        if key is None:
            raise DataError(
                f"cannot tell the code system of {raw!r}.",
                path=path,
                line=lineno,
                fix="write it as icd9cm-dx:CODE or icd9cm-proc:CODE, or dotted (401.9 / 96.04).",
            )
        if key not in keys:
            keys.append(key)
    if not keys:
        raise DataError("code list is empty.", path=path, fix="put one code per line.")
    return keys


def _code_list_key(raw: str) -> str | None:
    if ":" in raw:
        try:
            return Code.parse(raw).key
        except IcdcoderError:
            return None
    code = raw.upper()
    if "." in code:  # dotted: the digits before the dot tell diagnosis (3) from procedure (2)
        systems: tuple[str, ...] = ("icd9cm-dx", "icd9cm-proc")
    elif code[0] in "VE" or len(code) == 3:  # V and E codes are diagnoses only
        systems = ("icd9cm-dx",)
    elif len(code) == 2:
        systems = ("icd9cm-proc",)
    else:  # undotted 4-5 digits: 9604 is both a diagnosis (960.4) and a procedure (96.04)
        return None
    for system in systems:
        # a dotted code must already be well formed: 38.93 is a procedure, not diagnosis 389.3
        norm = code if "." in code else normalize_code(system, code)
        if is_well_formed(system, norm):
            return f"{system}:{norm}"
    return None


def _merge(notes: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    text = ADDENDUM_SEPARATOR.join(n["text"] or "" for n in notes)
    meta = {
        "subject_id": notes[0]["subject_id"],
        "n_notes": len(notes),
        "n_addenda": sum(1 for n in notes if n["rank"]),
    }
    return text, meta


def _read_notes(
    path: Path, membership: SplitMembership, spill: NoteSpill
) -> tuple[np.ndarray, dict[str, int]]:
    """Spill the discharge summaries of split admissions; return every admission with a discharge
    summary (the scope the top-50 and the <10 filter count over) and counts."""
    header = read_header(NOTEEVENTS, path)
    cols = resolve_columns(NOTEEVENTS, path, header)
    seen: list[np.ndarray] = []
    n_rows = n_discharge = n_no_hadm = 0
    for start, batch in iter_csv(NOTEEVENTS, path, cols):
        n_rows += batch.num_rows
        sel = np.flatnonzero(lower_trim(batch["CATEGORY"]) == "discharge summary")
        if len(sel) == 0:
            continue
        b = batch.take(pa.array(sel))
        rows = start + sel + 1
        hadm, present = parse_ints(
            b["HADM_ID"], spec=NOTEEVENTS, path=path, column=cols["HADM_ID"], rows=rows
        )
        n_discharge += len(sel)
        n_no_hadm += int((~present).sum())
        seen.append(np.unique(hadm[present]))
        split_of = np.where(present, membership.lookup(hadm), -1)
        keep = np.flatnonzero(split_of >= 0)
        if len(keep) == 0:
            continue
        kb = b.take(pa.array(keep))
        subject, subject_ok = parse_ints(
            kb["SUBJECT_ID"], spec=NOTEEVENTS, path=path, column="SUBJECT_ID", rows=rows[keep], strict=False
        )
        table = pa.table(
            {
                "hadm_id": pa.array(hadm[keep]),
                "subject_id": pa.array(subject, mask=~subject_ok),
                "rank": pa.array((lower_trim(kb["DESCRIPTION"]) != "report").astype(np.int32)),
                "date": pc.utf8_trim_whitespace(kb["CHARTDATE"]),
                "seq": pa.array(rows[keep]),
                "note_id": pa.nulls(len(keep), pa.string()),
                "text": decode_text(
                    kb["TEXT"], spec=NOTEEVENTS, path=path, column=cols["TEXT"], rows=rows[keep]
                ),
            }
        )
        for i, s in enumerate(SPLITS):
            spill.write(s, table.filter(pa.array(split_of[keep] == i)))
    all_ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)
    counts = {
        "rows": n_rows,
        "discharge_summaries": n_discharge,
        "discharge_summaries_without_hadm_id": n_no_hadm,
        "admissions_with_discharge_summary": len(all_ids),
    }
    return all_ids, counts


def _read_code_tables(diag: Path, proc: Path) -> tuple[CodeIndex, dict[str, Any]]:
    rows = CodeRows()
    report: dict[str, Any] = {}
    for table, (spec, path, system) in enumerate(
        ((DIAGNOSES_ICD, diag, "icd9cm-dx"), (PROCEDURES_ICD, proc, "icd9cm-proc"))
    ):
        cols = resolve_columns(spec, path, read_header(spec, path))

        def systems(batch: pa.RecordBatch, _rows: np.ndarray, system: str = system) -> pa.Array:
            return pa.array([system] * batch.num_rows, pa.string())

        stats = read_codes(spec, path, cols, rows, table=table, code_column="ICD9_CODE", systems=systems)
        stats.pop("rows_other_version")
        report[spec.stem] = stats
    return CodeIndex.build(rows), report


class _Mimic3(MimicReader):
    """Context manager that reads MIMIC-III into a Corpus (notes spilled to a temporary folder)."""

    def __init__(
        self,
        mimic_dir: str | Path | None,
        split: str,
        *,
        notes_path: str | Path | None = None,
        diagnoses_path: str | Path | None = None,
        procedures_path: str | Path | None = None,
        top_codes_file: str | Path | None = None,
        top_k: int = 50,
        min_code_count: int = 10,
        work_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.split = _check_split(split)
        self.name = f"mimic3-{self.split}"
        d = None if mimic_dir is None else Path(mimic_dir)
        # Find every file and check every header first: a wrong folder fails in a second, not after
        # streaming 4 GB of notes.
        self.paths = {
            "notes": find_csv(NOTEEVENTS, d, None if notes_path is None else Path(notes_path)),
            "diagnoses": find_csv(DIAGNOSES_ICD, d, None if diagnoses_path is None else Path(diagnoses_path)),
            "procedures": find_csv(
                PROCEDURES_ICD, d, None if procedures_path is None else Path(procedures_path)
            ),
        }
        for key, spec in (
            ("notes", NOTEEVENTS),
            ("diagnoses", DIAGNOSES_ICD),
            ("procedures", PROCEDURES_ICD),
        ):
            resolve_columns(spec, self.paths[key], read_header(spec, self.paths[key]))
        self.explicit_codes = None if top_codes_file is None else read_code_list(Path(top_codes_file))
        if top_k < 1:
            raise DataError(f"top-k must be at least 1, got {top_k}.")
        if min_code_count < 1:
            raise DataError(f"the minimum code count must be at least 1, got {min_code_count}.")
        self.top_k = top_k
        self.min_code_count = min_code_count
        self.work_dir = None if work_dir is None else Path(work_dir)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"split": self.split, "files": {k: str(v) for k, v in self.paths.items()}}
        if self.split == "50":
            opts["top_k"] = len(self.explicit_codes) if self.explicit_codes else self.top_k
            opts["top_codes"] = "explicit list" if self.explicit_codes else "computed (CAML)"
        if self.split == "clean":
            opts["min_code_count"] = self.min_code_count
        if self.split == "rare50":
            opts["label_space"] = "the 50 codes of resources/mimic3_rare50 (KEPT)"
        return opts

    def _load(self, tmp: Path) -> Corpus:
        membership = _membership(self.split)
        spill = NoteSpill(tmp)
        try:
            all_ids, note_counts = _read_notes(self.paths["notes"], membership, spill)
        finally:
            spill.close()
        with_note = {s: spill.hadm_ids(s) for s in SPLITS}
        if sum(len(v) for v in with_note.values()) == 0:
            raise DataError(
                f"none of the {len(all_ids)} admissions with a discharge summary in NOTEEVENTS is in the "
                f"MIMIC-III {self.split} split ({len(membership.ids)} ids).",
                path=self.paths["notes"],
                fix=overlap_hint(all_ids, self.name),
            )
        codes, code_counts = _read_code_tables(self.paths["diagnoses"], self.paths["procedures"])
        report: dict[str, Any] = {"notes": note_counts, "codes": code_counts}
        allowed: np.ndarray | None = None
        require_codes = True
        if self.split == "rare50":
            require_codes = False
            listed = rare50_table()
            label_space = sorted({k for _, keys in listed.values() for k in keys})
            counts = codes.counts(all_ids)
            report["label_space"] = {
                "source": "MIMIC-III-rare50 (KEPT, Yang et al. 2022), resources/mimic3_rare50",
                "codes": label_space,
                "not_in_data": [c for c in label_space if c not in counts],
            }
            allowed = codes.mask(label_space)
        elif self.split in ("50", "clean"):
            counts = codes.counts(all_ids)
            if self.split == "50":
                require_codes = False
                if self.explicit_codes is not None:
                    label_space = self.explicit_codes
                    report["label_space"] = {
                        "source": "explicit list",
                        "codes": label_space,
                        "not_in_data": [c for c in label_space if c not in counts],
                    }
                else:
                    label_space = top_codes(counts, self.top_k)
                    report["label_space"] = {
                        "source": "computed: most frequent over all admissions with a discharge summary",
                        "k": self.top_k,
                        "codes": label_space,
                        "counts": {c: counts[c] for c in label_space},
                        "tie_at_boundary": boundary_tie(counts, self.top_k),
                        "tie_break": "count descending, then system:code key ascending",
                    }
            else:
                label_space = frequent_codes(counts, self.min_code_count)
                report["label_space"] = {
                    "source": f"codes in at least {self.min_code_count} admissions with a discharge summary",
                    "min_code_count": self.min_code_count,
                    "codes_kept": len(label_space),
                    "codes_removed": len(counts) - len(label_space),
                }
            allowed = codes.mask(label_space)
        corpus = Corpus(self.name, spill, codes, allowed, require_codes, _merge, report)
        kept = {s: corpus.kept_ids(s) for s in SPLITS}
        produced = {s: len(kept[s]) for s in SPLITS}
        if sum(produced.values()) == 0:
            raise DataError(
                f"no admission of the MIMIC-III {self.split} split has codes in DIAGNOSES_ICD or "
                "PROCEDURES_ICD.",
                path=self.paths["diagnoses"],
                fix="use the DIAGNOSES_ICD and PROCEDURES_ICD files of the same MIMIC-III download.",
            )
        report["splits"] = split_report(self.name, membership, with_note, produced)
        report["dropped_without_codes"] = {s: len(with_note[s]) - produced[s] for s in SPLITS}
        if self.split == "rare50":
            listed = rare50_table()
            report["rare50_code_mismatches"] = sum(
                1
                for s in SPLITS
                for h in kept[s].tolist()
                if set(codes.codes_of(int(h), allowed)) != set(listed[int(h)][1])
            )
        if self.split in ("50", "rare50"):
            report["documents_without_codes"] = {
                s: int((codes.n_codes(kept[s], allowed) == 0).sum()) for s in SPLITS
            }
        report["codes_not_well_formed"] = sorted(
            k for k in codes.keys if not is_well_formed(*k.split(":", 1))
        )[:20]
        if self.split == "full":
            report["caml_extra_train_ids"] = self._extra_status(all_ids, codes)
        return corpus

    @staticmethod
    def _extra_status(all_ids: np.ndarray, codes: CodeIndex) -> dict[str, str]:
        """What happened to the 4 CAML train ids that are not in the published 47,719."""
        out = {}
        for i in caml_full_extra_train_ids():
            if not np.isin(i, all_ids):
                out[str(i)] = "dropped: no discharge summary"
            elif codes.n_codes(np.asarray([i]))[0] == 0:
                out[str(i)] = "dropped: no codes"
            else:
                out[str(i)] = "kept (has a discharge summary and codes: published count will differ by it)"
        return out


def load_mimic3(mimic_dir: str | Path | None, split: str, **kwargs: Any) -> _Mimic3:
    """`with load_mimic3(dir, split) as corpus:` reads MIMIC-III; `corpus.documents()` streams the
    Documents and `corpus.report` holds the counts. Keyword arguments as for `iter_mimic3`."""
    return _Mimic3(mimic_dir, split, **kwargs)


def iter_mimic3(
    mimic_dir: str | Path | None,
    split: str,
    *,
    notes_path: str | Path | None = None,
    diagnoses_path: str | Path | None = None,
    procedures_path: str | Path | None = None,
    top_codes_file: str | Path | None = None,
    top_k: int = 50,
    min_code_count: int = 10,
    work_dir: str | Path | None = None,
) -> Iterator[Document]:
    """Documents of MIMIC-III split `split` (`full`, `50` or `clean`), train then dev then test.

    Files are found in `mimic_dir` (or given by path). `top_k` / `top_codes_file` set the `50` label
    space, `min_code_count` the `clean` filter. `work_dir` holds the temporary note spill (default: the
    system's temporary folder)."""
    with _Mimic3(
        mimic_dir,
        split,
        notes_path=notes_path,
        diagnoses_path=diagnoses_path,
        procedures_path=procedures_path,
        top_codes_file=top_codes_file,
        top_k=top_k,
        min_code_count=min_code_count,
        work_dir=work_dir,
    ) as corpus:
        yield from corpus.documents()


def prepare_mimic3(
    mimic_dir: str | Path | None,
    split: str,
    out: str | Path,
    overwrite: bool = False,
    *,
    notes_path: str | Path | None = None,
    diagnoses_path: str | Path | None = None,
    procedures_path: str | Path | None = None,
    top_codes_file: str | Path | None = None,
    top_k: int = 50,
    min_code_count: int = 10,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write MIMIC-III split `split` as a prepared dataset at `out` and return its stats.

    Stats carry `matches_published_counts` (true / false, or null when the input is only part of
    MIMIC-III) and `published_counts`; `mimic` holds the reader's counts. Nothing is left at `out` on
    failure."""
    out = Path(out)
    check_output_free(out, overwrite)
    reader = _Mimic3(
        mimic_dir,
        split,
        notes_path=notes_path,
        diagnoses_path=diagnoses_path,
        procedures_path=procedures_path,
        top_codes_file=top_codes_file,
        top_k=top_k,
        min_code_count=min_code_count,
        work_dir=out.parent if work_dir is None else work_dir,
    )
    return write_corpus(reader, out, "mimic3", overwrite)
