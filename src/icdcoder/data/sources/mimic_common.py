"""Shared parts of the MIMIC-III and MIMIC-IV readers.

- the split-ID tables shipped in the package (Mullenbach's CAML lists, Edin's feather files) and the
  document counts the papers publish for them;
- finding MIMIC's CSV files, checking their header against MIMIC's schema, and streaming them in Arrow
  record batches (pyarrow's CSV reader: `.csv` or `.csv.gz`, quoted multi-line fields), turning every
  parse fault into a one-line DataError that names the file and row but never shows note text;
- the per-admission code table (compact CSR arrays, so MIMIC-IV's 5M code rows stay small) with the
  frequency filters the seed papers apply (top-k, fewer than N occurrences);
- a spill of the selected notes to per-split parquet files, so documents can be emitted split by split
  while memory stays bounded by one batch of notes (MIMIC-IV has ~3 GB of discharge text).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import functools
import gzip
import importlib.resources
import re
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from icdcoder.data.document import SPLITS, Document
from icdcoder.errors import DataError
from icdcoder.io import check_replaceable
from icdcoder.ontology.systems import Code

SPLIT_TABLES: tuple[str, ...] = ("mimic3-full", "mimic3-50", "mimic3-clean", "mimic4-icd9", "mimic4-icd10")

# Documents per split as published (CAML / Edin et al.); `load_split_ids` returns exactly these.
PUBLISHED_COUNTS: dict[str, dict[str, int]] = {
    "mimic3-full": {"train": 47_719, "dev": 1_631, "test": 3_372},
    "mimic3-50": {"train": 8_066, "dev": 1_573, "test": 1_729},
    "mimic3-clean": {"train": 38_401, "dev": 5_577, "test": 8_734},
    "mimic3-rare50": {"train": 249, "dev": 20, "test": 142},  # KEPT (Yang et al. 2022)
    "mimic4-icd9": {"train": 154_542, "dev": 21_980, "test": 32_804},
    "mimic4-icd10": {"train": 89_099, "dev": 13_378, "test": 19_802},
}

_EDIN_FILES = {
    "mimic3-full": "mimiciii_full_splits.feather",
    "mimic3-50": "mimiciii_50_splits.feather",
    "mimic3-clean": "mimiciii_clean_splits.feather",
    "mimic4-icd9": "mimiciv_icd9_split.feather",
    "mimic4-icd10": "mimiciv_icd10_split.feather",
}
_EDIN_SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test"}
_BLOCK_SIZE = 8 << 20  # bytes of CSV per Arrow batch; a MIMIC note is < 100 kB

# --------------------------------------------------------------------------------------------------
# Split IDs shipped in the package


def _resource(*parts: str) -> Traversable:
    res = importlib.resources.files("icdcoder") / "resources"
    for p in parts:
        res = res / p
    return res


@functools.cache
def _caml_ids(part: str) -> dict[str, tuple[int, ...]]:
    """Mullenbach's `{split}_{part}_hadm_ids.csv` (one HADM_ID per line, no header), part = full | 50."""
    out: dict[str, tuple[int, ...]] = {}
    for split in SPLITS:
        text = _resource("mimic3_caml_splits", f"{split}_{part}_hadm_ids.csv").read_text(encoding="utf-8")
        out[split] = tuple(int(line) for line in text.split() if line.strip())
    return out


@functools.cache
def _edin_ids(name: str) -> dict[str, tuple[int, ...]]:
    """Edin et al.'s feather table (`_id` HADM_ID, `split` train/val/test; val becomes dev)."""
    with _resource("mimic_edin_splits", _EDIN_FILES[name]).open("rb") as fh:
        table = feather.read_table(fh, columns=["_id", "split"])
    ids = table.column("_id").to_numpy()
    splits = np.asarray(table.column("split").to_pylist(), dtype=object)
    return {_EDIN_SPLIT_NAMES[s]: tuple(int(i) for i in ids[splits == s]) for s in _EDIN_SPLIT_NAMES}


def caml_split_ids(part: str) -> dict[str, list[int]]:
    """Mullenbach's (CAML) ID lists as shipped: `full` has 47,723 train ids, 4 more than published."""
    if part not in ("full", "50"):
        raise DataError(f"unknown CAML split {part!r}.", fix="use full or 50.")
    return {s: list(v) for s, v in _caml_ids(part).items()}


