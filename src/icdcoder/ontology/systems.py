"""Code-system names and code normalisation, used everywhere a code appears.

A code is never handled without its system: undotted ICD-9 diagnosis and procedure codes collide
(`9604` is both), so every file, tensor index and API response carries `system:code` keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from icdcoder.errors import IcdcoderError


class CodeSystem(StrEnum):
    ICD9CM_DX = "icd9cm-dx"
    ICD9CM_PROC = "icd9cm-proc"
    ICD10CM = "icd10cm"
    ICD10PCS = "icd10pcs"


CODE_SYSTEMS: tuple[str, ...] = tuple(s.value for s in CodeSystem)


def parse_system(name: str) -> CodeSystem:
    """Return the CodeSystem named `name` (case-insensitive), or raise a clear error."""
    try:
        return CodeSystem(name.strip().lower())
    except ValueError:
        raise IcdcoderError(
            f"unknown code system {name!r}.", fix=f"use one of: {', '.join(CODE_SYSTEMS)}."
        ) from None


_ICD9_DX = re.compile(r"^(?:[0-9]{3}|V[0-9]{2}|E[0-9]{3})(?:\.[0-9]{1,2})?$")
_ICD9_PROC = re.compile(r"^[0-9]{2}(?:\.[0-9]{1,2})?$")
_ICD10CM = re.compile(r"^[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?$")
_ICD10PCS = re.compile(r"^[0-9A-HJ-NP-Z]{1,7}$")  # PCS never uses the letters I and O


def reformat_icd9_dx(raw: str) -> str:
    """Insert the dot into an undotted ICD-9-CM diagnosis code (after 4 characters for E codes, else 3)."""
    code = raw.strip().upper().replace(".", "")
    split = 4 if code.startswith("E") else 3
    return code if len(code) <= split else f"{code[:split]}.{code[split:]}"


def reformat_icd9_proc(raw: str) -> str:
    """Insert the dot into an undotted ICD-9-CM procedure code (after 2 characters)."""
    code = raw.strip().replace(".", "")
    return code if len(code) <= 2 else f"{code[:2]}.{code[2:]}"


def reformat_icd10cm(raw: str) -> str:
    """Insert the dot into an undotted ICD-10-CM code (after 3 characters)."""
    code = raw.strip().upper().replace(".", "")
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


def normalize_code(system: str | CodeSystem, raw: str) -> str:
    """Canonical spelling of a code: upper case, dots where the system puts them (none for PCS)."""
    sys_ = parse_system(system) if not isinstance(system, CodeSystem) else system
    if sys_ is CodeSystem.ICD9CM_DX:
        return reformat_icd9_dx(raw)
    if sys_ is CodeSystem.ICD9CM_PROC:
        return reformat_icd9_proc(raw)
    if sys_ is CodeSystem.ICD10CM:
        return reformat_icd10cm(raw)
    return raw.strip().upper().replace(".", "")


def is_well_formed(system: str | CodeSystem, code: str) -> bool:
    """Whether `code` (already normalised) has the shape of a code of `system` (not whether it exists)."""
    sys_ = parse_system(system) if not isinstance(system, CodeSystem) else system
    pattern = {
        CodeSystem.ICD9CM_DX: _ICD9_DX,
        CodeSystem.ICD9CM_PROC: _ICD9_PROC,
        CodeSystem.ICD10CM: _ICD10CM,
        CodeSystem.ICD10PCS: _ICD10PCS,
    }[sys_]
    return bool(pattern.match(code))


@dataclass(frozen=True, order=True)
class Code:
    """One code with its system. `key` (`system:code`) is the spelling used in files and label spaces."""

    system: str
    code: str

    @property
    def key(self) -> str:
        return f"{self.system}:{self.code}"

    @classmethod
    def parse(cls, key: str) -> Code:
        """Parse `system:code`; raises IcdcoderError on an unknown system or a missing colon."""
        system, sep, code = key.partition(":")
        if not sep or not code:
            raise IcdcoderError(
                f"code {key!r} lacks its code system.", fix="write codes as SYSTEM:CODE, e.g. icd10cm:N44.8."
            )
        sys_ = parse_system(system)
        return cls(sys_.value, normalize_code(sys_, code))

    @classmethod
    def of(cls, system: str | CodeSystem, raw: str) -> Code:
        """Build a normalised Code from a system name and a raw (possibly undotted, lower-case) code."""
        sys_ = parse_system(system) if not isinstance(system, CodeSystem) else system
        return cls(sys_.value, normalize_code(sys_, raw))

    def __str__(self) -> str:
        return self.key
