"""CodiEsp (CLEF eHealth 2020): Spanish clinical cases with ICD-10-CM (D) and ICD-10-PCS (P) codes.

Reads the official release layout (`final_dataset_v4_to_publish/`):
    {split}/{split}D.tsv   doc_id<TAB>code            (ICD-10-CM, lower case, dotted)
    {split}/{split}P.tsv   doc_id<TAB>code            (ICD-10-PCS, lower case, about half cut to 4 characters)
    {split}/{split}X.tsv   doc_id<TAB>DIAGNOSTICO|PROCEDIMIENTO<TAB>code<TAB>evidence<TAB>offsets
    {split}/text_files/    Spanish text, one file per document, file stem = document id
    {split}/text_files_en/ the organisers' English machine translation (sentence-split)
    background/text_files{,_en}/  unlabelled cases (for word embeddings)
X offsets are character offsets into the Spanish text, `start end` pairs joined by `;` for discontinuous
mentions; the evidence text is the pieces joined by one space. The copy embedded in the package has the
TSVs and English text only; `--lang es` needs a full download (`root=`).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icdcoder.data.document import SPLITS, Document, Evidence
from icdcoder.data.prepared import write_prepared
from icdcoder.data.validate import ExistsFn, make_validator, validate_documents
from icdcoder.errors import DataError
from icdcoder.ontology.systems import Code

TASKS: dict[str, tuple[str, ...]] = {"D": ("D",), "P": ("P",), "DP": ("D", "P")}
LANGS: dict[str, str] = {"en": "text_files_en", "es": "text_files"}
_SYSTEM = {"D": "icd10cm", "P": "icd10pcs"}
_X_LABEL = {"DIAGNOSTICO": "D", "PROCEDIMIENTO": "P"}
_EXAMPLES = 10


def embedded_root() -> Path:
    """The CodiEsp copy shipped inside the package (TSVs and English text; no Spanish)."""
    res = importlib.resources.files("icdcoder") / "resources" / "codiesp" / "final_dataset_v4_to_publish"
    return Path(str(res))


def _check_options(task: str, lang: str) -> tuple[str, str]:
    t, lg = task.strip().upper(), lang.strip().lower()
    if t not in TASKS:
        raise DataError(f"unknown CodiEsp task {task!r}.", fix="use --task D, P or DP.")
    if lg not in LANGS:
        raise DataError(f"unknown CodiEsp language {lang!r}.", fix="use --lang en or es.")
    return t, lg


def _read_text(path: Path) -> str:
    """Read a UTF-8 file without newline translation (X offsets count every character)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid UTF-8 (byte offset {exc.start}).", path=path, fix="re-download the CodiEsp release."
        ) from None


def _tsv_rows(path: Path, n_fields: int, strict: bool = True) -> Iterator[tuple[int, list[str] | None]]:
    """(line number, fields) of a CodiEsp TSV; blank lines skipped. A wrong field count is a DataError,
    or, with `strict=False`, yields None for that line (evidence rows are optional extras)."""
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != n_fields:
            if not strict:
                yield lineno, None
                continue
            raise DataError(
                f"expected {n_fields} tab-separated fields, found {len(fields)}.",
                path=path,
                line=lineno,
                fix="re-download the CodiEsp release; the file looks damaged.",
            )
        yield lineno, fields


def _parse_offsets(raw: str) -> tuple[tuple[int, int], ...] | None:
    """`a b;c d` -> ((a, b), (c, d)); None when malformed."""
    spans = []
    for piece in raw.split(";"):
        parts = piece.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        start, end = int(parts[0]), int(parts[1])
        if end < start:
            return None
        spans.append((start, end))
    return tuple(spans) if spans else None