def caml_full_extra_train_ids() -> list[int]:
    """The 4 ids of CAML's train_full list that are not among the published 47,719 (Edin's full split has
    exactly the published ids). Preparing `full` keeps CAML's ids that have a discharge summary and at
    least one code; these 4 are expected to fail that test on real MIMIC-III (the stats say, for each,
    whether it did), which is how the published count arises."""
    edin = set(_edin_ids("mimic3-full")["train"])
    return sorted(i for i in _caml_ids("full")["train"] if i not in edin)


def check_split_table(name: str) -> str:
    key = name.strip().lower()
    if key not in SPLIT_TABLES:
        raise DataError(f"unknown split table {name!r}.", fix=f"use one of: {', '.join(SPLIT_TABLES)}.")
    return key


def load_split_ids(name: str) -> dict[str, list[int]]:
    """HADM_IDs of each split (`train`, `dev`, `test`) of a published benchmark split, in file order.

    Names: `mimic3-full` (CAML's lists without the 4 train ids that are not in the published split, see
    `caml_full_extra_train_ids`: 47,719 / 1,631 / 3,372, identical to Edin's `mimiciii_full`),
    `mimic3-50` (CAML), `mimic3-clean`, `mimic4-icd9`, `mimic4-icd10` (Edin et al.). A generator that
    writes MIMIC-shaped files for these ids makes `prepare` reproduce the published counts.
    """
    key = check_split_table(name)
    if key == "mimic3-full":
        extra = set(caml_full_extra_train_ids())
        return {s: [i for i in v if i not in extra] for s, v in _caml_ids("full").items()}
    if key == "mimic3-50":
        return caml_split_ids("50")
    return {s: list(v) for s, v in _edin_ids(key).items()}


@dataclass(frozen=True)
class SplitMembership:
    """Sorted HADM_IDs with the split each belongs to, for vectorised lookups."""

    ids: np.ndarray  # int64, sorted
    split_idx: np.ndarray  # int8 index into SPLITS, aligned with ids

    @classmethod
    def from_ids(cls, name: str, table: Mapping[str, Sequence[int]]) -> SplitMembership:
        ids = np.concatenate([np.asarray(table[s], dtype=np.int64) for s in SPLITS])
        lab = np.concatenate([np.full(len(table[s]), i, dtype=np.int8) for i, s in enumerate(SPLITS)])
        order = np.argsort(ids, kind="stable")
        ids, lab = ids[order], lab[order]
        if len(ids) > 1 and bool((ids[1:] == ids[:-1]).any()):
            dup = int(ids[1:][ids[1:] == ids[:-1]][0])
            raise DataError(f"split table {name} lists HADM_ID {dup} in more than one split.")
        return cls(ids, lab)

    def lookup(self, hadm: np.ndarray) -> np.ndarray:
        """Split index of each id (-1 when the id is in no split)."""
        if len(self.ids) == 0:
            return np.full(len(hadm), -1, dtype=np.int8)
        pos = np.clip(np.searchsorted(self.ids, hadm), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == hadm, self.split_idx[pos], -1).astype(np.int8)

    def counts(self) -> dict[str, int]:
        return {s: int((self.split_idx == i).sum()) for i, s in enumerate(SPLITS)}


def overlap_hint(found: np.ndarray, current: str) -> str:
    """A fix suggestion when no admission of the data is in split table `current`."""
    best: list[tuple[int, str]] = []
    for name in SPLIT_TABLES:
        if name == current:
            continue
        ids = np.concatenate([np.asarray(v, dtype=np.int64) for v in load_split_ids(name).values()])
        n = int(np.isin(found, ids).sum())
        if n:
            best.append((n, name))
    if not best:
        return (
            "the HADM_IDs match none of the shipped splits: use the unmodified MIMIC-III v1.4 / "
            "MIMIC-IV v2.2 files."
        )
    n, name = max(best)
    dataset, _, split = name.partition("-")
    if dataset != current.partition("-")[0]:
        cmd = "mimic3 --split" if dataset == "mimic3" else "mimic4 --version"
        return f"{n} of them are in {name}: this looks like {dataset.upper()} data; use `{cmd} {split}`."
    opt = "--split" if dataset == "mimic3" else "--version"
    return f"{n} of them are in {name}: use {opt} {split}."


