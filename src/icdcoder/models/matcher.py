"""Ontology matcher (`model.name: matcher`): every code of the label space scored by how well the note
says one of the code's terms, with the exact words that did it. No training labels: `fit_corpus` only tunes
the few hyperparameters below on dev, for the organisers' MAP.

Terms (`matching/terms.py`): English — the ontology's synonym list (titles, inclusion terms, GEM-linked
titles); Spanish — WHO CIE-10 titles. Matching (`matching/index.py`): word-order-free, inflection- and
abbreviation-robust bags of stemmed keys within a sentence, subsumed matches dropped. Context
(`matching/negation.py`): each match carries its ConText categories.

Score of code c in a note, over the matches m of c's terms t (weight w_t by provenance):
    s_m = w_t · coverage_m ** coverage_power · min(1, info_t / info_scale) · (1 + length_bonus · (|t| - 1))
          · Π_{cue of m} penalty[cue]
    s_c = max_m s_m · (1 + mention_bonus · ln(#matches of c))
            · unspecified_penalty (title says unspecified/NOS) · other_penalty (title says other/NEC)
            · parent_penalty (when a matched descendant of c scores at least as high)
            · subsumed (0 by default: a match inside a longer match does not count)
            + 1e-4 · depth(c)          (ties go to the more specific code)
where info_t is the term's summed *note* idf, ln((N + 1) / (df + 1)) over the N train and dev notes (their
text only, no labels; `fit_corpus`): a term made of words most notes contain ("pain", "examination") is weak
evidence, a rare word ("constipation") strong; |t| is the number of its keys (longer terms are more specific
readings of the same words). Before fitting, the term idf over the code system stands in for it. Logits
are ln(s_c); unmatched codes get `UNMATCHED_LOGIT`.

Evidence: the raw character span of every match of c (`extras["spans"]`); features per matched code for a
re-ranker (`extras["features"]`): score, coverage, number of mentions, the term's info, and the share of
mentions under each ConText category (negated, possible, family, historical).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from icdcoder.data.document import Document
from icdcoder.errors import DataError
from icdcoder.matching import normalize
from icdcoder.matching.index import FLAG_OTHER, FLAG_UNSPECIFIED, INDEX_VERSION, TermIndex, fingerprint
from icdcoder.matching.negation import CATEGORIES, context_of
from icdcoder.matching.normalize import get_normalizer
from icdcoder.models.base import (
    FEATURES,
    SPANS,
    Batch,
    IcdModel,
    ModelConfig,
    ModelContext,
    ModelOutput,
    register_model,
)

log = logging.getLogger(__name__)

UNMATCHED_LOGIT = -12.0
MATCH_CACHE_NOTES = 1000  # notes whose matches are kept (dev is matched for tuning, then scored again)
MAP_DEPTH = 1000  # the organisers' ranking depth

# the hyperparameters fit_corpus tunes, with the values it tries
GRID: dict[str, tuple[float, ...]] = {
    "min_coverage": (0.4, 0.5, 0.6, 0.7, 0.8, 1.0),
    "coverage_power": (1.0, 2.0, 3.0, 5.0, 8.0, 12.0),
    "info_scale": (0.0, 2.0, 4.0, 6.0, 9.0),
    "length_bonus": (0.0, 0.05, 0.15),
    "mention_bonus": (0.0, 0.1, 0.3),
    "negated": (0.05, 0.3, 0.6, 1.0),
    "possible": (0.3, 0.6, 1.0),
    "family": (0.05, 0.3, 1.0),
    "historical": (0.5, 1.0),
    "unspecified": (0.7, 0.85, 1.0),
    "other": (0.5, 0.7, 0.85, 1.0),
    "parent": (0.3, 0.6, 0.9, 1.0),
    "subsumed": (0.0, 0.1, 0.3),
}


class MatcherConfig(ModelConfig):
    lang: Literal["en", "es"] = "en"  # the notes' language (term tables, stemmer, negation cues)
    tune: bool = True  # tune the hyperparameters on dev in fit_corpus (else keep the values below)
    tune_rounds: int = Field(2, ge=1)  # coordinate-descent sweeps over GRID
    # starting values of the dev tuning: the values it chose on CodiEsp-D (English) dev
    min_coverage: float = Field(0.4, gt=0, le=1)
    coverage_power: float = Field(8.0, ge=0)
    info_scale: float = Field(0.0, ge=0)
    length_bonus: float = Field(0.0, ge=0)
    mention_bonus: float = Field(0.0, ge=0)
    negated: float = Field(1.0, ge=0, le=1)
    possible: float = Field(1.0, ge=0, le=1)
    family: float = Field(0.05, ge=0, le=1)
    historical: float = Field(1.0, ge=0, le=1)
    unspecified: float = Field(1.0, ge=0, le=1)
    other: float = Field(0.85, ge=0, le=1)
    parent: float = Field(0.9, ge=0, le=1)
    subsumed: float = Field(0.3, ge=0, le=1)  # 0: a term inside a longer matched term does not fire alone
    cache_dir: str | None = None  # where built term indexes are kept (default: icdcoder's cache folder)


@dataclass
class NoteMatch:
    """One match of a note, reduced to what scoring needs."""

    term: int
    coverage: float
    start: int
    end: int
    cues: frozenset[str]
    subsumed: bool


def index_for(label_keys: Sequence[str], lang: str, cache_dir: Path | None) -> tuple[TermIndex, str]:
    """The term index of a label space in a language, from the cache or built (minutes at ~100k codes)."""
    import importlib.resources

    from icdcoder.io import cache_root
    from icdcoder.matching import terms
    from icdcoder.ontology.cache import cache_key
    from icdcoder.ontology.ontology import get_ontology

    res = importlib.resources.files("icdcoder") / "resources" / "matching"
    tables = "".join(sorted(f.name + f.read_text(encoding="utf-8") for f in res.iterdir() if f.is_file()))
    # the code that turns terms into keys is an input too (not the matching code, which reads the index)
    code = Path(normalize.__file__ or "").read_text(encoding="utf-8") + inspect.getsource(TermIndex.build)
    fp = fingerprint(
        str(INDEX_VERSION),
        lang,
        "\n".join(label_keys),
        tables,
        code,
        cache_key(),
        repr(sorted(terms.SOURCE_WEIGHTS.items())),
        repr(sorted(terms.SPANISH_WEIGHTS.items())),
    )
    path = (cache_dir or cache_root() / "matcher") / f"terms-{lang}-{fp}.npz"
    index = TermIndex.load(path)
    if index is not None and index.n_codes == len(label_keys):
        return index, fp
    t0 = time.perf_counter()
    onto = get_ontology()
    texts = terms.cached_terms(label_keys, lang, cache_dir)
    index = TermIndex.build(
        get_normalizer(lang), label_keys, texts.__getitem__, lambda i: onto.title(label_keys[i])
    )
    log.info(
        "matcher: built the %s term index of %d codes (%d terms) in %.1f s",
        lang,
        len(label_keys),
        index.n_terms,
        time.perf_counter() - t0,
    )
    try:
        index.save(path)
    except OSError as exc:  # a read-only cache must not stop matching
        log.warning("could not cache the term index at %s: %s", path, exc)
    return index, fp


def _parents_in_space(label_keys: Sequence[str]) -> list[int]:
    """Index of each code's nearest ancestor that is in the label space (-1: none)."""
    from icdcoder.ontology.ontology import get_ontology

    onto = get_ontology()
    pos = {k: i for i, k in enumerate(label_keys)}
    out = []
    for key in label_keys:
        system, code = key.split(":", 1)
        table = onto.table(system)
        parent = table.parent_of(code) if table.has(code) else None
        found = -1
        hops = 0
        while parent is not None and hops < 16:
            j = pos.get(f"{system}:{parent}")
            if j is not None:
                found = j
                break
            parent = table.parent_of(parent)
            hops += 1
        out.append(found)
    return out


