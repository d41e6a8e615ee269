"""Training the hybrid coder (models/hybrid.py): sources, cross-fitting, re-ranker, one model directory.

Layer: after modeldir.py (it trains source models with the pipeline and loads them back as model
directories), before inference/ and cli/. `icdcoder train` calls `run_hybrid` for `model.name: hybrid`.

    1. Full source models: each source is trained on train (model selection, calibration and threshold on
       dev) with its own config and the hybrid's data section, or reused from a model directory.
    2. Cross-fitting: the training notes are cut into k folds; for every fold and every source that learns
       from training labels, a fold model is trained on the other k-1 folds and scores only the held-out
       fold. The re-ranker's training rows are these out-of-fold scores: it never sees a model scoring a
       note that model was trained on. (Reused model directories cannot be cross-fitted and are refused
       unless the source says `crossfit: false`, i.e. it learns nothing from training labels.) The code
       frequencies of the held-out notes' features are counted on the other folds too.
    3. Dev: the full models score dev; each re-ranker setting of `ranker_grid` is trained on the out-of-fold
       rows and the best dev MAP (organisers' definition) is kept. Calibration and the decision threshold are
       then fitted on dev, as for every other model.
    4. Saved: the hybrid's model directory with `sources/<name>/` inside; test is read once at the end.

Run directory: sources/<name>/ (full source runs), folds/<f>/<name>/ (fold runs), folds/<f>/data/ (the
fold's prepared dataset), model/ (the hybrid), hybrid_report.json (candidate recall per source and for the
union, per-source and hybrid MAP, the weighted-sum ablation, feature importance), run.json.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from icdcoder.data.document import Document
from icdcoder.data.prepared import write_prepared
from icdcoder.errors import ConfigError
from icdcoder.evaluation.calibration import METRIC_KEYS as CALIBRATION_KEYS
from icdcoder.evaluation.calibration import calibration_metrics, fit_calibrator
from icdcoder.io import atomic_write, read_json, write_json
from icdcoder.modeldir import LoadedModel, load_model_dir, save_model_dir, source_model
from icdcoder.models.base import ModelContext, build_model
from icdcoder.models.hybrid import LOGIT_FLOOR, HybridCoder, HybridConfig, HybridSourceSpec, SourceModel
from icdcoder.reranking.candidates import (
    SourceRanking,
    candidate_recall,
    ranked_map,
    truncate,
    union_candidates,
)
from icdcoder.reranking.features import CodeTable, FeatureSpec, note_features
from icdcoder.reranking.ranker import RankerParams, Reranker, weighted_sum
from icdcoder.text.tokenizer import Tokenizer
from icdcoder.text.vocab import SPECIALS, Vocab
from icdcoder.training.config import ExperimentConfig, apply_overrides, parse_config
from icdcoder.training.data import encode_split, target_matrix
from icdcoder.training.evaluate import evaluate_probs, tune_thresholds, write_predictions
from icdcoder.training.labels import LabelSpace
from icdcoder.training.pipeline import open_dataset, run_experiment
from icdcoder.training.trainer import set_seed

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_KEYS = ("source", "path", "task", "lang", "codiesp_path")  # the dataset identity sources inherit
SCORE_BATCH = 16


def kfold_assignment(doc_ids: Sequence[str], k: int, seed: int) -> dict[str, int]:
    """Fold (0..k-1) of every document: a seeded permutation dealt round-robin (sizes differ by ≤ 1)."""
    if k > len(doc_ids):
        raise ConfigError(f"{k} folds for {len(doc_ids)} training notes.", fix="lower model.folds.")
    perm = np.random.default_rng(seed).permutation(len(doc_ids))
    return {doc_ids[int(j)]: i % k for i, j in enumerate(perm)}


def _resolve(path: str) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def source_config(spec: HybridSourceSpec, hybrid: ExperimentConfig, data: dict[str, Any]) -> ExperimentConfig:
    """The source's experiment config with the hybrid's dataset (or a fold's `data` identity) and seed."""
    assert spec.config is not None
    path = _resolve(spec.config)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(
            f"source {spec.name!r}: config not found.", path=path, fix="name an existing configs/... file."
        ) from None
    raw.setdefault("data", {})
    for key in DATA_KEYS:
        raw["data"].pop(key, None)
    raw["data"].update(data)
    raw["dataset_name"] = hybrid.dataset_name
    raw.setdefault("train", {})["seed"] = hybrid.train.seed
    if hybrid.train.num_threads:
        raw["train"]["num_threads"] = hybrid.train.num_threads
    raw["train"]["progress"] = False
    raw = apply_overrides(raw, list(spec.set))
    return parse_config(raw, source=f"{path} (source {spec.name} of the hybrid)")


def rank_docs(
    src: SourceModel, docs: Sequence[Document], model_dir: Path | None = None, cache: Path | None = None
) -> list[SourceRanking]:
    """A source's rankings of `docs`; with `cache`, kept in a file keyed by the source's model directory
    (its metadata.json, which pins every file's checksum), the note ids and top-k, so rerunning the hybrid
    (e.g. after a re-ranker change) does not score the notes again."""
    path = None
    if cache is not None and model_dir is not None:
        h = hashlib.sha256((model_dir / "metadata.json").read_bytes())
        h.update(f"{src.top_k}\n{chr(10).join(d.id for d in docs)}".encode())
        path = cache / f"{src.name}-{h.hexdigest()[:20]}.json.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                rows = json.load(fh)
            return [
                SourceRanking(
                    r["scores"], r["features"], {k: [tuple(x) for x in v] for k, v in r["spans"].items()}
                )
                for r in rows
            ]
    out: list[SourceRanking] = []
    for i in range(0, len(docs), SCORE_BATCH):
        part = docs[i : i + SCORE_BATCH]
        out += src.rank([d.text for d in part], [d.id for d in part])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"scores": r.scores, "features": r.features, "spans": r.spans} for r in out]
        with atomic_write(path, "wb", encoding=None) as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
            json.dump(rows, fh)
    return out


