"""Sequence to sequence: translation and summarization, with an encoder-decoder or a GPT.

Data: a pair dataset (`attnlab.data.pairs`: kjv-rv1909, debian-descriptions, or a TSV file)
-> one byte-level BPE trained on the training pairs' two sides, shared by source and target,
with four ids appended after its vocabulary: pad, bos, eos and sep.

Two kinds, one loss (mean cross-entropy of the target tokens and the final eos):

- `seq2seq`: an `EncoderDecoder` reads the source (at most max_len tokens) and decodes
  bos + target (at most max_len - 1 tokens).
- `seq2seq-lm`: a `GPT` reads source + sep + target + eos as one sequence; the positions that
  predict source tokens (and the sep) get no loss. The target gets max_len // 4 tokens (with
  its eos), the source what is left.

Longer texts are cut to these budgets, in training and at generation alike. Metrics: beam
search (beam 4, GNMT length penalty 0.6) over a fixed subset of the test split, scored with
sacrebleu (BLEU, chrF) or rouge-score (ROUGE-1/2/L F1), beside the dataset's trivial baseline
(copy the source; the lead sentence) on the same subset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.beam import beam_search
from attnlab.data import BPETokenizer, load_tokenizer
from attnlab.data.pairs import PairSplits, load_pairs
from attnlab.errors import AttnlabError, ConfigError
from attnlab.models import GPT, EncoderDecoder

IGNORE = -100  # label of positions without loss


class PairTokenizer:
    """A BPE tokenizer with pad, bos, eos and sep appended after its vocabulary.

    Args:
        bpe: the text tokenizer (its ids are 0 .. V-1).
    """

    def __init__(self, bpe):
        self.bpe = bpe
        V = bpe.vocab_size
        self.pad_id, self.bos_id, self.eos_id, self.sep_id = V, V + 1, V + 2, V + 3
        self.vocab_size = V + 4

    @classmethod
    def train(cls, splits: PairSplits, vocab_size: int) -> PairTokenizer:
        """BPE trained on both sides of the training pairs."""
        text = "\n".join(s + "\n" + t for s, t in splits.train)
        return cls(BPETokenizer.train(text, vocab_size))

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.bpe.encode_batch(texts)

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; the four special ids stand for no text."""
        return self.bpe.decode([i for i in ids if i < self.pad_id])

    def save(self, path) -> None:
        self.bpe.save(path)


def _pad(rows: list[list[int]], value: int) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class _PairTask:
    """What both kinds share: tokenized splits, sampling, validation loss, beam search."""

    def __init__(self, model, tokenizer: PairTokenizer, splits: PairSplits, *,
                 eval_batch_count: int = 20, batch_size: int = 32,
                 device: torch.device | str = "cpu"):
        self.tokenizer, self.splits = tokenizer, splits
        self.eval_batch_count, self.batch_size = eval_batch_count, batch_size
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.max_len = model.config.max_len
        self._encoded: dict[str, tuple[list[list[int]], list[list[int]]]] = {}

    def encoded(self, split: str) -> tuple[list[list[int]], list[list[int]]]:
        """(source ids, target ids) of a split, tokenized once."""
        if split not in self._encoded:
            pairs = self.splits.split(split)
            if split == "val":  # only the batches evaluation reads
                pairs = pairs[: self.eval_batch_count * self.batch_size]
            self._encoded[split] = (self.tokenizer.encode([s for s, _ in pairs]),
                                    self.tokenizer.encode([t for _, t in pairs]))
        return self._encoded[split]

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        src, tgt = self.encoded("train")
        rows = torch.randint(len(src), (n,), generator=generator)[part].tolist()
        return self.make_batch([src[i] for i in rows], [tgt[i] for i in rows])

    def evaluate(self, model) -> dict:
        """Teacher-forced validation loss (nats per target token)."""
        src, tgt = self.encoded("val")
        total, count = 0.0, 0
        for start in range(0, len(src), self.batch_size):
            batch = self.make_batch(src[start:start + self.batch_size],
                                    tgt[start:start + self.batch_size])
            loss, n = self.loss_sum(model, batch)
            total, count = total + loss.item(), count + n
        return {"val_loss": total / max(count, 1)}

    def loss(self, model, batch) -> Tensor:
        total, count = self.loss_sum(model, batch)
        return total / max(count, 1)

    def baselines(self) -> dict:
        return {}

    def generate(self, model, sources: list[str], *, beam_size: int = 4, alpha: float = 0.6,
                 max_new_tokens: int | None = None) -> list[str]:
        """Beam-search outputs of `sources`, as text."""
        model.eval()
        ids = self.tokenizer.encode(sources)
        return [self.tokenizer.decode(out) for out in self.search(
            model, ids, beam_size=beam_size, alpha=alpha, max_new_tokens=max_new_tokens)]