@register_model("matcher")
class OntologyMatcher(IcdModel):
    Config: ClassVar[type[ModelConfig]] = MatcherConfig
    reads_text: ClassVar[bool] = True
    trainable: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, MatcherConfig)
        self.cfg = config
        self.label_keys = list(ctx.label_keys)
        self.normalizer = get_normalizer(config.lang)
        cache = None if config.cache_dir is None else Path(config.cache_dir)
        self.index, self.index_fingerprint = index_for(self.label_keys, config.lang, cache)
        self.parent = _parents_in_space(self.label_keys)
        self.depth = [len(k.split(":", 1)[1].replace(".", "")) for k in self.label_keys]
        self.params: dict[str, float] = {name: float(getattr(config, name)) for name in GRID}
        self._matches: dict[str, tuple[float, list[NoteMatch]]] = {}
        self._term_codes: dict[int, list[tuple[int, float]]] = {}
        self.note_df: dict[str, int] = {}  # notes (train + dev text) containing each key; set by fit_corpus
        self.n_notes = 0
        self.term_info = self.index.term_idf
        # a module without parameters still needs one buffer so that .to(device) and saving work as usual
        self.register_buffer("_device_probe", torch.zeros(1))
        self._device_probe: torch.Tensor

    # -- matching and scoring
    def note_matches(self, text: str, min_coverage: float | None = None) -> list[NoteMatch]:
        """The note's matches down to `min_coverage` (default: the tuned value). Matches at the grid's lowest
        coverage are kept for the last notes seen, so scoring dev again after tuning does not re-match."""
        cov = self.params["min_coverage"] if min_coverage is None else min_coverage
        cached = self._matches.get(text)
        if cached is not None and cached[0] <= cov:
            return [m for m in cached[1] if m.coverage >= cov - 1e-6]
        found = self._match(text, cov)
        if len(self._matches) >= MATCH_CACHE_NOTES:
            self._matches.clear()
        self._matches[text] = (cov, found)
        return found

    def _match(self, text: str, cov: float) -> list[NoteMatch]:
        words = self.normalizer.words(text)
        found = self.index.match(words, text, cov)
        if not found:
            return []
        context = context_of(text, self.cfg.lang)
        return [
            NoteMatch(
                m.term, m.coverage, m.start, m.end, frozenset(context.categories(m.start, m.end)), m.subsumed
            )
            for m in found
        ]

    def score(
        self, matches: Iterable[NoteMatch], params: dict[str, float] | None = None, *, details: bool = False
    ) -> tuple[dict[int, float], dict[int, list[tuple[int, int]]], dict[int, dict[str, float]]]:
        """(score per matched code, spans per code, features per code) of one note's matches."""
        p = self.params if params is None else params
        best: dict[int, float] = {}
        places: dict[int, set[int]] = {}  # distinct mention starts per code (several terms may hit one place)
        spans: dict[int, list[tuple[int, int]]] = {}
        cues: dict[int, dict[str, set[int]]] = {}  # mention starts under each ConText category
        cover: dict[int, float] = {}
        info: dict[int, float] = {}
        for m in matches:
            if m.coverage < p["min_coverage"] - 1e-6 or (m.subsumed and p["subsumed"] <= 0):
                continue
            t_info = float(self.term_info[m.term])
            base = m.coverage ** p["coverage_power"]
            if p["info_scale"] > 0:
                base *= min(1.0, t_info / p["info_scale"])
            base *= 1.0 + p["length_bonus"] * (int(self.index.term_len[m.term]) - 1)
            for cat in m.cues:
                base *= p[cat]
            if m.subsumed:
                base *= p["subsumed"]
            for c, w in self._codes_of(m.term):
                s = w * base
                if s > best.get(c, -1.0):
                    best[c] = s
                    cover[c] = m.coverage
                    info[c] = t_info
                places.setdefault(c, set()).add(m.start)
                if details:
                    spans.setdefault(c, []).append((m.start, m.end))
                    cc = cues.setdefault(c, {})
                    for cat in m.cues:
                        cc.setdefault(cat, set()).add(m.start)
        # the parent rule compares scores before the title flags: E11 "Type 2 diabetes mellitus" and E11.9
        # "... without complications" match the same words, and the child is the more specific code
        count = {c: len(v) for c, v in places.items()}
        scores = {c: s * (1.0 + p["mention_bonus"] * math.log(count[c])) for c, s in best.items()}
        if p["parent"] < 1.0:
            demote = set()
            for c, s in scores.items():
                a = self.parent[c]
                while a >= 0:
                    if a in scores and scores[a] <= s + 1e-9:
                        demote.add(a)
                    a = self.parent[a]
            for a in demote:
                scores[a] *= p["parent"]
        for c in scores:
            flags = int(self.index.flags[c])
            if flags & FLAG_UNSPECIFIED:
                scores[c] *= p["unspecified"]
            if flags & FLAG_OTHER:
                scores[c] *= p["other"]
        for c in scores:
            scores[c] += 1e-4 * self.depth[c]
        feats: dict[int, dict[str, float]] = {}
        if details:
            for c, s in scores.items():
                n = count[c]
                feats[c] = {
                    "score": s,
                    "coverage": cover[c],
                    "mentions": float(n),
                    "term_info": info[c],
                    **{f"share_{cat}": len(cues.get(c, {}).get(cat, ())) / n for cat in CATEGORIES},
                    "unspecified": float(bool(int(self.index.flags[c]) & FLAG_UNSPECIFIED)),
                    "other": float(bool(int(self.index.flags[c]) & FLAG_OTHER)),
                }
        return scores, spans, feats

    def _codes_of(self, term: int) -> list[tuple[int, float]]:
        """(code, weight) pairs of a term as Python numbers (kept: scoring runs per match)."""
        found = self._term_codes.get(term)
        if found is None:
            codes, weights = self.index.codes_of(term)
            found = list(zip(codes.tolist(), weights.tolist(), strict=True))
            self._term_codes[term] = found
        return found

    def readable_words(self, text: str) -> int:
        """Words of the note whose key occurs in some code's terms (the words the matcher can use)."""
        return sum(1 for w in self.normalizer.words(text) if w.key in self.index.key_id)

    def forward(self, batch: Batch) -> ModelOutput:
        if batch.texts is None:
            raise DataError("the matcher reads the raw notes, but the batch carries none (Batch.texts).")
        logits = torch.full(
            (len(batch.texts), self.n_labels), UNMATCHED_LOGIT, device=self._device_probe.device
        )
        all_spans: list[dict[int, list[tuple[int, int]]]] = []
        all_feats: list[dict[int, dict[str, float]]] = []
        details = self.attention_enabled
        for row, text in enumerate(batch.texts):
            scores, spans, feats = self.score(self.note_matches(text), details=details)
            if scores:
                idx = torch.tensor(list(scores), dtype=torch.long)
                val = torch.tensor([_logit(s) for s in scores.values()], dtype=torch.float32)
                logits[row, idx] = val.to(logits.device)
            all_spans.append({c: _merge(v) for c, v in spans.items()})
            all_feats.append(feats)
        extras: dict[str, Any] = {SPANS: all_spans, FEATURES: all_feats} if details else {}
        return ModelOutput(logits=logits, extras=extras)

    def losses(self, batch: Batch, output: ModelOutput) -> dict[str, torch.Tensor]:
        raise DataError("the matcher has no gradient training; the pipeline fits it with fit_corpus.")

    # -- fitting
    def fit_corpus(self, train: list[Document], dev: list[Document], label_keys: list[str]) -> dict[str, Any]:
        """Tune GRID on dev for the organisers' MAP by coordinate descent (train labels are not used)."""
        t0 = time.perf_counter()
        self._set_note_frequencies(train + dev)
        low = min(GRID["min_coverage"])
        pos = {k: i for i, k in enumerate(self.label_keys)}
        dev_matches = [self.note_matches(d.text, low) for d in dev]
        dev_gold = [{pos.get(k, -1 - j) for j, k in enumerate(d.codes)} for d in dev]
        record: dict[str, Any] = {"start": dict(self.params), "dev_notes": len(dev)}

        def dev_map(params: dict[str, float]) -> float:
            return _mean_ap([self.score(m, params)[0] for m in dev_matches], dev_gold)

        best = dev_map(self.params)
        record["start_dev_map"] = best
        if self.cfg.tune and dev:
            for _ in range(self.cfg.tune_rounds):
                improved = False
                for name, values in GRID.items():
                    for v in values:
                        if v == self.params[name]:
                            continue
                        trial = {**self.params, name: v}
                        score = dev_map(trial)
                        if score > best + 1e-6:
                            best, self.params, improved = score, trial, True
                if not improved:
                    break
        record.update(params=dict(self.params), dev_map=best, seconds=round(time.perf_counter() - t0, 1))
        log.info("matcher: dev MAP %.4f with %s", best, self.params)
        return record

    def _set_note_frequencies(self, docs: Sequence[Document]) -> None:
        """Document frequency of the index's keys over the notes' text (no labels)."""
        df: dict[str, int] = {}
        for d in docs:
            for key in {w.key for w in self.normalizer.words(d.text)}:
                if key in self.index.key_id:
                    df[key] = df.get(key, 0) + 1
        self._use_note_frequencies(df, len(docs))

    def _use_note_frequencies(self, df: dict[str, int], n_notes: int) -> None:
        self.note_df, self.n_notes = df, n_notes
        if n_notes == 0:
            self.term_info = self.index.term_idf
            return
        key_df = np.zeros(len(self.index.keys), dtype=np.float64)
        for key, n in df.items():
            j = self.index.key_id.get(key)
            if j is not None:
                key_df[j] = n
        idf = np.log((n_notes + 1.0) / (key_df + 1.0))
        ix = self.index
        term_of = np.repeat(np.arange(ix.n_terms), ix.term_len)
        self.term_info = np.bincount(term_of, weights=idf[ix.term_keys], minlength=ix.n_terms).astype(
            np.float32
        )

    def state_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "index_fingerprint": self.index_fingerprint,
            "note_df": self.note_df,
            "n_notes": self.n_notes,
        }

    def load_state_json(self, state: dict[str, Any]) -> None:
        params = state["params"]
        missing = set(GRID) - set(params)
        if missing:
            raise KeyError(f"matcher state lacks {sorted(missing)}")
        self.params = {k: float(params[k]) for k in GRID}
        self._use_note_frequencies(
            {str(k): int(v) for k, v in state.get("note_df", {}).items()}, int(state.get("n_notes", 0))
        )
        if state.get("index_fingerprint") != self.index_fingerprint:
            log.warning(
                "matcher: the term index was built from other ontology tables or resource files than at "
                "training time; scores may differ."
            )


def _logit(s: float) -> float:
    """ln(s): monotone and unbounded above (scores can pass 1), so ties are never made by clipping; the
    sigmoid of it is s / (1 + s) and the dev-fitted calibration maps it to probabilities."""
    return math.log(max(s, 1e-5))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Distinct spans in text order, overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(set(spans)):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _mean_ap(scores: list[dict[int, float]], gold: list[set[int]]) -> float:
    """The organisers' MAP: AP over the ranked codes (depth 1000) divided by the number of gold codes
    (codes outside the label space count, with a negative index that is never predicted), over notes with
    gold."""
    total, n = 0.0, 0
    for s, g in zip(scores, gold, strict=True):
        if not g:
            continue
        n += 1
        ranked = sorted(s, key=lambda c: -s[c])[:MAP_DEPTH]
        hits, ap = 0, 0.0
        for rank, c in enumerate(ranked, 1):
            if c in g:
                hits += 1
                ap += hits / rank
        total += ap / len(g)
    return total / n if n else 0.0
