"""`CodeTable`: the titles and hierarchy of one code system, held in plain dicts for O(1) look-ups."""

from __future__ import annotations

from collections.abc import Iterable

from icdcoder.ontology.systems import CodeSystem

# a parent chain longer than this means a cycle in the source data; stop rather than loop forever
_MAX_DEPTH = 16


class CodeTable:
    """Titles, parent links and inclusion terms of one system.

    `long` holds every resolvable code and every hierarchy node. `structural` names the nodes that are
    groupings rather than codes (ICD-9 ranges such as `420-429`, ICD-10-CM chapters and blocks, and
    ICD-10-CM placeholder forms such as `S02.0XX` that CodiEsp uses without their 7th character): they can
    be looked up and appear among parents, but `codes()` leaves them out. `nonleaf` marks nodes without
    listed children that still are not leaves.
    """

    def __init__(
        self,
        system: CodeSystem,
        long: dict[str, str],
        *,
        short: dict[str, str] | None = None,
        parent: dict[str, str] | None = None,
        structural: Iterable[str] = (),
        inclusion: dict[str, tuple[str, ...]] | None = None,
        nonleaf: Iterable[str] = (),
    ) -> None:
        self.system = system
        self.long = long
        self.short = short or {}
        self.parent = parent or {}
        self.structural = frozenset(structural)
        self.inclusion = inclusion or {}
        self.with_children = frozenset(self.parent.values()) | frozenset(nonleaf)
        self._codes: dict[bool, list[str]] = {}

    def has(self, code: str) -> bool:
        return code in self.long

    def long_title(self, code: str) -> str:
        return self.long.get(code, "")

    def short_title(self, code: str) -> str:
        return self.short.get(code, "")

    def parent_of(self, code: str) -> str | None:
        return self.parent.get(code)

    def parents(self, code: str) -> tuple[tuple[str, str], ...]:
        """Ancestors with their titles, nearest first."""
        out: list[tuple[str, str]] = []
        seen = {code}
        node = self.parent_of(code)
        while node is not None and node not in seen and len(out) < _MAX_DEPTH:
            out.append((node, self.long_title(node)))
            seen.add(node)
            node = self.parent_of(node)
        return tuple(out)

    def is_leaf(self, code: str) -> bool:
        return code not in self.with_children

    def inclusion_terms(self, code: str) -> tuple[str, ...]:
        return self.inclusion.get(code, ())

    def codes(self, *, leaf_only: bool = False) -> list[str]:
        """Every code of the system (structural nodes left out), sorted; a fresh list each call."""
        if leaf_only not in self._codes:
            self._codes[leaf_only] = self._list_codes(leaf_only)
        return list(self._codes[leaf_only])

    def _list_codes(self, leaf_only: bool) -> list[str]:
        return sorted(c for c in self.long if c not in self.structural and (not leaf_only or self.is_leaf(c)))