class Seq2Seq(_PairTask):
    """An `EncoderDecoder` on a pair dataset (task kind `seq2seq`).

    Args:
        model: the encoder-decoder (vocab_size = tokenizer.vocab_size).
        tokenizer: a `PairTokenizer`.
        splits: the pairs.
        eval_batch_count, batch_size: validation batches of so many pairs.
        device: where batches go.
    """

    def limits(self, source_tokens: int) -> tuple[int, int]:
        """(longest source the encoder reads, most new tokens the decoder holds)."""
        return self.max_len, self.max_len - 1

    def make_batch(self, src: list[list[int]], tgt: list[list[int]]):
        t = self.tokenizer
        src = [s[: self.max_len] or [t.pad_id] for s in src]
        tgt = [x[: self.max_len - 1] for x in tgt]
        x = _pad(src, t.pad_id)  # (B, S)
        mask = x != t.pad_id  # (B, S) True = real token
        mask = None if bool(mask.all()) else mask.to(self.device)
        inp = _pad([[t.bos_id, *y] for y in tgt], t.pad_id)  # (B, T)
        labels = _pad([[*y, t.eos_id] for y in tgt], IGNORE)  # (B, T)
        return x.to(self.device), mask, inp.to(self.device), labels.to(self.device)

    def loss_sum(self, model, batch) -> tuple[Tensor, int]:
        x, mask, inp, labels = batch
        logits = model(x, inp, src_key_padding_mask=mask).float()  # (B, T, V)
        return (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                reduction="sum"), int((labels != IGNORE).sum()))

    @torch.no_grad()
    def search(self, model, ids: list[list[int]], *, beam_size: int, alpha: float,
               max_new_tokens: int | None, batch: int = 32) -> list[list[int]]:
        t, out = self.tokenizer, []
        for start in range(0, len(ids), batch):
            chunk = [s[: self.max_len] or [t.pad_id] for s in ids[start:start + batch]]
            x = _pad(chunk, t.pad_id).to(self.device)  # (B, S)
            mask = x != t.pad_id
            mask = None if bool(mask.all()) else mask
            memory = model.encode(x, src_key_padding_mask=mask)  # (B, S, d)
            memory = memory.repeat_interleave(beam_size, 0)  # (B*K, S, d)
            mask = None if mask is None else mask.repeat_interleave(beam_size, 0)
            cache = model.new_cache()
            longest = max(len(s) for s in chunk)
            limit = max_new_tokens or min(self.max_len - 1, int(1.5 * longest) + 10)

            def step(prefix: Tensor, memory=memory, mask=mask, cache=cache) -> Tensor:
                h = model.decode(prefix[:, cache.seen:], memory, memory_key_padding_mask=mask,
                                 cache=cache)  # (N, t, d)
                return model.forward_head(h[:, -1]).float().log_softmax(-1)  # (N, V)

            out += beam_search(step, len(chunk), bos=t.bos_id, eos=t.eos_id,
                               beam_size=beam_size, max_new_tokens=limit, alpha=alpha,
                               reorder=cache.reorder, device=self.device)
        return out


