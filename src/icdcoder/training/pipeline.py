"""One experiment end to end: data → tokens → vocabulary → labels → embeddings → model → trainer →
dev-fitted calibration → dev-tuned thresholds → model directory → (once) test evaluation. Used by
`icdcoder train` and the demo.

Run directory:
    model/                 the model directory (inference needs nothing else)
    checkpoint/            the last resume checkpoint
    metrics.jsonl          per-step training and per-epoch dev records
    config.yaml            the resolved config
    dev_metrics.json       dev metrics of the selected model at the tuned thresholds
    test_metrics.json      test metrics (read once, after selection), when eval.test is on
    predictions_test.parquet  every test document's (calibrated) probability for every code
    run.json               summary: dataset, model, seed, best epoch, timings, metrics
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icdcoder.data.document import Document
from icdcoder.data.prepared import PreparedDataset
from icdcoder.errors import ConfigError, DataError
from icdcoder.evaluation.calibration import METRIC_KEYS as CALIBRATION_KEYS
from icdcoder.evaluation.calibration import calibration_metrics, fit_calibrator
from icdcoder.evaluation.readable import code_priors
from icdcoder.io import cache_root, write_json
from icdcoder.models.base import (
    IcdModel,
    ModelContext,
    TrainingCorpus,
    build_model,
    get_model_class,
    validate_model_config,
)
from icdcoder.models.losses import mean_bce
from icdcoder.text.tokenizer import TextTokenizer, Tokenizer
from icdcoder.text.vocab import Vocab
from icdcoder.training.config import DataConfig, ExperimentConfig, dump_config
from icdcoder.training.data import EncodedSplit, encode_split, target_matrix
from icdcoder.training.evaluate import evaluate_probs, tune_thresholds, write_predictions
from icdcoder.training.labels import LabelSpace
from icdcoder.training.solver import fit_convex
from icdcoder.training.trainer import DistEnv, Trainer, TrainResult, predict_probs, set_seed

log = logging.getLogger(__name__)

MAX_LABEL_TEXT_TOKENS = 30  # code titles/synonyms are cut to 30 tokens (as MSMN did)


def open_dataset(cfg: DataConfig) -> PreparedDataset:
    """Open the prepared dataset a config names; CodiEsp is prepared once into the cache."""
    if cfg.source == "prepared":
        assert cfg.path is not None
        return PreparedDataset.open(cfg.path)
    from icdcoder.data.sources.codiesp import prepare_codiesp

    root = None if cfg.codiesp_path is None else Path(cfg.codiesp_path)
    tag = (
        "embedded"
        if root is None
        else __import__("hashlib").sha256(str(root.resolve()).encode()).hexdigest()[:8]
    )
    out = cache_root() / "datasets" / f"codiesp-{cfg.task}-{cfg.lang}-{tag}"
    if not (out / "stats.json").exists():
        prepare_codiesp(out, root=root, task=cfg.task, lang=cfg.lang, evidence=True, overwrite=True)
    return PreparedDataset.open(out)


@dataclass
class PreparedInputs:
    dataset: PreparedDataset
    tokenizer: TextTokenizer
    vocab: Vocab
    labels: LabelSpace
    splits: dict[str, EncodedSplit]
    ctx: ModelContext
    docs: dict[str, list[Document]]


def label_space_from(dataset: PreparedDataset, min_count: int, data: DataConfig | None = None) -> LabelSpace:
    """The codes a model predicts: those seen in train at least `min_count` times (`data.label_space:
    train`), or every code of the dataset's code systems (`codesystem`, optionally a named release)."""
    from icdcoder.ontology.ontology import get_ontology

    onto = get_ontology()
    if data is not None and data.label_space == "codesystem":
        from icdcoder.ontology.releases import release_codes

        counts = {e["key"]: int(e["counts"].get("train", 0)) for e in dataset.label_entries}
        systems = sorted({k.split(":", 1)[0] for k in counts})
        keys = [k for s in systems for k in release_codes(s, data.code_release)]
        return LabelSpace(
            keys=keys, titles=[onto.title(k) for k in keys], train_counts=[counts.get(k, 0) for k in keys]
        )
    entries = [e for e in dataset.label_entries if e["counts"].get("train", 0) >= min_count]
    if not entries:
        raise DataError(
            "no code occurs in the train split often enough to be learned.",
            path=dataset.path,
            fix="lower data.label_min_count or check that the dataset has a train split.",
        )
    return LabelSpace(
        keys=[e["key"] for e in entries],
        titles=[onto.title(e["key"]) for e in entries],
        train_counts=[int(e["counts"]["train"]) for e in entries],
    )