@dataclass
class CodiespReport:
    """What the reader counted while streaming; goes into stats.json under `report`."""

    label_rows: int = 0
    duplicate_label_rows: int = 0
    documents_without_text: list[str] = field(default_factory=list)
    documents_without_codes: dict[str, int] = field(default_factory=dict)
    evidence_rows: int = 0
    evidence_files_missing: list[str] = field(default_factory=list)
    evidence_malformed_rows: int = 0
    evidence_kept: int = 0
    evidence_duplicate_rows: int = 0
    evidence_malformed_offsets: int = 0
    evidence_code_not_labelled: int = 0
    evidence_span_checked: int = 0
    evidence_span_mismatches: int = 0
    evidence_span_out_of_range: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "label_rows": self.label_rows,
            "duplicate_label_rows": self.duplicate_label_rows,
            "documents_without_text": {
                "count": len(self.documents_without_text),
                "examples": self.documents_without_text[:_EXAMPLES],
            },
            "documents_without_codes": dict(self.documents_without_codes),
            "evidence": {
                "rows": self.evidence_rows,
                "files_missing": list(self.evidence_files_missing),
                "malformed_rows": self.evidence_malformed_rows,
                "kept": self.evidence_kept,
                "duplicate_rows": self.evidence_duplicate_rows,
                "malformed_offsets": self.evidence_malformed_offsets,
                "code_not_labelled": self.evidence_code_not_labelled,
                "span_text_checked": self.evidence_span_checked,
                "span_text_mismatches": self.evidence_span_mismatches,
                "span_out_of_range": self.evidence_span_out_of_range,
            },
        }


def _split_dir(root: Path, split: str) -> Path:
    d = root / split
    if not d.is_dir():
        raise DataError(
            f"CodiEsp split folder {split!r} not found.",
            path=d,
            fix="point --path at the `final_dataset_v4_to_publish` folder of the official release.",
        )
    return d


def _read_labels(
    split_dir: Path, split: str, kinds: tuple[str, ...], report: CodiespReport
) -> dict[str, list[str]]:
    """doc id -> code keys in file order (D before P), duplicates removed and counted."""
    labels: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for kind in kinds:
        path = split_dir / f"{split}{kind}.tsv"
        if not path.is_file():
            raise DataError(f"CodiEsp {kind} labels not found.", path=path, fix="use the official release.")
        for lineno, fields in _tsv_rows(path, 2):
            assert fields is not None  # strict mode never yields None
            raw_id, raw = fields
            report.label_rows += 1
            doc_id = raw_id.strip()
            if not raw.strip() or not doc_id:
                raise DataError("empty document id or code.", path=path, line=lineno, fix="re-download it.")
            key = Code.of(_SYSTEM[kind], raw).key
            if (doc_id, key) in seen:
                report.duplicate_label_rows += 1
                continue
            seen.add((doc_id, key))
            labels.setdefault(doc_id, []).append(key)
    return labels


def _read_evidence(
    split_dir: Path, split: str, kinds: tuple[str, ...], report: CodiespReport
) -> dict[str, list[tuple[str, tuple[tuple[int, int], ...], str]]]:
    """doc id -> (code key, spans, evidence text) from the X file, restricted to the task's kinds."""
    path = split_dir / f"{split}X.tsv"
    out: dict[str, list[tuple[str, tuple[tuple[int, int], ...], str]]] = {}
    if not path.is_file():
        report.evidence_files_missing.append(split)
        return out
    seen: set[tuple[str, str, str]] = set()
    for _lineno, fields in _tsv_rows(path, 5, strict=False):
        if fields is None:
            report.evidence_malformed_rows += 1
            continue
        raw_id, label, raw, text, offsets = fields
        doc_id = raw_id.strip()
        kind = _X_LABEL.get(label.strip().upper())
        if kind not in kinds:
            continue
        report.evidence_rows += 1
        if (doc_id, raw, offsets) in seen:
            report.evidence_duplicate_rows += 1
            continue
        seen.add((doc_id, raw, offsets))
        spans = _parse_offsets(offsets)
        if spans is None:
            report.evidence_malformed_offsets += 1
            continue
        key = Code.of(_SYSTEM[kind], raw).key
        out.setdefault(doc_id, []).append((key, spans, text))
    return out


def _evidence_for(
    text: str,
    codes: list[str],
    rows: list[tuple[str, tuple[tuple[int, int], ...], str]],
    lang: str,
    report: CodiespReport,
) -> list[Evidence]:
    labelled = set(codes)
    kept: list[Evidence] = []
    for key, spans, ev_text in rows:
        if key not in labelled:
            report.evidence_code_not_labelled += 1
            continue
        offsets_in = "es"
        if lang == "es":
            # Offsets index this very text: check them (a few gold spans are off by one character).
            offsets_in = "text"
            report.evidence_span_checked += 1
            if any(end > len(text) for _, end in spans):
                report.evidence_span_out_of_range += 1
            elif " ".join(text[a:b] for a, b in spans) != ev_text:
                report.evidence_span_mismatches += 1
        kept.append(Evidence(code=key, spans=spans, text=ev_text, offsets_in=offsets_in))
    report.evidence_kept += len(kept)
    return kept


