"""The offline ICD ontology: titles, parents, synonyms and search for the four code systems.

    from icdcoder.ontology.ontology import get_ontology
    onto = get_ontology()
    onto.lookup("icd9cm-dx", "4019").long_title   # 'Unspecified essential hypertension'

Importing this module loads nothing; each system's tables load on first use (ICD-9 well under a second,
ICD-10-CM and ICD-10-PCS a few seconds) and stay cached for the process. Synonyms of a code need the GEMs
and the linked system's titles, so the first `lookup` in a system also loads those; `exists` and `title`
do not. The search index of a system is built on the first `search` in it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from icdcoder.errors import IcdcoderError
from icdcoder.ontology.entry import CodeEntry, Synonym
from icdcoder.ontology.systems import CODE_SYSTEMS, CodeSystem, is_well_formed, normalize_code, parse_system
from icdcoder.ontology.table import CodeTable

if TYPE_CHECKING:
    from icdcoder.ontology.search import SearchIndex

__all__ = ["CodeEntry", "Ontology", "Synonym", "get_ontology"]

log = logging.getLogger(__name__)

# weights of a code's texts in the search index (see `search`)
_TITLE_WEIGHT, _SHORT_WEIGHT, _SYNONYM_WEIGHT = 1.0, 0.9, 0.7
_INDEX_LINKS = 8  # GEM-linked titles indexed per direction (file order; the synonym list ranks them)


def _load_table(system: CodeSystem) -> CodeTable:
    if system is CodeSystem.ICD9CM_DX:
        from icdcoder.ontology.icd9 import load_icd9_dx

        return load_icd9_dx()
    if system is CodeSystem.ICD9CM_PROC:
        from icdcoder.ontology.icd9 import load_icd9_proc

        return load_icd9_proc()
    if system is CodeSystem.ICD10CM:
        from icdcoder.ontology.icd10cm import load_icd10cm

        return load_icd10cm()
    from icdcoder.ontology.icd10pcs import load_icd10pcs

    return load_icd10pcs()


def _as_system(system: str | CodeSystem) -> CodeSystem:
    return system if isinstance(system, CodeSystem) else parse_system(system)


def normalize(system: CodeSystem, raw: str) -> str:
    """`normalize_code`, except hierarchy ranges (`420-429`, `I10-I1A`), which keep their spelling."""
    text = raw.strip()
    if "-" in text:
        return text.upper()
    return normalize_code(system, text)


class Ontology:
    """Look-ups over the four code systems. Thread-safe; use `get_ontology()` for the shared instance."""

    def __init__(self, cache_dir: str | Path | None = None, *, use_cache: bool = True) -> None:
        """`cache_dir` keeps built search indexes (default: `cache.default_cache_dir()`, read when needed)."""
        self._tables: dict[CodeSystem, CodeTable] = {}
        self._entries: dict[tuple[CodeSystem, str], CodeEntry] = {}
        self._indexes: dict[CodeSystem, SearchIndex] = {}
        self._lock = threading.RLock()
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._use_cache = use_cache

    # -- tables
    def table(self, system: str | CodeSystem) -> CodeTable:
        """The loaded table of a system (loads it on first use)."""
        sys_ = _as_system(system)
        table = self._tables.get(sys_)
        if table is None:
            with self._lock:
                table = self._tables.get(sys_)
                if table is None:
                    table = _load_table(sys_)
                    self._tables[sys_] = table
        return table

    def _resolve(self, system: str | CodeSystem, code: str) -> tuple[CodeSystem, str]:
        sys_ = _as_system(system)
        return sys_, normalize(sys_, code)

    # -- look-ups
    def exists(self, system: str | CodeSystem, code: str) -> bool:
        """Whether the code (raw, undotted or lower-case is fine) exists in the system."""
        sys_, norm = self._resolve(system, code)
        return self.table(sys_).has(norm)

    def lookup(self, system: str | CodeSystem, code: str) -> CodeEntry | None:
        """Everything known about one code, or None when the system has no such code."""
        sys_, norm = self._resolve(system, code)
        entry = self._entries.get((sys_, norm))
        if entry is not None:
            return entry
        table = self.table(sys_)
        if not table.has(norm):
            return None
        from icdcoder.ontology.synonyms import build_synonyms

        entry = CodeEntry(
            system=sys_.value,
            code=norm,
            long_title=table.long_title(norm),
            short_title=table.short_title(norm),
            parents=table.parents(norm),
            is_leaf=table.is_leaf(norm),
            synonyms=build_synonyms(sys_, norm, self.table),
        )
        self._entries[(sys_, norm)] = entry
        return entry

    def title(self, key: str) -> str:
        """Long title of a `system:code` key; "" when the code is unknown (an unknown system raises)."""
        system, sep, code = key.partition(":")
        if not sep or not code.strip():
            raise IcdcoderError(
                f"code {key!r} lacks its code system.", fix="write codes as SYSTEM:CODE, e.g. icd10cm:N44.8."
            )
        sys_, norm = self._resolve(system, code)
        return self.table(sys_).long_title(norm)

    def synonyms(self, system: str | CodeSystem, code: str) -> list[Synonym]:
        """Ranked, de-duplicated synonyms (the long title first); [] for an unknown code."""
        entry = self.lookup(system, code)
        return [] if entry is None else list(entry.synonyms)

    def codes(self, system: str | CodeSystem, *, leaf_only: bool = False) -> list[str]:
        """All codes of a system, normalised and sorted (hierarchy ranges and chapters left out)."""
        return self.table(system).codes(leaf_only=leaf_only)

    def systems_of(self, code: str) -> list[str]:
        """The systems in which a raw code exists (`9604` -> dx 960.4 and proc 96.04)."""
        out = []
        for name in CODE_SYSTEMS:
            sys_ = CodeSystem(name)
            norm = normalize(sys_, code)
            if (is_well_formed(sys_, norm) or "-" in norm) and self.table(sys_).has(norm):
                out.append(name)
        return out

    def nearest(self, system: str | CodeSystem, code: str, limit: int = 5) -> list[str]:
        """Existing codes sharing the longest prefix with `code`, for "did you mean" messages."""
        sys_, norm = self._resolve(system, code)
        bare = norm.replace(".", "")
        undotted = [(c.replace(".", ""), c) for c in self.table(sys_).codes()]
        for k in range(len(bare), 0, -1):
            stem = bare[:k]
            hits = [c for u, c in undotted if u.startswith(stem)]
            if hits:
                return sorted(hits, key=lambda c: (len(c), c))[:limit]
        return []

    # -- search
    def index_path(self, system: str | CodeSystem) -> Path | None:
        """Where the search index of a system is cached (None when caching is off)."""
        if not self._use_cache:
            return None
        from icdcoder.ontology.cache import cache_key, default_cache_dir

        root = self._cache_dir if self._cache_dir is not None else default_cache_dir()
        return root / f"search-{_as_system(system).value}-{cache_key()}.npz"

    def _index(self, system: CodeSystem) -> SearchIndex:
        index = self._indexes.get(system)
        if index is None:
            with self._lock:
                index = self._indexes.get(system)
                if index is None:
                    index = self._load_or_build_index(system)
                    self._indexes[system] = index
        return index

    def _load_or_build_index(self, system: CodeSystem) -> SearchIndex:
        from icdcoder.ontology.search import SearchIndex

        path = self.index_path(system)
        index = SearchIndex.load(path) if path is not None else None
        if index is not None:
            return index
        codes = self.codes(system)
        if system is CodeSystem.ICD10PCS:  # deeper prefixes add little to search but cost a lot
            codes = [c for c in codes if len(c) <= 4 or len(c) == 7]
        index = SearchIndex.build(codes, lambda c: self._index_texts(system, c))
        if path is not None:
            try:
                index.save(path)
            except OSError as exc:  # a read-only home must not break search
                log.warning("could not cache the %s search index at %s: %s", system.value, path, exc)
        return index

    def _index_texts(self, system: CodeSystem, code: str) -> list[tuple[str, float]]:
        """Texts indexed for a code: titles, own inclusion terms and GEM-linked titles (unranked, capped).

        Cheaper than the full synonym list (no ranking, no linked inclusion terms), which matters when
        indexing ~100k codes.
        """
        from icdcoder.ontology.synonyms import expand_abbreviations, gem_links

        table = self.table(system)
        texts = [(table.long_title(code), _TITLE_WEIGHT)]
        short = table.short_title(code)
        if short:
            texts.append((expand_abbreviations(short), _SHORT_WEIGHT))
        texts.extend((term, _SYNONYM_WEIGHT) for term in table.inclusion_terms(code))
        if len(code) == 7 or system is not CodeSystem.ICD10PCS:  # truncated PCS: too many links
            other, forward, reverse = gem_links(system, code, table=self.table)
            if other is not None:
                texts.extend((other.long_title(c), _SYNONYM_WEIGHT) for c, _ in forward[:_INDEX_LINKS])
                texts.extend((other.long_title(c), _SYNONYM_WEIGHT) for c in reverse[:_INDEX_LINKS])
        return texts

    def search(
        self, text: str, systems: list[str] | None = None, limit: int = 20
    ) -> list[tuple[CodeEntry, float]]:
        """Codes whose titles and synonyms best match `text`, best first, with scores in (0, 1].

        A query that is itself a code of a searched system comes first with score 1.0.
        """
        chosen = [_as_system(s) for s in (systems or CODE_SYSTEMS)]
        hits: dict[tuple[CodeSystem, str], float] = {}
        for sys_ in chosen:
            norm = normalize(sys_, text)
            if " " not in text.strip() and self.table(sys_).has(norm):
                hits[(sys_, norm)] = 1.0
            for code, score in self._index(sys_).query(text, limit):
                hits.setdefault((sys_, code), score)
        ranked = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0][0].value, kv[0][1]))[:limit]
        out: list[tuple[CodeEntry, float]] = []
        for (sys_, code), score in ranked:
            entry = self.lookup(sys_, code)
            if entry is not None:
                out.append((entry, score))
        return out


_ONTOLOGY: Ontology | None = None
_ONTOLOGY_LOCK = threading.Lock()


def get_ontology() -> Ontology:
    """The process-wide ontology (tables load lazily, per system, on first use)."""
    global _ONTOLOGY
    if _ONTOLOGY is None:
        with _ONTOLOGY_LOCK:
            if _ONTOLOGY is None:
                _ONTOLOGY = Ontology()
    return _ONTOLOGY
