"""Text classification runs (task text-classify): config, a frozen encoder that stays frozen,
pretrained init, end-to-end train / eval / predict from the run directory alone, the CLI and
its errors. Tiny models and a tiny ratings file; the pretrained source is a tiny random BERT
saved as a Hugging Face folder."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertModel

from attnlab.cli import main
from attnlab.errors import ConfigError
from attnlab.interop import load_pretrained
from attnlab.models import Encoder
from attnlab.models.heads import masked_mean
from attnlab.tasks.config import RunConfig, load_run_config
from attnlab.tasks.run import load_run, predict_run, prepare_run, train_run
from attnlab.tasks.text_classify import (
    TextClassification,
    TextClassificationRun,
    TextClassifierConfig,
    encode_texts,
    pad_batch,
)

GOOD = ["wonderful", "moving", "brilliant", "funny", "gorgeous", "smart"]
BAD = ["dull", "tedious", "awful", "boring", "clumsy", "lifeless"]
NOUNS = ["film", "story", "cast", "script", "movie"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))


@pytest.fixture
def ratings(tmp_path):
    """60 clear sentences (a good or bad word decides) and a few neutral ones, VADER's format."""
    lines, i = [], 0
    for words, rating in ((GOOD, 2.5), (BAD, -2.5)):
        for w in words:
            for n in NOUNS:
                lines.append(f"{i}\t{rating}\ta {w} {n} .")
                i += 1
    lines += [f"{i + k}\t0.1\tthe {n} exists ." for k, n in enumerate(NOUNS)]
    path = tmp_path / "ratings.txt"
    path.write_text("\r\n".join(lines))
    return path


def wordpiece_json() -> str:
    """A BERT-style tokenizer.json ([CLS] ... [SEP], lowercasing) over the fixture's words."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "the", "exists",
             *GOOD, *BAD, *NOUNS]
    tok = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    return tok.to_str()


@pytest.fixture
def bert_folder(tmp_path):
    """A tiny random BERT (with pooler) saved as a Hugging Face folder with its tokenizer."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    folder = tmp_path / "tiny-bert"
    BertModel(cfg).eval().save_pretrained(folder)
    (folder / "tokenizer.json").write_text(wordpiece_json())
    return folder


def sets(pairs):
    return [arg for pair in pairs for arg in ("--set", pair)]


def run_cfg(ratings, **model) -> RunConfig:
    return RunConfig.from_dict({
        "task": "text-classify", "model": model,
        "data": {"source": str(ratings), "tokenizer": "char"},
        "train": {"max_steps": 30, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0,
                  "eval_interval": 15, "checkpoint_interval": 15, "log_interval": 5,
                  "precision": "fp32", "weight_decay": 0.0}})


# -- config ---------------------------------------------------------------------------------------
def test_the_recipes_are_text_classify_runs():
    frozen, tuned, scratch = (load_run_config(f"sentiment-{n}")
                              for n in ("frozen", "finetune", "scratch"))
    for cfg in (frozen, tuned, scratch):
        assert cfg.task == "text-classify" and isinstance(cfg.model, TextClassifierConfig)
        assert cfg.data.source == "vader-movies"
    assert frozen.model.freeze and frozen.model.pretrained == "all-MiniLM-L6-v2"
    assert not tuned.model.freeze and tuned.model.pretrained == "all-MiniLM-L6-v2"
    assert not scratch.model.pretrained and scratch.data.tokenizer == "bpe"


@pytest.mark.parametrize("model, match", [
    ({"freeze": True}, "freeze needs model.pretrained"),
    ({"freeze": True, "pretrained": "x", "dropout": 0.1}, "set dropout 0"),
    ({"max_len": 32, "max_tokens": 64}, "max_tokens must be in"),
    ({"fraeze": True}, "did you mean 'model.freeze'"),
])
def test_config_errors(model, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict({"task": "text-classify", "model": model})


def test_pretrained_fixes_the_architecture(ratings, bert_folder, tmp_path):
    cfg = run_cfg(ratings, pretrained=str(bert_folder), n_layers=4)
    with pytest.raises(ConfigError, match=r"n_layers is 4 but model.pretrained .* fixes it at 2"):
        TextClassificationRun().build(cfg, tmp_path, device="cpu", dist=None, fresh=True)
    cfg = run_cfg(ratings, pretrained=str(bert_folder), max_tokens=100)  # 64 positions
    with pytest.raises(ConfigError, match="max_tokens 100 is more than the 64 positions"):
        TextClassificationRun().build(cfg, tmp_path, device="cpu", dist=None, fresh=True)
    cfg = run_cfg(ratings, pretrained=str(bert_folder), n_layers=2, pooling="mean",
                  max_tokens=16)
    TextClassificationRun().build(cfg, tmp_path, device="cpu", dist=None, fresh=True)
    m = cfg.model  # resolved from the checkpoint, with the run's free choices
    assert (m.d_model, m.n_heads, m.n_layers, m.vocab_size, m.max_len) == (32, 4, 2, 32, 64)
    assert (m.norm_first, m.embed_norm, m.type_vocab_size) == (False, True, 2)
    assert (m.pooling, m.num_classes, m.max_tokens) == ("mean", 2, 16)


# -- padding and the head -------------------------------------------------------------------------
def test_padding_does_not_change_a_sentence_s_logits(ratings, bert_folder, tmp_path):
    cfg = run_cfg(ratings, pretrained=str(bert_folder), pooling="mean")
    task, tok = TextClassificationRun().build(cfg, tmp_path, device="cpu", dist=None,
                                              fresh=True)
    model = task.model.eval()
    assert cfg.model.max_tokens == 64  # the default 128, shrunk to the checkpoint's positions
    texts = ["a dull film .", "a wonderful , gorgeous , smart , funny movie ."]
    ids = encode_texts(tok, texts, 64)
    assert ids[0][0] == 2 and ids[0][-1] == 3  # [CLS] ... [SEP]
    x, mask = pad_batch(ids, tok.pad_id)
    assert mask is not None and mask.sum(1).tolist() == [len(i) for i in ids]
    with torch.no_grad():
        both = task.logits(model, x, mask)
        alone = task.logits(model, torch.tensor([ids[0]]), None)
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=0)
    # truncation keeps the closing [SEP], as the tokenizer's own truncation does
    cut = encode_texts(tok, texts[1:], 4)[0]
    assert len(cut) == 4 and cut[-1] == 3


