"""Synthetic transduction (copy, reverse, sort) with the LSTM encoder-decoder of
`attnlab.models.rnn`: the recipes rnn-copy, rnn-reverse, rnn-sort.

Data: `data.source` is "copy", "reverse" or "sort", optionally with source lengths
"reverse:8-32" (default 1 to `model.max_len`); symbols are ids 3 .. `model.vocab_size` - 1
(`attnlab.data.synthetic`). Training batches are drawn fresh from the run's generator; the
validation and test sets are fixed (seeds 1 and 2, 512 rows each). Loss: cross-entropy over
the target and its EOS. Metrics: greedy-decoded token accuracy and exact-sequence accuracy,
beside chance (1 / symbols per token).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.data.synthetic import (
    BOS,
    EOS,
    KINDS,
    PAD,
    SPECIALS,
    SequenceBatch,
    accuracy,
    make_sequences,
)
from attnlab.errors import ConfigError, did_you_mean
from attnlab.models.rnn import RNNSeq2Seq

EVAL_ROWS = 512
SPLIT_SEEDS = {"val": 1, "test": 2}


def parse_source(source: str, max_len: int) -> tuple[str, int, int]:
    """"reverse:8-32" -> ("reverse", 8, 32); a bare kind spans 1 .. max_len."""
    kind, _, span = source.partition(":")
    if kind not in KINDS:
        raise ConfigError(f"unknown sequence task '{kind}'{did_you_mean(kind, KINDS)}; "
                          f"data.source is one of {', '.join(KINDS)}, optionally ':MIN-MAX'")
    if not span:
        return kind, 1, max_len
    try:
        lo, hi = (int(x) for x in span.split("-"))
    except ValueError:
        raise ConfigError(f"data.source '{source}': lengths are written ':MIN-MAX', e.g. "
                          f"'{kind}:8-32'") from None
    if not 1 <= lo <= hi <= max_len:
        raise ConfigError(f"data.source '{source}': need 1 <= MIN <= MAX <= model.max_len "
                          f"({max_len})")
    return kind, lo, hi


def teacher_forced_loss(logits: Tensor, tgt_out: Tensor, reduction: str = "mean") -> Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
                           reduction=reduction)


@torch.no_grad()
def decode_greedy(model, src: Tensor, src_mask: Tensor, steps: int) -> Tensor:
    """(B, steps) greedy ids of an `RNNSeq2Seq` or an `EncoderDecoder` (KV-cached)."""
    if isinstance(model, RNNSeq2Seq):
        return model.greedy(src, steps, bos=BOS, eos=EOS, src_key_padding_mask=src_mask)
    mask = None if bool(src_mask.all()) else src_mask
    memory = model.encode(src, src_key_padding_mask=mask)
    cache = model.new_cache()
    y = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    out = []
    for _ in range(steps):
        h = model.decode(y, memory, cache=cache, memory_key_padding_mask=mask)
        nxt = model.forward_head(h)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
        done |= nxt == EOS
        out.append(nxt)
        y = nxt[:, None]
    return torch.stack(out, 1)


def forward(model, batch: SequenceBatch) -> Tensor:
    """Teacher-forced logits of either model kind."""
    mask = None if bool(batch.src_mask.all()) else batch.src_mask
    return model(batch.src, batch.tgt_in, src_key_padding_mask=mask)


@torch.no_grad()
def evaluate_sequences(model, data: SequenceBatch, *, batch_size: int = 256,
                       prefix: str = "val") -> dict:
    """Teacher-forced loss and greedy token / exact-sequence accuracy over `data`."""
    was = model.training
    model.eval()
    loss, count, preds = 0.0, 0, []
    for i in range(0, len(data), batch_size):
        b = data.rows(slice(i, i + batch_size))
        loss += float(teacher_forced_loss(forward(model, b), b.tgt_out, "sum"))
        count += int((b.tgt_out != PAD).sum())
        preds.append(decode_greedy(model, b.src, b.src_mask, b.tgt_out.shape[1]))
    model.train(was)
    acc = accuracy(torch.cat(preds), data.tgt_out)
    return {f"{prefix}_loss": loss / count, f"{prefix}_token_acc": acc["token_acc"],
            f"{prefix}_seq_acc": acc["seq_acc"]}


class SequenceTransduction:
    """An `RNNSeq2Seq` on copy / reverse / sort sequences.

    Args:
        model: the model (moved to `device`).
        kind, min_len, max_len: the task and its source lengths.
        n_symbols: distinct symbols.
        device: where batches go.
    """

    def __init__(self, model, kind: str, min_len: int, max_len: int, n_symbols: int, *,
                 device: torch.device | str = "cpu"):
        if n_symbols < 2:
            raise ConfigError(f"model.vocab_size must be >= {SPECIALS + 2} (3 special ids and "
                              f"at least 2 symbols)")
        self.kind, self.min_len, self.max_len, self.n_symbols = kind, min_len, max_len, n_symbols
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.sets = {split: make_sequences(kind, EVAL_ROWS, min_len=min_len, max_len=max_len,
                                           n_symbols=n_symbols, seed=seed).to(self.device)
                     for split, seed in SPLIT_SEEDS.items()}

    def train_batch(self, generator: torch.Generator, n: int, part: slice) -> SequenceBatch:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator)) + 100
        rows = make_sequences(self.kind, n, min_len=self.min_len, max_len=self.max_len,
                              n_symbols=self.n_symbols, seed=seed).rows(part)
        # every row ends where its longest member does: trim the shared padding
        keep = int(rows.src_mask.sum(1).max())
        return SequenceBatch(rows.src[:, :keep], rows.src_mask[:, :keep], rows.tgt_in[:, :keep + 1],
                             rows.tgt_out[:, :keep + 1]).to(self.device)

    def loss(self, model, batch: SequenceBatch) -> Tensor:
        return teacher_forced_loss(forward(model, batch), batch.tgt_out)

    def evaluate(self, model, split: str = "val") -> dict:
        return evaluate_sequences(model, self.sets[split], prefix=split)

    def baselines(self) -> dict:
        return {"chance_token_acc": 1.0 / self.n_symbols}


class SequenceTransductionRun:
    """How a run directory of task `rnn-seq` is built, reloaded and evaluated (see tasks.run).
    Its data are ids already: no tokenizer."""

    model_class = RNNSeq2Seq
    sized_fields = ()
    bounded_eval = False  # evaluate() scores whole splits

    @staticmethod
    def _task(model, cfg, device="cpu") -> SequenceTransduction:
        kind, lo, hi = parse_source(cfg.data.source, cfg.model.max_len)
        return SequenceTransduction(model, kind, lo, hi, cfg.model.vocab_size - SPECIALS,
                                    device=device)

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        return self._task(RNNSeq2Seq(cfg.model), cfg, device), None

    def load_tokenizer(self, run_dir: Path):
        return None

    def describe(self, task: SequenceTransduction) -> str:
        return (f"{task.kind} of {task.min_len}-{task.max_len} symbols out of "
                f"{task.n_symbols}, attention '{task.model.config.attention}'")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation and test loss, token and exact-sequence accuracy."""
        task = self._task(model, cfg)
        return {**task.evaluate(model), **task.evaluate(model, "test"), **task.baselines()}

    @staticmethod
    def format_metrics(m: dict) -> str:
        return "\n".join(
            f"{split}: loss {m[f'{split}_loss']:.4f}, token accuracy "
            f"{m[f'{split}_token_acc']:.3f}, exact sequences {m[f'{split}_seq_acc']:.3f}"
            for split in ("val", "test") if f"{split}_loss" in m)
