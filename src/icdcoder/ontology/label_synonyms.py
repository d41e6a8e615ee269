"""Exactly M synonyms per code for label-side models (MSMN, MSAM): source, filtering, sampling, bad input.

Source: by default the offline ontology's ranked synonym lists (long title first, then short titles,
inclusion terms and GEM-linked titles, each with its provenance); or a user file (e.g. exported from a UMLS
licence) naming codes of the label space:

    JSON  {"icd9cm-dx:401.9": ["high blood pressure", "hypertension"], ...}
    TSV   icd9cm-dx:401.9<TAB>high blood pressure          (one synonym per line; '#' lines are comments)

With a user file, a code's list is its title followed by the file's strings (MSMN's first synonym is always
the code description).

Then, as MSMN did (Yuan et al. 2022, §2.1; `preprocess/load_umls.py`, `random_multi_label.py`):
  1. clean: drop the word "NOS", dashes → spaces, collapse spaces;
  2. keep a string only if it has ≥ 2 words or ≥ 7 characters (the title is always kept);
  3. de-duplicate (case-, accent- and punctuation-insensitive), first spelling wins;
  4. take the title plus M − 1 others: a fixed-seed random sample (`selection="random"`, the seed's
     "sample synonyms fully randomly") or the first M − 1 in ontology rank order (`selection="ranked"`).
     The random draw depends only on (seed, code), not on the label order.

Bad input is counted in a `SynonymReport` (logged, and saved with the model) and handled by `policy`:
  - file keys outside the label space and empty strings: ignored and reported ("repeat", "drop") or an
    error ("fail");
  - codes with fewer than M distinct synonyms: "repeat" cycles them (a, b, a, b; MSMN's
    `process_label`), "drop" leaves the missing slots absent (`None`; models mask them), "fail" raises.
A code with no usable text at all gets its code string (reported) so that every code has ≥ 1 synonym.
"""

from __future__ import annotations

import json
import logging
import random
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from icdcoder.errors import DataError, IcdcoderError
from icdcoder.ontology.entry import Synonym
from icdcoder.ontology.systems import normalize_code, parse_system

log = logging.getLogger(__name__)

Policy = Literal["repeat", "drop", "fail"]
Selection = Literal["random", "ranked"]
USER_FILE = "user_file"
FALLBACK_TITLE = "title"  # the label space's title, when the source has nothing for the code
FALLBACK_CODE = "code"  # the code string itself, when there is no text at all
REPEAT_PREFIX = "repeat:"
ABSENT = "absent"
_EXAMPLES = 5


class SynonymSource(Protocol):
    """Anything that lists a code's synonyms, title first (the ontology, or a fake in tests)."""

    def synonyms(self, system: str, code: str) -> Sequence[Synonym]: ...


_NOS = re.compile(r"\(\s*NOS\s*\)|\bNOS\b", re.IGNORECASE)
_DASH = re.compile(r"[-\u2010-\u2015\u2212]")
_EMPTY_PARENS = re.compile(r"\(\s*\)|\[\s*\]")
_SPACE = re.compile(r"\s+")
_PUNCT_SPACE = re.compile(r"\s+([,.;:)\]])")


def clean_synonym(text: str) -> str:
    """MSMN's cleaning: remove the word "NOS", dashes become spaces, whitespace collapsed."""
    text = _NOS.sub(" ", text)
    text = _DASH.sub(" ", text)
    text = _EMPTY_PARENS.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return _PUNCT_SPACE.sub(r"\1", text).strip(" ,;:")


def keep_synonym(text: str) -> bool:
    """MSMN's filter: at least 2 words or at least 7 characters."""
    return len(text.split()) >= 2 or len(text) >= 7


