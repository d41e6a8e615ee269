"""Decisions that respect the note: what a model cannot read, it must not code.

A model fed a note with no word it knows still outputs a score for every code (the biases, a pooled padding
vector), and after calibration and the dev-tuned threshold that can mark hundreds of codes as suggested.
The rule applied wherever notes are coded or scored (predictor, server, `evaluate`, training-time dev/test):

- a note with no known token (every word outside the vocabulary, or no word at all) has **no output**:
  status `nothing_recognisable`, no codes; in the metrics it is a note without prediction (AP 0);
- a note with fewer than `NEAR_EMPTY_TOKENS` known tokens is `near_empty`: each code's probability is
  capped at the code's prior (its training frequency), the probability the model should give when it has
  read next to nothing;
- otherwise `ok`, probabilities as the model gives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from icdcoder.text.vocab import PAD_ID, UNK_ID

NEAR_EMPTY_TOKENS = 5  # fewer known tokens than this: the probabilities are at most the priors
OK, NEAR_EMPTY, NOTHING_RECOGNISABLE = "ok", "near_empty", "nothing_recognisable"


def known_token_counts(token_ids: Sequence[np.ndarray]) -> np.ndarray:
    """Per note, how many of its token ids are in the vocabulary (neither `<unk>` nor padding)."""
    return np.array([int(((ids != UNK_ID) & (ids != PAD_ID)).sum()) for ids in token_ids], dtype=np.int64)


def note_status(n_known: int) -> str:
    if n_known == 0:
        return NOTHING_RECOGNISABLE
    return NEAR_EMPTY if n_known < NEAR_EMPTY_TOKENS else OK


def code_priors(train_counts: Sequence[int], n_train_docs: int) -> np.ndarray:
    """Each code's training frequency (share of training notes carrying it), float32; 0 when unknown."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if n_train_docs <= 0:
        return np.zeros(len(counts), np.float32)
    return np.clip(counts / n_train_docs, 0.0, 1.0).astype(np.float32)


def respect_the_note(
    probs: np.ndarray, n_known: np.ndarray, priors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities with near-empty and unreadable rows capped at the priors, has_output [N] bool)."""
    n_known = np.asarray(n_known)
    short = n_known < NEAR_EMPTY_TOKENS
    if short.any():
        probs = probs.copy()
        probs[short] = np.minimum(probs[short], priors[None, :])
    return probs, n_known > 0