def titles_in_note_language(labels: LabelSpace, cfg: DataConfig) -> list[str]:
    """The code titles a model reads (label attention, description initialisation) in the notes' language:
    for Spanish CodiEsp the best-weighted Spanish CIE-10 term of each ICD-10-CM code (the English title where
    CIE-10 has none); otherwise the label space's titles. English titles in a Spanish vocabulary would be
    unknown words, leaving code_init: description nothing to start from."""
    if cfg.source != "codiesp" or cfg.lang != "es":
        return list(labels.titles)
    from icdcoder.matching.terms import spanish_terms

    terms = spanish_terms(labels.keys)
    out = [
        max(terms[k], key=lambda t: t[1])[0] if terms.get(k) else title
        for k, title in zip(labels.keys, labels.titles, strict=True)
    ]
    log.info(
        "code titles in Spanish (CIE-10) for %d of %d codes",
        sum(bool(terms.get(k)) for k in labels.keys),
        len(out),
    )
    return out


def prepare_inputs(cfg: ExperimentConfig) -> PreparedInputs:
    dataset = open_dataset(cfg.data)
    for split in ("train", "dev"):
        if split not in dataset.splits:
            raise DataError(
                f"the dataset has no {split!r} split.",
                path=dataset.path,
                fix="prepare it with splits (e.g. --split-ratios for your own files).",
            )
    model_cls = get_model_class(str(cfg.model["name"]))
    model_cfg = validate_model_config(model_cls, cfg.model)
    hf_dir = model_cls.pretrained_tokenizer_dir(model_cfg)
    tokenizer: TextTokenizer
    if hf_dir is not None:
        # A pretrained encoder reads its own subwords; data.max_tokens then counts subwords.
        from icdcoder.text.hf_tokenizer import HFTokenizer

        if cfg.embeddings.word2vec:
            raise ConfigError(
                "embeddings.word2vec is on, but this model reads the notes with its pretrained encoder.",
                fix="set embeddings.word2vec=false.",
            )
        tokenizer = HFTokenizer.from_pretrained(hf_dir)
    else:
        tokenizer = Tokenizer(lowercase=cfg.data.lowercase, drop_numeric=cfg.data.drop_numeric)
    docs: dict[str, list[Document]] = {
        s: dataset.load(s) for s in ("train", "dev", "test") if s in dataset.splits
    }
    words = {s: [tokenizer.words(d.text)[: cfg.data.max_tokens] for d in ds] for s, ds in docs.items()}
    if isinstance(tokenizer, Tokenizer):
        vocab = Vocab.build(words["train"], min_doc_freq=cfg.data.min_doc_freq, max_size=cfg.data.max_vocab)
    else:
        vocab = tokenizer.vocab()
    labels = label_space_from(dataset, cfg.data.label_min_count, cfg.data)
    code_titles = titles_in_note_language(labels, cfg.data)
    splits = {
        s: encode_split(docs[s], [vocab.encode(w) for w in words[s]], labels, cfg.data.max_tokens)
        for s in docs
    }
    embeddings = None
    if cfg.embeddings.word2vec:
        from icdcoder.text.word2vec import cached_word2vec, embedding_matrix

        extra = None
        if cfg.embeddings.extra_texts == "codiesp-background":
            from icdcoder.data.sources.codiesp import iter_background_texts

            extra = list(
                iter_background_texts(
                    None if cfg.data.codiesp_path is None else Path(cfg.data.codiesp_path), lang=cfg.data.lang
                )
            )
        assert isinstance(tokenizer, Tokenizer)  # refused above for pretrained-encoder models
        w2v_words, vectors = cached_word2vec(
            dataset.path,
            tokenizer,
            extra_texts=extra,
            extra_key=cfg.embeddings.extra_texts,
            dim=cfg.embeddings.dim,
            window=cfg.embeddings.window,
            epochs=cfg.embeddings.epochs,
            seed=cfg.train.seed,
            cache_dir=cache_root() / "word2vec",
        )
        embeddings = embedding_matrix(vocab, w2v_words, vectors, seed=cfg.train.seed)
    if cfg.embeddings.glove is not None:
        if not isinstance(tokenizer, Tokenizer):
            raise ConfigError(
                "embeddings.glove is set, but this model reads the notes with its pretrained encoder.",
                fix="remove embeddings.glove.",
            )
        from icdcoder.text.pretrained_vectors import combine_with_word2vec, glove_matrix, load_word_vectors

        g_words, g_vectors = load_word_vectors(cfg.embeddings.glove, set(vocab.tokens))
        glove, found = glove_matrix(vocab, g_words, g_vectors, seed=cfg.train.seed)
        log.info("GloVe: %d of %d vocabulary words found (%d-d)", found, len(vocab), glove.shape[1])
        embeddings = combine_with_word2vec(embeddings, glove)
    ctx = ModelContext(
        label_keys=labels.keys,
        vocab_size=len(vocab),
        pad_id=vocab.pad_id,
        embeddings=embeddings,
        label_token_ids=[
            vocab.encode(tokenizer.words(t))[:MAX_LABEL_TEXT_TOKENS] or [vocab.unk_id] for t in code_titles
        ],
        token_doc_freq=list(vocab.doc_freq or []),
        n_train_docs=len(splits["train"]),
        label_train_counts=list(labels.train_counts),
        init_from_pretrained=True,
    )
    model_cls.extend_context(
        model_cfg,
        ctx,
        code_titles,
        lambda text: vocab.encode(tokenizer.words(text))[:MAX_LABEL_TEXT_TOKENS],
    )
    model_cls.fit_context(model_cfg, ctx, splits["train"].token_ids)
    return PreparedInputs(dataset, tokenizer, vocab, labels, splits, ctx, docs)


