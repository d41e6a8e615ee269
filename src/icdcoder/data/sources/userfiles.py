"""A user's own notes and codes, as JSON Lines or CSV.

JSON Lines: one object per line with `id`, `text`, `codes` (a list, or one string of codes joined by a
separator) and optionally `split` (train/dev/test), `spans` and `meta` (an object); any other key goes into
`meta`. CSV: a header row with `id`, `text`, `codes` and optionally `split` and `spans` columns (other
columns go into `meta` as strings); `codes` holds codes joined by any of the separator characters (`;` or
`|` by default).

`spans` (optional) are the evidence of the row's codes: a list of `{"code": C, "start": S, "end": E}`
objects (in CSV, that list as JSON text in the cell), 0-based character offsets into `text`, end exclusive;
a discontinuous mention gives `"offsets": [[S1, E1], [S2, E2]]` instead of start/end. Each span's code must be
one of the row's codes and its offsets must lie inside the text. They become `Document.evidence` (what the
mention memory learns from, and what evidence is scored against).

A code names its system either per code (`icd10cm:N44.8`, which wins) or for the whole file (`system=`).
Every fault raises a DataError naming the file, the line and the fix; note text is never shown.
Documents without a split get split None ("unsplit"), unless `split_ratios` assigns one: a deterministic
hash of (seed, id) picks the split, so a document keeps its split when rows are added or reordered.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icdcoder.data.document import SPLITS, Document, Evidence
from icdcoder.data.prepared import write_prepared
from icdcoder.data.validate import ExistsFn, make_validator, validate_documents
from icdcoder.errors import DataError, IcdcoderError
from icdcoder.io import atomic_write
from icdcoder.ontology.systems import Code, parse_system

KINDS: tuple[str, ...] = ("jsonl", "csv")
FIELDS: tuple[str, ...] = ("id", "text", "codes", "split", "spans")
REQUIRED: tuple[str, ...] = ("id", "text", "codes")
DEFAULT_SEP = ";|"
_EXAMPLES = 10

# Names people give these columns; used only to suggest a fix, never to guess silently.
_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("doc_id", "document_id", "note_id", "hadm_id", "row_id", "identifier", "uid", "key", "name"),
    "text": ("note", "notes", "note_text", "body", "content", "document", "report", "clinical_note", "texto"),
    "codes": ("code", "labels", "label", "icd", "icd_code", "icd_codes", "icd10", "diagnoses", "targets"),
    "split": ("fold", "set", "partition", "subset"),
}
_SPLIT_HINTS = {
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "development": "dev",
    "eval": "dev",
    "training": "train",
    "testing": "test",
    "holdout": "test",
}


@dataclass
class UserFileReport:
    """What the reader counted while streaming; goes into stats.json under `report`."""

    rows: int = 0
    empty_notes: list[str] = field(default_factory=list)
    empty_dropped: bool = False
    without_codes: int = 0
    split_assignment: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "empty_notes": {
                "count": len(self.empty_notes),
                "dropped": self.empty_dropped,
                "examples": self.empty_notes[:_EXAMPLES],
            },
            "documents_without_codes": self.without_codes,
            "split_assignment": self.split_assignment,
        }


def _suggest(expected: str, found: Sequence[str]) -> str | None:
    """The found name that most likely means `expected` (case, known aliases, then spelling)."""
    lower = {f.lower().strip(): f for f in found}
    if expected in lower:
        return lower[expected]
    for alias in _ALIASES.get(expected, ()):
        if alias in lower:
            return lower[alias]
    close = difflib.get_close_matches(expected, list(lower), n=1, cutoff=0.75)
    return lower[close[0]] if close else None


def _missing_fields_error(
    path: Path, what: str, missing: list[str], found: Sequence[str], line: int | None, flag: bool
) -> DataError:
    hints = []
    for name in missing:
        guess = _suggest(name, found)
        if guess is not None:
            how = f"rename {guess!r} to {name!r}" + (f" or pass --{name}-column {guess}" if flag else "")
            hints.append(how)
    fix = "; ".join(hints) if hints else f"add the {', '.join(repr(m) for m in missing)} {what}(s)"
    return DataError(
        f"missing {what}(s) {', '.join(repr(m) for m in missing)}; found {list(found)}, "
        f"expected {list(REQUIRED)} (and optionally 'split', 'spans').",
        path=path,
        line=line,
        fix=fix + ".",
    )


def _locate_bad_utf8(path: Path) -> tuple[int, int]:
    """(line, byte offset) of the first byte sequence that is not UTF-8."""
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return lineno, offset + exc.start
            offset += len(raw)
    return 0, offset


def _not_utf8(path: Path) -> DataError:
    line, offset = _locate_bad_utf8(path)
    return DataError(
        f"not valid UTF-8 (byte offset {offset}).",
        path=path,
        line=line or None,
        fix=f"re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`.",
    )


def _guarded(path: Path, rows: Iterator[Document]) -> Iterator[Document]:
    """Turn a decoding fault deep in a reader into a DataError naming the byte and line."""
    try:
        yield from rows
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def split_codes(raw: str, sep: str) -> list[str]:
    """Split a string of codes on any character of `sep`; empty pieces are ignored."""
    pieces = [raw]
    for ch in sep:
        pieces = [p for piece in pieces for p in piece.split(ch)]
    return [p.strip() for p in pieces if p.strip()]


def code_key(raw: str, system: str | None) -> str:
    """`system:code` key of a raw code; a `SYSTEM:` prefix on the code wins over `system`."""
    raw = raw.strip()
    head, colon, tail = raw.partition(":")
    if colon:
        if not tail.strip():
            raise IcdcoderError(f"code {raw!r} has a system but no code.")
        return Code.of(parse_system(head), tail).key
    if system is None:
        raise IcdcoderError(
            f"code {raw!r} has no code system.",
            fix="pass --system (e.g. --system icd10cm) or write codes as SYSTEM:CODE (e.g. icd10cm:N44.8).",
        )
    return Code.of(system, raw).key


def _codes(raw: list[str], system: str | None, path: Path, line: int) -> list[str]:
    keys: list[str] = []
    for r in raw:
        try:
            key = code_key(r, system)
        except IcdcoderError as exc:
            raise DataError(exc.message, path=path, line=line, fix=exc.fix) from None
        if key not in keys:
            keys.append(key)
    return keys


_SPAN_FIX = (
    'write spans as [{"code": "icd10cm:I10", "start": 10, "end": 22}, ...] (character offsets into the text, '
    'end exclusive), or with "offsets": [[start, end], ...] for a discontinuous mention'
)


def _offset_pairs(obj: dict[str, Any]) -> list[tuple[int, int]] | None:
    """[(start, end), ...] of one span object, or None when its offsets are not integer pairs."""
    raw = obj["offsets"] if "offsets" in obj else [[obj.get("start"), obj.get("end")]]
    if not isinstance(raw, list) or not raw:
        return None
    pairs = []
    for pair in raw:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            return None
        a, b = pair
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
            return None
        pairs.append((int(a), int(b)))
    return pairs


def _spans(
    raw: Any, text: str, codes: list[str], system: str | None, path: Path, line: int
) -> list[Evidence]:
    """Evidence of a row from its `spans` field (module docstring), validated against its text and codes."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"'spans' is not valid JSON ({exc.msg} at column {exc.colno}).",
                path=path,
                line=line,
                fix=_SPAN_FIX,
            ) from None
    if not isinstance(raw, list):
        raise DataError(
            f"'spans' must be a list, found {type(raw).__name__}.", path=path, line=line, fix=_SPAN_FIX
        )
    out: list[Evidence] = []
    for i, obj in enumerate(raw):
        where = f"span {i + 1}"
        if not isinstance(obj, dict) or not isinstance(obj.get("code"), str):
            raise DataError(
                f"{where} must be an object with a 'code' string.", path=path, line=line, fix=_SPAN_FIX
            )
        pairs = _offset_pairs(obj)
        if pairs is None:
            raise DataError(f"{where} needs integer start/end offsets.", path=path, line=line, fix=_SPAN_FIX)
        (key,) = _codes([obj["code"]], system, path, line)
        if key not in codes:
            raise DataError(
                f"{where} is evidence for {key}, which is not one of the row's codes.",
                path=path,
                line=line,
                fix="add the code to 'codes' or correct the span's code.",
            )
        for a, b in pairs:
            if not 0 <= a < b <= len(text):
                raise DataError(
                    f"{where} ({key}) has offsets [{a}, {b}) outside the text ({len(text)} characters) "
                    "or empty.",
                    path=path,
                    line=line,
                    fix="offsets are 0-based character positions into 'text', start < end <= its length.",
                )
        out.append(Evidence(code=key, spans=tuple(pairs), text=" ".join(text[a:b] for a, b in pairs)))
    return out


