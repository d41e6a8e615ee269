"""PLM-ICD and the pluggable Hugging Face encoder, on a tiny randomly initialised BERT built here (no weights
exist offline): subword offsets, id mapping, chunked encoding, masking, and training → model directory →
prediction without the original folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import CUES, FILLER
from icdcoder.cli import app
from icdcoder.errors import ConfigError
from icdcoder.models.base import Batch, ModelContext, build_model, get_model_class, validate_model_config
from icdcoder.text.hf_tokenizer import HF_ID_OFFSET, HFTokenizer
from icdcoder.text.tokenizer import tokenizer_from_config

pytestmark = pytest.mark.usefixtures("one_thread")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(root: Path) -> Path:
    """A BERT folder as save_pretrained writes it: config.json, model.safetensors, tokenizer.json."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertConfig, BertModel

    words = sorted({w for cue in CUES.values() for w in cue.split()} | set(FILLER) | {"hyper", "fever", "."})
    vocab = {t: i for i, t in enumerate([*SPECIAL, *words, "##tension", "##s"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    BertModel(cfg).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def test_subword_tokens_keep_character_spans(bert_dir: Path) -> None:
    tok = HFTokenizer.from_pretrained(bert_dir)
    text = "Known Hypertensions, FEVER."  # "hypertension" + "##s"; "known" and "," are not in the vocabulary
    tokens = tok.tokenize(text)
    assert [t.text for t in tokens] == ["[UNK]", "hypertension", "##s", "[UNK]", "fever", "."]
    assert [(t.start, t.end) for t in tokens] == [(0, 5), (6, 18), (18, 19), (19, 20), (21, 26), (26, 27)]
    assert text[6:19] == "Hypertensions" and tok.words(text) == [t.text for t in tokens]
    assert tok.special == {"cls": 2, "sep": 3, "pad": 0, "unk": 1}
    # icdcoder ids are the tokenizer's ids shifted past <pad>, <unk>
    vocab = tok.vocab()
    hf = tok._tok.encode(text, add_special_tokens=False).ids
    assert vocab.encode(tok.words(text)) == [i + HF_ID_OFFSET for i in hf]
    assert vocab.tokens[:2] == ["<pad>", "<unk>"] and len(vocab) == len(tok.hf_tokens) + 2
    # the model directory form rebuilds the same tokenizer without the folder
    again = tokenizer_from_config(json.loads(json.dumps(tok.to_config())))
    assert isinstance(again, HFTokenizer) and again.tokenize(text) == tokens


def test_bad_pretrained_folders_are_refused(bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        HFTokenizer.from_pretrained(tmp_path)
    cls = get_model_class("plm_icd")
    with pytest.raises(ConfigError, match=r"model\.pretrained is not set"):
        cls.pretrained_tokenizer_dir(validate_model_config(cls, {"name": "plm_icd"}))
    with pytest.raises(ConfigError, match=r"no config\.json"):
        cls.pretrained_tokenizer_dir(
            validate_model_config(cls, {"name": "plm_icd", "pretrained": str(tmp_path)})
        )
    pickled = tmp_path / "pickled"
    shutil.copytree(bert_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"no \.safetensors"):
        _model(pickled, 3)


def _model(path: Path, n_labels: int, **cfg: object) -> torch.nn.Module:
    config = {"name": "plm_icd", "pretrained": str(path), "chunk_size": 4, **cfg}
    cls = get_model_class("plm_icd")
    ctx = ModelContext(
        label_keys=[f"icd10cm:X{i}" for i in range(n_labels)], vocab_size=0, init_from_pretrained=True
    )
    cls.extend_context(validate_model_config(cls, config), ctx, [], lambda s: [])
    return build_model(config, ctx)


def _batch(tok: HFTokenizer, texts: list[str]) -> Batch:
    vocab = tok.vocab()
    seqs = [vocab.encode(tok.words(t)) for t in texts]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return Batch(ids, mask, mask.sum(1), [str(i) for i in range(len(texts))])


def test_pretrained_weights_chunks_and_masking(bert_dir: Path) -> None:
    from safetensors.torch import load_file

    tok = HFTokenizer.from_pretrained(bert_dir)
    model = _model(bert_dir, 3).eval()
    saved = load_file(bert_dir / "model.safetensors")
    key = next(k for k in saved if k.endswith("word_embeddings.weight"))
    torch.testing.assert_close(model.encoder.embeddings.word_embeddings.weight, saved[key])

    short, long = "fever .", "essential hypertension and acute kidney failure ."  # 2 and 7 subwords
    seen: list[tuple[int, ...]] = []
    model.encoder.register_forward_hook(
        lambda _m, args, kwargs, _out: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    both = _batch(tok, [short, long])
    with torch.no_grad():
        out = model(both)
    # chunks of 4: the short note has 1 live chunk (its second is all padding and skipped), the long one 2;
    # each chunk carries [CLS] and [SEP]
    assert seen == [(3, 6)]
    assert out.logits.shape == (2, 3) and out.attention is not None and out.attention.shape == (2, 3, 7)
    weights = out.attention[0]
    assert torch.all(weights[:, 2:] == 0) and torch.allclose(weights.sum(-1), torch.ones(3))
    with torch.no_grad():
        alone = model(_batch(tok, [short]))
    torch.testing.assert_close(alone.logits[0], out.logits[0], atol=1e-5, rtol=1e-5)

    # the released code's unmasked attention (quirk) does put weight on padding
    quirky = _model(bert_dir, 3, attend_to_padding=True).eval()
    with torch.no_grad():
        assert float(quirky(both).attention[0, :, 2:].sum()) > 0  # type: ignore[index]
    plain = _model(bert_dir, 3, chunk_special_tokens=False).eval()
    with torch.no_grad():
        assert plain(both).logits.shape == (2, 3)


def test_gradients_reach_the_encoder(bert_dir: Path) -> None:
    tok = HFTokenizer.from_pretrained(bert_dir)
    model = _model(bert_dir, 2).train()
    batch = _batch(tok, ["essential hypertension .", "fever"])
    batch.targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = sum(model.losses(batch, model(batch)).values())
    loss.backward()  # type: ignore[union-attr]
    grad = model.encoder.embeddings.word_embeddings.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_train_save_and_predict_without_the_pretrained_folder(
    bert_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "bert"
    shutil.copytree(bert_dir, folder)
    cfg = {
        "dataset_name": "tiny",
        "data": {"source": "prepared", "path": str(tiny_dataset), "max_tokens": 64},
        "embeddings": {"word2vec": False},
        "model": {"name": "plm_icd", "pretrained": str(folder), "chunk_size": 16},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.003, "progress": False, "patience": 5},
    }
    path = tmp_path / "plm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    shutil.rmtree(folder)  # inference must need nothing from it

    from icdcoder.inference.predictor import Predictor
    from icdcoder.modeldir import load_model_dir

    lm = load_model_dir(tmp_path / "run" / "model")
    assert isinstance(lm.tokenizer, HFTokenizer)
    note = "Patient with essential hypertension and acute kidney failure."
    [pred] = Predictor(lm).predict([("n1", note)], top_k=3)
    assert len(pred.codes) >= 3 and pred.evidence_method == "attention"
    spans = [s for c in pred.codes for s in c.evidence]
    assert spans and all(note[s.start : s.end] == s.text for s in spans)
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert np.isfinite(test["map"]) and 0.0 <= test["map"] <= 1.0
    # word2vec with a pretrained encoder is a configuration error, named as such
    cfg["embeddings"] = {"word2vec": True}
    cfg["model"]["pretrained"] = str(bert_dir)  # type: ignore[index]
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run2")])
    assert isinstance(result.exception, ConfigError) and "word2vec" in str(result.exception)


def test_chunks_longer_than_the_encoder_and_empty_notes(bert_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"exceeds the encoder's 40 positions"):
        _model(bert_dir, 2, chunk_size=39)
    model = _model(bert_dir, 2, chunk_size=38).eval()  # 38 + [CLS] + [SEP] = 40 fits
    assert not hasattr(model.encoder, "pooler") or model.encoder.pooler is None  # no unused parameters (DDP)
    empty = Batch(
        torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2), ["a", "b"]
    )
    with torch.no_grad():
        out = model(empty)
    assert out.logits.shape == (2, 2) and torch.isfinite(out.logits).all()
