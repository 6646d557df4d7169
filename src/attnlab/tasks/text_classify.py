"""Text classification with one added layer: an `Encoder` reads a sentence, its pooled features
go through one linear layer to the class (Devlin et al., 2019, §4; the "one added layer" of
fine-tuning BERT).

Three ways to get the encoder, all the same task and the same model class:

- from pretrained weights (`model.pretrained`: a model name from `attnlab models list`, or a
  Hugging Face BERT folder), with the checkpoint's own tokenizer, and either frozen
  (`model.freeze`: only the linear head trains; a linear probe) or fine-tuned whole;
- from scratch (`model.pretrained` empty), with a char or BPE tokenizer trained on the training
  sentences (`data.tokenizer`, `data.vocab_size`).

The head attaches through the Encoder's uniform `forward_features` / `forward_head` API (its
`num_classes` linear layer); no model code knows about this task.

A run directory stays self-contained: config.json holds the resolved architecture (taken from
the checkpoint when pretrained), tokenizer.json the tokenizer, best/ and last/ the weights, so
`load_run`, `attnlab eval` and `attnlab predict` never need the pretrained source again.

Data: a sentiment set of `attnlab.data.sentiment` (`vader-movies`) or a ratings file in its
format, in its fixed train / val / test split (split seed 0, whatever the training seed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.data.sentiment import LABELS, TextClassificationData, load_sentiment
from attnlab.data.tokenizers import load_tokenizer, train_tokenizer
from attnlab.errors import AttnlabError, ConfigError
from attnlab.interop.tokenizer import HFTokenizer
from attnlab.models import Encoder
from attnlab.models.config import EncoderConfig

#: The split of a run's data never follows train.seed: every run sees the same test set.
SPLIT_SEED = 0
# Fields of the model config a user may choose when the architecture comes from a checkpoint.
_FREE_WITH_PRETRAINED = ("pooling", "dropout", "num_classes", "vocab_size", "pretrained",
                         "freeze", "max_tokens")


@dataclass
class TextClassifierConfig(EncoderConfig):
    """An `EncoderConfig` plus where its weights start and what trains.

    Args:
        pretrained: a model name (`attnlab models list`) or a Hugging Face BERT folder to start
            from; its architecture and tokenizer replace the ones of this config (setting an
            architecture field to another value than the checkpoint's is an error; dropout
            and pooling stay free, pooling left at cls becoming mean for a checkpoint without
            pooler weights). Empty: train from scratch.
        freeze: train only the linear head; the encoder stays as loaded (needs `pretrained`,
            and `dropout` 0, since dropout in a frozen encoder only adds noise to fixed
            features).
        max_tokens: sentences are cut to this many tokens (special tokens included), at most
            `max_len` (the default, 128, shrinks to a checkpoint's positions when it has fewer).
    """

    pretrained: str = ""
    freeze: bool = False
    max_tokens: int = 128

    def __post_init__(self):
        super().__post_init__()
        if self.freeze and not self.pretrained:
            raise ConfigError("model.freeze needs model.pretrained (a model name or HF folder): "
                              "a frozen encoder trained from scratch is a random one")
        if self.freeze and self.dropout > 0:
            raise ConfigError(f"model.freeze with model.dropout {self.dropout}: dropout only "
                              f"adds noise to a frozen encoder's features; set dropout 0")
        if not 1 < self.max_tokens <= self.max_len:
            raise ConfigError(f"model.max_tokens must be in [2, max_len={self.max_len}], got "
                              f"{self.max_tokens}")


# -- tokens --------------------------------------------------------------------------------------
def encode_texts(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each text, cut to `max_tokens` (an HF tokenizer keeps its closing [SEP])."""
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.hf.enable_truncation(max_tokens)
        try:
            return [e.ids for e in tokenizer.hf.encode_batch(list(texts))]
        finally:
            tokenizer.hf.no_truncation()
    return [ids[:max_tokens] for ids in tokenizer.encode_batch(list(texts))]


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> tuple[Tensor, Tensor | None]:
    """Right-pad to the longest: ids (B, T) and key_padding_mask (B, T, True = real token), the
    mask None when nothing is padded (every mechanism then takes its unmasked path)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = True
    return ids, (None if bool(mask.all()) else mask)


def _pad_id(tokenizer) -> int:
    return getattr(tokenizer, "pad_id", 0)  # padded positions are masked: any valid id does


# -- the task ------------------------------------------------------------------------------------
class TextClassification:
    """An `Encoder` with a linear head and labelled sentences, tokenized once.

    Args:
        model: an `Encoder` with `num_classes` equal to the data's (moved to `device`).
        tokenizer: the model's tokenizer (HFTokenizer, or attnlab's char / BPE).
        data: the labelled sentences.
        max_tokens: tokens kept per sentence.
        freeze: run the encoder without gradients (its parameters must not require them).
        batch_size: sentences per evaluation batch.
        device: where batches go.
    """

    def __init__(self, model: Encoder, tokenizer, data: TextClassificationData, *,
                 max_tokens: int, freeze: bool = False, batch_size: int = 32,
                 device: torch.device | str = "cpu"):
        self.data, self.tokenizer, self.freeze = data, tokenizer, freeze
        self.batch_size, self.device = batch_size, torch.device(device)
        self.model = model.to(self.device)
        self.pad_id = _pad_id(tokenizer)
        self.ids = {s: encode_texts(tokenizer, t, max_tokens) for s, t in data.texts.items()}
        self.labels = {s: torch.from_numpy(y) for s, y in data.labels.items()}

    def _batch(self, split: str, rows) -> tuple[Tensor, Tensor | None, Tensor]:
        x, mask = pad_batch([self.ids[split][i] for i in rows], self.pad_id)
        y = self.labels[split][torch.as_tensor(rows, dtype=torch.long)]
        return (x.to(self.device), None if mask is None else mask.to(self.device),
                y.to(self.device))

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        rows = torch.randint(len(self.labels["train"]), (n,), generator=generator)
        return self._batch("train", rows[part].tolist())

    def logits(self, model, x: Tensor, mask: Tensor | None) -> Tensor:
        """(B, T) ids -> (B, classes): features, then the head; no graph through a frozen
        encoder (it would only cost memory and time)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            h = model.forward_features(x, key_padding_mask=mask)  # (B, T, d)
        return model.forward_head(h, key_padding_mask=mask).float()  # (B, classes)

    def loss(self, model, batch) -> Tensor:
        x, mask, y = batch
        return F.cross_entropy(self.logits(model, x, mask), y)

    @torch.no_grad()
    def evaluate(self, model, split: str = "val") -> dict:
        total, correct, count = 0.0, 0, 0
        n = len(self.labels[split])
        for start in range(0, n, self.batch_size):
            x, mask, y = self._batch(split, list(range(start, min(start + self.batch_size, n))))
            logits = self.logits(model, x, mask)
            total += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
        return {f"{split}_loss": total / count, f"{split}_accuracy": correct / count}

    def baselines(self) -> dict:
        return {"chance_accuracy": 1.0 / self.data.num_classes,
                "majority_accuracy": self.data.majority_accuracy("val")}


