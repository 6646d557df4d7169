"""Model API points: GPT-2's residual init scaling, the
trainable-only parameter count, `reset_head` replacing only the classifier, and a
mean-pooled ViT with learned positions."""

import math

import torch

from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig
from attnlab.models.vit import VisionConfig, ViT


def test_gpt2_init_scales_the_residual_projections_by_depth():
    torch.manual_seed(0)
    L = 8
    model = GPT(GPTConfig(vocab_size=64, d_model=64, n_heads=4, n_layers=L, max_len=16))
    for block in model.stack.blocks:
        for w in (block.self_attn.out_proj.weight, block.ffn.fc2.weight):
            assert abs(float(w.detach().std()) / (0.02 / math.sqrt(2 * L)) - 1) < 0.1
        for w in (block.self_attn.q_proj.weight, block.ffn.fc1.weight):
            assert abs(float(w.detach().std()) / 0.02 - 1) < 0.1
        assert not block.self_attn.q_proj.bias.any() and not block.ffn.fc2.bias.any()
    assert abs(float(model.tok_emb.weight.detach().std()) / 0.02 - 1) < 0.1


def test_trainable_only_counts_what_requires_grad():
    model = GPT(GPTConfig(vocab_size=31, d_model=32, n_heads=4, n_layers=2, max_len=16))
    total = model.num_parameters()
    assert model.num_parameters(trainable_only=True) == total
    for p in model.stack.blocks[0].parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.stack.blocks[0].parameters())
    assert model.num_parameters(trainable_only=True) == total - frozen
    assert model.num_parameters() == total


def test_reset_head_replaces_only_the_classifier():
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(vocab_size=31, d_model=32, n_heads=4, n_layers=1,
                                  max_len=16, num_classes=2)).eval()
    idx = torch.randint(31, (2, 6))
    pooled = model.forward_head(model.forward_features(idx), pre_logits=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_head(5)
    after = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the pooler kept its weights
    torch.testing.assert_close(model.forward_head(model.forward_features(idx), pre_logits=True),
                               pooled)
    assert model(idx).shape == (2, 5)


def test_mean_pooled_vit_with_learned_positions_has_one_per_patch():
    torch.manual_seed(0)
    cfg = VisionConfig(d_model=16, n_heads=2, n_layers=1, image_size=8, patch_size=2,
                       pooling="mean", image_positional="learned", num_classes=3)
    assert cfg.n_tokens == cfg.n_patches == 16 and cfg.max_len == 16
    model = ViT(cfg).eval()
    assert model.cls_token is None and model.pos_embed.shape == (1, 16, 16)
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model.embed(images), model.patch_embed(images) + model.pos_embed)
    assert model(images).shape == (2, 3)
