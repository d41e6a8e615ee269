"""Reading notes given by users: one UTF-8 text file per note, refusing empty and binary files clearly."""

from __future__ import annotations

from pathlib import Path

from icdcoder.errors import DataError

MAX_NOTE_BYTES = 10_000_000  # a note is text; anything larger is not one (and must not fill the memory)


def read_note(path: Path) -> str:
    if path.is_dir():
        raise DataError("is a directory, not a note file.", path=path)
    if path.exists() and not path.is_file():  # a FIFO would block, /dev/zero never ends
        raise DataError("not a regular file (a pipe, socket or device).", path=path, fix="pass text files.")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_NOTE_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}.", path=path) from None
    if len(data) > MAX_NOTE_BYTES:
        raise DataError(
            f"larger than {MAX_NOTE_BYTES // 1_000_000} MB: not a clinical note.",
            path=path,
            fix="split it into one file per note.",
        )
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
    """Expand directories to their *.txt files (sorted); keep files as given; refuse missing paths and two
    files that would give the same note id (their name without the suffix), e.g. from two folders."""
    files = _expand(inputs)
    by_id: dict[str, Path] = {}
    for f in files:
        other = by_id.setdefault(f.stem, f)
        if other != f:
            raise DataError(
                f"two notes would share the id {f.stem!r}: {other} and {f}.",
                path=f,
                fix="rename one of them (the file name without .txt is the note id in the output).",
            )
    return files


def _expand(inputs: list[Path]) -> list[Path]:
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
