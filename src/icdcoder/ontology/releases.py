"""Named releases of a code system: the codes a whole-code-system label space (`data.label_space:
codesystem`) predicts.

    release_codes("icd10cm", None)            every leaf of the installed tables (2026 + codes deleted since)
    release_codes("icd10cm", "icd10cm-2018")  CodiEsp's release (see below)
    release_codes("icd10pcs", "icd10pcs-2018")

No 2018 ICD-10-CM code list is installed (RESOURCES.md: the packages hold the 2024 and 2026 lists and an
undated billable table), so `icd10cm-2018` is an approximation (documented here and in
docs/results/matcher.md):
the 2026 codes *at every depth* (categories and subcategories included), the codes deleted since 2019, and
the placeholder forms without a 7th character (S02.0XX) that CodiEsp uses.
A 2018 leaf that was split later (R51 → R51.0/R51.9 in 2021, R05, M54.5) is then present as the parent it
was; the price is that 2026 parents that were never 2018 leaves are predictable too. CodiEsp itself codes
below leaf level when the text is not specific (16 % of its diagnosis codes, e.g. C50.9, H17, are 2026
non-leaves), so predicting them is needed anyway; scorers rank the most specific matched code first.

`icd10pcs-2018`: the 7-character PCS codes plus every 4-character prefix (section, body system, operation,
body part), because CodiEsp-P codes procedures to 4 characters when the text gives no approach/device
(60 % of its distinct procedure codes).
"""

from __future__ import annotations

from functools import cache

from icdcoder.errors import ConfigError
from icdcoder.ontology.ontology import get_ontology
from icdcoder.ontology.systems import CodeSystem, is_well_formed

RELEASES: dict[str, str] = {
    "icd10cm-2018": "icd10cm",
    "icd10pcs-2018": "icd10pcs",
}


@cache
def _codes(system: str, release: str | None) -> tuple[str, ...]:
    onto = get_ontology()
    if release is None:
        return tuple(onto.codes(system, leaf_only=True))
    if release == "icd10cm-2018":
        # plus the placeholder forms without their 7th character (S02.0XX) that CodiEsp codes with
        table = onto.table(system)
        forms = [c for c in table.structural if "X" in c[3:] and is_well_formed(CodeSystem.ICD10CM, c)]
        return tuple(sorted({*onto.codes(system), *forms}))
    if release == "icd10pcs-2018":
        table = onto.table(system)
        full = [c for c in table.codes(leaf_only=True) if len(c) == 7]
        prefixes = sorted({c[:4] for c in full if table.has(c[:4])})
        return tuple(sorted(full + prefixes))
    raise AssertionError(release)


def release_codes(system: str, release: str | None) -> list[str]:
    """`system:code` keys of every code of `system` in `release` (None: the current leaves), sorted.

    A release names one system; for the other systems of a dataset (CodiEsp-DP) their current leaves
    are used."""
    if release is not None and release not in RELEASES:
        raise ConfigError(
            f"unknown code release {release!r}.", fix=f"use one of: {', '.join(sorted(RELEASES))}, or null."
        )
    chosen = release if release is not None and RELEASES[release] == system else None
    return [f"{system}:{c}" for c in _codes(system, chosen)]