def _split(raw: Any, path: Path, line: int) -> str | None:
    if raw is None:
        return None
    value = str(raw).strip().lower()
    if not value:
        return None
    if value in SPLITS:
        return value
    hint = _SPLIT_HINTS.get(value)
    fix = f"use {', '.join(SPLITS)} or leave it empty" + (f" (did you mean {hint!r}?)" if hint else "")
    raise DataError(f"unknown split value {str(raw)!r}.", path=path, line=line, fix=fix + ".")


class _IdRegistry:
    """Remembers the line of every id so a duplicate names both rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}

    def add(self, doc_id: str, line: int) -> None:
        first = self.lines.get(doc_id)
        if first is not None:
            raise DataError(
                f"duplicate id {doc_id!r} (first at line {first}).",
                path=self.path,
                line=line,
                fix="make ids unique or remove one of the two rows.",
            )
        self.lines[doc_id] = line


def _check_system(system: str | None) -> str | None:
    return None if system is None else parse_system(system).value


# ----------------------------------------------------------------------------------------------- JSONL


def _jsonl_rows(path: Path, system: str | None, sep: str, report: UserFileReport) -> Iterator[Document]:
    ids = _IdRegistry(path)
    with open(path, encoding="utf-8-sig", newline="\n") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"invalid JSON ({exc.msg} at column {exc.colno}).",
                    path=path,
                    line=lineno,
                    fix="write one JSON object per line.",
                ) from None
            if not isinstance(obj, dict):
                raise DataError(
                    f"expected a JSON object, found {type(obj).__name__}.", path=path, line=lineno
                )
            try:  # a JSON escape can spell a lone UTF-16 surrogate ("\\ud800"), which UTF-8 cannot store
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(
                    f"the row holds a lone UTF-16 surrogate ({exc.object[exc.start]!r}), not valid Unicode.",
                    path=path,
                    line=lineno,
                    fix="re-export the file as UTF-8 text (a surrogate pair must come whole).",
                ) from None
            missing = [k for k in REQUIRED if k not in obj]
            if missing:
                raise _missing_fields_error(path, "key", missing, list(obj), lineno, flag=False)
            report.rows += 1
            raw_id = obj["id"]
            if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
                raise DataError(
                    f"'id' must be a string or an integer, found {type(raw_id).__name__}.",
                    path=path,
                    line=lineno,
                )
            doc_id = str(raw_id)
            if not doc_id.strip():
                raise DataError("empty 'id'.", path=path, line=lineno, fix="give every row an id.")
            ids.add(doc_id, lineno)
            text = obj["text"]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise DataError(
                    f"'text' must be a string, found {type(text).__name__}.", path=path, line=lineno
                )
            raw_codes = obj["codes"]
            if raw_codes is None:
                raw_codes = []
            elif isinstance(raw_codes, str):
                raw_codes = split_codes(raw_codes, sep)
            elif not (isinstance(raw_codes, list) and all(isinstance(c, str) for c in raw_codes)):
                raise DataError(
                    "'codes' must be a list of strings.",
                    path=path,
                    line=lineno,
                    fix='e.g. "codes": ["icd10cm:I10"].',
                )
            meta = obj.get("meta")
            meta = dict(meta) if isinstance(meta, dict) else {}
            meta.update({k: v for k, v in obj.items() if k not in (*FIELDS, "meta")})
            codes = _codes(raw_codes, system, path, lineno)
            yield Document(
                id=doc_id,
                text=text,
                codes=codes,
                split=_split(obj.get("split"), path, lineno),
                meta=meta,
                evidence=_spans(obj.get("spans"), text, codes, system, path, lineno),
            )


def iter_jsonl(
    path: str | Path,
    system: str | None = None,
    sep: str = DEFAULT_SEP,
    *,
    report: UserFileReport | None = None,
) -> Iterator[Document]:
    """Stream Documents from a JSON Lines file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found.", path=path)
    rep = report if report is not None else UserFileReport()
    return _guarded(path, _jsonl_rows(path, _check_system(system), sep, rep))


