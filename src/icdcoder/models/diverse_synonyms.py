"""Maximum-diversity synonym selection (MSAM's MDP; Gomes et al., EACL 2024, SEED_NOTES §4.4).

For each code, choose M of its candidate synonyms so that the chosen set is as spread out as possible in an
embedding space: maximise Σ_{i<j ∈ S} d_ij with d_ij = 1 − cos(e_i, e_j), |S| = M (the maximum diversity
problem). The authors solved it with Gurobi (time limit 10,000 s); here:

- `solve_exact`: a MILP with `scipy.optimize.milp` (HiGHS) under a time limit. Variables x_i (chosen) and
  y_ij (both chosen, i < j); maximise Σ d_ij y_ij subject to Σ x_i = M, y_ij ≤ x_i, y_ij ≤ x_j and the
  tightening Σ_{j≠i} y_ij = (M − 1) x_i (when i is chosen it pairs with exactly M − 1 others), which makes
  the LP bound far tighter than the plain linearisation. When the time limit stops HiGHS before it proves
  optimality, the best solution found is kept and marked `optimal=False`.
- `solve_greedy_swap`: the farthest pair, then repeatedly the candidate farthest (in summed distance) from
  the chosen set, then best-improvement 1-swaps until none improves: for candidate sets too large for the
  exact solver (the authors capped candidates at 200).
- `solve_brute_force`: every M-subset (tests only: the exact solver must match it).

`select_diverse` picks the solver by size and records which ran, the objective, whether it is proven optimal
and the time, per code; `diverse_label_synonyms` applies it to the label space's candidate lists
(`ontology.label_synonyms`, the same cleaning, filtering and de-duplication as MSMN's lists) given an
embedding function, and caches the result as JSON keyed by everything it depends on (candidates, embedder,
M, solver settings), with that provenance inside. Random selection (the seed's baseline) stays
`build_label_synonyms(selection="random")`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icdcoder.errors import DataError
from icdcoder.io import write_json
from icdcoder.ontology.label_synonyms import (
    ABSENT,
    REPEAT_PREFIX,
    LabelSynonyms,
    SynonymReport,
    build_label_synonyms,
)

log = logging.getLogger(__name__)

EXACT_MAX_CANDIDATES = 30  # above this many candidates `select_diverse` runs the heuristic (n=40, M=8: >20 s)
DEFAULT_TIME_LIMIT = 10.0  # seconds per code for the MILP
MAX_CANDIDATES = 200  # the authors' cap on a code's candidate list
CACHE_VERSION = 2


@dataclass(frozen=True)
class Selection:
    """The chosen candidate indices (ascending) and how they were found."""

    indices: list[int]
    objective: float | None  # Σ_{i<j} d_ij over the chosen set; None when nothing was chosen
    solver: str  # "exact", "greedy_swap", "brute_force" or "all" (no more candidates than M)
    optimal: bool  # proven optimal (exact solver finished, brute force, or nothing to choose)
    seconds: float


def cosine_distances(emb: np.ndarray) -> np.ndarray:
    """d_ij = 1 − cos(e_i, e_j) for embeddings [n, dim]; zero vectors are at distance 1 from everything
    else (cosine 0), and the diagonal is 0."""
    e = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    unit = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    d = 1.0 - unit @ unit.T
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, 2.0)


def objective(dist: np.ndarray, indices: Sequence[int]) -> float:
    idx = np.asarray(indices, dtype=np.int64)
    return float(dist[np.ix_(idx, idx)].sum() / 2.0)


def _check(dist: np.ndarray, m: int) -> int:
    n = dist.shape[0]
    if dist.ndim != 2 or dist.shape[1] != n:
        raise ValueError(f"distance matrix must be square, got {dist.shape}")
    if not 1 <= m <= n:
        raise ValueError(f"cannot choose {m} of {n} candidates")
    return n


def solve_brute_force(dist: np.ndarray, m: int) -> Selection:
    """Every M-subset (small n only)."""
    start = time.perf_counter()
    n = _check(dist, m)
    best, best_val = list(range(m)), -1.0
    for combo in itertools.combinations(range(n), m):
        val = objective(dist, combo)
        if val > best_val + 1e-12:
            best, best_val = list(combo), val
    return Selection(best, best_val, "brute_force", True, time.perf_counter() - start)


def solve_greedy_swap(dist: np.ndarray, m: int, max_rounds: int = 1000) -> Selection:
    """Farthest pair, greedy farthest-to-set additions, then best-improvement single swaps."""
    start = time.perf_counter()
    n = _check(dist, m)
    if m == 1:
        return Selection([0], 0.0, "greedy_swap", True, time.perf_counter() - start)
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    chosen = [int(i), int(j)]
    in_set = np.zeros(n, dtype=bool)
    in_set[chosen] = True
    while len(chosen) < m:
        gain = dist[:, in_set].sum(1)
        gain[in_set] = -np.inf
        k = int(np.argmax(gain))
        chosen.append(k)
        in_set[k] = True
    # 1-swap local search: replacing chosen a by outside b changes the objective by
    # Σ_{s∈S\{a}} d_bs − Σ_{s∈S\{a}} d_as = (D_S[b] − d_ab) − D_S[a].
    for _ in range(max_rounds):
        to_set = dist[:, in_set].sum(1)  # D_S[v] = Σ_{s∈S} d_vs
        out = np.flatnonzero(~in_set)
        ins = np.flatnonzero(in_set)
        if not out.size:
            break
        delta = (to_set[out][None, :] - dist[np.ix_(ins, out)]) - to_set[ins][:, None]
        a, b = np.unravel_index(int(np.argmax(delta)), delta.shape)
        if delta[a, b] <= 1e-12:
            break
        in_set[ins[a]], in_set[out[b]] = False, True
    idx = sorted(int(v) for v in np.flatnonzero(in_set))
    return Selection(idx, objective(dist, idx), "greedy_swap", False, time.perf_counter() - start)


def solve_exact(dist: np.ndarray, m: int, time_limit: float = DEFAULT_TIME_LIMIT) -> Selection:
    """The MILP of the module docstring (HiGHS via scipy). Falls back to the greedy-swap solution when the
    time limit leaves HiGHS without a feasible point (then `solver` says so)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    start = time.perf_counter()
    n = _check(dist, m)
    if m == 1 or m == n:
        idx = list(range(m))
        return Selection(idx, objective(dist, idx), "exact", True, time.perf_counter() - start)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    p = len(pairs)
    c = np.concatenate([np.zeros(n), -np.array([dist[i, j] for i, j in pairs])])  # milp minimises
    rows = 1 + 2 * p + n
    a = lil_matrix((rows, n + p))
    lo, hi = np.zeros(rows), np.zeros(rows)
    a[0, :n] = 1.0
    lo[0] = hi[0] = m
    for k, (i, j) in enumerate(pairs):
        for r, x in ((1 + 2 * k, i), (2 + 2 * k, j)):  # y_ij − x ≤ 0
            a[r, n + k] = 1.0
            a[r, x] = -1.0
            lo[r], hi[r] = -np.inf, 0.0
    base = 1 + 2 * p
    for k, (i, j) in enumerate(pairs):  # Σ_j y_ij − (M − 1) x_i = 0
        a[base + i, n + k] = 1.0
        a[base + j, n + k] = 1.0
    for i in range(n):
        a[base + i, i] = -(m - 1)
    integrality = np.concatenate([np.ones(n), np.zeros(p)])  # y is integral once x is
    res = milp(
        c,
        constraints=LinearConstraint(a.tocsr(), lo, hi),
        integrality=integrality,
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": float(time_limit), "disp": False},
    )
    if res.x is None:
        greedy = solve_greedy_swap(dist, m)
        took = time.perf_counter() - start
        return Selection(greedy.indices, greedy.objective, "greedy_swap(exact timed out)", False, took)
    idx = sorted(int(i) for i in np.flatnonzero(res.x[:n] > 0.5))
    return Selection(idx, objective(dist, idx), "exact", res.status == 0, time.perf_counter() - start)


