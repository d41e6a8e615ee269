"""The subword tokenizer of a local Hugging Face model, behind the word tokenizer's interface.

A pretrained encoder (PLM-ICD, MSAM's GatorTron) must read the note with its own tokenizer. `HFTokenizer`
wraps the model directory's `tokenizer.json` (the `tokenizers` library's fast-tokenizer file, written by any
`save_pretrained`) and returns `Token`s whose `text` is the subword string and whose `start`/`end` are
character offsets into the raw note, so evidence spans work exactly as with words. The whole tokenizer.json
is embedded in the icdcoder model directory's tokenizer.json, so inference needs nothing from the original
model folder. Nothing is downloaded: the path must be a local directory.

Ids: the icdcoder vocabulary of such a model is `<pad>`, `<unk>`, then the Hugging Face vocabulary in id
order, so icdcoder id = Hugging Face id + 2 (`HF_ID_OFFSET`); the model maps ids back before its encoder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from icdcoder.errors import ConfigError
from icdcoder.text.tokenizer import Token
from icdcoder.text.vocab import SPECIALS, Vocab

HF_TOKENIZER_TYPE = "hf-tokenizers"
HF_TOKENIZER_VERSION = 1
HF_ID_OFFSET = len(SPECIALS)
# Names of the special tokens in BERT-, RoBERTa- and SentencePiece-style vocabularies, preferred first.
_SPECIAL_NAMES = {
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
}


def _special_ids(vocab: dict[str, int], declared: dict[str, Any]) -> dict[str, int]:
    """cls / sep / pad / unk ids: from special_tokens_map.json when it names them, else by the usual names."""
    out: dict[str, int] = {}
    for role, names in _SPECIAL_NAMES.items():
        entry = declared.get(f"{role}_token")
        name = entry.get("content") if isinstance(entry, dict) else entry
        candidates = ([name] if isinstance(name, str) else []) + list(names)
        found = next((vocab[c] for c in candidates if c in vocab), None)
        if found is None:
            raise ConfigError(
                f"the tokenizer has no {role} token (looked for {', '.join(candidates)}).",
                fix="use a BERT- or RoBERTa-style tokenizer, or declare it in special_tokens_map.json.",
            )
        out[role] = found
    return out


class HFTokenizer:
    """Subword tokenizer from a fast-tokenizer JSON; same interface as `Tokenizer` (tokenize, words)."""

    def __init__(
        self,
        tokenizer_json: str,
        special: dict[str, int] | None = None,
        source: str = "",
        declared: dict[str, Any] | None = None,
    ) -> None:
        """`special`: the cls/sep/pad/unk ids (a saved config); when None they are found in the vocabulary,
        preferring the names `declared` (special_tokens_map.json) gives."""
        from tokenizers import Tokenizer as _Fast

        try:
            self._tok = _Fast.from_str(tokenizer_json)
        except Exception as exc:  # the tokenizers library raises a bare Exception on malformed JSON
            raise ConfigError(f"unreadable tokenizer.json ({str(exc)[:200]}).", path=source or None) from None
        self._json = tokenizer_json
        self.source = source
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.special = dict(special) if special is not None else _special_ids(vocab, declared or {})
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ConfigError("the tokenizer's vocabulary ids are not contiguous.", path=source or None)
        self.hf_tokens = [t for t, _ in by_id]

    @classmethod
    def from_pretrained(cls, path: str | Path) -> HFTokenizer:
        """Read `path/tokenizer.json` (and `special_tokens_map.json` when present); local files only."""
        root = Path(path)
        file = root / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(
                "no tokenizer.json in the pretrained model directory.",
                path=root,
                fix="point at a local Hugging Face model folder saved with a fast tokenizer "
                "(tokenizer.save_pretrained(DIR) writes tokenizer.json).",
            )
        declared_file = root / "special_tokens_map.json"
        declared = json.loads(declared_file.read_text(encoding="utf-8")) if declared_file.is_file() else {}
        return cls(file.read_text(encoding="utf-8"), source=str(root), declared=declared)

    def tokenize(self, text: str) -> list[Token]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return [Token(t, s, e) for t, (s, e) in zip(enc.tokens, enc.offsets, strict=True)]

    def words(self, text: str) -> list[str]:
        return list(self._tok.encode(text, add_special_tokens=False).tokens)

    def vocab(self) -> Vocab:
        """The icdcoder vocabulary: `<pad>`, `<unk>`, then every subword in Hugging Face id order (a subword
        spelled like one of icdcoder's specials gets a distinct escaped name; such tokens never come out of
        `words`, which yields text pieces only)."""
        tokens = [*SPECIALS, *(f"{t}\u241fhf" if t in SPECIALS else t for t in self.hf_tokens)]
        return Vocab(tokens, meta={"hf_tokenizer": self.fingerprint, "hf_id_offset": HF_ID_OFFSET})

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    def to_config(self) -> dict[str, Any]:
        return {
            "type": HF_TOKENIZER_TYPE,
            "version": HF_TOKENIZER_VERSION,
            "source": self.source,
            "special": self.special,
            "tokenizer_json": self._json,
        }

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> HFTokenizer:
        if d.get("type") != HF_TOKENIZER_TYPE or d.get("version") != HF_TOKENIZER_VERSION:
            raise ConfigError(
                f"tokenizer config is {d.get('type')!r} version {d.get('version')!r}, "
                f"not {HF_TOKENIZER_TYPE!r} version {HF_TOKENIZER_VERSION}.",
                fix="retrain or re-export with this icdcoder version.",
            )
        special = d.get("special")
        if not isinstance(special, dict) or set(special) != set(_SPECIAL_NAMES) or "tokenizer_json" not in d:
            raise ConfigError("tokenizer config lacks its special token ids or tokenizer_json.")
        ids = {k: int(v) for k, v in special.items()}
        return cls(str(d["tokenizer_json"]), ids, str(d.get("source", "")))