# ------------------------------------------------------------------------------------------------- CSV


def _csv_rows(
    path: Path,
    system: str | None,
    sep: str,
    delimiter: str,
    columns: dict[str, str],
    report: UserFileReport,
) -> Iterator[Document]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # notes can exceed the 128 KiB default
    ids = _IdRegistry(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        # strict: a quote inside a quoted field that is not doubled is an error, not a field that runs on
        # over the following rows (one stray quote would otherwise merge rows and their codes silently)
        reader = _strict_rows(csv.reader(fh, delimiter=delimiter, strict=True), path)
        header = next(reader, None)
        if header is None:
            raise DataError("empty file (no header row).", path=path, fix="add a header: id,text,codes.")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"duplicate column(s) {dupes} in the header.", path=path, line=1)
        wanted = {name: columns.get(name, name) for name in FIELDS}
        missing = [name for name in REQUIRED if wanted[name] not in header]
        if missing:
            raise _missing_fields_error(path, "column", missing, header, 1, flag=True)
        index = {name: header.index(col) for name, col in wanted.items() if col in header}
        extra = [(i, h) for i, h in enumerate(header) if i not in index.values()]
        line_end = reader.line_num
        for row in reader:
            lineno, line_end = line_end + 1, reader.line_num  # a quoted note may span several lines
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"expected {len(header)} fields, found {len(row)}.",
                    path=path,
                    line=lineno,
                    fix="quote fields that contain the delimiter or line breaks.",
                )
            report.rows += 1
            doc_id = row[index["id"]]
            if not doc_id.strip():
                raise DataError("empty 'id'.", path=path, line=lineno, fix="give every row an id.")
            ids.add(doc_id, lineno)
            split = _split(row[index["split"]], path, lineno) if "split" in index else None
            text = row[index["text"]]
            codes = _codes(split_codes(row[index["codes"]], sep), system, path, lineno)
            spans = row[index["spans"]] if "spans" in index else None
            yield Document(
                id=doc_id,
                text=text,
                codes=codes,
                split=split,
                meta={h: row[i] for i, h in extra},
                evidence=_spans(spans, text, codes, system, path, lineno),
            )


