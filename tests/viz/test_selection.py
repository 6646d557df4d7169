"""The PNG `render_attention` draws is the layer and head asked for
(pixel-equal to drawing that record directly), a mean-pooled ViT's rollout map is the mean of
the rollout rows, and a rollout refuses nothing it should take."""

import matplotlib.image as mpimg
import numpy as np
import torch

from attnlab.models import GPT, GPTConfig
from attnlab.viz.capture import AttentionRecord, capture_attention
from attnlab.viz.maps import plot_attention_grid, plot_head
from attnlab.viz.rollout import attention_rollout
from attnlab.viz.view import render_attention

IDS = [3, 1, 4, 1, 5, 9, 2, 6]
LABELS = [f"t{i}" for i in IDS]


def _model_and_records():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, d_model=16, n_heads=2, n_layers=2, max_len=16)).eval()
    with torch.no_grad():  # make the layers and heads visibly different
        for p in model.parameters():
            p.mul_(4.0)
    with torch.no_grad(), capture_attention(model) as cap:
        model(torch.tensor([IDS]))
    return model, cap.records


def _pixels(path):
    return mpimg.imread(path)


def test_png_of_one_layer_and_one_head_draws_that_record(tmp_path):
    model, recs = _model_and_records()
    assert not torch.allclose(recs[0].weights, recs[1].weights, atol=1e-2)
    assert not torch.allclose(recs[1].weights[:, 0], recs[1].weights[:, 1], atol=1e-2)
    got = render_attention(model, IDS, tmp_path / "h.png", labels=LABELS, layer=1, head=1,
                           title="x")
    want = plot_head(recs[1], 1, tmp_path / "want.png", tokens=LABELS, title="x")
    assert np.array_equal(_pixels(got), _pixels(want))
    other = plot_head(recs[1], 0, tmp_path / "other.png", tokens=LABELS, title="x")
    assert not np.array_equal(_pixels(got), _pixels(other))  # the picture tells heads apart
    first = plot_head(recs[0], 1, tmp_path / "first.png", tokens=LABELS, title="x")
    assert not np.array_equal(_pixels(got), _pixels(first))


def test_png_of_one_layer_draws_only_that_layer(tmp_path):
    model, recs = _model_and_records()
    got = render_attention(model, IDS, tmp_path / "l.png", labels=LABELS, layer=1, title="x")
    want = plot_attention_grid([recs[1]], tmp_path / "want.png", tokens=LABELS, title="x")
    assert np.array_equal(_pixels(got), _pixels(want))
    everything = render_attention(model, IDS, tmp_path / "all.png", labels=LABELS, title="x")
    assert np.array_equal(_pixels(everything),
                          _pixels(plot_attention_grid(recs, tmp_path / "w2.png", tokens=LABELS,
                                                      title="x")))


def test_mean_pooled_vit_rollout_map_is_the_mean_of_the_rollout_rows():
    from attnlab.models.vit import VisionConfig, ViT
    from attnlab.viz.image_rollout import vit_rollout

    torch.manual_seed(0)
    model = ViT(VisionConfig(image_size=8, patch_size=2, channels=1, d_model=16, n_layers=2,
                             n_heads=2, num_classes=3, pooling="mean"))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.train()  # the rollout evaluates in eval mode and gives the mode back
    images = torch.randn(2, 1, 8, 8)
    maps, logits = vit_rollout(model, images)
    assert model.training
    model.eval()
    with torch.no_grad(), capture_attention(model) as cap:
        want_logits = model(images)
    torch.testing.assert_close(logits, want_logits)
    eye = torch.eye(16)
    rollout = eye.expand(2, 16, 16)
    for rec in cap.records:  # by hand: (mean_heads + I) / 2, renormalized, layer over layer
        step = 0.5 * rec.weights.mean(1) + 0.5 * eye
        rollout = (step / step.sum(-1, keepdim=True)) @ rollout
    want = rollout.mean(1).reshape(2, 4, 4)  # the pooled output draws on every token's row
    torch.testing.assert_close(maps, want)
    assert float(want.std()) > 1e-3  # not the uniform 1/T a wrong axis would give


def test_rollout_residual_weight_is_used():
    torch.manual_seed(0)
    a = torch.rand(1, 2, 4, 4).softmax(-1)
    rec = AttentionRecord(name="l0", kind="self", mechanism="full", weights=a,
                    pattern=torch.ones(1, 1, 4, 4, dtype=torch.bool), note="")
    for r in (0.2, 0.7):
        want = (1 - r) * a.mean(1) + r * torch.eye(4)
        torch.testing.assert_close(attention_rollout([rec], residual=r), want)


def test_a_classifier_run_gets_the_accuracy_panel(tmp_path):
    import json

    from attnlab.viz.curves import plot_training

    rows = [{"step": s, "loss": 3.0 / s, "lr": 1e-3} for s in (1, 2, 3)]
    rows.append({"step": 3, "val_loss": 1.0, "val_accuracy": 0.6, "chance_accuracy": 0.5})
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    image = mpimg.imread(plot_training(metrics, tmp_path / "loss.png"))
    assert image.shape[1] == 17 * 110  # four panels: loss, lr, tokens/s, accuracy
