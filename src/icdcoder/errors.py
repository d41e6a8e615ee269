"""One error type for every user-facing fault: it names the file, the place and the fix.

The CLI prints `str(error)` as one line and exits with status 2, never a traceback. Messages must never
contain note text (notes are patient data): name ids, rows and columns instead.
"""

from __future__ import annotations

from pathlib import Path


class IcdcoderError(Exception):
    """A fault in the user's input or environment, with where it is and what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        text = f"{where}{self.message}"
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


class DataError(IcdcoderError):
    """Malformed or inconsistent input data (files, columns, codes, ids)."""


class ConfigError(IcdcoderError):
    """An experiment configuration that does not validate."""


class ModelDirError(IcdcoderError):
    """A model directory that is missing, corrupted or does not match the data."""
