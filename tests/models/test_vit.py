import os

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import available
from attnlab.errors import AttnlabError, ConfigError
from attnlab.layers.patch import sincos_2d_table
from attnlab.models.vit import VisionConfig, ViT
from attnlab.viz.image_rollout import plot_rollout, vit_rollout
from tests.conftest import TINY_OPTIONS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def hf_vit_pair(pooling="cls"):
    """A random HF ViTForImageClassification and an attnlab ViT with its weights."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    hf_cfg = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       hidden_act="gelu", layer_norm_eps=1e-12, num_labels=5,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       attn_implementation="eager")
    hf = ViTForImageClassification(hf_cfg).eval()
    cfg = VisionConfig(image_size=8, patch_size=2, channels=1, d_model=32, n_layers=2,
                       n_heads=4, d_ff=64, activation="gelu", norm_eps=1e-12, num_classes=5,
                       pooling=pooling, image_positional="learned")
    model = ViT(cfg).eval()
    s = {k: v for k, v in hf.state_dict().items()}
    table = {"patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
             "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
             "cls_token": "vit.embeddings.cls_token",
             "pos_embed": "vit.embeddings.position_embeddings",
             "stack.norm.weight": "vit.layernorm.weight", "stack.norm.bias": "vit.layernorm.bias",
             "head.weight": "classifier.weight", "head.bias": "classifier.bias"}
    parts = {"attn_norm": "layernorm_before", "self_attn.q_proj": "attention.q_proj",
             "self_attn.k_proj": "attention.k_proj", "self_attn.v_proj": "attention.v_proj",
             "self_attn.out_proj": "attention.o_proj", "ffn_norm": "layernorm_after",
             "ffn.fc1": "mlp.fc1", "ffn.fc2": "mlp.fc2"}
    for i in range(2):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                table[f"stack.blocks.{i}.{ours}.{p}"] = f"vit.layers.{i}.{theirs}.{p}"
    if pooling == "mean":
        table.pop("cls_token")
    state = {ours: s[theirs] for ours, theirs in table.items()}
    if pooling == "mean":  # no class token: the patch positions only
        state["pos_embed"] = state["pos_embed"][:, 1:]
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return hf, model


def test_vit_equals_hugging_face_vit_on_identical_weights():
    hf, model = hf_vit_pair()
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        out = hf(pixel_values=images, output_hidden_states=True, output_attentions=True)
        tokens = model.forward_features(images)
        logits = model(images)
    assert tokens.shape == (3, 17, 32)
    torch.testing.assert_close(tokens, hf.vit.layernorm(out.hidden_states[-1]), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.forward_head(tokens), logits)
    assert model.forward_head(tokens, pre_logits=True).shape == (3, 32)


def test_vit_rollout_map_equals_rollout_of_hugging_face_attentions():
    hf, model = hf_vit_pair()
    images = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        attns = hf(pixel_values=images, output_attentions=True).attentions
    # the rollout by hand: (A_mean + I) / 2, rows renormalized, multiplied layer over layer
    eye = torch.eye(17)
    rollout = eye.expand(2, 17, 17)
    for a in attns:
        step = 0.5 * a.mean(1) + 0.5 * eye
        step = step / step.sum(-1, keepdim=True)
        rollout = step @ rollout
    maps, _ = vit_rollout(model, images)
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, rollout[:, 0, 1:].reshape(2, 4, 4), rtol=1e-4, atol=1e-5)
    assert model.training is False


def test_mean_pooled_sincos_vit_equals_a_hand_assembled_twin():
    torch.manual_seed(0)
    cfg = VisionConfig(image_size=8, patch_size=4, channels=2, d_model=16, n_layers=2,
                       n_heads=2, num_classes=3, pooling="mean", image_positional="sincos2d")
    model = ViT(cfg).eval()
    images = torch.randn(2, 2, 8, 8)
    patches = F.unfold(images, kernel_size=4, stride=4).transpose(1, 2)  # (B, 4, 32)
    x = (patches @ model.patch_embed.proj.weight.reshape(16, -1).T
         + model.patch_embed.proj.bias + sincos_2d_table(2, 2, 16))
    for blk in model.stack.blocks:  # pre-norm: x + Attn(LN(x)), then x + FFN(LN(x))
        mha = blk.self_attn
        h = blk.attn_norm(x)
        q, k, v = (p(h).view(2, 4, 2, 8).transpose(1, 2) for p in
                   (mha.q_proj, mha.k_proj, mha.v_proj))
        a = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1) @ v
        x = x + mha.out_proj(a.transpose(1, 2).reshape(2, 4, 16))
        x = x + blk.ffn.fc2(F.gelu(blk.ffn.fc1(blk.ffn_norm(x))))
    expected = model.head(model.stack.norm(x).mean(1))
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected, rtol=1e-4, atol=1e-5)
    assert "pos_embed" not in model.state_dict()  # fixed positions are not weights


@pytest.mark.parametrize("name", available())
def test_every_registered_mechanism_runs_in_a_vit(name):
    options = dict(TINY_OPTIONS[name])
    if name == "linformer":
        options["seq_len"] = 17
    cfg = VisionConfig(image_size=8, patch_size=2, d_model=16, n_heads=2, n_layers=1,
                       num_classes=4, attention=name, attention_options=options)
    model = ViT(cfg)
    logits = model(torch.randn(2, 1, 8, 8))
    logits.sum().backward()
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert all(p.grad is not None for p in model.stack.parameters() if p.requires_grad)


def test_local_attention_with_a_window_covering_every_token_equals_full():
    torch.manual_seed(0)
    full = ViT(VisionConfig(image_size=8, patch_size=2, d_model=16, n_heads=2, n_layers=2))
    local = ViT(VisionConfig(image_size=8, patch_size=2, d_model=16, n_heads=2, n_layers=2,
                             attention="local", attention_options={"window": 17}))
    local.load_state_dict(full.state_dict())
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(local.eval()(images), full.eval()(images), rtol=1e-5, atol=1e-5)


def test_bad_vision_configs_and_images_are_one_clear_error(tmp_path):
    with pytest.raises(AttnlabError, match="image size 28x28 is not divisible by the patch size 5"):
        VisionConfig(image_size=28, patch_size=5)
    with pytest.raises(ConfigError, match="leave positional at 'none'"):
        VisionConfig(positional="learned")
    with pytest.raises(ConfigError, match="unknown image positional encoding 'sincos'"):
        VisionConfig(image_positional="sincos")
    model = ViT(VisionConfig(image_size=8, patch_size=2, d_model=16, n_heads=2, n_layers=1))
    with pytest.raises(AttnlabError, match="not divisible"):
        model(torch.zeros(1, 1, 7, 7))
    maps, _ = vit_rollout(model, torch.randn(2, 1, 8, 8))
    out = plot_rollout(torch.randn(2, 1, 8, 8), maps, tmp_path / "r.png", titles=["a", "b"])
    assert out.stat().st_size > 1000
    with pytest.raises(AttnlabError, match="2 images but 1 maps"):
        plot_rollout(torch.randn(2, 1, 8, 8), maps[:1], tmp_path / "x.png")