def select_diverse(
    emb: np.ndarray,
    m: int,
    *,
    method: str = "auto",
    exact_max: int = EXACT_MAX_CANDIDATES,
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> Selection:
    """Choose min(m, n) of n embedded candidates. `method`: "auto" (exact up to `exact_max` candidates, the
    heuristic above), "exact" or "greedy_swap"."""
    if method not in ("auto", "exact", "greedy_swap"):
        raise ValueError(f"unknown MDP method {method!r}; use auto, exact or greedy_swap.")
    dist = cosine_distances(emb)
    n = dist.shape[0]
    if n <= m:
        idx = list(range(n))
        return Selection(idx, objective(dist, idx), "all", True, 0.0)
    if method == "greedy_swap" or (method == "auto" and n > exact_max):
        return solve_greedy_swap(dist, m)
    return solve_exact(dist, m, time_limit)


# -- label space ---------------------------------------------------------------------------------------------
Embedder = Callable[[list[str]], np.ndarray]


def _cache_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def diverse_label_synonyms(
    label_keys: Sequence[str],
    m: int,
    embed: Embedder,
    *,
    embedder_id: str,
    titles: Sequence[str] | None = None,
    user_file: str | Path | None = None,
    policy: str = "repeat",
    method: str = "auto",
    exact_max: int = EXACT_MAX_CANDIDATES,
    time_limit: float = DEFAULT_TIME_LIMIT,
    max_candidates: int = MAX_CANDIDATES,
    cache_dir: str | Path | None = None,
) -> tuple[LabelSynonyms, dict[str, Any]]:
    """M maximally diverse synonyms per code, and the selection record (per code: solver, objective,
    optimal, seconds, number of candidates; plus the provenance). `embedder_id` names the embedding (model
    folder, or a fingerprint of the word vectors): it is part of the cache key. Codes with at most M
    distinct candidates take them all and fill the rest by `policy` (as `build_label_synonyms`)."""
    if policy not in ("repeat", "drop", "fail"):
        raise ValueError(f"unknown policy {policy!r}")
    keys = list(label_keys)
    # The same candidate lists as MSMN's (cleaned, filtered, de-duplicated), in ontology rank order, capped.
    # Its report counts every code as "short" of max_candidates: not a problem here, so not a warning.
    quiet = logging.getLogger("icdcoder.ontology.label_synonyms")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        pool = build_label_synonyms(
            keys, max_candidates, titles=titles, user_file=user_file, policy="drop", selection="ranked"
        )
    finally:
        quiet.setLevel(level)
    candidates = [[t for t in row if t is not None] for row in pool.texts]
    cand_sources = [[s for s in row if s != ABSENT] for row in pool.sources]
    provenance = {
        "version": CACHE_VERSION,
        "embedder": embedder_id,
        "m": m,
        "method": method,
        "exact_max": exact_max,
        "time_limit": time_limit,
        "max_candidates": max_candidates,
        "candidates_sha256": hashlib.sha256(json.dumps([keys, candidates]).encode()).hexdigest(),
    }
    cache_file = None if cache_dir is None else Path(cache_dir) / f"mdp-{_cache_key(provenance)}.json"
    record: dict[str, Any] | None = None
    if cache_file is not None and cache_file.is_file():
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if cached.get("provenance") == provenance:
            record = cached
            log.info("MDP synonyms read from %s", cache_file)
    if record is None:
        record = {"provenance": provenance, "codes": {}}
        flat = sorted({t for row in candidates if len(row) > m for t in row})
        vectors = dict(zip(flat, np.asarray(embed(flat), dtype=np.float64), strict=True)) if flat else {}
        for key, row in zip(keys, candidates, strict=True):
            # A candidate the embedding cannot see (all words unknown: a zero vector) would be at distance 1
            # from everything, i.e. "diverse" by ignorance: the choice runs over the embedded candidates, and
            # unembedded ones only fill what is left, in rank order.
            if len(row) <= m:
                sel = Selection(list(range(len(row))), None, "all", True, 0.0)
                record["codes"][key] = {**asdict(sel), "n_candidates": len(row), "n_unembedded": 0}
                continue
            seen = [i for i, t in enumerate(row) if np.any(vectors[t])]
            unseen = [i for i in range(len(row)) if i not in set(seen)]
            if len(seen) > m:
                sub = select_diverse(
                    np.stack([vectors[row[i]] for i in seen]),
                    m,
                    method=method,
                    exact_max=exact_max,
                    time_limit=time_limit,
                )
                sel = Selection(
                    sorted(seen[i] for i in sub.indices), sub.objective, sub.solver, sub.optimal, sub.seconds
                )
            else:  # too few embedded candidates to choose from: all of them, then the rest in rank order
                sel = Selection(sorted(seen + unseen[: m - len(seen)]), None, "all_embedded", True, 0.0)
            record["codes"][key] = {**asdict(sel), "n_candidates": len(row), "n_unembedded": len(unseen)}
        if cache_file is not None:
            write_json(cache_file, record)
    texts: list[list[str | None]] = []
    sources: list[list[str]] = []
    report = SynonymReport(
        source=pool.report.source + " (MDP)", m=m, policy=policy, selection="mdp", n_codes=len(keys)
    )
    for key, row, srcs in zip(keys, candidates, cand_sources, strict=True):
        idx = record["codes"][key]["indices"]
        t_row: list[str | None] = [row[i] for i in idx]
        s_row = [srcs[i] for i in idx]
        if len(idx) < m:
            report.short_codes += 1
            if policy == "fail":
                raise DataError(
                    f"{key} has {len(idx)} distinct synonym(s), fewer than M={m}.",
                    fix="lower the number of synonyms M, or choose the repeat or drop policy.",
                )
        for j in range(m - len(idx)):
            if policy == "drop":
                t_row.append(None)
                s_row.append(ABSENT)
                report.absent_slots += 1
            else:
                t_row.append(row[idx[j % len(idx)]])
                s_row.append(REPEAT_PREFIX + srcs[idx[j % len(idx)]])
                report.repeated_slots += 1
        texts.append(t_row)
        sources.append(s_row)
    return LabelSynonyms(keys=keys, m=m, texts=texts, sources=sources, report=report), record


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """Counts per solver, how many were proven optimal, and total solver time (for logs and docs)."""
    codes = record.get("codes", {})
    by_solver: dict[str, int] = {}
    for v in codes.values():
        by_solver[v["solver"]] = by_solver.get(v["solver"], 0) + 1
    return {
        "codes": len(codes),
        "by_solver": by_solver,
        "optimal": sum(1 for v in codes.values() if v["optimal"]),
        "seconds": round(sum(v["seconds"] for v in codes.values()), 3),
    }