def dedup_key(text: str) -> str:
    """Case-, accent- and punctuation-insensitive identity of a synonym."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[\W_]+", " ", plain).split())


@dataclass
class SynonymReport:
    """What happened to the synonym candidates, with counts (saved with the model, logged once)."""

    source: str
    m: int
    policy: str
    selection: str
    n_codes: int = 0
    candidates: int = 0  # strings considered for label-space codes (before filtering)
    empty_strings: int = 0  # empty, or empty after cleaning
    filtered_short: int = 0  # removed by the ≥ 2 words / ≥ 7 characters rule
    duplicates: int = 0  # removed as duplicates after cleaning
    unknown_codes: int = 0  # file keys outside the label space (ignored)
    unknown_examples: list[str] = field(default_factory=list)
    missing_codes: int = 0  # label-space codes the file does not name (title only)
    missing_examples: list[str] = field(default_factory=list)
    code_fallback: int = 0  # codes with no text at all: their code string is their only synonym
    short_codes: int = 0  # codes with fewer than M distinct synonyms
    short_examples: list[str] = field(default_factory=list)
    repeated_slots: int = 0
    absent_slots: int = 0
    distinct_median: float = 0.0
    distinct_mean: float = 0.0
    chosen_by_source: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """One phrase per kind of bad input (empty when the input was clean)."""
        out = []
        if self.unknown_codes:
            out.append(f"{self.unknown_codes} code(s) outside the label space (e.g. {self.unknown_examples})")
        if self.empty_strings:
            out.append(f"{self.empty_strings} empty synonym string(s)")
        if self.missing_codes:
            out.append(
                f"{self.missing_codes} label code(s) absent from the file (e.g. {self.missing_examples})"
            )
        if self.short_codes:
            out.append(
                f"{self.short_codes} of {self.n_codes} code(s) with fewer than M={self.m} synonyms "
                f"(e.g. {self.short_examples})"
            )
        if self.code_fallback:
            out.append(f"{self.code_fallback} code(s) without any text (their code string is used)")
        return out

    def summary(self) -> str:
        handled = {
            "repeat": f"{self.repeated_slots} slot(s) filled by repetition",
            "drop": f"{self.absent_slots} slot(s) left absent",
            "fail": "refused",
        }[self.policy]
        head = (
            f"label synonyms from {self.source}: {self.n_codes} codes × M={self.m}, distinct per code "
            f"median {self.distinct_median:g} (mean {self.distinct_mean:.1f}); {self.filtered_short} "
            f"too-short and {self.duplicates} duplicate string(s) removed"
        )
        problems = self.problems()
        return head + ("; " + "; ".join(problems) + f"; policy {self.policy}: {handled}" if problems else "")


@dataclass
class LabelSynonyms:
    """M synonyms per code in label order. `texts[c][j]` is None for an absent slot (policy "drop")."""

    keys: list[str]
    m: int
    texts: list[list[str | None]]
    sources: list[list[str]]  # provenance per slot: ontology source, "user_file", "repeat:<source>", "absent"
    report: SynonymReport

    def present(self) -> list[list[bool]]:
        return [[t is not None for t in row] for row in self.texts]

    def to_json(self) -> dict[str, Any]:
        return {"m": self.m, "texts": self.texts, "sources": self.sources, "report": asdict(self.report)}


def _canonical_key(raw: str, path: Path, line: int | None) -> str:
    system, sep, code = raw.strip().partition(":")
    if not sep or not code.strip():
        raise DataError(
            f"synonym key {raw.strip()[:40]!r} lacks its code system.",
            path=path,
            line=line,
            fix="write keys as system:code, e.g. icd9cm-dx:401.9.",
        )
    try:
        sys_ = parse_system(system)
    except IcdcoderError:
        raise DataError(
            f"unknown code system {system.strip()[:40]!r} in a synonym key.",
            path=path,
            line=line,
            fix="use icd9cm-dx, icd9cm-proc, icd10cm or icd10pcs.",
        ) from None
    return f"{sys_.value}:{normalize_code(sys_, code.strip())}"


def read_synonym_file(path: str | Path) -> dict[str, list[str]]:
    """Read a user synonym file (JSON object or TSV `key<TAB>synonym`), keys canonicalised to
    `system:code`. Empty strings are kept here (they are counted by `build_label_synonyms`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("synonym file not found.", path=path, fix="check model.synonym_source.") from None
    except UnicodeDecodeError:
        raise DataError("synonym file is not UTF-8 text.", path=path) from None
    out: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg}).", path=path, line=exc.lineno) from None
        if not isinstance(obj, dict):
            raise DataError("synonym JSON must be an object {code: [synonyms]}.", path=path)
        for raw_key, values in obj.items():
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise DataError(
                    f"synonyms of {str(raw_key)[:40]!r} are not a list of strings.",
                    path=path,
                    fix='write {"system:code": ["synonym", ...]}.',
                )
            out.setdefault(_canonical_key(str(raw_key), path, None), []).extend(values)
        return out
    if path.suffix.lower() not in (".tsv", ".tab", ".txt"):
        raise DataError(
            f"unknown synonym file type {path.suffix!r}.", path=path, fix="use a .json or .tsv file."
        )
    for n, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, tab, value = line.partition("\t")
        if not tab:
            raise DataError(
                "line has no tab.", path=path, line=n, fix="write one `system:code<TAB>synonym` per line."
            )
        if n == 1 and key.strip().lower() in ("key", "code"):
            continue  # header
        out.setdefault(_canonical_key(key, path, n), []).append(value)
    return out