def fit_model_priors(model: IcdModel, cfg: ExperimentConfig, inputs: PreparedInputs) -> dict[str, Any] | None:
    """Let a model fit its data-derived parts (`IcdModel.fit_priors`, e.g. PLANT's MI brain, L2R model and
    language model) from the train split plus the unlabelled texts `embeddings.extra_texts` names, encoded
    with the experiment's vocabulary. None for models without priors."""
    if type(model).fit_priors is IcdModel.fit_priors:
        return None
    extra: list[np.ndarray] = []
    if cfg.embeddings.extra_texts == "codiesp-background":
        from icdcoder.data.sources.codiesp import iter_background_texts

        root = None if cfg.data.codiesp_path is None else Path(cfg.data.codiesp_path)
        extra = [
            np.asarray(inputs.vocab.encode(inputs.tokenizer.words(text)), dtype=np.int64)
            for text in iter_background_texts(root, lang=cfg.data.lang)
        ]
    train = inputs.splits["train"]
    corpus = TrainingCorpus(
        train.token_ids, train.targets, extra, inputs.vocab.tokens, cfg.train.seed, cache_root() / "awd_lm"
    )
    return model.fit_priors(corpus)


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train, select on dev, tune thresholds on dev, save the model directory, then evaluate test once."""
    from icdcoder.modeldir import save_model_dir

    run_dir = Path(run_dir)
    env = DistEnv.from_env()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    set_seed(cfg.train.seed)
    t0 = time.perf_counter()
    # Under torchrun, rank 0 prepares data and embeddings into the caches first; the others then hit them.
    if env.world_size > 1 and not env.is_main:
        torch.distributed.barrier()
    inputs = prepare_inputs(cfg)
    if env.world_size > 1 and env.is_main:
        torch.distributed.barrier()
    set_seed(cfg.train.seed)  # model init must not depend on how much randomness data preparation used
    model = build_model(cfg.model, inputs.ctx)
    resuming = resume and (run_dir / "checkpoint" / "state.json").exists()
    priors = None if resuming else fit_model_priors(model, cfg, inputs)  # a resume restores them
    labels = inputs.labels
    dev = inputs.splits["dev"]
    with_unseen = cfg.eval.include_unseen_codes
    # unreadable / near-empty notes are scored as the predictor codes them (evaluation/readable.py)
    note_priors = code_priors(labels.train_counts, len(inputs.splits["train"]))

    dev_targets = target_matrix(dev, len(labels))

    def dev_eval(probs: np.ndarray) -> dict[str, float]:
        th = tune_thresholds(
            probs, dev, labels, kind="global", include_unseen=with_unseen, priors=note_priors
        )
        metrics = evaluate_probs(probs, dev, labels, th, include_unseen=with_unseen, priors=note_priors)
        # Dev loss per epoch (metrics.jsonl `dev_bce`): mean BCE over the model's codes, for loss curves.
        return {**metrics, "bce": mean_bce(probs, dev_targets)}

    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    if model.solver == "lbfgs":
        # Convex linear models: solved to the optimum for each C of their grid, C chosen on dev.
        result = fit_convex(model, inputs.splits["train"], dev, cfg.train, run_dir, dev_eval)
        device = torch.device("cpu")
    elif model.trainable:
        trainer = Trainer(model, inputs.splits["train"], dev, cfg.train, run_dir, dev_eval, env)
        result = trainer.fit(resume=resume)
        device = trainer.device
    else:
        # Knowledge models (matcher, mention memory): tables from train, a few hyperparameters tuned on dev.
        fitted = model.fit_corpus(inputs.docs["train"], inputs.docs["dev"], list(labels.keys))
        result = TrainResult(best_epoch=0, best_score=float("nan"), epochs_run=0, steps=0)
        device = torch.device("cpu")
        if env.is_main:
            write_json(run_dir / "fit.json", fitted)
    train_secs = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "dataset": cfg.dataset_name,
        "model": cfg.model["name"],
        "seed": cfg.train.seed,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "train_seconds": round(train_secs, 2),
        "n_labels": len(labels),
        "data_fingerprint": inputs.dataset.fingerprint,
    }
    if priors:
        summary["priors"] = priors
    if not env.is_main:
        return summary
    # Rank 0 alone selects thresholds, saves and tests; the other ranks are done.
    raw_dev = predict_probs(model, dev, cfg.train.eval_batch_size, device)
    # Calibrate first, then tune thresholds on the probabilities users will see (both on dev only).
    calibrator = fit_calibrator(raw_dev, dev_targets, cfg.eval.calibration, seed=cfg.train.seed)
    dev_probs = calibrator.apply(raw_dev)
    thresholds = tune_thresholds(
        dev_probs, dev, labels, kind=cfg.eval.thresholds, include_unseen=with_unseen, priors=note_priors
    )
    dev_metrics = evaluate_probs(
        dev_probs, dev, labels, thresholds, include_unseen=with_unseen, priors=note_priors
    )
    summary["calibration"] = {
        **calibrator.to_dict(),
        "dev_before": calibration_metrics(raw_dev, dev_targets),
        "dev_after": {k: dev_metrics[k] for k in CALIBRATION_KEYS},  # evaluate_probs computed them
    }
    write_json(run_dir / "dev_metrics.json", dev_metrics)
    summary["dev"] = dev_metrics
    save_model_dir(
        run_dir / "model",
        config=cfg,
        labels=labels,
        vocab=inputs.vocab,
        tokenizer=inputs.tokenizer,
        model=model,
        ctx=inputs.ctx,
        thresholds=thresholds.to_dict(),
        calibration=calibrator,
        overwrite=True,
        metadata={
            "data_fingerprint": inputs.dataset.fingerprint,
            "dataset": cfg.dataset_name,
            "seed": cfg.train.seed,
            "best_epoch": result.best_epoch,
            "dev_metrics": dev_metrics,
        },
    )
    if cfg.eval.test and "test" in inputs.splits:
        test = inputs.splits["test"]
        test_probs = calibrator.apply(predict_probs(model, test, cfg.train.eval_batch_size, device))
        test_metrics = evaluate_probs(
            test_probs, test, labels, thresholds, include_unseen=with_unseen, priors=note_priors
        )
        write_json(run_dir / "test_metrics.json", test_metrics)
        write_predictions(run_dir / "predictions_test.parquet", test_probs, test, labels)
        summary["test"] = test_metrics
    write_json(run_dir / "run.json", summary)
    return summary