class _strict_rows:
    """A csv reader whose quoting errors become a DataError naming the line where the bad record starts."""

    def __init__(self, reader: Any, path: Path) -> None:
        self.reader, self.path = reader, path

    @property
    def line_num(self) -> int:
        return int(self.reader.line_num)

    def __iter__(self) -> _strict_rows:
        return self

    def __next__(self) -> list[str]:
        start = self.reader.line_num + 1
        try:
            return list(next(self.reader))
        except csv.Error as exc:
            raise DataError(
                f"malformed CSV quoting in the record starting at line {start} ({exc}).",
                path=self.path,
                line=start,
                fix='quote the whole field and double each quote inside it, e.g. "Pt says ""hi"" today".',
            ) from None


def iter_csv(
    path: str | Path,
    system: str | None = None,
    sep: str = DEFAULT_SEP,
    *,
    delimiter: str = ",",
    columns: dict[str, str] | None = None,
    report: UserFileReport | None = None,
) -> Iterator[Document]:
    """Stream Documents from a CSV file with a header row. `sep` holds the characters that separate codes
    in the `codes` column; `columns` maps id/text/codes/split to differently named columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found.", path=path)
    bad = sorted(set(columns or {}) - set(FIELDS))
    if bad:
        raise DataError(f"unknown column role(s) {bad}.", fix=f"map only {', '.join(FIELDS)}.")
    rep = report if report is not None else UserFileReport()
    return _guarded(path, _csv_rows(path, _check_system(system), sep, delimiter, dict(columns or {}), rep))


# ----------------------------------------------------------------------------------------------- writers


def write_jsonl(path: str | Path, documents: Iterable[Document]) -> None:
    """Write Documents as JSON Lines readable by `iter_jsonl` (atomically)."""
    with atomic_write(path) as fh:
        for doc in documents:
            obj: dict[str, Any] = {"id": doc.id, "text": doc.text, "codes": list(doc.codes)}
            if doc.split is not None:
                obj["split"] = doc.split
            if doc.evidence:
                obj["spans"] = _spans_json(doc)
            if doc.meta:
                obj["meta"] = doc.meta
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _spans_json(doc: Document) -> list[dict[str, Any]]:
    """A document's evidence as `spans` objects (only evidence whose offsets index its own text)."""
    out: list[dict[str, Any]] = []
    for ev in doc.evidence:
        if ev.offsets_in != "text":
            continue
        if len(ev.spans) == 1:
            out.append({"code": ev.code, "start": ev.spans[0][0], "end": ev.spans[0][1]})
        else:
            out.append({"code": ev.code, "offsets": [list(s) for s in ev.spans]})
    return out


