"""k-shot in-context classification: cached, batched label scoring against a full forward per
label; prompt building against the whole-string tokenization; accuracy against an independent
loop; bad input as one line and exit status 2."""

import json

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.data import BPETokenizer, CharTokenizer
from attnlab.data.continents import CONTINENTS, load_continents
from attnlab.errors import AttnlabError
from attnlab.interop.folder import save_attnlab_folder
from attnlab.models import GPT, GPTConfig
from attnlab.tasks.icl import (
    ICLResult,
    LabelledSet,
    PromptFormat,
    encode_piece,
    icl_accuracy,
    label_token_ids,
    load_labelled,
    score_labels,
    score_labels_naive,
)

CHARS = "abcdefghijklmnopqrstuvwxyz :=,\n"


def tiny_gpt(vocab: int, positional: str = "rope", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
                          positional=positional, max_len=512, activation="swiglu",
                          norm="rmsnorm"))
    with torch.no_grad():  # weights of a scale where a wrong cache or mask shows
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("positional", ["rope", "learned"])
@pytest.mark.parametrize("candidates", [[[3], [7], [9]], [[3, 4], [7], [9, 1, 2]]],
                         ids=["one-token", "multi-token"])
@pytest.mark.parametrize("prefix", [[1, 2, 3, 4, 5], []], ids=["cached", "no-prefix"])
def test_cached_batched_scores_equal_a_full_forward_per_label(positional, candidates, prefix):
    model = tiny_gpt(50, positional)
    queries = [[6, 7], [8], [9, 10, 11, 12], [13, 14, 15]]
    got = score_labels(model, prefix, queries, candidates, batch_size=3)  # ragged batches
    want = torch.stack([score_labels_naive(model, prefix + q, candidates) for q in queries])
    assert got.shape == (4, len(candidates))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got.std() > 0.1  # not a degenerate model that scores everything alike


def test_template_checks_and_label_lead():
    fmt = PromptFormat("Review: {text}\nSentiment: {label}")
    assert fmt.demonstration("good", "positive") == "Review: good\nSentiment: positive"
    assert fmt.query("bad") == ("Review: bad\nSentiment:", " ")
    for bad in ("Review: {text}", "Sentiment: {label}", "{label} {text}", "{text}{text}{label}"):
        with pytest.raises(AttnlabError, match="template must"):
            PromptFormat(bad)


def test_label_words_must_be_single_tokens():
    tok = CharTokenizer(CHARS)
    assert label_token_ids(tok, ["a", "b"], "") == [[tok.encode("a")[0]], [tok.encode("b")[0]]]
    with pytest.raises(AttnlabError, match="not a single token"):
        label_token_ids(tok, ["a", "bc"], "")
    assert label_token_ids(tok, ["a", "bc"], "", multi_token=True)[1] == tok.encode("bc")
    with pytest.raises(AttnlabError, match="not a single token"):  # the lead space counts
        label_token_ids(tok, ["a", "b"], " ")


def test_prompt_pieces_tokenize_as_the_whole_prompt_for_byte_level_bpe():
    text = " ".join(["Review: a fine film, warm and funny\nSentiment: positive",
                     "Review: dull and long\nSentiment: negative"] * 30)
    tok = BPETokenizer.train(text, 300)
    fmt, sep = PromptFormat("Review: {text}\nSentiment: {label}"), "\n\n"
    shots = [("a fine film", "positive"), ("dull, long", "negative"), ("warm", "positive")]
    pieces, ids = [], []
    for i, (t, w) in enumerate(shots):
        pieces.append((sep if i else "") + fmt.demonstration(t, w))
        ids += encode_piece(tok, pieces[-1], first=i == 0)
    query = sep + fmt.query("funny and warm")[0]
    ids += encode_piece(tok, query, first=False)
    whole = "".join(pieces) + query
    assert ids == tok.encode(whole)
    label = label_token_ids(tok, ["positive"], " ", multi_token=True)[0]
    assert ids + label == tok.encode(whole + " positive")


def toy_set(n_pool=12, n_query=10) -> LabelledSet:
    rng = np.random.default_rng(0)
    words = ["ab", "cd", "ef", "gh", "ij", "kl"]
    texts = [" ".join(rng.choice(words, 2)) for _ in range(n_pool + n_query)]
    labels = [int(t[0] in "aeik") for t in texts]
    return LabelledSet("toy", texts[:n_pool], labels[:n_pool], texts[n_pool:],
                       labels[n_pool:], ["x", "y"])


