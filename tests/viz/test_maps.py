"""PNG maps for every kind of record: cross-attention labels, signed (linformer) weights, a
per-head pattern (bigbird); and the plotting module that training curves share."""

import json

import matplotlib.image as mpimg
import torch

from attnlab.models import Encoder, EncoderDecoder
from attnlab.models.config import EncoderConfig, Seq2SeqConfig
from attnlab.viz.capture import capture_attention
from attnlab.viz.curves import plot_training
from attnlab.viz.maps import plot_attention_grid, plot_head, record_labels


def test_seq2seq_grid_labels_and_cross_head(tmp_path):
    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1,
                                         max_len=32)).eval()
    with torch.no_grad(), capture_attention(model) as cap:
        model(torch.randint(0, 30, (1, 6)), torch.randint(0, 30, (1, 4)))
    src, tgt = [f"s{i}" for i in range(6)], [f"d{i}" for i in range(4)]
    labels = {r.name: record_labels(r, src, tgt) for r in cap.records}
    cross = next(r for r in cap.records if r.kind == "cross")
    assert labels[cross.name] == (tgt, src)
    assert labels["encoder.blocks.0.self_attn"] == (src, src)
    assert labels["decoder.blocks.0.self_attn"] == (tgt, tgt)
    out = plot_attention_grid(cap.records, tmp_path / "grid.png", tokens=src, target=tgt)
    assert mpimg.imread(out).shape[0] > 300  # three rows of heatmaps
    assert mpimg.imread(plot_head(cross, 1, tmp_path / "cross.png", tokens=src,
                                  target=tgt)).shape[1] > 1000


def test_sparse_and_signed_maps(tmp_path):
    for attention, options in (("linformer", {"seq_len": 32, "k": 4}),
                               ("bigbird", {"block_size": 2, "num_random_blocks": 1})):
        torch.manual_seed(0)
        model = Encoder(EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1,
                                      max_len=32, attention=attention,
                                      attention_options=options)).eval()
        with torch.no_grad(), capture_attention(model) as cap:
            model(torch.randint(0, 20, (1, 12)))
        rec = cap.records[0]
        assert rec.mechanism == attention
        if attention == "linformer":
            assert (rec.weights < 0).any()  # W F is signed: drawn with a diverging map
        else:
            assert not rec.pattern.all()
        out = plot_attention_grid(cap.records, tmp_path / f"{attention}.png",
                                  tokens=[str(i) for i in range(12)])
        assert out.is_file()


def test_training_curves_go_through_the_plotting_module(tmp_path):
    rows = [{"step": s, "loss": 3.0 / s, "lr": 1e-3, "tokens_per_s": 100.0} for s in (1, 2, 3)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    image = mpimg.imread(plot_training(metrics, tmp_path / "loss.png"))
    assert image.shape[1] == 13 * 110  # figsize 13 in at the shared 110 dpi
