"""The hybrid coder end to end on the tiny dataset: cross-fitting, the composite model directory (no
pickles), determinism, a source that is empty for some notes, and use through evaluate/predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from icdcoder.cli import app
from icdcoder.data.document import Document
from icdcoder.errors import ModelDirError
from icdcoder.hybrid_training import cross_fit, kfold_assignment
from icdcoder.inference.predictor import Predictor
from icdcoder.modeldir import load_model_dir
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
from icdcoder.reranking.candidates import SourceRanking

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


class KeywordConfig(ModelConfig):
    pass


@register_model("test_keyword")
class KeywordModel(IcdModel):
    """A text-reading source for tests: proposes J18.9 with the span of the word "pneumonia", and nothing
    at all for notes without it (an empty source)."""

    Config: ClassVar[type[ModelConfig]] = KeywordConfig
    reads_text: ClassVar[bool] = True
    trainable: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        self.keys = list(ctx.label_keys)
        self.register_buffer("dummy", torch.zeros(1))

    def fit_corpus(self, train: list[Document], dev: list[Document], label_keys: list[str]) -> dict[str, Any]:
        return {}

    def forward(self, batch: Batch) -> ModelOutput:
        assert batch.texts is not None
        logits = torch.full((len(batch.texts), len(self.keys)), -20.0)
        spans: list[dict[int, list[tuple[int, int]]]] = []
        feats: list[dict[int, dict[str, float]]] = []
        j = self.keys.index("icd10cm:J18.9") if "icd10cm:J18.9" in self.keys else None
        for r, text in enumerate(batch.texts):
            at = text.find("pneumonia")
            if at >= 0 and j is not None:
                logits[r, j] = 3.0
                spans.append({j: [(at, at + 9)]})
                feats.append({j: {"mentions": float(text.count("pneumonia"))}})
            else:
                spans.append({})
                feats.append({})
        return ModelOutput(logits=logits, extras={SPANS: spans, FEATURES: feats})


def _write(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(obj), encoding="utf-8")
    return path


def _hybrid_config(tmp: Path, data: Path, seed: int = 0) -> Path:
    common = {"dataset_name": "tiny", "data": {"source": "prepared", "path": str(data)}}
    tfidf = _write(
        tmp / "tfidf.yaml",
        {
            **common,
            "embeddings": {"word2vec": False},
            "model": {"name": "tfidf"},
            "train": {"epochs": 3, "batch_size": 8, "lr": 0.2, "patience": 0, "progress": False},
        },
    )
    keyword = _write(
        tmp / "keyword.yaml", {**common, "embeddings": {"word2vec": False}, "model": {"name": "test_keyword"}}
    )
    return _write(
        tmp / "hybrid.yaml",
        {
            **common,
            "embeddings": {"word2vec": False},
            "model": {
                "name": "hybrid",
                "folds": 3,
                "max_candidates": 5,
                "sources": [
                    {"name": "keyword", "config": str(keyword), "crossfit": False, "top_k": 3},
                    {"name": "tfidf", "config": str(tfidf), "top_k": 4},
                ],
                "ranker_grid": [
                    {"objective": "binary", "num_leaves": 4, "n_estimators": 20, "min_data_in_leaf": 5},
                    {"objective": "lambdarank", "num_leaves": 4, "n_estimators": 20, "min_data_in_leaf": 5},
                ],
            },
            "train": {"seed": seed, "num_threads": 1},
        },
    )


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    tmp = tmp_path_factory.mktemp("hybrid")
    _ok(["train", str(_hybrid_config(tmp, tiny_dataset)), "--out", str(tmp / "run")])
    return tmp / "run"


def test_cross_fit_never_scores_a_note_with_a_model_that_saw_it() -> None:
    docs = [Document(f"d{i}", "text", []) for i in range(11)]
    folds = kfold_assignment([d.id for d in docs], 4, seed=0)
    assert sorted(np.bincount(list(folds.values()))) == [2, 3, 3, 3]
    assert folds == kfold_assignment([d.id for d in docs], 4, seed=0)  # seeded
    seen: list[tuple[set[str], list[str]]] = []

    def fit_and_score(f: int, fit: list[Document], held: list[Document]) -> list[SourceRanking]:
        seen.append(({d.id for d in fit}, [d.id for d in held]))
        return [SourceRanking({"x": float(len(fit))}) for _ in held]

    out = cross_fit(docs, folds, 4, fit_and_score)
    assert len(out) == len(docs)
    scored = [i for _, held in seen for i in held]
    assert sorted(scored) == sorted(d.id for d in docs)  # every note exactly once
    for fit, held in seen:
        assert not fit & set(held)  # ... by a model trained without it
        assert len(fit) + len(held) == len(docs)

    def bad(f: int, fit: list[Document], held: list[Document]) -> list[SourceRanking]:
        return []

    with pytest.raises(RuntimeError):
        cross_fit(docs, folds, 4, bad)


def test_hybrid_run_folds_are_disjoint_from_their_scored_notes(hybrid_run: Path) -> None:
    from icdcoder.data.prepared import PreparedDataset

    held_all: list[str] = []
    for f in range(3):
        ds = PreparedDataset.open(hybrid_run / "folds" / str(f) / "data")
        fit = {d.id for d in ds.documents("train")}
        held = [d.id for d in ds.documents("test")]
        assert fit and held and not fit & set(held)
        held_all += held
        # the fold model's label space and vocabulary come from the fit notes only
        lm = load_model_dir(hybrid_run / "folds" / str(f) / "tfidf" / "model")
        assert lm.metadata["data_fingerprint"] == ds.fingerprint
    assert len(held_all) == len(set(held_all)) == 60  # every training note held out once
    assert not (hybrid_run / "folds" / "0" / "keyword").exists()  # crossfit: false -> no fold models


def test_composite_model_directory_round_trip_without_pickles(hybrid_run: Path) -> None:
    model_dir = hybrid_run / "model"
    files = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert {
        "sources/tfidf/model.safetensors",
        "sources/keyword/metadata.json",
        "model_state.json",
    } <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".bin"))]
    state = json.loads((model_dir / "model_state.json").read_text())
    assert state["ranker_lightgbm_text"].startswith("tree")  # LightGBM's own text format
    a, b = load_model_dir(model_dir), load_model_dir(model_dir)
    notes = [
        ("n1", "pneumonia of the right lower lobe and essential hypertension."),
        ("n2", "labs reviewed."),
    ]
    pa = Predictor(a).predict(notes, top_k=5, evidence=False)
    pb = Predictor(b).predict(notes, top_k=5, evidence=False)
    assert [[(c.key, c.probability) for c in p.codes] for p in pa] == [
        [(c.key, c.probability) for c in p.codes] for p in pb
    ]
    # a swapped source is refused
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert set(meta["sources"]) == {"tfidf", "keyword"}


def test_swapped_source_directory_is_refused(hybrid_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(hybrid_run / "model", copy)
    meta_file = copy / "sources" / "keyword" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["seed"] = 99
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match="keyword"):
        load_model_dir(copy)


def test_note_with_an_empty_source_still_gets_a_ranking_and_evidence(hybrid_run: Path) -> None:
    pred = Predictor(hybrid_run / "model")
    # no "pneumonia": the keyword source proposes nothing for this note
    empty, full = pred.predict(
        [
            ("e", "acute kidney failure, patient admitted with pain."),
            ("f", "pneumonia of the right lower lobe."),
        ],
        top_k=3,
    )
    assert empty.codes and all(np.isfinite(c.probability) for c in empty.codes)
    j = next(c for c in full.codes if c.key == "icd10cm:J18.9")
    assert full.evidence_method == "match" or j.evidence
    assert any(s.text == "pneumonia" for s in j.evidence)  # the keyword source's exact span
    lm = load_model_dir(hybrid_run / "model")
    rankings = lm.model.source_rankings(["labs reviewed."], ["x"])  # type: ignore[operator]
    assert rankings[0]["keyword"].scores == {}
    assert lm.model.candidates(rankings[0])  # type: ignore[operator]


def test_hybrid_is_used_unchanged_by_evaluate_and_its_report_has_recall(
    hybrid_run: Path, tiny_dataset: Path
) -> None:
    out = _ok(
        ["evaluate", str(hybrid_run / "model"), "--data", str(tiny_dataset), "--split", "test", "--json"]
    )
    metrics = json.loads(out)
    test = json.loads((hybrid_run / "test_metrics.json").read_text())
    assert metrics["map"] == pytest.approx(test["map"], abs=1e-6)
    assert metrics["f1_micro"] == pytest.approx(test["f1_micro"], abs=1e-6)
    assert test["map"] > 0.5  # the tiny data is learnable
    report = json.loads((hybrid_run / "hybrid_report.json").read_text())
    assert set(report["test"]["sources"]) == {"keyword", "tfidf"}
    assert 0.0 < report["test"]["union"]["recall"] <= 1.0
    assert report["test"]["union"]["mean_candidates"] <= 5
    assert "weighted_sum" in report and report["chosen"]["objective"] in ("binary", "lambdarank")


def test_same_seed_same_hybrid(hybrid_run: Path, tmp_path: Path, tiny_dataset: Path) -> None:
    _ok(["train", str(_hybrid_config(tmp_path, tiny_dataset)), "--out", str(tmp_path / "again")])
    a = json.loads((hybrid_run / "model" / "model_state.json").read_text())
    b = json.loads((tmp_path / "again" / "model" / "model_state.json").read_text())
    assert a == b
    ta = json.loads((hybrid_run / "test_metrics.json").read_text())
    tb = json.loads((tmp_path / "again" / "test_metrics.json").read_text())
    assert ta["map"] == tb["map"] and ta["f1_micro"] == tb["f1_micro"]
    assert list((hybrid_run / "rankings").glob("*.json.gz"))  # source rankings cached for reruns


def test_calibrate_rewrites_the_hybrid_with_its_sources(
    hybrid_run: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "recalibrated"
    _ok(
        [
            "calibrate",
            str(hybrid_run / "model"),
            "--data",
            str(tiny_dataset),
            "--method",
            "temperature",
            "--out",
            str(out),
        ]
    )
    lm = load_model_dir(out)  # sources/ came along and still match the pinned checksums
    assert lm.calibration.method == "temperature"
    assert sorted(p.name for p in (out / "sources").iterdir()) == ["keyword", "tfidf"]


def test_sibling_expansion_adds_train_seen_codes_of_the_same_category() -> None:
    from icdcoder.models.hybrid import HybridCoder, HybridConfig, SourceModel
    from icdcoder.reranking.features import CodeTable

    keys = ["icd10cm:E11.9", "icd10cm:E11.65", "icd10cm:E11.8", "icd10cm:I10", "icd10cm:E10.9"]
    src = SourceModel(
        "s",
        KeywordModel(KeywordConfig(name="test_keyword"), ModelContext(keys, 2)),
        keys,
        lambda t: [],
        0,
        lambda p: p,
    )
    cfg = HybridConfig(name="hybrid", sources=[{"name": "s"}], expand_siblings=1, max_candidates=3)  # type: ignore[list-item]
    model = HybridCoder(cfg, ModelContext(keys, 2, sources={"s": src}))
    model.codes = CodeTable({"icd10cm:E11.9": 5, "icd10cm:E11.65": 2, "icd10cm:I10": 3, "icd10cm:E10.9": 4})
    # E11.65: a train-seen sibling of E11.9; E11.8: never in training; I10, E10.9: other categories
    assert model.candidates({"s": SourceRanking({"icd10cm:E11.9": 0.9})}) == [
        "icd10cm:E11.9",
        "icd10cm:E11.65",
    ]
    # no source speaks: the most frequent training codes, so the ranking is never empty
    assert model.candidates({"s": SourceRanking()})[:2] == ["icd10cm:E11.9", "icd10cm:E10.9"]
