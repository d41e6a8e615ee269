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

OUTPUT_MARKER = ".icdcoder-output"  # written into every directory icdcoder creates
# Directories written before the marker existed, recognised by files only icdcoder puts together.
_LEGACY_OUTPUTS: tuple[tuple[str, ...], ...] = (
    ("documents.parquet", "labels.json", "stats.json"),  # prepared dataset
    ("metadata.json", "model.safetensors", "labels.json"),  # model directory
    ("config.yaml", "metrics.jsonl"),  # training run
    ("state.json", "model.safetensors", "optimizer.safetensors"),  # checkpoint
    ("vectors.npy", "words.json", "meta.json"),  # word2vec cache entry
)


def is_project_output(path: str | Path) -> bool:
    """True for a directory icdcoder wrote (its marker file, or the file set of an older output)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / OUTPUT_MARKER).is_file():
        return True
    return any(all((path / name).is_file() for name in names) for names in _LEGACY_OUTPUTS)


def mark_output(path: str | Path, kind: str) -> None:
    """Write the marker that lets a later `--overwrite` recognise `path` as icdcoder's."""
    (Path(path) / OUTPUT_MARKER).write_text(json.dumps({"kind": kind, "pid": os.getpid()}) + "\n", "utf-8")


def check_replaceable(out: str | Path, overwrite: bool) -> None:
    """Refuse to write over `out` unless it is absent or empty, or `overwrite` is given and icdcoder wrote it:
    `--overwrite` must never delete a folder of the user's (say, the one holding the input files)."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    if not overwrite:
        raise IcdcoderError(
            "output directory already exists and is not empty.",
            path=out,
            fix="choose another --out or pass --overwrite.",
        )
    if not is_project_output(out):
        raise IcdcoderError(
            f"refusing to replace {'a file' if not out.is_dir() else 'a directory icdcoder did not write'} "
            f"(no {OUTPUT_MARKER} marker): --overwrite only replaces a prepared dataset, run or model "
            "directory.",
            path=out,
            fix="choose another --out, or move that folder's contents away yourself.",
        )


def clean_stale_temporaries(out: str | Path) -> list[Path]:
    """Delete `.NAME.tmp-PID-*` / `.NAME.old-PID` siblings of `out` left by a killed process (PID gone).
    Those of a live process (a concurrent run) are left alone. Returns what was removed."""
    out = Path(out)
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):
        for path in out.parent.glob(f"{glob_escape(prefix)}*"):
            pid_text = path.name[len(prefix) :].split("-", 1)[0]
            if not pid_text.isdigit() or _alive(int(pid_text)):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False, kind: str = "output") -> Iterator[Path]:
    """Yield a temporary directory that replaces `out` when the block succeeds.

    On any exception the temporary directory is deleted and `out` is left as it was. An existing `out` is
    replaced only with `overwrite` and only if icdcoder wrote it (`check_replaceable`); the new directory
    carries the marker. Temporaries of killed earlier runs next to `out` are removed first.
    """
    out = Path(out)
    check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        mark_output(tmp, kind)
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