def test_accuracy_equals_an_independent_full_forward_loop():
    tok = CharTokenizer(CHARS)
    model = tiny_gpt(tok.vocab_size)
    data, template, sep = toy_set(), "{text}={label}", ",\n"
    words = ["x", "y"]
    result = icl_accuracy(model, tok, data, template=template, label_words=words,
                          separator=sep, shots=(0, 2, 3), draws=2, seed=7, progress=False)
    assert sorted(result.accuracy) == [0, 2, 3]
    assert len(result.accuracy[0]) == 1 and len(result.accuracy[3]) == 2
    cands = [tok.encode(w) for w in words]
    for k in (0, 2, 3):
        for d, acc in enumerate(result.accuracy[k]):
            picked = np.random.default_rng([7, k, d]).choice(len(data.pool_texts), k,
                                                             replace=False)
            demos = [f"{data.pool_texts[j]}={words[data.pool_labels[j]]}" for j in picked]
            correct = 0
            for text, gold in zip(data.query_texts, data.query_labels, strict=True):
                prompt = sep.join([*demos, f"{text}="])
                scores = score_labels_naive(model, tok.encode(prompt), cands)
                correct += int(scores.argmax()) == gold
            assert acc == pytest.approx(correct / len(data.query_texts))
    table = result.table()
    assert table.count("\n") == 4 and "| 3 |" in table
    summary = result.to_dict()
    assert summary["mean"]["3"] == pytest.approx(np.mean(result.accuracy[3]))
    assert summary["chance"] == 0.5
    again = ICLResult.from_dict(json.loads(json.dumps(summary)))
    assert again.accuracy == result.accuracy and again.table() == table


def test_named_continents_set_is_balanced_and_split_without_overlap():
    texts, labels = load_continents()
    assert len(texts) == len(set(texts)) == 100
    assert {labels.count(c) for c in CONTINENTS} == {25}
    data = load_labelled("continents", seed=3)
    assert len(data.query_texts) == 50 and len(data.pool_texts) == 50
    assert not set(data.query_texts) & set(data.pool_texts)
    assert data.label_names == list(CONTINENTS)
    for t, y in zip(data.query_texts, data.query_labels, strict=True):
        assert t in CONTINENTS[data.label_names[y]]


def test_user_files_jsonl_and_csv(tmp_path):
    rows = [("good film", "pos"), ("bad film", "neg"), ("great", "1"), ("awful", "0")]
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("text,label\n" + "\n".join(f'"{t}",{y}' for t, y in rows))
    for path in (jsonl, csv_file):
        data = load_labelled(path, ["neg", "pos"], limit=2)
        got = dict(zip(data.pool_texts + data.query_texts,
                       data.pool_labels + data.query_labels, strict=True))
        assert got == {"good film": 1, "bad film": 0, "great": 1, "awful": 0}
        assert len(data.query_texts) == 2


@pytest.fixture(scope="module")
def char_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("icl") / "run"
    tok = CharTokenizer(CHARS)
    save_attnlab_folder(tiny_gpt(tok.vocab_size), folder, tokenizer=tok)
    return folder


def test_cli_writes_table_json_and_plot(char_model_dir, tmp_path, capsys):
    data = tmp_path / "toy.jsonl"
    toy = toy_set()
    data.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in
                              zip(toy.pool_texts + toy.query_texts,
                                  toy.pool_labels + toy.query_labels, strict=True)))
    out, js = tmp_path / "icl.png", tmp_path / "icl.json"
    code = main(["icl", str(char_model_dir), "--data", str(data), "--template",
                 "{text}={label}", "--labels", "x,y", "--separator", ",\\n", "--shots", "0,1,2",
                 "--draws", "2", "--limit", "5", "--no-progress", "--out", str(out),
                 "--json", str(js)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 2 |" in printed and out.stat().st_size > 1000
    saved = json.loads(js.read_text())
    assert saved["separator"] == ",\n" and saved["queries"] == 5 and saved["shots"] == [0, 1, 2]
    assert len(saved["accuracy"]["2"]) == 2


@pytest.mark.parametrize("extra, content, message", [
    (["--labels", "x,y"], "", "is empty"),
    (["--labels", "x,yy"], None, "not a single token"),
    (["--labels", "x,y", "--template", "{text} is"], None, "template must contain {label}"),
    (["--labels", "x,y", "--shots", "0,50"], None, "exceed the"),
    (["--labels", "x,y,x"], None, "label words repeat"),
    ([], None, "give the label words"),
], ids=["empty-set", "multi-token-label", "no-label-slot", "k-over-pool", "labels-vs-classes",
        "no-labels"])
def test_bad_input_is_one_line_and_exit_2(char_model_dir, tmp_path, capsys, extra, content,
                                          message):
    data = tmp_path / "toy.jsonl"
    toy = toy_set()
    data.write_text(content if content is not None else "\n".join(
        json.dumps({"text": t, "label": y})
        for t, y in zip(toy.pool_texts, toy.pool_labels, strict=True)))
    argv = ["icl", str(char_model_dir), "--data", str(data), "--template", "{text}={label}",
            "--shots", "0,1,2", "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("attnlab: error:")
