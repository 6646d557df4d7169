"""Seq2seq tasks: batches and loss masking, metric wiring, and a tiny train -> eval ->
generate through the CLI on a TSV fixture (digits in English -> Spanish)."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
import yaml

from attnlab.cli import main
from attnlab.data.pairs import load_pairs
from attnlab.models import GPT, EncoderDecoder
from attnlab.models.config import GPTConfig, Seq2SeqConfig
from attnlab.tasks.run import TASKS, load_run
from attnlab.tasks.seq2seq import IGNORE, PairTokenizer, Seq2Seq, Seq2SeqLM, text_metrics

EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ES = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]


@pytest.fixture
def tsv(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))
    rng = random.Random(0)
    lines = []
    for _ in range(200):
        n = [rng.randrange(10) for _ in range(rng.randint(1, 3))]
        lines.append(" ".join(EN[i] for i in n) + "\t" + " ".join(ES[i] for i in n))
    path = tmp_path / "digits.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _tokenizer(tsv) -> tuple[PairTokenizer, object]:
    splits = load_pairs(str(tsv))
    return PairTokenizer.train(splits, 300), splits


def test_special_ids_follow_the_bpe_vocabulary_and_decode_to_nothing(tsv):
    tok, _ = _tokenizer(tsv)
    V = tok.bpe.vocab_size
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id, tok.vocab_size) == (
        V, V + 1, V + 2, V + 3, V + 4)
    ids = tok.encode(["tres uno"])[0]
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "tres uno"


def test_encoder_decoder_batch_shifts_target_and_pads_without_loss(tsv):
    tok, splits = _tokenizer(tsv)
    model = EncoderDecoder(Seq2SeqConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2,
                                         n_layers=1, max_len=16))
    task = Seq2Seq(model, tok, splits)
    x, mask, inp, labels = task.make_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    assert x.tolist() == [[5, 6, 7], [8, tok.pad_id, tok.pad_id]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert inp.tolist() == [[tok.bos_id, 9, 10, tok.pad_id], [tok.bos_id, 11, 12, 13]]
    assert labels.tolist() == [[9, 10, tok.eos_id, IGNORE], [11, 12, 13, tok.eos_id]]


def test_decoder_only_loss_is_on_the_target_only(tsv):
    """Source tokens and the sep get no loss: the loss equals the cross-entropy of the target
    positions computed by hand, and it does not move when the source's own next-token
    predictions change."""
    tok, splits = _tokenizer(tsv)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2, n_layers=1,
                          max_len=32))
    task = Seq2SeqLM(model, tok, splits)
    src, tgt = [5, 6, 7], [9, 10]
    x, labels = task.make_batch([src], [tgt])
    seq = [*src, tok.sep_id, *tgt, tok.eos_id]
    assert x[0].tolist() == seq[:-1]
    assert labels[0].tolist() == [IGNORE] * 3 + [9, 10, tok.eos_id]
    logits = model(x).float()[0]  # (T, V)
    by_hand = -sum(logits[i].log_softmax(-1)[seq[i + 1]] for i in (3, 4, 5)) / 3
    torch.testing.assert_close(task.loss(model, (x, labels)), by_hand)
    # the gradient of the loss reaches no logit at a source position
    logits = model(x).float().detach().requires_grad_()
    F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE).backward()
    assert logits.grad[0, :3].abs().sum() == 0 and logits.grad[0, 3:].abs().sum() > 0


def test_decoder_only_batch_cuts_source_to_its_budget(tsv):
    tok, splits = _tokenizer(tsv)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2, n_layers=1,
                          max_len=16))
    task = Seq2SeqLM(model, tok, splits)  # target budget 4, source 16 - 4 - 1 = 11
    x, labels = task.make_batch([list(range(20))], [list(range(30, 40))])
    assert x.shape[1] <= 16 and x[0, :11].tolist() == list(range(11))
    assert x[0, 11] == tok.sep_id and labels[0, 11:].tolist() == [30, 31, 32, tok.eos_id]


def test_text_metrics_equal_sacrebleu_and_rouge_score():
    import sacrebleu
    from rouge_score import rouge_scorer

    hyps = ["the cat sat on the mat", "a dog runs", "hello there world"]
    refs = ["the cat is on the mat", "the dog is running", "hello world"]
    got = text_metrics(("bleu", "rouge"), hyps, refs)
    assert got["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert got["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for k in ("rouge1", "rouge2", "rougeL"):
        want = 100 * sum(scorer.score(r, h)[k].fmeasure for h, r in zip(hyps, refs, strict=True))
        want /= 3
        assert got[k] == pytest.approx(want)
    assert 0 < got["bleu"] < 100 and set(text_metrics(("rouge",), hyps, refs)) == {
        "rouge1", "rouge2", "rougeL"}


TINY = {
    "task": "seq2seq",
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_len": 24, "norm_first": True},
    "data": {"tokenizer": "bpe", "vocab_size": 300},
    "train": {"max_steps": 80, "batch_size": 16, "eval_interval": 40, "eval_batches": 2,
              "checkpoint_interval": 40, "log_interval": 10, "sample_tokens": 0,
              "precision": "fp32", "warmup_steps": 5, "lr": 0.005},
}


@pytest.mark.parametrize("task", ["seq2seq", "seq2seq-lm"])
def test_tiny_train_eval_generate_through_the_cli(tsv, tmp_path, capsys, task):
    cfg = json.loads(json.dumps(TINY))
    cfg["task"], cfg["data"]["source"] = task, str(tsv)
    if task == "seq2seq-lm":
        cfg["model"] = {"d_model": 32, "n_heads": 2, "n_layers": 2, "max_len": 32}
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and f"attnlab eval {run}" in out
    assert (run / "tokenizer.json").is_file() and (run / "best" / "model.safetensors").is_file()
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    for key in ("val_loss", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "copy_bleu",
                "copy_chrf", "copy_rouge1"):
        assert key in m
    assert m["test_pairs"] == 20 and m["beam_size"] == 4
    assert m["copy_bleu"] < 5 < m["chrf"]  # English copied is not Spanish; the model learned
    assert main(["eval", str(run)]) == 0
    assert "(copy baseline" in capsys.readouterr().out
    assert main(["generate", str(run), "--prompt", "three one"]) == 0
    said = capsys.readouterr().out.strip()
    model, tok, run_cfg = load_run(run)  # the CLI prints the library's beam-search output
    assert said and said == TASKS[task].transduce(model, tok, run_cfg, "three one").strip()


def test_bad_input_is_one_line_and_exit_2(tsv, tmp_path, capsys):
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["source"] = str(tsv)
    cfg["data"]["tokenizer"] = "char"
    recipe = tmp_path / "char.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(recipe), "--out", str(tmp_path / "r1"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs data.tokenizer=bpe" in err and len(err.splitlines()) == 1
    cfg["data"]["tokenizer"], cfg["data"]["source"] = "bpe", "kjv-rv1910"
    recipe.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(recipe), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'kjv-rv1909'" in err and len(err.splitlines()) == 1


def test_generate_takes_a_beam_width_and_refuses_sampling_flags_and_empty_prompts(
        tsv, tmp_path, capsys):
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["source"] = str(tsv)
    cfg["train"].update(max_steps=2, eval_interval=2, checkpoint_interval=2)
    recipe = tmp_path / "t.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "   "]) == 2
    assert capsys.readouterr().err.strip() == ("attnlab: error: the prompt is empty; give the "
                                               "text to translate or summarize")
    assert main(["generate", str(run), "--prompt", "two", "--beam", "1"]) == 0
    model, tok, run_cfg = load_run(run)
    assert capsys.readouterr().out.strip() == TASKS["seq2seq"].transduce(
        model, tok, run_cfg, "two", beam_size=1).strip()
    assert main(["generate", str(run), "--prompt", "two", "--temperature", "0.5",
                 "--top-k", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--temperature, --top-k only apply to language models" in err and "--beam" in err
    assert len(err.splitlines()) == 1
    # a prompt longer than the model reads is refused, not cut; so is a bad token budget
    assert main(["generate", str(run), "--prompt", "three one " * 40]) == 2
    assert "longer than the 24 this model reads" in capsys.readouterr().err
    for bad in ("0", "-3", "24"):
        assert main(["generate", str(run), "--prompt", "two", "--max-new-tokens", bad]) == 2
        assert "max_new_tokens must be in [1, 23]" in capsys.readouterr().err
    assert main(["generate", str(run), "--prompt", "two", "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.strip() == TASKS["seq2seq"].transduce(
        model, tok, run_cfg, "two", max_new_tokens=2).strip()


def test_data_list_names_the_pair_datasets(capsys):
    from attnlab.data.corpora import SHAKESPEARE
    from attnlab.data.translation import KJV, SPARV

    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "kjv-rv1909" in out and "sword-text-sparv=2.60-1" in out
    assert "debian-descriptions" in out and "Translation-en" in out
    # every entry shows the checksums that pin it
    lines = out.splitlines()
    assert len(lines) == sum("sha256 " in line for line in lines)
    assert f"sha256 {SHAKESPEARE.sha256}]" in out  # whole: a prefix cannot be checked
    assert f"sha256 {KJV.sha256}, {SPARV.sha256}]" in out
