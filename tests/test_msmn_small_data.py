"""MSMN's small-data and fidelity options (issue 17): the free per-code bias at the prior, and the authors'
max-pooling over padded synonym positions."""

from __future__ import annotations

import pytest
import torch

from icdcoder.errors import ConfigError
from icdcoder.models.base import ModelContext, build_model
from icdcoder.models.init import prior_log_odds
from test_msmn import KEYS, V, make_batch, make_model, synonyms

pytestmark = pytest.mark.usefixtures("one_thread")


def test_per_code_bias_starts_at_the_prior_and_shifts_each_logit() -> None:
    counts = [1, 2, 3, 4, 5, 6, 90]
    ctx = ModelContext(
        label_keys=KEYS,
        vocab_size=V,
        label_synonym_token_ids=synonyms(4),
        label_train_counts=counts,
        n_train_docs=100,
        init_from_pretrained=True,
    )
    cfg = {
        "name": "msmn",
        "embed_dim": 6,
        "rnn_dim": 8,
        "attention_dim": 16,
        "synonyms": 4,
        "rdrop_alpha": 0.0,
    }
    torch.manual_seed(0)
    model = build_model({**cfg, "per_code_bias": True, "bias_init": "prior"}, ctx).eval()
    assert torch.allclose(model.code_bias.detach(), prior_log_odds(counts, 100))
    torch.manual_seed(0)
    plain = build_model(cfg, ctx).eval()
    batch = make_batch([5, 3])
    with torch.no_grad():
        diff = model(batch).logits - plain(batch).logits
    assert torch.allclose(diff, prior_log_odds(counts, 100).expand_as(diff), atol=1e-5)
    with pytest.raises(ConfigError, match="per_code_bias"):
        build_model({**cfg, "bias_init": "prior"}, ctx)


@pytest.mark.parametrize("with_projection", [True, False])
def test_padded_synonym_pooling_is_the_authors_max_over_padded_positions(with_projection: bool) -> None:
    # rnn_dim 8 != attention_dim 16: a projection whose bias fills the padded positions (full-code setting);
    # rnn_dim 16 == attention_dim: no projection, padded positions hold 0 (the 50-code setting).
    rnn = 8 if with_projection else 16
    ours = make_model(rnn_dim=rnn).eval()
    theirs = make_model(rnn_dim=rnn, synonym_pooling="padded").eval()
    with torch.no_grad():
        q_ours, q_theirs = ours.synonym_features(), theirs.synonym_features()
        # The authors' form written out: each synonym padded to the longest, encoded, max over all positions.
        ids, lengths = theirs.syn_ids, theirs.syn_lengths
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        states = theirs.encode(ids, mask)  # padded positions: proj(0)
        padded = states.amax(dim=1)
    flat = torch.zeros_like(q_theirs.view(-1, q_theirs.shape[-1])).index_copy(0, theirs.syn_slot, padded)
    torch.testing.assert_close(q_theirs, flat.view_as(q_theirs))
    # Variable-length synonyms: the two poolings differ for the short ones, agree for the longest.
    longest = lengths == lengths.max()
    feats_ours = q_ours.view(-1, q_ours.shape[-1])[theirs.syn_slot]
    assert torch.equal(feats_ours[longest], padded[longest])
    assert not torch.allclose(feats_ours[~longest], padded[~longest])