def freeze_encoder(model: Encoder) -> None:
    """Only the linear head (`model.head`) keeps requiring gradients."""
    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)


# -- the run kind --------------------------------------------------------------------------------
def load_pretrained_encoder(source: str) -> tuple[Encoder, HFTokenizer]:
    """(Encoder, its HFTokenizer) from a model name or a Hugging Face BERT folder."""
    from attnlab.interop import load_pretrained

    path = Path(source).expanduser()
    if path.is_dir():
        from attnlab.interop import folder_kind

        if folder_kind(path) != "hf":
            raise AttnlabError(f"model.pretrained {source} is an attnlab run directory; give a "
                               f"Hugging Face BERT folder or a model name")
    model, tokenizer = load_pretrained(source)
    if not isinstance(model, Encoder):
        raise AttnlabError(f"model.pretrained '{source}' is a {type(model).__name__}; text "
                           f"classification needs a BERT-style encoder (e.g. all-MiniLM-L6-v2)")
    if not isinstance(tokenizer, HFTokenizer):
        raise AttnlabError(f"model.pretrained '{source}' has no tokenizer.json; the encoder "
                           f"needs the tokenizer it was trained with")
    return model, tokenizer


def resolve_pretrained(asked: TextClassifierConfig, base: EncoderConfig,
                       num_classes: int) -> TextClassifierConfig:
    """The run's model config: `base` (the checkpoint's architecture) with the free choices of
    `asked`; an architecture field `asked` sets to another value than `base` is an error."""
    defaults = TextClassifierConfig()
    for f in dataclasses.fields(EncoderConfig):
        if f.name in _FREE_WITH_PRETRAINED:
            continue
        mine, theirs = getattr(asked, f.name), getattr(base, f.name)
        if mine != getattr(defaults, f.name) and mine != theirs:
            raise ConfigError(f"model.{f.name} is {mine!r} but model.pretrained "
                              f"'{asked.pretrained}' fixes it at {theirs!r}; drop the setting")
    # pooling left at its default (cls) follows the checkpoint: cls where it has BERT's pooler
    # weights, else mean (sentence-transformers' MiniLM has them but pools by mean: say so).
    pooling = asked.pooling if asked.pooling != defaults.pooling else base.pooling
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(EncoderConfig)}
    max_tokens = asked.max_tokens
    if max_tokens > base.max_len:
        if max_tokens != defaults.max_tokens:  # asked for: an error; the default: shortened
            raise ConfigError(f"model.max_tokens {max_tokens} is more than the "
                              f"{base.max_len} positions of '{asked.pretrained}'")
        max_tokens = base.max_len
    values.update(pooling=pooling, dropout=asked.dropout, num_classes=num_classes,
                  pretrained=asked.pretrained, freeze=asked.freeze, max_tokens=max_tokens)
    return TextClassifierConfig(**values)


