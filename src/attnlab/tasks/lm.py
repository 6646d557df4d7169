"""Language modeling: next-token prediction on a text corpus with a GPT.

Data: a corpus name, file or folder -> a tokenizer trained on it (char or byte-level BPE) ->
memory-mapped train/val token arrays. Loss: mean cross-entropy of the next token. Metrics:
validation loss, perplexity and bits per character, beside the unigram baseline (the loss of
predicting every token from the training set's token frequencies, which ignores all context).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnlab.data import (
    encode_corpus,
    eval_batches,
    load_text,
    load_tokenizer,
    sample_batch,
    train_tokenizer,
)
from attnlab.errors import AttnlabError
from attnlab.models import GPT
from attnlab.train import distributed


class LanguageModeling:
    """A GPT, its tokenizer and token splits, with the loss and metrics of the task.

    Args:
        model: a `GPT` whose vocab_size matches the tokenizer (moved to `device`).
        tokenizer: the run's tokenizer.
        splits: `TokenSplits` with `.train` and `.val` token arrays.
        eval_batch_count: validation batches per evaluation.
        batch_size: sequences per validation batch.
        device: where batches go.
    """

    def __init__(self, model: GPT, tokenizer, splits, *, eval_batch_count: int = 20,
                 batch_size: int = 16, device: torch.device | str = "cpu"):
        self.tokenizer, self.splits = tokenizer, splits
        self.block = model.config.max_len
        self.eval_batch_count, self.batch_size = eval_batch_count, batch_size
        self.device = torch.device(device)
        self.model = model.to(self.device)

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        x, y = sample_batch(self.splits.train, n, self.block, generator)
        return x[part].to(self.device), y[part].to(self.device)

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    def evaluate(self, model) -> dict:
        """Loss and perplexity per token, and bits per character of the text the scored
        tokens decode to (the windows evaluated, not the split's average token length)."""
        total, count, chars = 0.0, 0, 0
        for x, y in eval_batches(self.splits.val, self.batch_size, self.block,
                                 self.eval_batch_count):
            logits = model(x.to(self.device)).float()
            total += F.cross_entropy(logits.flatten(0, 1), y.to(self.device).flatten(),
                                     reduction="sum").item()
            count += y.numel()
            chars += sum(len(self.tokenizer.decode(row)) for row in y.tolist())
        val = total / count
        return {"val_loss": val, "perplexity": math.exp(val),
                "bits_per_char": total / math.log(2) / max(chars, 1)}

    def baselines(self) -> dict:
        return {"unigram_loss": self.unigram_loss()}

    def unigram_loss(self) -> float:
        """Cross-entropy of the validation tokens under the training token frequencies
        (add-one smoothed): what a model that ignores context can reach."""
        V = self.tokenizer.vocab_size
        counts = np.bincount(np.asarray(self.splits.train), minlength=V).astype(np.float64) + 1
        logp = np.log(counts / counts.sum())
        val = np.asarray(self.splits.val)
        return float(-logp[val].mean())


class LanguageModelingRun:
    """How a run directory of task `lm` is built, reloaded and evaluated (see tasks.run)."""

    model_class = GPT
    sized_fields = ("vocab_size",)  # filled in from the tokenizer, not the recipe
    bounded_eval = True  # evaluate() honours `batches`

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        """(LanguageModeling, tokenizer): a fresh tokenizer is trained on the text."""
        text, _ = load_text(cfg.data.source)
        if fresh:
            tokenizer = train_tokenizer(cfg.data.tokenizer, text, cfg.data.tokenizer_vocab())
        else:
            tokenizer = load_tokenizer(run_dir / "tokenizer.json")
        if dist.main:  # one process fills the token cache, the others then read it
            splits = encode_corpus(text, tokenizer, val_fraction=cfg.data.val_fraction)
        distributed.barrier(dist)
        if not dist.main:
            splits = encode_corpus(text, tokenizer, val_fraction=cfg.data.val_fraction)
        for name, split in (("training", splits.train), ("validation", splits.val)):
            if len(split) < cfg.model.max_len + 1:  # one window of inputs and its targets
                fixes = ("lower model.max_len, give more text or raise data.val_fraction"
                         if name == "validation" else "lower model.max_len or give more text")
                raise AttnlabError(f"the {name} split holds {len(split):,} tokens, fewer than "
                                   f"model.max_len + 1 = {cfg.model.max_len + 1:,}; {fixes}")
        if cfg.model.vocab_size != tokenizer.vocab_size:
            cfg.model = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        task = LanguageModeling(GPT(cfg.model), tokenizer, splits,
                                eval_batch_count=cfg.train.eval_batches,
                                batch_size=cfg.train.batch_size, device=device)
        return task, tokenizer

    def load_tokenizer(self, run_dir: Path):
        return load_tokenizer(Path(run_dir) / "tokenizer.json")

    def describe(self, task: LanguageModeling) -> str:
        return f"{len(task.splits.train):,} training tokens"

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation loss, perplexity and bits per character, beside the unigram baseline."""
        text, _ = load_text(cfg.data.source)
        splits = encode_corpus(text, tokenizer, val_fraction=cfg.data.val_fraction)
        task = LanguageModeling(model, tokenizer, splits,
                                eval_batch_count=batches or cfg.train.eval_batches,
                                batch_size=cfg.train.batch_size)
        with torch.no_grad():
            metrics = task.evaluate(model)
        metrics.update(task.baselines())
        return metrics


@torch.no_grad()
def held_out_loss(model, tokenizer, text: str, *, context: int, max_tokens: int = 16384,
                  held_out: float = 0.1, batch_size: int = 4, progress: bool = False) -> dict:
    """Loss, perplexity and bits per character of any causal LM on the end of a text.

    The last `held_out` share of the characters (the part an attnlab run holds out) is encoded
    with the model's own tokenizer and cut into non-overlapping windows of `context` tokens,
    each scored on its own (so a window's first tokens see little context, as in the usual
    chunked evaluation). Bits per character count the characters those tokens spell, which
    makes models with different tokenizers comparable.

    Args:
        model: a GPT (any mechanism), in eval mode.
        tokenizer: its tokenizer (`encode`, `decode`).
        text: the text; its held-out end must hold at least two tokens.
        context: tokens per window (at most the model's `max_len`).
        max_tokens: stop after this many tokens.
        held_out: share of the text, from its end, that is evaluated.
        batch_size: windows per forward pass.
        progress: show a progress bar.
    """
    from tqdm import tqdm

    if context < 2 or context > model.config.max_len:
        raise AttnlabError(f"context must be in [2, {model.config.max_len}] (the model's "
                           f"max_len), got {context}")
    ids = tokenizer.encode(text[int(len(text) * (1 - held_out)):])[: max_tokens + 1]
    if len(ids) < 2:
        raise AttnlabError("the held-out text is shorter than two tokens; give a longer text")
    device = next(model.parameters()).device
    starts = list(range(0, len(ids) - 1, context))
    total, count = 0.0, 0
    batches = range(0, len(starts), batch_size)
    for b in tqdm(batches, desc="eval", unit="batch", disable=not progress, leave=False):
        rows = [ids[s: s + context + 1] for s in starts[b: b + batch_size]]
        # every window holds context + 1 tokens but the last, which is scored alone
        full = [r for r in rows if len(r) == context + 1]
        short = [r for r in rows if len(r) != context + 1]
        for group in ([full] if full else []) + [[r] for r in short]:
            x = torch.tensor([r[:-1] for r in group], device=device)  # (B, T)
            y = torch.tensor([r[1:] for r in group], device=device)
            logits = model(x).float()  # (B, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    chars = len(tokenizer.decode(ids[1:]))  # the characters the scored tokens spell
    loss = total / count
    return {"val_loss": loss, "perplexity": math.exp(loss),
            "bits_per_char": total / math.log(2) / max(chars, 1), "tokens": count}
