"""MIMIC-IV: discharge notes with their ICD-9 or ICD-10 codes, in Edin et al.'s splits.

Input (credentialed PhysioNet downloads; `.csv` or `.csv.gz`, lower-case columns as MIMIC-IV writes them):
- MIMIC-IV-Note v2.2 `note/discharge.csv.gz` (note_id, subject_id, hadm_id, note_type, note_seq,
  charttime, storetime, text);
- MIMIC-IV v2.2 `hosp/diagnoses_icd.csv.gz` (subject_id, hadm_id, seq_num, icd_code, icd_version) and
  `hosp/procedures_icd.csv.gz` (subject_id, hadm_id, seq_num, chartdate, icd_code, icd_version).
The files are looked for in the given folder and in its `note/` and `hosp/` sub-folders; MIMIC-IV-Note is a
separate download, so its file can also be passed by path (`notes_path`, CLI `--notes`).

As Edin et al.'s `prepare_mimiciv.py`: one document per admission (hadm_id) with its discharge note (if
an admission had several, they are joined by a space in note_seq order), raw text. The data gives two
datasets: `icd9` keeps the codes with icd_version 9 (`icd9cm-dx` dot after 3, after 4 for E codes;
`icd9cm-proc` dot after 2), `icd10` those with icd_version 10 (`icd10cm` dot after 3; `icd10pcs` no dot).
Codes occurring in fewer than `min_code_count` (10) admissions with a discharge note are removed, then
admissions without codes; the split comes from Edin's `mimiciv_icd9_split.feather` /
`mimiciv_icd10_split.feather` (154,542 / 21,980 / 32,804 and 89,099 / 13,378 / 19,802).
"""

from __future__ import annotations

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
    check_output_free,
    decode_text,
    find_csv,
    frequent_codes,
    iter_csv,
    load_split_ids,
    overlap_hint,
    parse_ints,
    read_codes,
    read_header,
    resolve_columns,
    split_report,
    write_corpus,
)
from icdcoder.errors import DataError
from icdcoder.ontology.systems import is_well_formed

__all__ = ["MIMIC4_PUBLISHED_COUNTS", "MIMIC4_VERSIONS", "iter_mimic4", "load_mimic4", "prepare_mimic4"]

MIMIC4_VERSIONS: tuple[str, ...] = ("icd9", "icd10")
MIMIC4_PUBLISHED_COUNTS: dict[str, dict[str, int]] = {
    v: PUBLISHED_COUNTS[f"mimic4-{v}"] for v in MIMIC4_VERSIONS
}
NOTE_SEPARATOR = " "
_SYSTEMS = {
    ("icd9", True): "icd9cm-dx",
    ("icd9", False): "icd9cm-proc",
    ("icd10", True): "icd10cm",
    ("icd10", False): "icd10pcs",
}

