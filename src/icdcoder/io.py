"""Crash-safe writing: outputs appear complete or not at all.

Every command that writes a directory or a file writes it under a temporary name next to the target and
renames it into place only once everything was written, so a crash, a full disk or Ctrl-C never leaves a
half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from icdcoder.errors import IcdcoderError


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `out` when the block succeeds.

    On any exception the temporary directory is deleted and `out` is left as it was.
    """
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise IcdcoderError(
            "output directory already exists and is not empty.",
            path=out,
            fix="choose another --out or pass --overwrite.",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if "b" in mode:
            with open(tmp, mode) as fh:
                yield fh
        else:
            with open(tmp, mode, encoding=encoding) as fh:
                yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """Where icdcoder caches derived data (prepared CodiEsp, word2vec, ontology indexes): `$ICDCODER_CACHE`,
    else `$XDG_CACHE_HOME/icdcoder`, else `~/.cache/icdcoder`. Everything there can be deleted safely."""
    root = os.environ.get("ICDCODER_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "icdcoder"


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, UTF-8, sorted keys for stable diffs."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning decoding faults into a one-line IcdcoderError."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise IcdcoderError("file not found.", path=path) from None
    except UnicodeDecodeError as exc:
        raise IcdcoderError(
            f"not valid UTF-8 (byte {exc.start}).", path=path, fix="re-save the file as UTF-8."
        ) from None
    except json.JSONDecodeError as exc:
        raise IcdcoderError(f"invalid JSON: {exc.msg}.", path=path, line=exc.lineno) from None