def write_csv(path: str | Path, documents: Iterable[Document], sep: str = ";", delimiter: str = ",") -> None:
    """Write Documents as CSV readable by `iter_csv` (id, text, codes, split, spans; meta is not written)."""
    # Binary mode: line breaks inside quoted notes must be written byte for byte, never translated.
    with atomic_write(path, mode="wb") as fh:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(FIELDS)
        for doc in documents:
            spans = _spans_json(doc)
            writer.writerow(
                [doc.id, doc.text, sep.join(doc.codes), doc.split or "", json.dumps(spans) if spans else ""]
            )
            fh.write(buf.getvalue().encode("utf-8"))
            buf.seek(0)
            buf.truncate()
        fh.write(buf.getvalue().encode("utf-8"))


# ----------------------------------------------------------------------------------------------- prepare


def parse_split_ratios(raw: str | Sequence[float]) -> tuple[float, float, float]:
    """`0.8,0.1,0.1` -> (0.8, 0.1, 0.1); three non-negative numbers that sum to 1."""
    try:
        values = [float(x) for x in (raw.split(",") if isinstance(raw, str) else raw)]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise DataError(
            f"invalid split ratios {raw!r}.",
            fix="give three non-negative numbers summing to 1, e.g. 0.8,0.1,0.1.",
        )
    return values[0], values[1], values[2]


def hash_split(doc_id: str, ratios: tuple[float, float, float], seed: int) -> str:
    """train/dev/test for `doc_id`: a uniform number from sha256(seed, id) placed on the cumulative ratios."""
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < ratios[0]:
        return SPLITS[0]
    if u < ratios[0] + ratios[1]:
        return SPLITS[1]
    return SPLITS[2]


def _finish(
    docs: Iterable[Document],
    report: UserFileReport,
    drop_empty: bool,
    ratios: tuple[float, float, float] | None,
    seed: int,
) -> Iterator[Document]:
    assigned = 0
    for doc in docs:
        if not doc.text.strip():
            report.empty_notes.append(doc.id)
            if drop_empty:
                continue
        if ratios is not None and doc.split is None:
            doc.split = hash_split(doc.id, ratios, seed)
            assigned += 1
        if not doc.codes:
            report.without_codes += 1
        yield doc
    if ratios is not None:
        report.split_assignment = {
            "method": "sha256",
            "ratios": list(ratios),
            "seed": seed,
            "assigned": assigned,
        }


def prepare_userfile(
    kind: str,
    path: str | Path,
    out: str | Path,
    system: str | None = None,
    *,
    sep: str = DEFAULT_SEP,
    delimiter: str = ",",
    columns: dict[str, str] | None = None,
    drop_empty: bool = False,
    split_ratios: str | Sequence[float] | None = None,
    seed: int = 0,
    unknown_codes: str = "keep",
    overwrite: bool = False,
    exists: ExistsFn | None = None,
) -> dict[str, Any]:
    """Read a jsonl or csv file and write it as a prepared dataset at `out`; returns the stats."""
    if kind not in KINDS:
        raise DataError(f"unknown file kind {kind!r}.", fix=f"use one of: {', '.join(KINDS)}.")
    path = Path(path)
    ratios = parse_split_ratios(split_ratios) if split_ratios is not None else None
    report = UserFileReport(empty_dropped=drop_empty)
    validator = make_validator(unknown_codes, exists)
    rows = (
        iter_jsonl(path, system, sep, report=report)
        if kind == "jsonl"
        else iter_csv(path, system, sep, delimiter=delimiter, columns=columns, report=report)
    )
    docs = _finish(rows, report, drop_empty, ratios, seed)
    options = {
        "kind": kind,
        "file": path.name,
        "system": _check_system(system),
        "sep": sep,
        "delimiter": delimiter if kind == "csv" else None,
        "columns": dict(columns or {}),
        "drop_empty": drop_empty,
        "split_ratios": list(ratios) if ratios else None,
        "seed": seed if ratios else None,
        "unknown_codes": validator.policy,
    }
    return write_prepared(
        out,
        validate_documents(docs, validator),
        source=kind,
        options=options,
        extra_stats=lambda: {"report": {**report.to_json(), "code_validation": validator.report()}},
        overwrite=overwrite,
    )