class TextClassificationRun:
    """How a run directory of task `text-classify` is built, reloaded, evaluated and asked
    for predictions (see tasks.run)."""

    model_class = Encoder
    sized_fields = ("vocab_size", "num_classes")  # filled in from the tokenizer and the data
    bounded_eval = False  # evaluate() scores whole splits

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        """Data, tokenizer and model: from the pretrained source or trained here on a new
        run; from the run directory on a resumed one (its weights come from last/)."""
        data = load_sentiment(cfg.data.source, seed=SPLIT_SEED)
        if not fresh:
            tokenizer = self.load_tokenizer(run_dir)
            model = Encoder(cfg.model)
        elif cfg.model.pretrained:
            base, tokenizer = load_pretrained_encoder(cfg.model.pretrained)
            cfg.model = resolve_pretrained(cfg.model, base.config, data.num_classes)
            torch.manual_seed(cfg.train.seed)  # the head's initialization
            model = Encoder(cfg.model)
            # Everything but the new head comes from `base`; the checkpoint's pooler (BERT's
            # dense + tanh) is left behind when the run pools by mean.
            own = model.state_dict()
            weights = {k: v for k, v in base.state_dict().items()
                       if k in own or not k.startswith("pooler.")}
            missing, unexpected = model.load_state_dict(weights, strict=False)
            if unexpected or any(not k.startswith("head.") for k in missing):
                raise AttnlabError(f"'{cfg.model.pretrained}' does not match its own config: "
                                   f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        else:
            text = "\n".join(data.texts["train"])
            tokenizer = train_tokenizer(cfg.data.tokenizer, text, cfg.data.tokenizer_vocab())
            cfg.model = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size,
                                            num_classes=data.num_classes)
            torch.manual_seed(cfg.train.seed)  # the model's initialization
            model = Encoder(cfg.model)
        if cfg.model.freeze:
            freeze_encoder(model)
        task = TextClassification(model, tokenizer, data, max_tokens=cfg.model.max_tokens,
                                  freeze=cfg.model.freeze, batch_size=cfg.train.batch_size,
                                  device=device)
        return task, tokenizer

    def load_tokenizer(self, run_dir: Path):
        path = Path(run_dir) / "tokenizer.json"
        from attnlab.tasks.run import read_run_config

        if read_run_config(run_dir).model.pretrained:
            return HFTokenizer.from_file(path)
        return load_tokenizer(path)

    def describe(self, task: TextClassification) -> str:
        lengths = [len(s) for s in task.ids["train"]]
        frozen = ", encoder frozen" if task.freeze else ""
        return (f"{len(lengths):,} training sentences of {np.mean(lengths):.0f} tokens on "
                f"average (max {max(lengths)}){frozen}")

    def format_metrics(self, summary: dict) -> str:
        """The line `attnlab train` ends with (and `attnlab eval`, with the test accuracy)."""
        test = (f"test accuracy {summary['test_accuracy']:.4f}  "
                if "test_accuracy" in summary else "")
        return (f"{test}validation accuracy {summary['val_accuracy']:.4f} (loss "
                f"{summary['val_loss']:.4f}; majority class {summary['majority_accuracy']:.4f})")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation and test loss and accuracy, beside chance and the majority class.
        The splits are small enough to score whole: `bounded_eval` is False."""
        data = load_sentiment(cfg.data.source, seed=SPLIT_SEED)
        task = TextClassification(model, tokenizer, data, max_tokens=cfg.model.max_tokens,
                                  batch_size=cfg.train.batch_size)
        return {**task.evaluate(model), **task.evaluate(model, "test"), **task.baselines()}

    def predict(self, model, tokenizer, cfg, texts: list[str]) -> list[dict]:
        """The label and its probability for each text, with every label's probability.

        Args:
            model, tokenizer, cfg: a run's (`load_run`).
            texts: non-empty sentences.
        """
        return predict_texts(model, tokenizer, texts, max_tokens=cfg.model.max_tokens)


@torch.no_grad()
def predict_texts(model: Encoder, tokenizer, texts: list[str], *, max_tokens: int,
                  label_names: tuple[str, ...] = LABELS, batch_size: int = 32,
                  ) -> list[dict]:
    """[{"text", "label", "probability", "probabilities": {label: p}}] for each text.

    Args:
        model: a text classifier (Encoder with a head of `len(label_names)` classes).
        tokenizer: its tokenizer.
        texts: sentences; an empty or blank one is an error.
        max_tokens: tokens kept per sentence.
        label_names: name of each class.
        batch_size: sentences per forward pass.
    """
    if not texts:
        raise AttnlabError("give at least one text to classify (--text)")
    for i, t in enumerate(texts):
        if not t.strip():
            raise AttnlabError(f"text {i + 1} is empty; give a sentence to classify")
    if model.config.num_classes != len(label_names):
        raise AttnlabError(f"the model has {model.config.num_classes} classes, expected "
                           f"{len(label_names)} ({', '.join(label_names)})")
    model.eval()
    out = []
    pad_id = _pad_id(tokenizer)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        x, mask = pad_batch(encode_texts(tokenizer, chunk, max_tokens), pad_id)
        device = next(model.parameters()).device
        x = x.to(device)
        mask = None if mask is None else mask.to(device)
        h = model.forward_features(x, key_padding_mask=mask)
        probs = model.forward_head(h, key_padding_mask=mask).float().softmax(-1)  # (B, C)
        for text, p in zip(chunk, probs.tolist(), strict=True):
            k = int(np.argmax(p))
            out.append({"text": text, "label": label_names[k], "probability": p[k],
                        "probabilities": dict(zip(label_names, p, strict=True))})
    return out
