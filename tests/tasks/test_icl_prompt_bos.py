"""k-shot prompts for a tokenizer that puts a bos token before every encoding (LLaMA-style
tokenizers, GGUF files with add_bos_token): the prompt icl_accuracy scores must be the
tokenization of the whole prompt string, with exactly one bos at its very start, and the label
ids must be the label word's tokens alone (no bos)."""

import numpy as np
import pytest
from tokenizers import AddedToken, processors

import attnlab.tasks.icl as icl
from attnlab.data import CharTokenizer
from attnlab.interop.tokenizer import HFTokenizer
from attnlab.tasks.icl import encode_piece, icl_accuracy, label_token_ids
from tests.tasks.test_icl import CHARS, tiny_gpt, toy_set


def bos_tokenizer() -> HFTokenizer:
    hf = CharTokenizer(CHARS).to_hf()
    hf.add_special_tokens([AddedToken("<s>", special=True, normalized=False)])
    bos = hf.token_to_id("<s>")
    hf.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                      special_tokens=[("<s>", bos)])
    return HFTokenizer(hf)


def test_the_tokenizer_puts_one_bos_first():
    tok = bos_tokenizer()
    bos = tok.hf.token_to_id("<s>")
    assert tok.encode("ab") == [bos, *CharTokenizer(CHARS).encode("ab")]
    assert encode_piece(tok, "ab", first=True) == tok.encode("ab")
    assert encode_piece(tok, "ab", first=False) == CharTokenizer(CHARS).encode("ab")
    assert label_token_ids(tok, ["x", "y"], " ", multi_token=True) == [
        CharTokenizer(CHARS).encode(" x"), CharTokenizer(CHARS).encode(" y")]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_prompts_equal_the_whole_prompt_string_with_one_bos(k, monkeypatch):
    tok = bos_tokenizer()
    model = tiny_gpt(tok.vocab_size)
    data, template, sep, words = toy_set(), "{text}={label}", ",\n", ["x", "y"]
    seen = []
    real = icl.score_labels

    def spy(model, prefix, queries, candidates, **kw):
        seen.append((list(prefix), [list(q) for q in queries], [list(c) for c in candidates]))
        return real(model, prefix, queries, candidates, **kw)

    monkeypatch.setattr(icl, "score_labels", spy)
    icl_accuracy(model, tok, data, template=template, label_words=words, separator=sep,
                 shots=(k,), draws=2, seed=5, progress=False)
    assert len(seen) == (1 if k == 0 else 2)
    for d, (prefix, queries, candidates) in enumerate(seen):
        picked = np.random.default_rng([5, k, d]).choice(len(data.pool_texts), k,
                                                         replace=False)
        demos = [f"{data.pool_texts[j]}={words[data.pool_labels[j]]}" for j in picked]
        for text, query in zip(data.query_texts, queries, strict=True):
            whole = sep.join([*demos, f"{text}="])
            assert prefix + query == tok.encode(whole)
        assert candidates == [tok.encode(w)[1:] for w in words]


def test_majority_and_chance_are_those_of_the_queries():
    from attnlab.tasks.icl import LabelledSet

    tok = CharTokenizer(CHARS)
    # 3 queries of class 0, 1 of class 1, 0 of class 2: majority 3/4, chance 1/3
    data = LabelledSet("toy", ["ab", "cd", "ef"], [0, 1, 2], ["ab", "ab", "cd", "ab"],
                       [0, 0, 1, 0], ["x", "y", "z"])
    result = icl_accuracy(tiny_gpt(tok.vocab_size), tok, data, template="{text}={label}",
                          label_words=["x", "y", "z"], separator=",", shots=(0, 1), draws=2,
                          progress=False)
    assert result.majority == 0.75 and result.chance == 1 / 3
    assert result.pool == 3 and result.queries == 4