def test_pretrained_init_equals_the_source_encoder(ratings, bert_folder, tmp_path):
    """The run's encoder computes the HF folder's features exactly (HF BertModel as the
    reference), whatever pooling the run chose."""
    cfg = run_cfg(ratings, pretrained=str(bert_folder), pooling="mean")
    task, tok = TextClassificationRun().build(cfg, tmp_path, device="cpu", dist=None,
                                              fresh=True)
    hf = BertModel.from_pretrained(bert_folder, attn_implementation="eager").eval()
    x, mask = pad_batch(encode_texts(tok, ["a moving story .", "the cast exists"], 64),
                        tok.pad_id)
    with torch.no_grad():
        ours = task.model.eval().forward_features(x, key_padding_mask=mask)
        theirs = hf(input_ids=x, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-5, rtol=1e-5)
        pooled = task.model.forward_head(ours, key_padding_mask=mask, pre_logits=True)
        torch.testing.assert_close(pooled, masked_mean(theirs, mask), atol=1e-5, rtol=1e-5)


# -- training -------------------------------------------------------------------------------------
def test_a_frozen_encoder_stays_frozen_and_the_head_learns(ratings, bert_folder, tmp_path):
    cfg = run_cfg(ratings, pretrained=str(bert_folder), freeze=True, pooling="mean")
    run = tmp_path / "run"
    train_run(cfg, run, resume=False, progress=False, log=lambda *a: None)
    start, _ = load_pretrained(bert_folder)
    trained = load_file(run / "last" / "model.safetensors")
    reference = start.state_dict()
    encoder = [k for k in trained if not k.startswith("head.")]
    assert len(encoder) > 20
    for k in encoder:  # every encoder tensor bit-identical to the checkpoint
        assert torch.equal(trained[k], reference[k]), k
    torch.manual_seed(cfg.train.seed)  # the head as build initialized it
    fresh = Encoder(cfg.model)
    assert not torch.allclose(trained["head.weight"], fresh.head.weight, atol=1e-3)
    assert not torch.allclose(trained["head.bias"], fresh.head.bias, atol=1e-3)
    model, _, _ = load_run(run)
    assert sum(p.numel() for p in model.head.parameters()) == 2 * 32 + 2


def test_only_the_head_receives_gradients_when_frozen(ratings, bert_folder, tmp_path):
    cfg = run_cfg(ratings, pretrained=str(bert_folder), freeze=True, pooling="mean")
    task, _ = TextClassificationRun().build(cfg, tmp_path, device="cpu", dist=None, fresh=True)
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    batch = task.train_batch(torch.Generator().manual_seed(0), 8, slice(0, 8))
    task.loss(task.model.train(), batch).backward()
    assert all(p.grad is None for n, p in task.model.named_parameters() if n not in trainable)
    assert task.model.head.weight.grad.abs().sum() > 0