def iter_codiesp(
    root: Path | None = None,
    task: str = "D",
    lang: str = "en",
    evidence: bool = True,
    *,
    report: CodiespReport | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> Iterator[Document]:
    """Stream CodiEsp documents (train, dev, test; ids sorted within a split).

    Every text file becomes a document, with or without codes; label rows whose document has no text file
    are skipped. Both are counted in `report`. Evidence comes from the X file, for the document's own codes
    only: its spans and text are those of the Spanish original, so with `lang="en"` they carry
    `offsets_in="es"`; with `lang="es"` they index the document text and are checked against it.
    """
    task, lang = _check_options(task, lang)
    base = Path(root) if root is not None else embedded_root()
    if not base.is_dir():
        raise DataError("CodiEsp folder not found.", path=base, fix="pass the release folder with --path.")
    rep = report if report is not None else CodiespReport()
    kinds = TASKS[task]
    for split in splits:
        split_dir = _split_dir(base, split)
        text_dir = split_dir / LANGS[lang]
        if not text_dir.is_dir():
            hint = (
                "the embedded copy has English text only; pass --path to a full CodiEsp download."
                if lang == "es"
                else "pass --path to the official release folder."
            )
            raise DataError(f"CodiEsp {lang} text folder not found.", path=text_dir, fix=hint)
        labels = _read_labels(split_dir, split, kinds, rep)
        ev_rows = _read_evidence(split_dir, split, kinds, rep) if evidence else {}
        texts = {p.stem: p for p in text_dir.glob("*.txt")}
        rep.documents_without_text.extend(sorted(d for d in labels if d not in texts))
        rep.documents_without_codes.setdefault(split, 0)
        for doc_id in sorted(texts):
            text = _read_text(texts[doc_id])
            codes = labels.get(doc_id, [])
            if not codes:
                rep.documents_without_codes[split] += 1
            ev = _evidence_for(text, codes, ev_rows.get(doc_id, []), lang, rep) if evidence else []
            yield Document(id=doc_id, text=text, codes=codes, split=split, meta={"lang": lang}, evidence=ev)


def iter_background_texts(root: Path | None = None, lang: str = "en") -> Iterator[str]:
    """The unlabelled background cases (2,751 in English), in file-name order, for word embeddings."""
    _, lg = _check_options("D", lang)
    base = Path(root) if root is not None else embedded_root()
    text_dir = base / "background" / LANGS[lg]
    if not text_dir.is_dir():
        raise DataError(
            f"CodiEsp background {lg} text folder not found.",
            path=text_dir,
            fix="pass the folder of a full CodiEsp download (the embedded copy has English text only).",
        )
    for path in sorted(text_dir.glob("*.txt")):
        yield _read_text(path)


def prepare_codiesp(
    out: str | Path,
    root: Path | None = None,
    task: str = "D",
    lang: str = "en",
    evidence: bool = True,
    overwrite: bool = False,
    unknown_codes: str = "keep",
    *,
    exists: ExistsFn | None = None,
) -> dict[str, Any]:
    """Write CodiEsp as a prepared dataset at `out` and return its stats (with a `report`).

    `exists(system, code)` overrides the ontology lookup used to validate codes (tests pass a fake).
    """
    task, lang = _check_options(task, lang)
    report = CodiespReport()
    validator = make_validator(unknown_codes, exists)
    docs = iter_codiesp(root, task, lang, evidence, report=report)
    options = {
        "task": task,
        "lang": lang,
        "evidence": evidence,
        # The embedded copy is named, not its install path, so stats do not depend on the machine.
        "path": "embedded" if root is None else str(root),
        "unknown_codes": validator.policy,
    }
    return write_prepared(
        out,
        validate_documents(docs, validator),
        source="codiesp",
        options=options,
        extra_stats=lambda: {"report": {**report.to_json(), "code_validation": validator.report()}},
        overwrite=overwrite,
    )
