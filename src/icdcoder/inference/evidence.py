"""Evidence spans: which words of the raw note drove a code, as readable phrases with character offsets.

From token weights (a model's label attention for one code, or occlusion drops when the model has no
attention) to spans:

1. the `top_tokens` highest-weighted tokens are the seeds (ties: earlier token first); seeds weighing less
   than `min_relative_weight` × the strongest one are dropped;
2. each seed is widened by `window` tokens on each side, but never across a phrase boundary: a sentence or
   clause break between two tokens (`. ; : ! ? ,` followed by a space or line end, a line break, brackets
   or `|`), so a phrase does not run into the next list item or sentence;
3. stop words ("of", "the", "y", "de", ...) are trimmed from both ends of the widened window; a window that
   is only stop words is dropped;
4. windows that overlap or touch (adjacent tokens with no boundary between them) are merged; a merged
   phrase weighs as much as its strongest seed;
5. each phrase is extended to whole words of the raw text (the tokenizer splits "non-small" and "b12-def"
   and drops numbers, so "T 38.5" or "COVID-19" would otherwise be cut), phrases that then meet are
   merged, and each carries its text. Spans come strongest first and never overlap.

Each phrase also carries its ConText category (`context`: "negated", "possible", "family", "historical" or
None) from the matcher's cue rules (`matching/negation.py`), so a reader sees at once that the model's
evidence for a code is "No lymphadenopathy or metastases were evident". The neural models do not read
negation themselves; this marks, never changes, what they score.

Occlusion (for models without attention): the note is scored again with each window of `occlusion_window`
tokens removed (masked out); a token's weight for a code is the drop in that code's probability when its
window is removed (0 when the probability rises). Costs about T / window extra forward passes per note.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from icdcoder.matching.negation import context_of
from icdcoder.text.tokenizer import Token

# A break between two tokens: sentence/clause punctuation followed by a space or line end, line breaks,
# brackets (MIMIC's [** ... **] placeholders too) and table bars.
_BOUNDARY = re.compile(r"[.;:!?,](?:\s|$)|[\n\r()\[\]{}|]")
# Characters that continue a word in clinical text (hyphenated words, decimals, abbreviations like b12-def).
_WORD_CHARS = "-'’./+%"

STOP_WORDS: frozenset[str] = frozenset(
    # English (clinical notes, CodiEsp's translation)
    "a an the of and or in on at to for with without by from as is are was were be been being this that "
    "these those it its his her their he she they we i you there which who whom what when while than then "
    "into onto upon after before during per via has have had not no nor but if so also".split()
    # Spanish (CodiEsp originals)
    + "el la los las un una unos unas de del al y e o u en con sin por para que se su sus lo le les es son "
    "fue fueron era como más mas ni pero este esta estos estas ese esa eso muy ya sobre entre tras hasta "
    "desde".split()
)


@dataclass
class EvidenceSpan:
    """A phrase of the raw note: `note[start:end] == text`; `weight` is its strongest token's weight;
    `context` the ConText category whose scope covers it (None: affirmed, present, the patient's own)."""

    start: int
    end: int
    weight: float
    text: str = ""
    context: str | None = None


def phrase_line(span: EvidenceSpan) -> str:
    """One evidence phrase on one line for terminal output, with its ConText category when a cue governs
    it."""
    text = span.text.replace("\n", " ")
    return f"{text} [{span.context}]" if span.context else text


def mark_context(spans: Sequence[Sequence[EvidenceSpan]], text: str, lang: str) -> None:
    """Set each span's `context` from the note's negation/uncertainty/family/history scopes (in place)."""
    if not any(spans):
        return
    index = context_of(text, lang)
    for code_spans in spans:
        for span in code_spans:
            span.context = index.span_context(span.start, span.end)


def phrase_boundaries(tokens: Sequence[Token], text: str | None) -> np.ndarray:
    """`b[i]` is True when a phrase boundary lies between token i and token i + 1 (length n - 1)."""
    n = len(tokens)
    if text is None or n < 2:
        return np.zeros(max(n - 1, 0), dtype=bool)
    return np.array([_is_cut(tokens, text, i) for i in range(n - 1)], dtype=bool)


def _is_cut(tokens: Sequence[Token], text: str | None, i: int) -> bool:
    return text is not None and bool(_BOUNDARY.search(text, tokens[i].end, tokens[i + 1].start))


def _extend_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen [start, end) over characters that continue a word (letters, digits, `-'./+%`), then give back
    trailing punctuation so "fever." becomes "fever"."""
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in _WORD_CHARS):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] in _WORD_CHARS):
        end += 1
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return start, end


def spans_from_attention(
    weights: np.ndarray,
    tokens: list[Token],
    top_tokens: int = 3,
    window: int = 2,
    *,
    text: str | None = None,
    stop_words: frozenset[str] = STOP_WORDS,
    min_relative_weight: float = 0.0,
) -> list[EvidenceSpan]:
    """Turn one code's token weights into merged, readable character spans (strongest first).

    `text` is the raw note the tokens index: with it, phrases stop at sentence/clause boundaries, extend to
    whole words and carry their text; without it, spans are token windows with empty text."""
    n = min(len(tokens), len(weights))
    if n == 0 or top_tokens < 1:
        return []
    w = np.asarray(weights[:n], dtype=np.float64)
    order = [int(i) for i in np.argsort(-w, kind="stable")[:top_tokens]]
    # Tokens of weight 0 never count (occlusion: removing them changed nothing).
    order = [i for i in order if w[i] > 0 and w[i] >= min_relative_weight * w[order[0]]]
    memo: dict[int, bool] = {}

    def cut(i: int) -> bool:  # boundary between token i and i + 1; computed only near the seeds
        if i not in memo:
            memo[i] = _is_cut(tokens, text, i)
        return memo[i]

    windows: list[tuple[int, int, float]] = []
    for i in order:
        a = i
        while a > 0 and i - a < window and not cut(a - 1):
            a -= 1
        b = i
        while b < n - 1 and b - i < window and not cut(b):
            b += 1
        # Trim stop words from the edges (the seed itself stays even if it is one).
        while a < i and tokens[a].text in stop_words:
            a += 1
        while b > i and tokens[b].text in stop_words:
            b -= 1
        if all(tokens[k].text in stop_words for k in range(a, b + 1)):
            continue
        windows.append((a, b, float(w[i])))
    windows.sort()
    merged: list[tuple[int, int, float]] = []
    for a, b, wt in windows:
        if merged and (a <= merged[-1][1] or (a == merged[-1][1] + 1 and not cut(a - 1))):
            pa, pb, pw = merged[-1]
            merged[-1] = (pa, max(pb, b), max(pw, wt))
        else:
            merged.append((a, b, wt))
    chars: list[tuple[int, int, float]] = []
    for a, b, wt in merged:
        start, end = tokens[a].start, tokens[b].end
        if text is not None:
            start, end = _extend_to_words(text, start, end)
        # Widening to whole words can make neighbours meet ("a-b-c" seeded on a and c): merge again.
        if chars and start <= chars[-1][1]:
            ps, pe, pw = chars[-1]
            chars[-1] = (ps, max(pe, end), max(pw, wt))
        else:
            chars.append((start, end, wt))
    spans = [EvidenceSpan(a, b, round(wt, 6), "" if text is None else text[a:b]) for a, b, wt in chars]
    return sorted(spans, key=lambda s: -s.weight)


def occlusion_weights(
    score: Callable[[list[np.ndarray]], np.ndarray],
    token_ids: np.ndarray,
    code_indices: Sequence[int],
    window: int = 8,
    batch_size: int = 32,
) -> np.ndarray:
    """Token weights [len(code_indices), T] from occlusion.

    `score(variants)` returns probabilities [len(variants), C] for token-id arrays in which occluded
    positions are -1 (the caller masks them out); the unoccluded probabilities are computed once here."""
    t = len(token_ids)
    out = np.zeros((len(code_indices), t), dtype=np.float32)
    if t == 0 or not code_indices:
        return out
    cols = np.asarray(code_indices, dtype=np.int64)
    base = score([token_ids])[0, cols]
    starts = list(range(0, t, max(window, 1)))
    for s0 in range(0, len(starts), batch_size):
        chunk = starts[s0 : s0 + batch_size]
        variants = []
        for s in chunk:
            v = token_ids.copy()
            v[s : s + window] = -1
            variants.append(v)
        probs = score(variants)[:, cols]  # [len(chunk), K]
        drops = np.clip(base[None, :] - probs, 0.0, None)
        for j, s in enumerate(chunk):
            out[:, s : s + window] = drops[j][:, None]
    return out
