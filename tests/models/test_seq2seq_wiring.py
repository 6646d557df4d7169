"""Encoder-decoder settings: shared and tied embeddings,
the sqrt(d_model) embedding scale, and a target vocabulary of its own."""

import math

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.models import EncoderDecoder
from attnlab.models.config import Seq2SeqConfig

D = 16


def s2s(**kw) -> EncoderDecoder:
    torch.manual_seed(0)
    return EncoderDecoder(Seq2SeqConfig(vocab_size=13, d_model=D, n_heads=2, n_layers=1,
                                        max_len=32, **kw)).eval()


def test_paper_defaults_share_one_embedding_and_tie_the_head_to_it():
    model = s2s()
    assert model.tgt_emb is model.src_emb
    assert model.head.weight is model.tgt_emb.weight
    shared = sum(p.numel() for p in model.parameters())  # parameters() yields a tensor once
    assert model.num_parameters() == shared
    assert s2s(share_embeddings=False).num_parameters() == shared + 13 * D
    untied = s2s(tie_embeddings=False)
    assert untied.head.weight is not untied.tgt_emb.weight
    assert untied.num_parameters() == shared + 13 * D


def test_embeddings_are_scaled_by_sqrt_d_model_unless_told_not_to():
    src = torch.randint(13, (2, 7))
    for scale, model in ((math.sqrt(D), s2s()), (1.0, s2s(scale_embeddings=False))):
        torch.testing.assert_close(model.embed_source(src),
                                   model.src_positional.embed(model.src_emb(src) * scale))
        torch.testing.assert_close(model.embed_target(src),
                                   model.tgt_positional.embed(model.tgt_emb(src) * scale))


def test_a_target_vocabulary_of_its_own():
    for tie in (True, False):
        model = s2s(share_embeddings=False, tgt_vocab_size=7, tie_embeddings=tie)
        assert model.src_emb.weight.shape == (13, D) and model.tgt_emb.weight.shape == (7, D)
        assert model.head.weight.shape == (7, D)
        src, tgt = torch.randint(13, (2, 6)), torch.randint(7, (2, 5))
        src[0, 0] = 12  # the largest source id, not a target id
        assert model(src, tgt).shape == (2, 5, 7)
        with pytest.raises(AttnlabError, match=r"target token ids must lie in \[0, 7\)"):
            model(src, torch.tensor([[1, 9]]).expand(2, -1))
