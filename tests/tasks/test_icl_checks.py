"""ICL input checks the CLI tests do not reach: prompts longer than the model's positions,
negative label indices in a file, and label words a tokenizer cannot tell apart."""

import json

import pytest
from tokenizers import Tokenizer

from attnlab.data import CharTokenizer
from attnlab.errors import AttnlabError
from attnlab.interop.tokenizer import HFTokenizer
from attnlab.models import GPT, GPTConfig
from attnlab.tasks.icl import icl_accuracy, label_token_ids, load_labelled
from tests.interop.test_folders import wordpiece_json
from tests.tasks.test_icl import CHARS, toy_set


def test_a_prompt_over_the_models_positions_is_refused_before_any_forward():
    tok = CharTokenizer(CHARS)
    data = toy_set()  # texts of 5 characters: a demonstration is 7 tokens, a query 6, a label 1
    kw = dict(template="{text}={label}", label_words=["x", "y"], separator=",", draws=1,
              progress=False)

    def gpt(max_len):
        return GPT(GPTConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2, n_layers=1,
                             max_len=max_len, positional="learned")).eval()

    # 2 shots feed 7 + (1 + 7) + (1 + 6) = 22 tokens; the label is predicted, never fed
    icl_accuracy(gpt(22), tok, data, shots=(0, 2), **kw)
    with pytest.raises(AttnlabError, match="2-shot prompt is 22 tokens, over the model's "
                                           "max_len 21"):
        icl_accuracy(gpt(21), tok, data, shots=(0, 2), **kw)


def test_a_negative_label_index_in_a_file_is_refused(tmp_path):
    path = tmp_path / "set.jsonl"
    rows = [("good", "1"), ("bad", "0"), ("fine", "-1"), ("meh", "0")]
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))
    with pytest.raises(AttnlabError, match="row 3: label '-1'"):
        load_labelled(path, ["neg", "pos"])


def test_label_words_that_encode_alike_are_refused():
    tok = HFTokenizer(Tokenizer.from_str(wordpiece_json(padding=False)))  # lowercases
    assert label_token_ids(tok, ["cat", "dog"], " ", multi_token=True)
    with pytest.raises(AttnlabError, match="do not all encode differently"):
        label_token_ids(tok, ["Cat", "cat"], " ", multi_token=True)