def _code_table(docs: Sequence[Document], titles: dict[str, str]) -> CodeTable:
    counts = Counter(k for d in docs for k in set(d.codes))
    return CodeTable(dict(sorted(counts.items())), titles)


FoldScorer = Callable[[int, list[Document], list[Document]], list[SourceRanking]]


def cross_fit(
    train: Sequence[Document], folds: dict[str, int], k: int, fit_and_score: FoldScorer
) -> list[SourceRanking]:
    """Out-of-fold rankings of the training notes: for each fold f, `fit_and_score(f, fit_docs, held_docs)`
    trains on the notes outside f and ranks only the notes of f. Every note is scored exactly once, by a
    model that did not see it (checked here, not assumed)."""
    out: list[SourceRanking | None] = [None] * len(train)
    for f in range(k):
        fit_docs = [d for d in train if folds[d.id] != f]
        held = [i for i, d in enumerate(train) if folds[d.id] == f]
        ranked = fit_and_score(f, fit_docs, [train[i] for i in held])
        if len(ranked) != len(held):
            raise RuntimeError(f"fold {f}: {len(ranked)} rankings for {len(held)} held-out notes")
        for i, r in zip(held, ranked, strict=True):
            out[i] = r
    missing = [train[i].id for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"training notes without an out-of-fold score: {missing[:5]}")
    return [r for r in out if r is not None]


def write_fold_dataset(
    out: Path, fit_docs: list[Document], held: list[Document], dev: list[Document]
) -> None:
    """One fold's prepared dataset: fit notes as train, the real dev as dev, held-out notes as test."""

    def docs() -> Any:
        for split, part in (("train", fit_docs), ("test", held), ("dev", dev)):
            for d in part:
                yield Document(d.id, d.text, d.codes, split, d.meta, d.evidence)

    if not (out / "stats.json").exists():
        write_prepared(out, docs(), source="hybrid-fold", overwrite=True)


def _ranked(cands: list[str], scores: np.ndarray) -> list[str]:
    order = np.argsort(-scores, kind="stable")
    return [cands[i] for i in order]