class Seq2SeqLM(_PairTask):
    """A decoder-only `GPT` on a pair dataset (task kind `seq2seq-lm`): source + sep + target
    + eos in one sequence, loss on the target side only.

    Args: as `Seq2Seq`.
    """

    @property
    def target_budget(self) -> int:
        return self.max_len // 4

    def limits(self, source_tokens: int) -> tuple[int, int]:
        """(longest source read, most new tokens after it): source + sep + target share the
        context, and training kept a quarter of it for the target."""
        longest = self.max_len - self.target_budget - 1
        return longest, self.max_len - min(source_tokens, longest) - 1

    def make_batch(self, src: list[list[int]], tgt: list[list[int]]):
        t = self.tokenizer
        rows, labels = [], []
        for s, y in zip(src, tgt, strict=True):
            y = [*y[: self.target_budget - 1], t.eos_id]
            s = s[: self.max_len - self.target_budget - 1]  # as at generation
            seq = [*s, t.sep_id, *y]
            rows.append(seq[:-1])
            # position i predicts seq[i + 1]: the source tokens after the first and the sep
            # are predicted at positions 0 .. len(s) - 1, which get no loss
            labels.append([IGNORE] * len(s) + seq[len(s) + 1:])
        return _pad(rows, t.pad_id).to(self.device), _pad(labels, IGNORE).to(self.device)

    def loss_sum(self, model, batch) -> tuple[Tensor, int]:
        x, labels = batch
        logits = model(x).float()  # (B, T, V)
        return (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                reduction="sum"), int((labels != IGNORE).sum()))

    @torch.no_grad()
    def search(self, model, ids: list[list[int]], *, beam_size: int, alpha: float,
               max_new_tokens: int | None) -> list[list[int]]:
        t, out = self.tokenizer, []
        budget = max_new_tokens or self.target_budget
        for s in ids:
            # (1, S); the sep is beam search's bos
            prompt = torch.tensor([s[: self.max_len - self.target_budget - 1]],
                                  dtype=torch.long, device=self.device)
            cache = model.new_cache()

            def step(prefix: Tensor, prompt=prompt, cache=cache) -> Tensor:
                full = torch.cat([prompt.expand(prefix.size(0), -1), prefix], dim=1)
                h = model.forward_features(full[:, cache.seen:], cache=cache)  # (N, t, d)
                return model.forward_head(h[:, -1]).float().log_softmax(-1)  # (N, V)

            limit = min(budget, self.max_len - prompt.size(1) - 1)
            out += beam_search(step, 1, bos=t.sep_id, eos=t.eos_id, beam_size=beam_size,
                               max_new_tokens=limit, alpha=alpha, reorder=cache.reorder,
                               device=self.device)
        return out


def text_metrics(families: tuple[str, ...], hypotheses: list[str],
                 references: list[str]) -> dict:
    """Corpus BLEU and chrF (sacrebleu, default settings) for family "bleu"; mean ROUGE-1/2/L
    F1 x 100 (rouge-score, Porter stemmer) for family "rouge"."""
    out: dict[str, float] = {}
    if "bleu" in families:
        import sacrebleu

        out["bleu"] = sacrebleu.corpus_bleu(hypotheses, [references]).score
        out["chrf"] = sacrebleu.corpus_chrf(hypotheses, [references]).score
    if "rouge" in families:
        from rouge_score import rouge_scorer

        kinds = ("rouge1", "rouge2", "rougeL")
        scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
        scores = [scorer.score(r, h) for h, r in zip(hypotheses, references, strict=True)]
        for k in kinds:
            out[k] = 100.0 * sum(s[k].fmeasure for s in scores) / max(len(scores), 1)
    return out