# --------------------------------------------------------------------------------------------------
# Finding and reading MIMIC CSV files


@dataclass(frozen=True)
class CsvSpec:
    """One MIMIC table: what MIMIC calls it, its file stem, its columns, which of them we need."""

    label: str  # e.g. "MIMIC-III NOTEEVENTS"
    stem: str  # file name without .csv/.csv.gz, e.g. "NOTEEVENTS" or "discharge"
    schema: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()  # read as bytes and UTF-8-checked only on the rows that are kept
    subdirs: tuple[str, ...] = ()  # sub-folders of the data folder where the file may also live
    where: str = ""  # where PhysioNet ships it, for error messages


def find_csv(spec: CsvSpec, data_dir: Path | None, explicit: Path | None) -> Path:
    """The file for `spec`: `explicit` if given, else `STEM.csv` / `STEM.csv.gz` (either case) in
    `data_dir` or one of its `spec.subdirs`."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise DataError(f"{spec.label} file not found.", path=p, fix=f"pass the path of {spec.where}.")
        return p
    if data_dir is None:
        raise DataError(f"no folder and no file given for {spec.label}.", fix="pass --mimic-dir.")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            "MIMIC folder not found.", path=data_dir, fix=f"point it at the folder holding {spec.where}."
        )
    names = [
        f"{stem}{ext}"
        for stem in dict.fromkeys((spec.stem, spec.stem.upper(), spec.stem.lower()))
        for ext in (".csv", ".csv.gz")
    ]
    dirs = [data_dir, *(data_dir / s for s in spec.subdirs)]
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    looked = ", ".join(str(d) for d in dirs)
    raise DataError(
        f"{spec.label} not found: looked for {spec.stem}.csv or {spec.stem}.csv.gz (any case) in {looked}.",
        fix=f"download {spec.where} from PhysioNet and point --mimic-dir at its folder "
        "(or pass the file's path).",
    )


def read_header(spec: CsvSpec, path: Path) -> list[str]:
    """The header row of a (possibly gzipped) CSV file."""
    try:
        opener: Callable[..., Any] = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            raw: bytes = fh.readline(1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{spec.label} cannot be read ({type(exc).__name__}).", path=path, fix="re-download it."
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{spec.label} header is not valid UTF-8.",
            path=path,
            fix="MIMIC files are UTF-8; re-download it.",
        ) from None
    if not text.strip():
        raise DataError(f"{spec.label} is empty (no header row).", path=path, fix="re-download it.")
    return next(csv.reader([text.rstrip("\r\n")]))


def resolve_columns(spec: CsvSpec, path: Path, header: Sequence[str]) -> dict[str, str]:
    """Map each required/optional column (MIMIC's name) to its spelling in `header` (case-insensitive)."""
    by_lower = {h.strip().lower(): h for h in header}  # value: the exact spelling Arrow will use
    missing = [c for c in spec.required if c.lower() not in by_lower]
    if missing:
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col.lower(), list(by_lower), n=1, cutoff=0.6)
            if close:
                hints.append(f"{by_lower[close[0]]!r} for {col}")
        shown = ", ".join(header[:30]) + (", …" if len(header) > 30 else "")
        raise DataError(
            f"{spec.label} lacks column(s) {', '.join(missing)}; found: {shown}; expected MIMIC's: "
            f"{', '.join(spec.schema)}." + (f" Did you mean {'; '.join(hints)}?" if hints else ""),
            path=path,
            fix="use the unmodified MIMIC file, or rename the column to MIMIC's name.",
        )
    cols = {c: by_lower[c.lower()] for c in spec.required}
    cols.update({c: by_lower[c.lower()] for c in spec.optional if c.lower() in by_lower})
    return cols