def test_end_to_end_from_scratch_train_eval_predict(ratings, tmp_path, capsys):
    """The recipe's BPE, a tiny encoder: the run directory alone serves eval and predict."""
    run = tmp_path / "scratch"
    argv = ["train", "sentiment-scratch", "--out", str(run), "--no-progress", "--max-steps",
            "150", *sets([f"data.source={ratings}", "data.vocab_size=320", "model.d_model=32",
                         "model.n_heads=2", "model.n_layers=1", "model.d_ff=64",
                         "model.max_len=32", "model.max_tokens=32", "model.dropout=0.0",
                         "train.batch_size=16", "train.lr=1e-2", "train.warmup_steps=0",
                         "train.eval_interval=50", "train.checkpoint_interval=50"])]
    assert main(argv) == 0
    assert "validation accuracy" in capsys.readouterr().out
    assert {"config.json", "tokenizer.json", "best", "last"} <= {p.name for p in run.iterdir()}
    assert main(["eval", str(run)]) == 0
    assert capsys.readouterr().out.startswith("test accuracy 1.0000  validation accuracy")
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["test_accuracy"] == 1.0 and m["val_accuracy"] == 1.0
    assert main(["predict", str(run), "--text", "a brilliant movie .", "--text",
                 "a tedious script ."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["positive", "negative"]
    assert all(0.5 < float(ln.split("\t")[1]) <= 1.0 for ln in lines)
    # one text: label and probability only; --json has every label's probability
    assert main(["predict", str(run), "--text", "a funny cast ."]) == 0
    label, prob = capsys.readouterr().out.split()
    assert main(["predict", str(run), "--text", "a funny cast .", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["label"] == label and f"{row['probability']:.4f}" == prob
    assert sum(row["probabilities"].values()) == pytest.approx(1.0)


def test_a_char_run_reloads_its_own_tokenizer(ratings, tmp_path):
    from attnlab.data.tokenizers import CharTokenizer

    cfg = run_cfg(ratings, d_model=16, n_heads=2, n_layers=1, max_len=24, max_tokens=24,
                  pooling="mean")
    run = tmp_path / "char"
    train_run(cfg, run, resume=False, progress=False, log=lambda *a: None)
    model, tok, loaded = load_run(run)
    assert isinstance(tok, CharTokenizer) and loaded.model.vocab_size == tok.vocab_size
    long = "a wonderful story . " * 5  # longer than max_tokens: cut, not an error
    (row,) = predict_run(run, [long])
    x, mask = pad_batch(encode_texts(tok, [long], 24))
    assert x.shape == (1, 24) and mask is None
    with torch.no_grad():
        p = model(x).softmax(-1)[0]
    assert row["probabilities"]["positive"] == pytest.approx(float(p[1]), abs=1e-6)


def test_predict_equals_the_model_on_the_same_tokens(ratings, bert_folder, tmp_path):
    cfg = run_cfg(ratings, pretrained=str(bert_folder), pooling="mean")
    run = tmp_path / "run"
    train_run(cfg, run, resume=False, progress=False, log=lambda *a: None)
    (row,) = predict_run(run, ["a smart story ."])
    model, tok, loaded = load_run(run)
    task = TextClassification(model, tok, _data(ratings), max_tokens=loaded.model.max_tokens)
    x, mask = pad_batch(encode_texts(tok, ["a smart story ."], 64), tok.pad_id)
    with torch.no_grad():
        p = task.logits(model, x, mask).softmax(-1)[0]
    assert row["probabilities"]["positive"] == pytest.approx(float(p[1]), abs=1e-6)


def _data(ratings):
    from attnlab.data.sentiment import load_sentiment

    return load_sentiment(ratings)


def test_resume_continues_a_pretrained_run(ratings, bert_folder, tmp_path):
    cfg = run_cfg(ratings, pretrained=str(bert_folder), pooling="mean")
    run = tmp_path / "run"
    train_run(cfg, run, resume=False, progress=False, log=lambda *a: None)
    cfg2, _ = prepare_run(None, ["train.max_steps=40"], run, resume=True)
    assert cfg2.model.d_model == 32
    summary = train_run(cfg2, run, resume=True, progress=False, log=lambda *a: None)
    assert summary["step"] == 40


# -- CLI errors -----------------------------------------------------------------------------------
def test_predict_errors_are_one_line_with_status_2(ratings, bert_folder, tmp_path, capsys):
    run = tmp_path / "run"
    train_run(run_cfg(ratings, pretrained=str(bert_folder), pooling="mean"), run,
              resume=False, progress=False, log=lambda *a: None)
    capsys.readouterr()
    cases = [
        (["predict", str(tmp_path / "missing"), "--text", "x"], "missing does not exist"),
        (["predict", str(ratings), "--text", "x"], "is a file, not a run directory"),
        (["predict", str(bert_folder), "--text", "x"], "without a trained head"),
        (["predict", "all-MiniLM-L6-v2", "--text", "x"], "without a trained head"),
        (["predict", str(run), "--text", "  "], "text 1 is empty"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    # a run without weights
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text((run / "config.json").read_text())
    (empty / "tokenizer.json").write_text((run / "tokenizer.json").read_text())
    assert main(["predict", str(empty), "--text", "a dull film ."]) == 2
    assert "has no weights" in capsys.readouterr().err
    # a run of another task
    other = tmp_path / "lm"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "lm", "model": {}}))
    assert main(["predict", str(other), "--text", "x"]) == 2
    assert "predict needs a text classifier run" in capsys.readouterr().err
    # --text is required (argparse usage error, status 2)
    with pytest.raises(SystemExit) as e:
        main(["predict", str(run)])
    assert e.value.code == 2
