"""The prepared-dataset directory: the one format every data source writes and every model reads.

Layout (all written atomically; a failed prepare leaves nothing behind):
    documents.parquet  id, split, text, codes (list of `system:code`), meta (JSON), evidence (JSON)
    labels.json        every code seen, its system and its per-split counts, in a stable order
    stats.json         per-split document / code / label-cardinality / length counts, source, options,
                       and a content fingerprint (used to cache embeddings and to check model/data matches)

Documents are streamed in row groups, so a MIMIC-sized corpus never has to fit in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from icdcoder.data.document import SPLITS, Document, Evidence
from icdcoder.errors import DataError
from icdcoder.io import atomic_output_dir, read_json, write_json

DOCUMENTS_FILE = "documents.parquet"
LABELS_FILE = "labels.json"
STATS_FILE = "stats.json"
FORMAT_VERSION = 1

_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("text", pa.large_string()),
        ("codes", pa.list_(pa.string())),
        ("meta", pa.string()),
        ("evidence", pa.string()),
    ]
)


class _SplitStats:
    """Running per-split counts (documents, codes, label cardinality, words)."""

    def __init__(self) -> None:
        self.documents = 0
        self.empty_notes = 0
        self.no_codes = 0
        self.label_total = 0
        self.words_total = 0
        self.words_max = 0
        self.code_counts: Counter[str] = Counter()

    def add(self, doc: Document) -> None:
        self.documents += 1
        n_words = len(doc.text.split())
        self.words_total += n_words
        self.words_max = max(self.words_max, n_words)
        if n_words == 0:
            self.empty_notes += 1
        if not doc.codes:
            self.no_codes += 1
        self.label_total += len(doc.codes)
        self.code_counts.update(doc.codes)

    def to_json(self) -> dict[str, Any]:
        n = max(self.documents, 1)
        by_system: Counter[str] = Counter(k.split(":", 1)[0] for k in self.code_counts)
        return {
            "documents": self.documents,
            "distinct_codes": len(self.code_counts),
            "distinct_codes_by_system": dict(sorted(by_system.items())),
            "label_cardinality": round(self.label_total / n, 4),
            "code_assignments": self.label_total,
            "words_mean": round(self.words_total / n, 2),
            "words_max": self.words_max,
            "empty_notes": self.empty_notes,
            "documents_without_codes": self.no_codes,
        }


def _doc_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "split": doc.split,
        "text": doc.text,
        "codes": list(doc.codes),
        "meta": json.dumps(doc.meta, sort_keys=True, ensure_ascii=False),
        "evidence": json.dumps([e.to_json() for e in doc.evidence], ensure_ascii=False),
    }


def write_prepared(
    out: str | Path,
    documents: Iterable[Document],
    *,
    source: str,
    options: dict[str, Any] | None = None,
    extra_stats: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    overwrite: bool = False,
    row_group_size: int = 1000,
) -> dict[str, Any]:
    """Stream `documents` into a prepared-dataset directory at `out` and return its stats.

    Refuses duplicate ids and unknown split names (naming the id) and writes nothing in that case.
    `extra_stats` may be a zero-arg callable: it is called after `documents` is exhausted, so a source can
    report what it counted while streaming (skipped rows, unknown codes).
    """
    seen: set[str] = set()
    per_split: dict[str, _SplitStats] = {}
    digest = hashlib.sha256()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        writer = pq.ParquetWriter(tmp / DOCUMENTS_FILE, _SCHEMA, compression="zstd")
        try:
            batch: list[dict[str, Any]] = []
            for doc in documents:
                if doc.id in seen:
                    raise DataError(
                        f"duplicate document id {doc.id!r} from source {source!r}.",
                        fix="make ids unique (e.g. append a suffix) or remove the duplicate row.",
                    )
                seen.add(doc.id)
                if doc.split is not None and doc.split not in SPLITS:
                    raise DataError(
                        f"document {doc.id!r} has split {doc.split!r}.",
                        fix=f"use one of {', '.join(SPLITS)} (or leave it empty).",
                    )
                per_split.setdefault(doc.split or "unsplit", _SplitStats()).add(doc)
                row = _doc_row(doc)
                digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
                batch.append(row)
                if len(batch) >= row_group_size:
                    writer.write_table(pa.Table.from_pylist(batch, schema=_SCHEMA))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=_SCHEMA))
        finally:
            writer.close()
        if not seen:
            raise DataError(
                f"source {source!r} produced no documents.", fix="check the input path and options."
            )

        all_counts: Counter[str] = Counter()
        for st in per_split.values():
            all_counts.update(st.code_counts)
        split_order = [s for s in (*SPLITS, "unsplit") if s in per_split]
        codes = sorted(all_counts, key=lambda k: (k.split(":", 1)[0], k.split(":", 1)[1]))
        labels = {
            "format_version": FORMAT_VERSION,
            "codes": [
                {
                    "key": k,
                    "system": k.split(":", 1)[0],
                    "code": k.split(":", 1)[1],
                    "counts": {s: per_split[s].code_counts.get(k, 0) for s in split_order},
                }
                for k in codes
            ],
        }
        stats = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "options": options or {},
            "fingerprint": digest.hexdigest()[:16],
            "splits": {s: per_split[s].to_json() for s in split_order},
            "total": {"documents": len(seen), "distinct_codes": len(codes)},
            **((extra_stats() if callable(extra_stats) else extra_stats) or {}),
        }
        write_json(tmp / LABELS_FILE, labels)
        write_json(tmp / STATS_FILE, stats)
    return stats


@dataclass
class PreparedDataset:
    """Read access to a prepared-dataset directory (validated on open)."""

    path: Path
    stats: dict[str, Any]
    label_entries: list[dict[str, Any]]

    @classmethod
    def open(cls, path: str | Path) -> PreparedDataset:
        path = Path(path)
        if not path.is_dir():
            raise DataError(
                "prepared dataset directory not found.",
                path=path,
                fix="create it with `icdcoder data prepare SOURCE --out DIR`.",
            )
        for name in (DOCUMENTS_FILE, LABELS_FILE, STATS_FILE):
            if not (path / name).is_file():
                raise DataError(
                    f"not a prepared dataset: {name} is missing.",
                    path=path,
                    fix="re-run `icdcoder data prepare` into a fresh directory.",
                )
        stats = read_json(path / STATS_FILE)
        labels = read_json(path / LABELS_FILE)
        if stats.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"prepared with format version {stats.get('format_version')}, this icdcoder reads "
                f"{FORMAT_VERSION}.",
                path=path / STATS_FILE,
                fix="re-run `icdcoder data prepare`.",
            )
        return cls(path=path, stats=stats, label_entries=list(labels["codes"]))

    @property
    def fingerprint(self) -> str:
        return str(self.stats["fingerprint"])

    @property
    def splits(self) -> list[str]:
        return list(self.stats["splits"])

    def codes(self, split: str | None = None, min_count: int = 1) -> list[str]:
        """Code keys in label order; with `split`, only those seen at least `min_count` times in it."""
        if split is None:
            return [e["key"] for e in self.label_entries]
        return [e["key"] for e in self.label_entries if e["counts"].get(split, 0) >= min_count]

    def documents(self, split: str | None = None, columns_text: bool = True) -> Iterator[Document]:
        """Stream documents (optionally of one split) in file order."""
        pf = pq.ParquetFile(self.path / DOCUMENTS_FILE)
        cols = ["id", "split", "codes", "meta", "evidence"] + (["text"] if columns_text else [])
        for rg in range(pf.num_row_groups):
            table = pf.read_row_group(rg, columns=cols)
            for row in table.to_pylist():
                if split is not None and row["split"] != split:
                    continue
                yield Document(
                    id=row["id"],
                    text=row.get("text") or "",
                    codes=list(row["codes"] or []),
                    split=row["split"],
                    meta=json.loads(row["meta"] or "{}"),
                    evidence=[Evidence.from_json(e) for e in json.loads(row["evidence"] or "[]")],
                )

    def load(self, split: str | None = None) -> list[Document]:
        return list(self.documents(split))
