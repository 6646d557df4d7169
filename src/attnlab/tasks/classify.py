"""Sequence classification: an encoder reads a whole (padded) sequence and one linear layer on
its pooled features names the class.

Data: a `ClassificationData` (token arrays and labels in train / val / test splits). Loss: mean
cross-entropy of the label. Metrics: loss and accuracy, beside chance (1 / classes) and the
majority-class baseline (always the most frequent training label) and the first-token baseline
(the most frequent training label of each first token).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnlab.data.lra import ClassificationData, load_lra
from attnlab.models import Encoder


class SequenceClassification:
    """An `Encoder` with a classifier head and a labelled dataset.

    Args:
        model: an `Encoder` with `num_classes` equal to the data's (moved to `device`).
        data: the labelled sequences.
        batch_size: sequences per evaluation batch.
        device: where batches go.
    """

    def __init__(self, model: Encoder, data: ClassificationData, *, batch_size: int = 32,
                 device: torch.device | str = "cpu"):
        self.data, self.batch_size = data, batch_size
        self.device = torch.device(device)
        self.model = model.to(self.device)

    def _batch(self, split: str, rows) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        x = torch.from_numpy(np.asarray(self.data.tokens[split][rows], dtype=np.int64))
        y = torch.from_numpy(np.asarray(self.data.labels[split][rows], dtype=np.int64))
        mask = x != self.data.pad_id  # (B, T) True = real token
        # no padding: every mechanism takes its faster unmasked path
        mask = None if bool(mask.all()) else mask.to(self.device)
        return x.to(self.device), mask, y.to(self.device)

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        rows = torch.randint(len(self.data.labels["train"]), (n,), generator=generator)
        return self._batch("train", rows[part].numpy())

    def loss(self, model, batch) -> torch.Tensor:
        x, mask, y = batch
        return F.cross_entropy(model(x, key_padding_mask=mask).float(), y)

    @torch.no_grad()
    def evaluate(self, model, split: str = "val") -> dict:
        total, correct, count = 0.0, 0, 0
        n = len(self.data.labels[split])
        for start in range(0, n, self.batch_size):
            x, mask, y = self._batch(split, np.arange(start, min(start + self.batch_size, n)))
            logits = model(x, key_padding_mask=mask).float()
            total += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
        prefix = "val" if split == "val" else split
        return {f"{prefix}_loss": total / count, f"{prefix}_accuracy": correct / count}

    def baselines(self) -> dict:
        return {"chance_accuracy": 1.0 / self.data.num_classes,
                "majority_accuracy": self.data.majority_accuracy("val"),
                "first_token_accuracy": self.data.first_token_accuracy("val")}


class SequenceClassificationRun:
    """How a run directory of task `classify` is built, reloaded and evaluated (see tasks.run).
    Its data are token ids already: no tokenizer."""

    model_class = Encoder
    sized_fields = ("vocab_size", "num_classes")  # filled in from the data, not the recipe
    bounded_eval = False  # evaluate() scores whole splits

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        """The labelled dataset at the model's `max_len` and an encoder sized to it."""
        data = load_lra(cfg.data.source, cfg.model.max_len)
        cfg.model = dataclasses.replace(cfg.model, vocab_size=len(data.vocab),
                                        num_classes=data.num_classes)
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        task = SequenceClassification(Encoder(cfg.model), data, batch_size=cfg.train.batch_size,
                                      device=device)
        return task, None

    def load_tokenizer(self, run_dir: Path):
        return None

    def describe(self, task: SequenceClassification) -> str:
        return (f"{len(task.data.labels['train']):,} training sequences of "
                f"{task.data.length} tokens")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation and test loss and accuracy, beside chance, the majority class and the
        first-token baseline."""
        task = SequenceClassification(model, load_lra(cfg.data.source, cfg.model.max_len),
                                      batch_size=cfg.train.batch_size)
        return {**task.evaluate(model), **task.evaluate(model, "test"), **task.baselines()}

    @staticmethod
    def format_metrics(m: dict) -> str:
        """Accuracy beside chance, the majority class and the first-token baseline."""
        test = f"  test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else ""
        return (f"validation accuracy {m['val_accuracy']:.4f} (loss {m['val_loss']:.4f}){test}"
                f"  (chance {m['chance_accuracy']:.4f}, majority class "
                f"{m['majority_accuracy']:.4f}, first token alone "
                f"{m['first_token_accuracy']:.4f})")