class _PairRun:
    """How a run directory of a pair task is built, reloaded and evaluated (see tasks.run).

    Args:
        eval_sentences: test pairs decoded by `evaluate` (the first of the seeded test split).
        beam_size, alpha: beam search settings of `evaluate` and `transduce`.
    """

    task_class: type[_PairTask]
    sized_fields = ("vocab_size",)  # the tokenizer's vocabulary + 4 special ids
    bounded_eval = True  # evaluate() honours `batches`

    def __init__(self, eval_sentences: int = 200, beam_size: int = 4, alpha: float = 0.6):
        self.eval_sentences, self.beam_size, self.alpha = eval_sentences, beam_size, alpha

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        if cfg.data.tokenizer != "bpe":
            raise ConfigError(f"task {cfg.task} needs data.tokenizer=bpe (one BPE shared by "
                              f"source and target), got '{cfg.data.tokenizer}'")
        splits = load_pairs(cfg.data.source)
        tokenizer = (PairTokenizer.train(splits, cfg.data.vocab_size) if fresh
                     else self.load_tokenizer(run_dir))
        cfg.model = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        task = self.task_class(self.model_class(cfg.model), tokenizer, splits,
                               eval_batch_count=cfg.train.eval_batches,
                               batch_size=cfg.train.batch_size, device=device)
        return task, tokenizer

    def load_tokenizer(self, run_dir: Path) -> PairTokenizer:
        return PairTokenizer(load_tokenizer(Path(run_dir) / "tokenizer.json"))

    def describe(self, task: _PairTask) -> str:
        s = task.splits
        return (f"{len(s.train):,} training pairs of {s.name} ({len(s.val):,} val, "
                f"{len(s.test):,} test)")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation loss; beam-search metrics on the first `eval_sentences` test pairs beside
        the dataset's baseline on the same pairs."""
        splits = load_pairs(cfg.data.source, quiet=True)
        task = self.task_class(model, tokenizer, splits,
                               eval_batch_count=batches or cfg.train.eval_batches,
                               batch_size=cfg.train.batch_size)
        with torch.no_grad():
            metrics = task.evaluate(model)
        test = splits.test[: self.eval_sentences]
        sources, refs = [s for s, _ in test], [t for _, t in test]
        outputs = task.generate(model, sources, beam_size=self.beam_size, alpha=self.alpha)
        metrics.update(text_metrics(splits.metrics, outputs, refs))
        base = text_metrics(splits.metrics, [splits.baseline(s) for s in sources], refs)
        metrics.update({f"{splits.baseline_name}_{k}": v for k, v in base.items()})
        metrics.update({"test_pairs": len(test), "beam_size": self.beam_size,
                        "length_penalty": self.alpha,
                        "examples": [{"source": s, "reference": r, "output": o} for s, r, o
                                     in zip(sources[:3], refs[:3], outputs[:3], strict=True)]})
        return metrics

    def transduce(self, model, tokenizer, cfg, prompt: str, *, beam_size: int | None = None,
                  max_new_tokens: int | None = None) -> str:
        """The model's translation / summary of `prompt` (beam search, `beam_size` wide or the
        kind's default; at most `max_new_tokens`, default about 1.5x the source's length).
        A prompt longer than the model reads is refused, not cut."""
        if not prompt.strip():
            raise AttnlabError("the prompt is empty; give the text to translate or summarize")
        empty = PairSplits(name="prompt", train=[], val=[], test=[], metrics=(),
                           baseline_name="", baseline=str)
        task = self.task_class(model, tokenizer, empty)
        n = len(tokenizer.encode([prompt])[0])
        longest, room = task.limits(n)
        if n > longest:
            raise AttnlabError(f"the prompt is {n} tokens, longer than the {longest} this model "
                               f"reads; shorten it")
        if max_new_tokens is not None and not 1 <= max_new_tokens <= room:
            raise AttnlabError(f"max_new_tokens must be in [1, {room}] for this model and "
                               f"prompt, got {max_new_tokens}")
        return task.generate(model, [prompt], beam_size=beam_size or self.beam_size,
                             alpha=self.alpha, max_new_tokens=max_new_tokens)[0]

    @staticmethod
    def format_metrics(m: dict) -> str:
        """One line for people: validation loss, then each metric beside the baseline's."""
        parts = [f"validation loss {m['val_loss']:.4f}"]
        base = next((k.split("_", 1)[0] for k in m if k.endswith(("_bleu", "_rouge1"))), None)
        for k in ("bleu", "chrf", "rouge1", "rouge2", "rougeL"):
            if k in m:
                parts.append(f"{k} {m[k]:.2f} ({base} baseline {m[f'{base}_{k}']:.2f})")
        if "test_pairs" in m:
            parts.append(f"on {m['test_pairs']} test pairs, beam {m['beam_size']}")
        return "  ".join(parts)


class Seq2SeqRun(_PairRun):
    """Task kind `seq2seq`: an encoder-decoder."""

    model_class = EncoderDecoder
    task_class = Seq2Seq


class Seq2SeqLMRun(_PairRun):
    """Task kind `seq2seq-lm`: a decoder-only GPT over source + sep + target."""

    model_class = GPT
    task_class = Seq2SeqLM
