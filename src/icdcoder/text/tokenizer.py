"""Word tokenizer in the Mullenbach (CAML) / Edin tradition that keeps character spans into the raw note.

Rules (CAML: `\\w+` tokens, lowercased, tokens made only of digits removed; Edin: `[^A-Za-z0-9]+` -> space):

- A token is a maximal run of Unicode letters and digits (`str.isalnum`), with combining marks (Unicode
  category M*) allowed after the first character, so "médico" and "riñón" stay whole whether the note is
  stored precomposed (NFC) or decomposed (NFD). Everything else separates tokens, including `_` (which
  `\\w` would keep) and apostrophes ("patient's" -> "patient", "s").
- Mixed tokens such as "b12" or "2mg" are kept; tokens made only of numeric characters (and marks) are
  dropped when `drop_numeric` (the default), as in CAML/Edin.
- Every `Token` carries `start`/`end` so that `raw[start:end]` is the exact surface in the raw note; evidence
  found on tokens can be highlighted in the original text.

Normalised form (`Token.text`, `Tokenizer.normalize`): lowercase (`str.lower` of the whole token, except that
a character whose lowercase is longer than itself, which in current Unicode is only 'İ' U+0130, is replaced
by the first character of its lowercase, so lowercasing never changes the length), then Unicode NFC, then
accents removed when `strip_accents`. The precise guarantee, tested with hypothesis:
    token.text == tokenizer.normalize(raw[token.start:token.end])      always, and
    token.text == raw[token.start:token.end].lower()                    when that lowercase has the
                                                                        surface's length and is NFC
                                                                        (lowercase=True, strip_accents=False).
ASCII tokens (all of MIMIC) take a fast path: `text == surface.lower()`.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Protocol

from icdcoder.errors import ConfigError

_CONFIG_KEYS = ("lowercase", "drop_numeric", "strip_accents", "min_token_len")
TOKENIZER_TYPE = "icdcoder-words"
TOKENIZER_VERSION = 1


@dataclass(frozen=True, slots=True)
class Token:
    """One word: `text` is the normalised form, `raw[start:end]` the original surface."""

    text: str
    start: int
    end: int


@functools.cache
def _mark_class() -> str:
    """A regex character class body for every combining mark (category M*) of this Python's Unicode.

    Computed once per process (about 0.2 s) rather than hard-coded, so it follows the Unicode version.
    """
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    parts = []
    for a, b in ranges:
        parts.append(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}")
    return "".join(parts)


@functools.cache
def _token_re() -> re.Pattern[str]:
    # `[^\W_]` = letters and digits (\w without the underscore). Possessive quantifiers keep it linear.
    return re.compile(r"[^\W_]++(?:[" + _mark_class() + r"]++[^\W_]*+)*+")


_ASCII_TOKEN_RE = re.compile(r"[A-Za-z0-9]+")


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def is_numeric_token(surface: str) -> bool:
    """True when the token is made only of numeric characters (plus combining marks after them)."""
    if surface.isnumeric():
        return True
    return bool(surface) and surface[0].isnumeric() and all(c.isnumeric() or _is_mark(c) for c in surface)


def _lower_same_length(s: str) -> str:
    low = s.lower()
    if len(low) == len(s):
        return low
    # Only 'İ' (U+0130) lowercases to two characters ('i' + U+0307); keep the base letter.
    return "".join(c.lower()[0] for c in s)


def _strip_accents(s: str) -> str:
    decomposed = unicodedata.normalize("NFD", s)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))


class Tokenizer:
    """Mullenbach-style word tokenizer that is Unicode-aware and keeps spans into the raw text."""

    def __init__(
        self,
        lowercase: bool = True,
        drop_numeric: bool = True,
        strip_accents: bool = False,
        min_token_len: int = 1,
    ) -> None:
        if int(min_token_len) < 1:
            raise ConfigError(
                f"tokenizer min_token_len must be at least 1, got {min_token_len}.",
                fix="set min_token_len to 1 or more.",
            )
        self.lowercase = bool(lowercase)
        self.drop_numeric = bool(drop_numeric)
        self.strip_accents = bool(strip_accents)
        self.min_token_len = int(min_token_len)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in _CONFIG_KEYS)
        return f"Tokenizer({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in _CONFIG_KEYS))

    def normalize(self, surface: str) -> str:
        """The normalised form of one token surface (see the module docstring for the guarantee)."""
        if surface.isascii():
            return surface.lower() if self.lowercase else surface
        out = _lower_same_length(surface) if self.lowercase else surface
        if not unicodedata.is_normalized("NFC", out):
            out = unicodedata.normalize("NFC", out)
        if self.strip_accents:
            out = _strip_accents(out)
        return out

    def _keep(self, surface: str, text: str) -> bool:
        if self.drop_numeric and is_numeric_token(surface):
            return False
        return len(text) >= self.min_token_len

    def _ascii_words(self, text: str) -> list[str]:
        # Fast path with identical results: in ASCII the token regex is [A-Za-z0-9]+, there are no marks,
        # and lowercasing the whole note keeps every offset.
        words = _ASCII_TOKEN_RE.findall(text.lower() if self.lowercase else text)
        if self.drop_numeric:
            words = [w for w in words if not w.isdigit()]
        if self.min_token_len > 1:
            words = [w for w in words if len(w) >= self.min_token_len]
        return words

    def tokenize(self, text: str) -> list[Token]:
        """Tokens of `text` with their character spans in `text`, in order."""
        out: list[Token] = []
        if text.isascii():
            drop, mtl = self.drop_numeric, self.min_token_len
            for m in _ASCII_TOKEN_RE.finditer(text.lower() if self.lowercase else text):
                w = m.group()
                if not (drop and w.isdigit()) and len(w) >= mtl:
                    out.append(Token(w, m.start(), m.end()))
            return out
        for m in _token_re().finditer(text):
            surface = m.group()
            norm = self.normalize(surface)
            if self._keep(surface, norm):
                out.append(Token(norm, m.start(), m.end()))
        return out

    def words(self, text: str) -> list[str]:
        """Just the normalised token strings (same as `[t.text for t in tokenize(text)]`, faster)."""
        if text.isascii():
            return self._ascii_words(text)
        normalize = self.normalize
        keep = self._keep
        out: list[str] = []
        for surface in _token_re().findall(text):
            norm = normalize(surface)
            if keep(surface, norm):
                out.append(norm)
        return out

    def to_config(self) -> dict[str, Any]:
        return {
            "type": TOKENIZER_TYPE,
            "version": TOKENIZER_VERSION,
            "lowercase": self.lowercase,
            "drop_numeric": self.drop_numeric,
            "strip_accents": self.strip_accents,
            "min_token_len": self.min_token_len,
        }

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> Tokenizer:
        if not isinstance(d, dict):
            raise ConfigError("tokenizer config must be a mapping.", fix="write it as a JSON/YAML object.")
        kind = d.get("type", TOKENIZER_TYPE)
        if kind != TOKENIZER_TYPE:
            raise ConfigError(
                f"tokenizer type {kind!r} is not {TOKENIZER_TYPE!r}.",
                fix="use a config written by icdcoder's word tokenizer.",
            )
        version = d.get("version", TOKENIZER_VERSION)
        if version != TOKENIZER_VERSION:
            raise ConfigError(
                f"tokenizer config version {version!r}, this icdcoder reads {TOKENIZER_VERSION}.",
                fix="retrain or re-export with this icdcoder version.",
            )
        unknown = sorted(set(d) - {*_CONFIG_KEYS, "type", "version"})
        if unknown:
            raise ConfigError(
                f"unknown tokenizer option(s): {', '.join(unknown)}.",
                fix=f"use only {', '.join(_CONFIG_KEYS)}.",
            )
        for key in ("lowercase", "drop_numeric", "strip_accents"):
            if key in d and not isinstance(d[key], bool):
                raise ConfigError(f"tokenizer option {key} must be true or false, got {d[key]!r}.")
        mtl = d.get("min_token_len", 1)
        if isinstance(mtl, bool) or not isinstance(mtl, int):
            raise ConfigError(f"tokenizer option min_token_len must be an integer, got {mtl!r}.")
        return cls(
            lowercase=d.get("lowercase", True),
            drop_numeric=d.get("drop_numeric", True),
            strip_accents=d.get("strip_accents", False),
            min_token_len=mtl,
        )


class TextTokenizer(Protocol):
    """What the pipeline, the model directory and the predictor need from a tokenizer: the word
    `Tokenizer` above, or `HFTokenizer` (text/hf_tokenizer.py) for a pretrained encoder's subwords."""

    def tokenize(self, text: str) -> list[Token]: ...

    def words(self, text: str) -> list[str]: ...

    def to_config(self) -> dict[str, Any]: ...


def tokenizer_from_config(d: dict[str, Any]) -> TextTokenizer:
    """The tokenizer a model directory's tokenizer.json describes (word or Hugging Face subword)."""
    if isinstance(d, dict) and d.get("type") == "hf-tokenizers":
        from icdcoder.text.hf_tokenizer import HFTokenizer

        return HFTokenizer.from_config(d)
    return Tokenizer.from_config(d)
