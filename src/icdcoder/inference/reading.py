"""Reading notes given by users: one UTF-8 text file per note, refusing empty and binary files clearly."""

from __future__ import annotations

from pathlib import Path

from icdcoder.errors import DataError


def read_note(path: Path) -> str:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError("is a directory, not a note file.", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}.", path=path) from None
    if b"\x00" in data[:8192]:
        raise DataError(
            "looks like a binary file, not a text note.",
            path=path,
            fix="pass plain UTF-8 text files (one note per file).",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid UTF-8 (byte {exc.start}).",
            path=path,
            fix="re-save the note as UTF-8, e.g. `iconv -f latin1 -t utf-8`.",
        ) from None
    if not text.strip():
        raise DataError("the note is empty.", path=path, fix="remove it or add the note text.")
    return text


def collect_note_files(inputs: list[Path]) -> list[Path]:
    """Expand directories to their *.txt files (sorted); keep files as given; refuse missing paths."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() == ".txt")
            if not found:
                raise DataError("directory holds no .txt notes.", path=p)
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DataError("file not found.", path=p)
    return files