def _candidates(
    key: str, title: str, source: SynonymSource | None, user: dict[str, list[str]] | None
) -> tuple[list[Synonym], bool]:
    """Raw (text, provenance) candidates of one code, title first; and whether the file lacked the code."""
    system, _, code = key.partition(":")
    if user is not None:
        head = [Synonym(title, FALLBACK_TITLE)] if title.strip() else []
        return head + [Synonym(t, USER_FILE) for t in user.get(key, [])], key not in user
    found = list(source.synonyms(system, code)) if source is not None else []
    if not found and title.strip():
        found = [Synonym(title, FALLBACK_TITLE)]
    return found, False


def build_label_synonyms(
    label_keys: Sequence[str],
    m: int,
    *,
    titles: Sequence[str] | None = None,
    user_file: str | Path | None = None,
    policy: Policy = "repeat",
    selection: Selection = "random",
    seed: int = 0,
    source: SynonymSource | None = None,
) -> LabelSynonyms:
    """Exactly `m` synonyms per label-space code (see the module docstring for every rule).

    `source` defaults to the shared ontology (ignored when `user_file` is given); `titles` (label order)
    supply each code's first synonym with a user file, and a fallback for codes the source lacks.
    """
    if m < 1:
        raise ValueError("m must be at least 1")
    if policy not in ("repeat", "drop", "fail"):
        raise ValueError(f"unknown policy {policy!r}")
    keys = list(label_keys)
    titles = list(titles) if titles is not None else [""] * len(keys)
    user = None if user_file is None else read_synonym_file(user_file)
    if user is None and source is None:
        from icdcoder.ontology.ontology import get_ontology

        source = get_ontology()
    report = SynonymReport(
        source="ontology" if user_file is None else str(user_file),
        m=m,
        policy=policy,
        selection=selection,
        n_codes=len(keys),
    )
    if user is not None:
        label_set = set(keys)
        unknown = sorted(k for k in user if k not in label_set)
        report.unknown_codes = len(unknown)
        report.unknown_examples = unknown[:_EXAMPLES]
    texts: list[list[str | None]] = []
    sources: list[list[str]] = []
    distinct_counts: list[int] = []
    for key, title in zip(keys, titles, strict=True):
        raw, missing = _candidates(key, title, source, user)
        if missing:
            report.missing_codes += 1
            if len(report.missing_examples) < _EXAMPLES:
                report.missing_examples.append(key)
        kept: list[Synonym] = []
        seen: set[str] = set()
        for i, syn in enumerate(raw):
            report.candidates += 1
            text = clean_synonym(syn.text)
            if not text:
                report.empty_strings += 1
                continue
            if i > 0 and not keep_synonym(text):  # the title (first) is always kept
                report.filtered_short += 1
                continue
            k = dedup_key(text)
            if k in seen or not k:
                report.duplicates += 1
                continue
            seen.add(k)
            kept.append(Synonym(text, syn.source))
        if not kept:
            report.code_fallback += 1
            kept = [Synonym(key.partition(":")[2], FALLBACK_CODE)]
        distinct_counts.append(len(kept))
        head, rest = kept[0], kept[1:]
        if len(kept) >= m:
            if selection == "random":
                rest = random.Random(f"{seed}:{key}").sample(rest, m - 1)
            chosen = [head, *rest[: m - 1]]
        else:
            report.short_codes += 1
            if len(report.short_examples) < _EXAMPLES:
                report.short_examples.append(key)
            if selection == "random":
                rest = random.Random(f"{seed}:{key}").sample(rest, len(rest))
            chosen = [head, *rest]
        row_t: list[str | None] = [s.text for s in chosen]
        row_s = [s.source for s in chosen]
        for j in range(m - len(chosen)):
            if policy == "drop":
                row_t.append(None)
                row_s.append(ABSENT)
                report.absent_slots += 1
            else:
                base = chosen[j % len(chosen)]
                row_t.append(base.text)
                row_s.append(REPEAT_PREFIX + base.source)
                report.repeated_slots += 1
        for s in row_s:
            report.chosen_by_source[s] = report.chosen_by_source.get(s, 0) + 1
        texts.append(row_t)
        sources.append(row_s)
    if distinct_counts:
        report.distinct_median = float(statistics.median(distinct_counts))
        report.distinct_mean = round(statistics.fmean(distinct_counts), 3)
    if policy == "fail" and report.problems():
        raise DataError(
            "bad synonym input: " + "; ".join(report.problems()) + ".",
            path=None if user_file is None else user_file,
            fix="fix the synonym file, lower the number of synonyms M, or choose the repeat or drop policy.",
        )
    if report.problems():
        log.warning("%s", report.summary())
    else:
        log.info("%s", report.summary())
    return LabelSynonyms(keys=keys, m=m, texts=texts, sources=sources, report=report)