def _csv_error(
    spec: CsvSpec,
    path: Path,
    exc: Exception,
    bad_rows: list[tuple[Any, int, int]],
    header: list[str],
    rows_before: int,
) -> DataError:
    """A DataError for an Arrow CSV fault. Arrow's messages can quote a row, so they are never passed on."""
    msg = str(exc)
    fix = "re-download the file; it looks damaged or altered (MIMIC's files are UTF-8 CSV with quoted text)."
    if "utf8" in msg.lower():
        m = re.search(r"column #(\d+)", msg)
        col = header[int(m.group(1))] if m and int(m.group(1)) < len(header) else "?"
        return DataError(
            f"{spec.label} has bytes that are not valid UTF-8 in column {col} "
            f"(after the first {rows_before:,} data rows).",
            path=path,
            fix=fix,
        )
    if bad_rows and bad_rows[0][1] < 0:
        return DataError(
            f"{spec.label} is malformed CSV: a row after the first {rows_before:,} data rows has a different "
            "number of fields than the header and bytes that are not valid UTF-8.",
            path=path,
            fix=fix,
        )
    if bad_rows:
        number, expected, actual = bad_rows[0]
        where = (
            f"line {number}"
            if isinstance(number, int) and number > 0
            else f"a row after the first {rows_before:,} data rows"
        )
        return DataError(
            f"{spec.label} is malformed CSV: {where} has {actual} field(s), the header has {expected}.",
            path=path,
            fix=fix,
        )
    kind = "decompression" if isinstance(exc, OSError) or "gzip" in msg.lower() else "CSV parsing"
    return DataError(
        f"{spec.label}: {kind} failed after the first {rows_before:,} data rows.", path=path, fix=fix
    )