def _tune_weights(
    x: np.ndarray,
    names: list[str],
    sources: list[str],
    cands: list[list[str]],
    groups: np.ndarray,
    gold: list[list[str]],
) -> tuple[dict[str, float], float]:
    """Weighted-sum ablation: per-source weights by coordinate ascent on dev MAP over a small grid."""
    grid = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    weights = {s: 1.0 for s in sources}
    splits = np.cumsum(groups)[:-1]

    def dev_map(w: dict[str, float]) -> float:
        parts = np.split(weighted_sum(x, names, w), splits)
        return ranked_map([_ranked(c, p) for c, p in zip(cands, parts, strict=True)], gold)

    best = dev_map(weights)
    for _ in range(2):
        for s in sources:
            for v in grid:
                trial = {**weights, s: v}
                if any(trial.values()):
                    m = dev_map(trial)
                    if m > best + 1e-9:
                        best, weights = m, trial
    return weights, best


def _f1_at(cands: list[list[str]], scores: list[np.ndarray], gold: list[list[str]], thr: float) -> float:
    tp = fp = fn = 0
    for c, s, g in zip(cands, scores, gold, strict=True):
        pred = {code for code, v in zip(c, s, strict=True) if v >= thr}
        gs = set(g)
        tp, fp, fn = tp + len(pred & gs), fp + len(pred - gs), fn + len(gs - pred)
    return 2 * tp / max(1, 2 * tp + fp + fn)


def _best_threshold(cands: list[list[str]], scores: list[np.ndarray], gold: list[list[str]]) -> float:
    values = np.unique(np.concatenate(scores)) if scores else np.zeros(1)
    qs = np.unique(np.quantile(values, np.linspace(0.5, 1.0, 101)))
    return float(max(qs, key=lambda t: _f1_at(cands, scores, gold, float(t))))