DISCHARGE = CsvSpec(
    label="MIMIC-IV-Note discharge",
    stem="discharge",
    schema=("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"),
    required=("subject_id", "hadm_id", "text"),
    optional=("note_id", "note_seq"),
    binary=("text",),
    subdirs=("note",),
    where="note/discharge.csv.gz of MIMIC-IV-Note v2.2 (physionet.org/content/mimic-iv-note/2.2)",
)
DIAGNOSES_ICD = CsvSpec(
    label="MIMIC-IV diagnoses_icd",
    stem="diagnoses_icd",
    schema=("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    required=("hadm_id", "icd_code", "icd_version"),
    optional=("seq_num",),
    subdirs=("hosp",),
    where="hosp/diagnoses_icd.csv.gz of MIMIC-IV v2.2 (physionet.org/content/mimiciv/2.2)",
)
PROCEDURES_ICD = CsvSpec(
    label="MIMIC-IV procedures_icd",
    stem="procedures_icd",
    schema=("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"),
    required=("hadm_id", "icd_code", "icd_version"),
    optional=("seq_num",),
    subdirs=("hosp",),
    where="hosp/procedures_icd.csv.gz of MIMIC-IV v2.2 (physionet.org/content/mimiciv/2.2)",
)


def _check_version(version: str) -> str:
    v = str(version).strip().lower().replace("-", "")
    if v in ("9", "10"):
        v = f"icd{v}"
    if v not in MIMIC4_VERSIONS:
        raise DataError(f"unknown MIMIC-IV version {version!r}.", fix="use --version icd9 or icd10.")
    return v


def _merge(notes: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    text = NOTE_SEPARATOR.join(n["text"] or "" for n in notes)
    meta = {
        "subject_id": notes[0]["subject_id"],
        "n_notes": len(notes),
        "note_ids": [n["note_id"] for n in notes if n["note_id"]],
    }
    return text, meta


def _read_notes(
    path: Path, membership: SplitMembership, spill: NoteSpill
) -> tuple[np.ndarray, dict[str, int]]:
    """Spill the notes of split admissions; return every admission with a discharge note and counts."""
    cols = resolve_columns(DISCHARGE, path, read_header(DISCHARGE, path))
    seen: list[np.ndarray] = []
    n_rows = n_no_hadm = 0
    for start, batch in iter_csv(DISCHARGE, path, cols):
        n_rows += batch.num_rows
        rows = np.arange(start + 1, start + 1 + batch.num_rows, dtype=np.int64)
        hadm, present = parse_ints(
            batch["hadm_id"], spec=DISCHARGE, path=path, column=cols["hadm_id"], rows=rows
        )
        n_no_hadm += int((~present).sum())
        seen.append(np.unique(hadm[present]))
        split_of = np.where(present, membership.lookup(hadm), -1)
        keep = np.flatnonzero(split_of >= 0)
        if len(keep) == 0:
            continue
        kb = batch.take(pa.array(keep))
        subject, subject_ok = parse_ints(
            kb["subject_id"], spec=DISCHARGE, path=path, column="subject_id", rows=rows[keep], strict=False
        )
        if "note_seq" in cols:
            seq, seq_ok = parse_ints(
                kb["note_seq"], spec=DISCHARGE, path=path, column="note_seq", rows=rows[keep], strict=False
            )
            seq = np.where(seq_ok, seq, 1 << 62)
        else:
            seq = np.zeros(len(keep), dtype=np.int64)
        note_id = kb["note_id"] if "note_id" in cols else pa.nulls(len(keep), pa.string())
        table = pa.table(
            {
                "hadm_id": pa.array(hadm[keep]),
                "subject_id": pa.array(subject, mask=~subject_ok),
                "rank": pa.array(np.zeros(len(keep), dtype=np.int32)),
                "date": pa.array([""] * len(keep), pa.string()),
                "seq": pa.array(seq),
                "note_id": note_id,
                "text": decode_text(
                    kb["text"], spec=DISCHARGE, path=path, column=cols["text"], rows=rows[keep]
                ),
            }
        )
        for i, s in enumerate(SPLITS):
            spill.write(s, table.filter(pa.array(split_of[keep] == i)))
    all_ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)
    counts = {"rows": n_rows, "notes_without_hadm_id": n_no_hadm, "admissions_with_note": len(all_ids)}
    return all_ids, counts


def _version_systems(spec: CsvSpec, path: Path, version: str, diagnosis: bool) -> Any:
    """The `systems` callback for `read_codes`: each row's system, or "" for the other ICD version."""
    wanted_name = _SYSTEMS[(version, diagnosis)]

    def systems(batch: pa.RecordBatch, rows: np.ndarray) -> pa.Array:
        v = pc.replace_substring_regex(pc.utf8_trim_whitespace(batch["icd_version"]), r"\.0+$", "")
        is9 = np.asarray(pc.equal(v, "9").to_numpy(zero_copy_only=False), dtype=bool)
        is10 = np.asarray(pc.equal(v, "10").to_numpy(zero_copy_only=False), dtype=bool)
        code = np.asarray(
            pc.not_equal(pc.utf8_trim_whitespace(batch["icd_code"]), "").to_numpy(zero_copy_only=False)
        )
        bad = code & ~is9 & ~is10
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{spec.label}: icd_version of data row {int(rows[i])} is neither 9 nor 10.",
                path=path,
                fix="use the unmodified MIMIC-IV file (icd_version is 9 or 10).",
            )
        wanted = is9 if version == "icd9" else is10
        return pa.array(np.where(wanted, wanted_name, ""), pa.string())

    return systems


def _read_code_tables(diag: Path, proc: Path, version: str) -> tuple[CodeIndex, dict[str, Any]]:
    rows = CodeRows()
    report: dict[str, Any] = {}
    for table, (spec, path, diagnosis) in enumerate(
        ((DIAGNOSES_ICD, diag, True), (PROCEDURES_ICD, proc, False))
    ):
        cols = resolve_columns(spec, path, read_header(spec, path))
        report[spec.stem] = read_codes(
            spec,
            path,
            cols,
            rows,
            table=table,
            code_column="icd_code",
            systems=_version_systems(spec, path, version, diagnosis),
            hadm_column="hadm_id",
            seq_column="seq_num",
        )
    return CodeIndex.build(rows), report