def iter_csv(spec: CsvSpec, path: Path, columns: Mapping[str, str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream `path` as (index of the batch's first data row, batch) with MIMIC's column names.

    All columns are read as strings (bytes for `spec.binary`): MIMIC's ids and codes are validated here,
    not guessed by a type inference that a later `V` code would break."""
    header = read_header(spec, path)
    types = {
        actual: (pa.binary() if logical in spec.binary else pa.string())
        for logical, actual in columns.items()
    }
    bad_rows: list[tuple[Any, int, int]] = []

    def on_invalid(row: Any) -> str:
        bad_rows.append((row.number, row.expected_columns, row.actual_columns))
        return "error"

    rows = 0
    try:
        with _undecodable_invalid_rows(on_invalid, bad_rows):
            reader = pacsv.open_csv(
                str(path),
                read_options=pacsv.ReadOptions(block_size=_BLOCK_SIZE),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(columns.values()),
                    column_types=types,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                renamed = pa.RecordBatch.from_arrays(
                    [batch.column(a) for a in columns.values()], names=list(columns)
                )
                yield rows, renamed
                rows += batch.num_rows
    except (pa.ArrowException, OSError, zlib.error) as exc:
        raise _csv_error(spec, path, exc, bad_rows, header, rows) from None


@contextlib.contextmanager
def _undecodable_invalid_rows(
    handler: Callable[[Any], str], bad_rows: list[tuple[Any, int, int]]
) -> Iterator[None]:
    """Arrow decodes a malformed row's text before calling `handler`; when the row is not UTF-8 that decoding
    fails inside Arrow, which reports it through `sys.unraisablehook` (a traceback on stderr) and then fails
    the read. Record such a row (expected fields -1: unknown) instead of printing the traceback."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if unraisable.object is handler and isinstance(unraisable.exc_value, UnicodeDecodeError):
            bad_rows.append((None, -1, -1))
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def parse_ints(
    arr: pa.Array, *, spec: CsvSpec, path: Path, column: str, rows: np.ndarray, strict: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) of an integer column read as strings. Empty cells are absent; anything else that
    is not an integer (`123` or `123.0`) raises naming the file, column and data row (with `strict`) or
    counts as absent. `rows` holds each element's 1-based data row number."""
    s = pc.replace_substring_regex(pc.utf8_trim_whitespace(arr), r"\.0+$", "")
    ok = np.asarray(pc.match_substring_regex(s, r"^[0-9]{1,18}$").to_numpy(zero_copy_only=False), dtype=bool)
    if strict:
        empty = np.asarray(pc.equal(s, "").to_numpy(zero_copy_only=False), dtype=bool)
        bad = ~ok & ~empty
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{spec.label}: {column} of data row {int(rows[i])} is not an integer id.",
                path=path,
                fix=f"{column} must hold integer ids as in MIMIC; correct or remove that row.",
            )
    values = np.zeros(len(arr), dtype=np.int64)
    if ok.any():
        values[ok] = pc.cast(pc.filter(s, pa.array(ok)), pa.int64()).to_numpy()
    return values, ok


def decode_text(arr: pa.Array, *, spec: CsvSpec, path: Path, column: str, rows: np.ndarray) -> pa.Array:
    """Bytes → UTF-8 strings; a bad field raises naming its data row (the text itself is never shown)."""
    try:
        return pc.cast(arr, pa.string())
    except pa.ArrowInvalid:
        for i, value in enumerate(arr.to_pylist()):
            try:
                (value or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{spec.label}: {column} of data row {int(rows[i])} is not valid UTF-8 "
                    f"(byte {exc.start} of the field).",
                    path=path,
                    fix="MIMIC files are UTF-8: re-download the file or convert it (iconv -t utf-8).",
                ) from None
        raise  # pragma: no cover - Arrow and Python disagree on validity


def lower_trim(arr: pa.Array) -> np.ndarray:
    return np.asarray(
        pc.utf8_lower(pc.utf8_trim_whitespace(arr)).to_numpy(zero_copy_only=False), dtype=object
    )


# --------------------------------------------------------------------------------------------------
# Codes per admission


@dataclass
class CodeRows:
    """Code rows gathered from the code tables, before de-duplication."""

    hadm: list[np.ndarray] = field(default_factory=list)
    key: list[np.ndarray] = field(default_factory=list)  # index into `keys`
    order: list[np.ndarray] = field(default_factory=list)  # packed (table, SEQ_NUM, row) sort key
    keys: dict[str, int] = field(default_factory=dict)  # normalised `system:code` -> index
    _raw: dict[str, int] = field(default_factory=dict)  # raw `system:CODE` -> index

    def add(
        self,
        hadm: np.ndarray,
        systems: pa.Array,
        codes: pa.Array,
        table: int,
        seq: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        """Add rows: `systems` and `codes` are Arrow string arrays (codes raw, undotted as in MIMIC)."""
        if len(hadm) == 0:
            return
        combo = pc.dictionary_encode(pc.binary_join_element_wise(systems, codes, ":"))
        # Normalise each distinct raw code once, not once per row (MIMIC-IV has ~5M code rows).
        lut = np.empty(len(combo.dictionary), dtype=np.int64)
        for i, raw in enumerate(combo.dictionary.to_pylist()):
            idx = self._raw.get(raw)
            if idx is None:
                key = Code.parse(raw).key
                idx = self._raw[raw] = self.keys.setdefault(key, len(self.keys))
            lut[i] = idx
        # One int64 per row: table (bit 61) | SEQ_NUM (20 bits; missing sorts last) | data row (40 bits).
        seq = np.clip(seq, 0, (1 << 20) - 1).astype(np.int64)
        self.hadm.append(hadm.astype(np.int64))
        self.key.append(lut[combo.indices.to_numpy(zero_copy_only=False)])
        self.order.append((np.int64(table) << 61) | (seq << 40) | rows.astype(np.int64))


def read_codes(
    spec: CsvSpec,
    path: Path,
    columns: Mapping[str, str],
    out: CodeRows,
    *,
    table: int,
    code_column: str,
    systems: Callable[[pa.RecordBatch, np.ndarray], pa.Array],
    hadm_column: str = "HADM_ID",
    seq_column: str = "SEQ_NUM",
) -> dict[str, int]:
    """Stream one code table into `out`. `systems(batch, rows)` gives each row's code system ("" to skip
    the row, e.g. a code of the other ICD version). Rows without a code (MIMIC has a few) are counted and
    dropped; an unparseable HADM_ID raises."""
    n_rows = n_no_code = n_no_hadm = n_skipped = 0
    for start, batch in iter_csv(spec, path, columns):
        rownums = np.arange(start + 1, start + 1 + batch.num_rows, dtype=np.int64)
        n_rows += batch.num_rows
        hadm, present = parse_ints(
            batch[hadm_column], spec=spec, path=path, column=columns[hadm_column], rows=rownums
        )
        codes = pc.utf8_upper(pc.utf8_trim_whitespace(batch[code_column]))
        has_code = np.asarray(pc.not_equal(codes, "").to_numpy(zero_copy_only=False), dtype=bool)
        sys_arr = systems(batch, rownums)
        wanted = np.asarray(pc.not_equal(sys_arr, "").to_numpy(zero_copy_only=False), dtype=bool)
        n_no_code += int((present & ~has_code).sum())
        n_no_hadm += int((~present).sum())
        n_skipped += int((present & has_code & ~wanted).sum())
        keep = present & has_code & wanted
        if not keep.any():
            continue
        if seq_column in columns:
            seq, seq_ok = parse_ints(
                batch[seq_column], spec=spec, path=path, column=seq_column, rows=rownums, strict=False
            )
            seq = np.where(seq_ok, seq, (1 << 20) - 1)
        else:
            seq = np.zeros(batch.num_rows, dtype=np.int64)
        mask = pa.array(keep)
        out.add(hadm[keep], pc.filter(sys_arr, mask), pc.filter(codes, mask), table, seq[keep], rownums[keep])
    return {
        "rows": n_rows,
        "rows_without_code": n_no_code,
        "rows_without_hadm_id": n_no_hadm,
        "rows_other_version": n_skipped,
    }


@dataclass
class CodeIndex:
    """Codes of each admission (compressed sparse rows), de-duplicated, in (table, SEQ_NUM, row) order.

    `keys` are `system:code` keys sorted; `code_idx` indexes them; admission i owns
    code_idx[offsets[i]:offsets[i+1]].
    """

    hadm: np.ndarray
    offsets: np.ndarray
    code_idx: np.ndarray
    keys: list[str]

    @classmethod
    def build(cls, rows: CodeRows) -> CodeIndex:
        if not rows.hadm:
            return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), [])
        hadm = np.concatenate(rows.hadm)
        key = np.concatenate(rows.key)
        order = np.concatenate(rows.order)
        # Sorted keys so indices (and thus label order) do not depend on file order.
        unsorted = list(rows.keys)
        rank = np.empty(len(unsorted), dtype=np.int64)
        keys = sorted(unsorted)
        pos = {k: i for i, k in enumerate(keys)}
        for k, i in rows.keys.items():
            rank[i] = pos[k]
        key = rank[key]
        perm = np.lexsort((order, hadm))
        hadm, key = hadm[perm], key[perm]
        # First occurrence of each (admission, code) in that order.
        pair = hadm * max(len(keys), 1) + key
        _, first = np.unique(pair, return_index=True)
        first.sort()
        hadm, key = hadm[first], key[first]
        uniq, starts = np.unique(hadm, return_index=True)
        offsets = np.append(starts, len(hadm)).astype(np.int64)
        return cls(uniq, offsets, key.astype(np.int32), keys)

    def _positions(self, hadm_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(self.hadm) == 0:
            return np.zeros(len(hadm_ids), np.int64), np.zeros(len(hadm_ids), bool)
        pos = np.clip(np.searchsorted(self.hadm, hadm_ids), 0, len(self.hadm) - 1)
        return pos, self.hadm[pos] == hadm_ids

    def codes_of(self, hadm_id: int, allowed: np.ndarray | None = None) -> list[str]:
        i = int(np.searchsorted(self.hadm, hadm_id))
        if i >= len(self.hadm) or int(self.hadm[i]) != hadm_id:
            return []
        idx = self.code_idx[self.offsets[i] : self.offsets[i + 1]]
        if allowed is not None:
            idx = idx[allowed[idx]]
        keys = self.keys
        return [keys[j] for j in idx.tolist()]

    def n_codes(self, hadm_ids: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Number of (allowed) codes of each admission in `hadm_ids` (0 when it has none)."""
        if len(self.hadm) == 0:
            return np.zeros(len(hadm_ids), dtype=np.int64)
        flags = (
            np.ones(len(self.code_idx), np.int64)
            if allowed is None
            else allowed[self.code_idx].astype(np.int64)
        )
        per_adm = (
            np.add.reduceat(flags, self.offsets[:-1]) if len(flags) else np.zeros(len(self.hadm), np.int64)
        )
        pos, found = self._positions(np.asarray(hadm_ids, dtype=np.int64))
        return np.where(found, per_adm[pos], 0)

    def counts(self, scope: np.ndarray | None = None) -> dict[str, int]:
        """In how many admissions (of `scope`, if given) each code occurs."""
        idx = self.code_idx
        if scope is not None:
            owner = np.repeat(self.hadm, np.diff(self.offsets))
            idx = idx[np.isin(owner, scope)]
        bins = np.bincount(idx, minlength=len(self.keys))
        return {k: int(n) for k, n in zip(self.keys, bins, strict=True) if n}

    def mask(self, keep: set[str] | Sequence[str]) -> np.ndarray:
        keep = set(keep)
        return np.fromiter((k in keep for k in self.keys), dtype=bool, count=len(self.keys))


def top_codes(counts: Mapping[str, int], k: int) -> list[str]:
    """The `k` most frequent codes. Ties are broken by the `system:code` key (ascending), so the result
    does not depend on file order (CAML's sort kept Counter insertion order, i.e. file order)."""
    if k < 1:
        raise DataError(f"top-k must be at least 1, got {k}.")
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def frequent_codes(counts: Mapping[str, int], min_count: int) -> list[str]:
    """Codes occurring at least `min_count` times (Edin et al. drop those with fewer than 10)."""
    return sorted(c for c, n in counts.items() if n >= min_count)


def boundary_tie(counts: Mapping[str, int], k: int) -> bool:
    """Whether the k-th and (k+1)-th most frequent codes have the same count (then the tie-break decides)."""
    values = sorted(counts.values(), reverse=True)
    return len(values) > k and values[k - 1] == values[k]


# --------------------------------------------------------------------------------------------------
# Note spill: selected notes, per split, on disk

SPILL_SCHEMA = pa.schema(
    [
        ("hadm_id", pa.int64()),
        ("subject_id", pa.int64()),
        ("rank", pa.int32()),  # 0 = main report, 1 = addendum (MIMIC-III); 0 for MIMIC-IV
        ("date", pa.string()),  # CHARTDATE (MIMIC-III); empty for MIMIC-IV
        ("seq", pa.int64()),  # data row number (MIMIC-III) / note_seq (MIMIC-IV)
        ("note_id", pa.string()),
        ("text", pa.string()),
    ]
)


def _note_order(row: Mapping[str, Any]) -> tuple[int, str, int]:
    return (row["rank"] or 0, row["date"] or "", (1 << 62) if row["seq"] is None else row["seq"])


class NoteSpill:
    """Notes of split admissions written to `dir/{split}.parquet` while the CSV streams by."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.notes: dict[str, int] = dict.fromkeys(SPLITS, 0)

    def write(self, split: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if split not in self._writers:
            self._writers[split] = pq.ParquetWriter(
                self.dir / f"{split}.parquet", SPILL_SCHEMA, compression="zstd"
            )
        self._writers[split].write_table(table.cast(SPILL_SCHEMA))
        self.notes[split] += table.num_rows

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def _path(self, split: str) -> Path | None:
        p = self.dir / f"{split}.parquet"
        return p if p.is_file() else None

    def hadm_ids(self, split: str) -> np.ndarray:
        """Distinct admissions with at least one note in `split`."""
        p = self._path(split)
        if p is None:
            return np.zeros(0, dtype=np.int64)
        return np.unique(pq.read_table(p, columns=["hadm_id"]).column(0).to_numpy())

    def admissions(self, split: str, batch_rows: int = 256) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(hadm_id, its notes sorted by rank, date, seq). Admissions with one note come in file
        order; the few with several are held back and merged at the end (sorted by hadm_id)."""
        p = self._path(split)
        if p is None:
            return
        pf = pq.ParquetFile(p)
        all_ids = pf.read(columns=["hadm_id"]).column(0).to_numpy()
        uniq, counts = np.unique(all_ids, return_counts=True)
        multi = set(uniq[counts > 1].tolist())
        held: dict[int, list[dict[str, Any]]] = {}
        for batch in pf.iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                h = int(row["hadm_id"])
                if h in multi:
                    held.setdefault(h, []).append(row)
                else:
                    yield h, [row]
        for h in sorted(held):
            yield h, sorted(held[h], key=_note_order)


# --------------------------------------------------------------------------------------------------
# The assembled corpus


@dataclass
class Corpus:
    """What a MIMIC reader has gathered: notes spilled per split, codes per admission, the label space.

    `documents()` streams Documents split by split; `report` (computed before streaming) holds counts
    for the prepared dataset's stats."""

    name: str
    spill: NoteSpill
    codes: CodeIndex
    allowed: np.ndarray | None  # bool over codes.keys; None = every code
    require_codes: bool
    merge: Callable[[list[dict[str, Any]]], tuple[str, dict[str, Any]]]
    report: dict[str, Any]

    def kept_ids(self, split: str) -> np.ndarray:
        ids = self.spill.hadm_ids(split)
        if not self.require_codes:
            return ids
        return ids[self.codes.n_codes(ids, self.allowed) > 0]

    def documents(self) -> Iterator[Document]:
        for split in SPLITS:
            for hadm, notes in self.spill.admissions(split):
                codes = self.codes.codes_of(hadm, self.allowed)
                if self.require_codes and not codes:
                    continue
                text, meta = self.merge(notes)
                yield Document(id=str(hadm), text=text, codes=codes, split=split, meta=meta)


def split_report(
    name: str,
    membership: SplitMembership,
    corpus_ids: Mapping[str, np.ndarray],
    produced: Mapping[str, int],
    reference: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Per-split counts and the check against the published counts.

    The check runs only when the input covers the split: at least the published number of each split's
    ids has a note (a subset of MIMIC cannot reproduce the published counts)."""
    published = PUBLISHED_COUNTS[name]
    listed = membership.counts()
    with_note = {s: len(corpus_ids[s]) for s in SPLITS}
    complete = all(with_note[s] >= published[s] for s in SPLITS)
    out: dict[str, Any] = {
        "split_table": name,
        "split_ids": listed,
        "split_ids_with_note": with_note,
        "documents": dict(produced),
        "published_counts": published,
        "matches_published_counts": (all(produced[s] == published[s] for s in SPLITS) if complete else None),
    }
    if not complete:
        out["published_counts_not_checked"] = (
            "the input holds notes for only part of the split's ids (a subset of MIMIC?); "
            "counts are compared with the published ones only for complete data."
        )
    return out


def check_output_free(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty output before hours of reading, not after (same rule as the writer)."""
    check_replaceable(out, overwrite)


def write_corpus(reader: MimicReader, out: Path, source: str, overwrite: bool) -> dict[str, Any]:
    """Read with `reader` and stream its documents into the prepared dataset `out`; stats carry the split
    check (`matches_published_counts`, `published_counts`) and the reader's counts under `mimic`."""
    from icdcoder.data.prepared import write_prepared

    with reader as corpus:
        splits = corpus.report["splits"]
        extra = {
            "matches_published_counts": splits["matches_published_counts"],
            "published_counts": splits["published_counts"],
            "mimic": corpus.report,
        }
        return write_prepared(
            out,
            corpus.documents(),
            source=source,
            options=reader.options(),
            extra_stats=extra,
            overwrite=overwrite,
        )


class MimicReader:
    """Base of the MIMIC readers: `with reader as corpus:` reads the files into a Corpus whose note spill
    lives in a temporary folder (inside `work_dir` if given) until the block ends."""

    work_dir: Path | None = None

    def options(self) -> dict[str, Any]:
        """The reader's settings, recorded in the prepared dataset's stats."""
        raise NotImplementedError

    def __init__(self) -> None:
        self._tmp: contextlib.AbstractContextManager[Path] | None = None

    def _load(self, tmp: Path) -> Corpus:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> Corpus:
        self._tmp = spill_dir(self.work_dir)
        tmp = self._tmp.__enter__()
        try:
            return self._load(tmp)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            tmp.__exit__(None, None, None)


@contextlib.contextmanager
def spill_dir(work_dir: Path | None) -> Iterator[Path]:
    """A temporary folder for the note spill (beside the output when preparing), removed afterwards."""
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".icdcoder-mimic-", dir=work_dir) as tmp:
        yield Path(tmp)
