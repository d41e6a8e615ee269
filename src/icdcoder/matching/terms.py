"""The terms a matcher looks for, per code: what the offline ontology says about it, in English or Spanish.

English: the ontology's ranked synonym list (the one MSMN uses: long title, short titles with abbreviations
expanded, inclusion terms, GEM-linked titles; `ontology/synonyms.py`), each with a weight by provenance.

Spanish: the WHO CIE-10 titles of the MIT package `cie` (14,498 rows, chapters to 4-character codes; source
and licence in `resources/matching/SOURCE.md`). A WHO code (`R529`) is written the ICD-10-CM way (`R52.9`);
its title goes to that code when the label space has it, else to its nearest ancestor that it has (WHO R52.9
"Dolor, no especificado" -> CM R52 "Pain, unspecified"). A WHO title also goes, at a lower weight, to the CM
descendants whose English title is "unspecified" (WHO C34.9 -> CM C34.90), because CM split many WHO codes
by laterality and a Spanish note names the disease, not the side. ICD-10-PCS has no Spanish titles here: a
Spanish procedure matcher gets the English terms (cognates only), a documented limitation.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from icdcoder.ontology import synonyms as syn
from icdcoder.ontology.ontology import get_ontology
from icdcoder.ontology.sources import data_file

# weight of a term by where it comes from (the title speaks for the code best)
SOURCE_WEIGHTS: dict[str, float] = {
    syn.LONG_TITLE: 1.0,
    syn.SHORT_TITLE: 0.9,
    syn.SHORT_TITLE_EXPANDED: 0.95,
    syn.INCLUSION_TERM: 0.95,
    syn.GEM_FORWARD: 0.8,
    syn.GEM_REVERSE: 0.8,
    syn.GEM_FORWARD_INCLUSION: 0.75,
    syn.GEM_REVERSE_INCLUSION: 0.75,
}
CIE_TITLE = "cie_title"
CIE_ANCESTOR_TITLE = "cie_title_of_ancestor"
CIE_UNSPECIFIED_CHILD = "cie_title_of_parent"
SPANISH_WEIGHTS = {CIE_TITLE: 1.0, CIE_ANCESTOR_TITLE: 0.85, CIE_UNSPECIFIED_CHILD: 1.0}

Term = tuple[str, float]  # (text, weight)
TERMS_VERSION = 3  # bump when the choice of terms changes (invalidates cached term texts)


def english_terms(key: str) -> list[Term]:
    """Weighted terms of a `system:code` key from the ontology's synonym list (title first)."""
    system, code = key.split(":", 1)
    onto = get_ontology()
    # a one-word title of a GEM-linked code ("Examination", "Pain") is far broader than the code
    out = [
        (s.text, SOURCE_WEIGHTS.get(s.source, 0.7))
        for s in onto.synonyms(system, code)
        if not (s.source.startswith("gem_") and len(s.text.split()) < 2)
    ]
    if not out:
        title = onto.title(key)
        out = [(title, 1.0)] if title else []
    return out


@cache
def cie10_titles() -> dict[str, str]:
    """WHO CIE-10 Spanish titles by dotted code (`R52.9`), from the `cie` package's CSV."""
    path = data_file("cie", "data", "cie-10.zip")
    with zipfile.ZipFile(path) as zf, zf.open("cie-10.csv") as fh:
        rows = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))
        out: dict[str, str] = {}
        for row in rows:
            code = row["code"].strip()
            if "-" in code or not (3 <= len(code) <= 4):
                continue
            dotted = code if len(code) == 3 else f"{code[:3]}.{code[3:]}"
            out[dotted] = row["description"].strip()
    return out


def spanish_terms(label_keys: Sequence[str]) -> dict[str, list[Term]]:
    """Weighted Spanish terms per ICD-10-CM key of `label_keys` (other systems get none)."""
    onto = get_ontology()
    table = onto.table("icd10cm")
    keys = set(label_keys)
    out: dict[str, list[Term]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    for k in label_keys:
        system, code = k.split(":", 1)
        if system == "icd10cm":
            parent = table.parent_of(code)
            if parent is not None:
                children[parent].append(code)
    for code, title in cie10_titles().items():
        target: str | None = code
        source = CIE_TITLE
        while target is not None and f"icd10cm:{target}" not in keys:
            target = target[:-1].rstrip(".") if len(target) > 3 else None
            source = CIE_ANCESTOR_TITLE
        if target is not None:
            out[f"icd10cm:{target}"].append((title, SPANISH_WEIGHTS[source]))
        if target == code:
            for child in _unspecified_descendants(code, children, table.long_title):
                out[f"icd10cm:{child}"].append((title, SPANISH_WEIGHTS[CIE_UNSPECIFIED_CHILD]))
    return dict(out)


def _unspecified_descendants(code: str, children: dict[str, list[str]], title_of: object) -> Iterable[str]:
    assert callable(title_of)
    stack = list(children.get(code, []))
    while stack:
        c = stack.pop()
        if "unspecified" in str(title_of(c)).lower():
            yield c
            stack.extend(children.get(c, []))


def cached_terms(label_keys: Sequence[str], lang: str, cache_dir: Path | None) -> list[list[Term]]:
    """Terms of every code of `label_keys` (the expensive part of an index build: GEM-linked synonyms take
    ~1.5 ms a code), cached as gzipped JSON keyed by the label space, language, ontology and weights, so
    that editing the matching tables only re-normalises."""
    import gzip
    import hashlib
    import json

    from icdcoder.io import atomic_write, cache_root
    from icdcoder.ontology.cache import cache_key

    h = hashlib.sha256()
    for part in (
        lang,
        "\n".join(label_keys),
        cache_key(),
        repr(sorted(SOURCE_WEIGHTS.items())),
        repr(sorted(SPANISH_WEIGHTS.items())),
    ):
        h.update(part.encode("utf-8") + b"\0")
    path = (cache_dir or cache_root() / "matcher") / f"termtexts-{lang}-{h.hexdigest()[:16]}.json.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, list) and len(data) == len(label_keys):
            return [[(str(t), float(w)) for t, w in row] for row in data]
    except (OSError, ValueError, TypeError):
        pass
    if lang == "es":
        # no Spanish titles outside ICD-10-CM: procedures keep their English terms (cognates only)
        spanish = spanish_terms(label_keys)
        out = [spanish.get(k, []) if k.startswith("icd10cm:") else english_terms(k) for k in label_keys]
    else:
        out = [english_terms(k) for k in label_keys]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb", encoding=None) as fh:
            fh.write(gzip.compress(json.dumps(out, ensure_ascii=False).encode("utf-8")))
    except OSError:
        pass
    return out