def run_hybrid(cfg: ExperimentConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train the hybrid coder of `cfg` into `run_dir` (see the module docstring); returns the run summary."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    hcfg = HybridConfig.model_validate(cfg.model)
    if cfg.train.num_threads:
        import torch

        torch.set_num_threads(cfg.train.num_threads)
    set_seed(cfg.train.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(cfg.data)
    docs = {s: dataset.load(s) for s in ("train", "dev", "test") if s in dataset.splits}
    train, dev = docs["train"], docs["dev"]
    data_identity = {k: v for k, v in cfg.data.model_dump().items() if k in DATA_KEYS and v is not None}
    if cfg.data.source == "codiesp":
        data_identity = {"source": "prepared", "path": str(dataset.path)}

    stages: dict[str, float] = {}  # wall seconds per stage, for the report

    def lap(name: str) -> None:
        stages[name] = round(time.perf_counter() - t0 - sum(stages.values()), 1)

    # 1. full source models
    full: dict[str, LoadedModel] = {}
    for spec in hcfg.sources:
        if spec.model_dir is not None:
            if spec.crossfit:
                raise ConfigError(
                    f"source {spec.name!r} reuses {spec.model_dir}, which cannot be cross-fitted.",
                    fix="give it a config to train (with folds), or set crossfit: false if it never reads "
                    "training labels.",
                )
            full[spec.name] = load_model_dir(_resolve(spec.model_dir))
            continue
        if spec.config is None:
            raise ConfigError(f"source {spec.name!r} needs a config or a model_dir.")
        sub = run_dir / "sources" / spec.name
        if not (sub / "model" / "metadata.json").exists():
            run_experiment(source_config(spec, cfg, data_identity), sub)
        full[spec.name] = load_model_dir(sub / "model")
    srcs = {s.name: source_model(full[s.name], s.name, s.top_k) for s in hcfg.sources}
    cache = run_dir / "rankings"  # the sources' rankings of every note, reused by a rerun

    lap("sources")
    # 2. cross-fitting: out-of-fold rankings of the training notes
    folds = kfold_assignment([d.id for d in train], hcfg.folds, cfg.train.seed)
    titles = {k: t for lm in full.values() for k, t in zip(lm.labels.keys, lm.labels.titles, strict=True)}
    fold_codes = [_code_table([d for d in train if folds[d.id] != f], titles) for f in range(hcfg.folds)]
    oof: dict[str, list[SourceRanking]] = {}
    for spec in hcfg.sources:
        if not spec.crossfit:  # learns nothing from training labels: its scores of train notes are OOF
            oof[spec.name] = rank_docs(srcs[spec.name], train, full[spec.name].path, cache)
            continue

        def fit_and_score(
            f: int, fit_docs: list[Document], held: list[Document], spec: HybridSourceSpec = spec
        ) -> list[SourceRanking]:
            fdir = run_dir / "folds" / str(f)
            write_fold_dataset(fdir / "data", fit_docs, held, dev)
            sub = fdir / spec.name
            if not (sub / "model" / "metadata.json").exists():
                fcfg = source_config(spec, cfg, {"source": "prepared", "path": str(fdir / "data")})
                no_test = fcfg.eval.model_copy(update={"test": False})
                run_experiment(fcfg.model_copy(update={"eval": no_test}), sub)
            fold_src = source_model(load_model_dir(sub / "model"), spec.name, spec.top_k)
            return rank_docs(fold_src, held, sub / "model", cache)

        oof[spec.name] = cross_fit(train, folds, hcfg.folds, fit_and_score)
    train_rank = [{n: oof[n][i] for n in oof} for i in range(len(train))]

    lap("cross_fitting")
    # 3. the hybrid's label space: the union of the sources' label spaces
    keys: list[str] = list(dict.fromkeys(k for lm in full.values() for k in lm.labels.keys))
    counts = _code_table(train, titles)
    labels = LabelSpace(
        keys, [titles.get(k, "") for k in keys], [counts.train_counts.get(k, 0) for k in keys]
    )
    evidence = next((s.name for s in hcfg.sources if full[s.name].model.has_evidence_rows()), None)
    ev_lm = full[evidence] if evidence is not None else None
    vocab = ev_lm.vocab if ev_lm is not None else Vocab(list(SPECIALS))
    tokenizer = ev_lm.tokenizer if ev_lm is not None else Tokenizer()
    ctx = ModelContext(
        label_keys=keys, vocab_size=len(vocab), pad_id=vocab.pad_id, extras={"evidence_source": evidence}
    )
    ctx.sources = srcs
    set_seed(cfg.train.seed)
    model = build_model(cfg.model, ctx)
    assert isinstance(model, HybridCoder)
    spec_names = [s.name for s in hcfg.sources]
    fspec = FeatureSpec.from_data(spec_names, train_rank)

    def rows(
        split_docs: list[Document], rankings: list[dict[str, SourceRanking]], tables: list[CodeTable]
    ) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
        """Candidates, feature rows and group sizes; `tables`: the code frequencies each note may know."""
        cands, blocks = [], []
        for d, per, table in zip(split_docs, rankings, tables, strict=True):
            model.codes = table  # the fallback prior too comes from the notes' own training folds
            c = model.candidates(per)
            cands.append(c)
            blocks.append(note_features(fspec, c, per, table, len(d.text)))
        model.codes = counts
        return cands, np.concatenate(blocks), np.asarray([len(c) for c in cands])

    tr_cands, tr_x, tr_groups = rows(train, train_rank, [fold_codes[folds[d.id]] for d in train])
    tr_y = np.asarray([float(c in set(d.codes)) for d, cs in zip(train, tr_cands, strict=True) for c in cs])
    dev_rank = [
        {n: r for n, r in zip(spec_names, per, strict=True)}
        for per in zip(*(rank_docs(srcs[n], dev, full[n].path, cache) for n in spec_names), strict=True)
    ]
    dv_cands, dv_x, dv_groups = rows(dev, dev_rank, [counts] * len(dev))
    dev_gold = [d.codes for d in dev]
    splits = np.cumsum(dv_groups)[:-1]

    lap("features")
    # re-ranker hyperparameters on dev
    trials = []
    best: tuple[float, Reranker, RankerParams] | None = None
    for i, overrides in enumerate(hcfg.ranker_grid):
        params = RankerParams.model_validate({**overrides, "seed": cfg.train.seed})
        ranker = Reranker.fit(
            tr_x, tr_y, tr_groups, fspec.names, fspec.categorical, params, hcfg.ranker_threads
        )
        parts = np.split(ranker.score(dv_x), splits)
        m = ranked_map([_ranked(c, p) for c, p in zip(dv_cands, parts, strict=True)], dev_gold)
        trials.append({"params": params.model_dump(), "dev_map": m})
        log.info("ranker setting %d: dev MAP %.4f", i, m)
        if best is None or m > best[0] + 1e-12:
            best = (m, ranker, params)
    assert best is not None
    model.set_ranker(fspec, counts, best[1], best[2])

    lap("ranker_on_dev")

    # calibration and threshold on dev, through the model's own dense output
    def dense(cands: list[list[str]], parts: list[np.ndarray]) -> np.ndarray:
        idx = {k: i for i, k in enumerate(keys)}
        z = np.full((len(cands), len(keys)), LOGIT_FLOOR, dtype=np.float64)
        for r, (c, p) in enumerate(zip(cands, parts, strict=True)):
            z[r, [idx[k] for k in c]] = np.maximum(p, LOGIT_FLOOR + 5.0)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    dv_parts = np.split(best[1].score(dv_x), splits)
    dev_split = encode_split(dev, [[] for _ in dev], labels, cfg.data.max_tokens)
    raw_dev = dense(dv_cands, dv_parts)
    dev_targets = target_matrix(dev_split, len(labels))
    calibrator = fit_calibrator(raw_dev, dev_targets, cfg.eval.calibration, seed=cfg.train.seed)
    dev_probs = calibrator.apply(raw_dev)
    with_unseen = cfg.eval.include_unseen_codes
    thresholds = tune_thresholds(dev_probs, dev_split, labels, kind=cfg.eval.thresholds)
    dev_metrics = evaluate_probs(dev_probs, dev_split, labels, thresholds, include_unseen=with_unseen)
    dev_metrics["map_official"] = ranked_map(
        [_ranked(c, p) for c, p in zip(dv_cands, dv_parts, strict=True)], dev_gold
    )

    report: dict[str, Any] = {"ranker_trials": trials, "chosen": best[2].model_dump(), "folds": hcfg.folds}
    save_model_dir(
        run_dir / "model",
        config=cfg,
        labels=labels,
        vocab=vocab,
        tokenizer=tokenizer,
        model=model,
        ctx=ctx,
        thresholds=thresholds.to_dict(),
        calibration=calibrator,
        overwrite=True,
        sources={n: full[n].path for n in spec_names},
        metadata={
            "data_fingerprint": dataset.fingerprint,
            "dataset": cfg.dataset_name,
            "seed": cfg.train.seed,
            "best_epoch": 0,
            "dev_metrics": dev_metrics,
        },
    )
    summary: dict[str, Any] = {
        "dataset": cfg.dataset_name,
        "model": "hybrid",
        "seed": cfg.train.seed,
        "best_epoch": 0,
        "epochs_run": 0,
        "steps": 0,
        "n_labels": len(labels),
        "data_fingerprint": dataset.fingerprint,
        "dev": dev_metrics,
        "calibration": {
            **calibrator.to_dict(),
            "dev_before": calibration_metrics(raw_dev, dev_targets),
            "dev_after": {k: dev_metrics[k] for k in CALIBRATION_KEYS},
        },
    }
    write_json(run_dir / "dev_metrics.json", dev_metrics)

    # candidate recall and per-source quality, dev and (once) test
    eval_splits = {"dev": (dev, dev_rank, dv_cands, dv_parts)}
    if cfg.eval.test and "test" in docs:
        test = docs["test"]
        te_rank = [
            {n: r for n, r in zip(spec_names, per, strict=True)}
            for per in zip(*(rank_docs(srcs[n], test, full[n].path, cache) for n in spec_names), strict=True)
        ]
        te_cands, te_x, te_groups = rows(test, te_rank, [counts] * len(test))
        te_parts = np.split(best[1].score(te_x), np.cumsum(te_groups)[:-1])
        test_split = encode_split(test, [[] for _ in test], labels, cfg.data.max_tokens)
        test_probs = calibrator.apply(dense(te_cands, te_parts))
        test_metrics = evaluate_probs(test_probs, test_split, labels, thresholds, include_unseen=with_unseen)
        test_metrics["map_official"] = ranked_map(
            [_ranked(c, p) for c, p in zip(te_cands, te_parts, strict=True)], [d.codes for d in test]
        )
        write_json(run_dir / "test_metrics.json", test_metrics)
        write_predictions(run_dir / "predictions_test.parquet", test_probs, test_split, labels)
        summary["test"] = test_metrics
        eval_splits["test"] = (test, te_rank, te_cands, te_parts)
        # weighted-sum ablation: weights and threshold on dev, read on test
        weights, wdev = _tune_weights(dv_x, fspec.names, spec_names, dv_cands, dv_groups, dev_gold)
        w_dev_parts = np.split(weighted_sum(dv_x, fspec.names, weights), splits)
        w_thr = _best_threshold(dv_cands, w_dev_parts, dev_gold)
        w_te = np.split(weighted_sum(te_x, fspec.names, weights), np.cumsum(te_groups)[:-1])
        test_gold = [d.codes for d in test]
        report["weighted_sum"] = {
            "weights": weights,
            "dev_map": wdev,
            "test_map": ranked_map([_ranked(c, p) for c, p in zip(te_cands, w_te, strict=True)], test_gold),
            "test_f1_micro": _f1_at(te_cands, w_te, test_gold, w_thr),
            "threshold": w_thr,
        }
    train_counts = counts.train_counts
    for split, (sdocs, srank, scands, sparts) in eval_splits.items():
        gold = [d.codes for d in sdocs]
        per_source: dict[str, Any] = {}
        for n in spec_names:
            lists = [per[n] for per in srank]
            per_source[n] = {
                "map_top_k": ranked_map([list(r.ranks()) for r in lists], gold),
                "recall": candidate_recall([list(r.scores) for r in lists], gold, train_counts).as_dict(),
            }
        recall_at = {}
        for k in (10, 25, 50, 100, 200):
            cands_k = [
                union_candidates({n: truncate(per[n], k) for n in spec_names}, hcfg.max_candidates)
                for per in srank
            ]
            recall_at[str(k)] = candidate_recall(cands_k, gold, train_counts).as_dict()
        report[split] = {
            "sources": per_source,
            "union": candidate_recall(scands, gold, train_counts).as_dict(),
            "union_by_source_k": recall_at,
            "hybrid_map_official": ranked_map(
                [_ranked(c, p) for c, p in zip(scands, sparts, strict=True)], gold
            ),
        }
    gains = sorted(best[1].importance().items(), key=lambda kv: -kv[1])
    report["feature_gain"] = [[name, round(g, 3)] for name, g in gains]  # a list: JSON keeps its order
    # each source alone at its own dev-tuned threshold (its run's dev/test metrics)
    report["source_runs"] = {}
    for n in spec_names:
        run_json = run_dir / "sources" / n / "run.json"
        if run_json.is_file():
            r = read_json(run_json)
            report["source_runs"][n] = {k: r.get(k) for k in ("dev", "test")}
    write_json(run_dir / "hybrid_report.json", report)
    lap("save_and_test")
    report["seconds"] = stages
    write_json(run_dir / "hybrid_report.json", report)
    summary["train_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(run_dir / "run.json", summary)
    return summary


def train_any(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """What `icdcoder train` and the demo run: the hybrid's own training for `model.name: hybrid` (its
    source runs are resumable by being skipped when done), the pipeline for every other model."""
    if cfg.model.get("name") == "hybrid":
        return run_hybrid(cfg, run_dir)
    return run_experiment(cfg, run_dir, resume=resume)