class _Mimic4(MimicReader):
    """Context manager that reads MIMIC-IV into a Corpus (notes spilled to a temporary folder)."""

    def __init__(
        self,
        mimic_dir: str | Path | None,
        version: str,
        *,
        notes_path: str | Path | None = None,
        diagnoses_path: str | Path | None = None,
        procedures_path: str | Path | None = None,
        min_code_count: int = 10,
        work_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.version = _check_version(version)
        self.name = f"mimic4-{self.version}"
        d = None if mimic_dir is None else Path(mimic_dir)
        self.paths = {
            "notes": find_csv(DISCHARGE, d, None if notes_path is None else Path(notes_path)),
            "diagnoses": find_csv(DIAGNOSES_ICD, d, None if diagnoses_path is None else Path(diagnoses_path)),
            "procedures": find_csv(
                PROCEDURES_ICD, d, None if procedures_path is None else Path(procedures_path)
            ),
        }
        for key, spec in (("notes", DISCHARGE), ("diagnoses", DIAGNOSES_ICD), ("procedures", PROCEDURES_ICD)):
            resolve_columns(spec, self.paths[key], read_header(spec, self.paths[key]))
        if min_code_count < 1:
            raise DataError(f"the minimum code count must be at least 1, got {min_code_count}.")
        self.min_code_count = min_code_count
        self.work_dir = None if work_dir is None else Path(work_dir)

    def options(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "min_code_count": self.min_code_count,
            "files": {k: str(v) for k, v in self.paths.items()},
        }

    def _load(self, tmp: Path) -> Corpus:
        membership = SplitMembership.from_ids(self.name, load_split_ids(self.name))
        spill = NoteSpill(tmp)
        try:
            all_ids, note_counts = _read_notes(self.paths["notes"], membership, spill)
        finally:
            spill.close()
        with_note = {s: spill.hadm_ids(s) for s in SPLITS}
        if sum(len(v) for v in with_note.values()) == 0:
            raise DataError(
                f"none of the {len(all_ids)} admissions with a discharge note is in the MIMIC-IV "
                f"{self.version} split ({len(membership.ids)} ids).",
                path=self.paths["notes"],
                fix=overlap_hint(all_ids, self.name),
            )
        codes, code_counts = _read_code_tables(
            self.paths["diagnoses"], self.paths["procedures"], self.version
        )
        counts = codes.counts(all_ids)
        label_space = frequent_codes(counts, self.min_code_count)
        allowed = codes.mask(label_space)
        report: dict[str, Any] = {
            "notes": note_counts,
            "codes": code_counts,
            "label_space": {
                "source": f"{self.version} codes in at least {self.min_code_count} admissions with a "
                "discharge note",
                "min_code_count": self.min_code_count,
                "codes_kept": len(label_space),
                "codes_removed": len(counts) - len(label_space),
            },
        }
        corpus = Corpus(self.name, spill, codes, allowed, True, _merge, report)
        produced = {s: len(corpus.kept_ids(s)) for s in SPLITS}
        if sum(produced.values()) == 0:
            other = "icd10" if self.version == "icd9" else "icd9"
            raise DataError(
                f"no admission of the MIMIC-IV {self.version} split has {self.version.upper()} codes "
                f"occurring at least {self.min_code_count} times.",
                path=self.paths["diagnoses"],
                fix=f"check that diagnoses_icd/procedures_icd come from the same MIMIC-IV download, or use "
                f"--version {other}.",
            )
        report["splits"] = split_report(self.name, membership, with_note, produced)
        report["dropped_without_codes"] = {s: len(with_note[s]) - produced[s] for s in SPLITS}
        report["codes_not_well_formed"] = sorted(
            k for k in codes.keys if not is_well_formed(*k.split(":", 1))
        )[:20]
        return corpus


def load_mimic4(mimic_dir: str | Path | None, version: str, **kwargs: Any) -> _Mimic4:
    """`with load_mimic4(dir, version) as corpus:` reads MIMIC-IV; `corpus.documents()` streams the
    Documents and `corpus.report` holds the counts. Keyword arguments as for `iter_mimic4`."""
    return _Mimic4(mimic_dir, version, **kwargs)


def iter_mimic4(
    mimic_dir: str | Path | None,
    version: str,
    *,
    notes_path: str | Path | None = None,
    diagnoses_path: str | Path | None = None,
    procedures_path: str | Path | None = None,
    min_code_count: int = 10,
    work_dir: str | Path | None = None,
) -> Iterator[Document]:
    """Documents of the MIMIC-IV `icd9` or `icd10` dataset, train then dev then test."""
    with _Mimic4(
        mimic_dir,
        version,
        notes_path=notes_path,
        diagnoses_path=diagnoses_path,
        procedures_path=procedures_path,
        min_code_count=min_code_count,
        work_dir=work_dir,
    ) as corpus:
        yield from corpus.documents()


def prepare_mimic4(
    mimic_dir: str | Path | None,
    version: str,
    out: str | Path,
    overwrite: bool = False,
    *,
    notes_path: str | Path | None = None,
    diagnoses_path: str | Path | None = None,
    procedures_path: str | Path | None = None,
    min_code_count: int = 10,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write the MIMIC-IV `icd9` or `icd10` dataset as a prepared dataset at `out`; return its stats
    (with `matches_published_counts` and `published_counts`, as for MIMIC-III)."""
    out = Path(out)
    check_output_free(out, overwrite)
    reader = _Mimic4(
        mimic_dir,
        version,
        notes_path=notes_path,
        diagnoses_path=diagnoses_path,
        procedures_path=procedures_path,
        min_code_count=min_code_count,
        work_dir=out.parent if work_dir is None else work_dir,
    )
    return write_corpus(reader, out, "mimic4", overwrite)
