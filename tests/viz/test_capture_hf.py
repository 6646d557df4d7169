"""Captured attention equals Hugging Face transformers' `output_attentions` on identical
weights (GPT-2, LLaMA with grouped-query attention and RoPE, BERT with padding), and
`attnlab viz` reads a Hugging Face folder with its tokenizer."""

import json

import pytest
import torch

from attnlab.cli import main
from attnlab.interop import load_hf_folder
from attnlab.viz.capture import capture_attention
from tests.interop.test_folders import hf_folder, wordpiece_json
from tests.interop.tiny import ATOL, RTOL, V, hf_bert, hf_gpt2, hf_llama


@pytest.mark.parametrize("make", [hf_gpt2, hf_llama, hf_bert], ids=["gpt2", "llama", "bert"])
def test_weights_equal_transformers_output_attentions(make, tmp_path):
    hf = make().eval()
    model, _ = load_hf_folder(hf_folder(tmp_path, hf))
    idx = torch.randint(V, (2, 10), generator=torch.Generator().manual_seed(0))
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[1, 7:] = False
    with torch.no_grad(), capture_attention(model) as cap:
        model(idx, key_padding_mask=keep)
        theirs = hf(idx, attention_mask=keep.long(), output_attentions=True).attentions
    assert len(cap.records) == len(theirs) == 2
    for rec, ref in zip(cap.records, theirs, strict=True):
        # real queries only: transformers' rows of padded queries follow its own conventions
        torch.testing.assert_close(rec.weights[0], ref[0], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(rec.weights[1, :, :7], ref[1, :, :7], atol=ATOL, rtol=RTOL)


def test_viz_cli_reads_a_hugging_face_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))
    folder = hf_folder(tmp_path, hf_bert(), wordpiece_json(padding=False))
    out = tmp_path / "bert.html"
    assert main(["viz", str(folder), "--text", "the cat sat on the mat", "--out",
                 str(out)]) == 0
    data = json.loads(out.read_text().split('id="attn-data">')[1].split("</script>")[0])
    assert data["tokens"]["src"] == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]
    assert [layer["kind"] for layer in data["layers"]] == ["self", "self"]
    png = tmp_path / "bert.png"
    assert main(["viz", str(folder), "--text", "the cat " * 20, "--out", str(png)]) == 2
    assert "longer than the model's context of 32" in capsys.readouterr().err
    assert not png.exists()
