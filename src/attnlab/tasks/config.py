"""Run configuration: nested (model, data, train) dataclasses, loaded from a recipe YAML and
overridden on the command line with `--set train.lr=3e-4`.

Unknown keys at any level are errors that name the nearest valid key; the resolved config is
saved as the run directory's config.json.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from attnlab.errors import AttnlabError, ConfigError, did_you_mean
from attnlab.models.config import (
    EncoderConfig,
    GPTConfig,
    Seq2SeqConfig,
    _check_types,
    from_dict,
)
from attnlab.models.decision import DecisionConfig
from attnlab.models.function_gpt import FunctionGPTConfig
from attnlab.models.rnn import RNNSeq2SeqConfig
from attnlab.models.timeseries import ForecastConfig
from attnlab.models.vit import VisionConfig
from attnlab.tasks.text_classify import TextClassifierConfig

# task -> the model config it trains: a GPT for language modeling, an encoder for classification
TASK_MODELS = {"lm": GPTConfig, "classify": EncoderConfig,
               "icl-regression": FunctionGPTConfig, "seq2seq": Seq2SeqConfig,
               "seq2seq-lm": GPTConfig, "text-classify": TextClassifierConfig,
               "image-classify": VisionConfig, "forecast": ForecastConfig,
               "rl": DecisionConfig, "rnn-seq": RNNSeq2SeqConfig}


@dataclass
class DataConfig:
    """Where the data comes from and how it becomes tokens.

    Args:
        source: for `lm`, a corpus name (`attnlab data list`), a text file, or a folder of
            text files; for `classify`, a labelled dataset (lra-listops, lra-retrieval), made
            at the model's `max_len`.
            For `seq2seq` / `seq2seq-lm`, a pair dataset (kjv-rv1909, debian-descriptions)
            or a source<TAB>target .tsv file.
            For `text-classify`, a sentiment set (vader-movies) or an id<TAB>rating<TAB>text
            file (`attnlab.data.sentiment`).
            For `image-classify`, an image set (digits, fashion-mnist; `attnlab.data.images`).
            For `forecast`, a series (co2) or a file of numbers (`attnlab.data.series`).
        tokenizer: "char" (characters, with byte fallback) or "bpe" (byte-level BPE); `lm` and
            `text-classify` from scratch.
        vocab_size: BPE vocabulary size (char: set by the text).
        val_fraction: the last fraction of the tokens held out for validation; `lm` (and
            `forecast`: the share of the steps before the test part).
        sha256: what a new run records of its data: the sha256 of a data file, or of a
            folder's files and names (None for a named data set, which its own checksums
            pin); resuming or evaluating the run refuses other data. Set it to pin a new
            run's data.

    A `source` that names an existing file or folder is stored as its absolute path, so that a
    run directory finds its data from wherever it is resumed or evaluated.
    """

    source: str = "shakespeare"
    tokenizer: str = "char"
    vocab_size: int = 1024
    val_fraction: float = 0.1
    sha256: str | None = None

    def __post_init__(self):
        _check_types(self)
        path = Path(self.source).expanduser()
        if path.exists():  # as `load_text` decides: an existing path wins over a name
            self.source = str(path.resolve())
        if self.tokenizer not in ("char", "bpe"):
            raise ConfigError(f"unknown tokenizer '{self.tokenizer}'"
                              f"{did_you_mean(self.tokenizer, ('char', 'bpe'))}; "
                              f"choose from: char, bpe")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")

    def tokenizer_vocab(self) -> int | None:
        """The size to train the tokenizer to: `vocab_size` for bpe, None for char (the text's
        characters). A char config with another `vocab_size` is refused, since it would be
        ignored; the default may stand (every saved config.json holds it)."""
        if self.tokenizer == "bpe":
            return self.vocab_size
        if self.vocab_size != DataConfig.vocab_size:
            raise ConfigError(f"data.vocab_size={self.vocab_size} sizes a bpe tokenizer; the "
                              f"char tokenizer's vocabulary is the text's characters (drop it, "
                              f"or set data.tokenizer=bpe)")
        return None


@dataclass
class TrainConfig:
    """Optimization and bookkeeping.

    Args:
        max_steps: optimizer steps.
        batch_size: sequences per step across all processes (split evenly among them),
            before gradient accumulation.
        grad_accum: micro-batches accumulated per optimizer step.
        lr, min_lr, warmup_steps, schedule: learning rate (cosine | noam | constant).
        weight_decay, beta1, beta2: AdamW.
        grad_clip: max global gradient norm (0 = off).
        eval_interval, eval_batches: validation every so many steps, over so many batches.
        checkpoint_interval: write the resumable "last" checkpoint every so many steps.
        log_interval: metrics.jsonl row every so many steps.
        seed: seeds initialization, data order and dropout.
        precision: fp32, bf16 (autocast, CPU or GPU), fp16 (autocast + grad scaler, GPU), or
            auto: bf16 where the hardware has native bf16 matmuls, else fp32.
        compile: wrap the model in torch.compile.
        device: auto, cpu or cuda.
        max_minutes: stop (and checkpoint) after this much wall time; 0 = no limit.
        sample_tokens: characters/tokens sampled at the end of training.
    """

    max_steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    checkpoint_interval: int = 250
    log_interval: int = 10
    seed: int = 1337
    precision: str = "auto"
    compile: bool = False
    device: str = "auto"
    max_minutes: float = 0.0
    sample_tokens: int = 300

    def __post_init__(self):
        _check_types(self)
        for name in ("max_steps", "batch_size", "grad_accum", "eval_interval", "eval_batches",
                     "checkpoint_interval", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError(f"train.lr must be > 0 and min_lr >= 0, got {self.lr}, "
                              f"{self.min_lr}")
        for name, choices in (("schedule", ("cosine", "noam", "constant")),
                              ("precision", ("auto", "fp32", "bf16", "fp16")),
                              ("device", ("auto", "cpu", "cuda"))):
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"unknown train.{name} '{value}'{did_you_mean(value, choices)}"
                                  f"; choose from: {', '.join(choices)}")
        for name in ("max_minutes", "sample_tokens", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class RunConfig:
    """A whole run: the task (lm or classify), its model, data and training settings."""

    task: str = "lm"
    model: GPTConfig | EncoderConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: names of the model fields the dict it was read from sets (not saved). Where the data
    #: fill a field in (vocab size, image size, ...), `tasks.run` refuses a given value the
    #: data contradict instead of silently replacing it.
    given: frozenset = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"a run config is a mapping of sections (task, model, data, "
                              f"train), not a {type(values).__name__}")
        values = dict(values)
        task = values.get("task", "lm")
        if task not in TASK_MODELS:
            raise ConfigError(f"unknown task '{task}'{did_you_mean(str(task), TASK_MODELS)}; "
                              f"choose from: {', '.join(TASK_MODELS)}")
        sections = {"model": TASK_MODELS[task], "data": DataConfig, "train": TrainConfig}
        names = ["task", *sections]
        for key in values:
            if key not in names:
                raise ConfigError(f"unknown config key '{key}'{did_you_mean(key, names)}; "
                                  f"the sections are: {', '.join(names)}")
        built = {k: from_dict(c, values.get(k) or {}, f"{k}.") for k, c in sections.items()}
        model = values.get("model")
        return cls(task=task, **built, given=frozenset(model if isinstance(model, dict) else ()))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        del values["given"]
        return values


class _YAMLLoader(yaml.SafeLoader):
    """Safe YAML that reads `3e-4` as a number, as JSON and `--set` do: YAML 1.1 wants a dot
    in a float (`3.0e-4`) and reads `3e-4` as a string, which a config would then refuse."""


# Any mantissa with an exponent (YAML 1.1 also wants the exponent's sign: `1.0e5` is a string)
_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def recipes() -> list[str]:
    """Names of the recipes shipped inside the package."""
    folder = resources.files("attnlab.tasks") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """A shipped recipe by name, or a YAML (or JSON) file by path, as a dict."""
    path = Path(name_or_path)
    if name_or_path in recipes():
        text = (resources.files("attnlab.tasks") / "recipes" / f"{name_or_path}.yaml").read_text()
        where, is_json = f"recipe '{name_or_path}'", False
    elif path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise AttnlabError(f"no config file at {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AttnlabError(f"{path} is not UTF-8 text") from None
        where, is_json = str(path), path.suffix == ".json"  # e.g. a run's config.json
    else:
        raise AttnlabError(f"unknown recipe '{name_or_path}'{did_you_mean(name_or_path, recipes())}"
                           f"; recipes: {', '.join(recipes())} (or give a .yaml path)")
    try:
        values = json.loads(text) if is_json else yaml.load(text, Loader=_YAMLLoader)
    except json.JSONDecodeError as e:
        raise AttnlabError(f"{where} is not valid JSON at line {e.lineno}") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise AttnlabError(f"{where} is not valid YAML{at}") from None
    if values is None:  # an empty file: training the defaults for hours is not what was meant
        raise AttnlabError(f"{where} is empty; give at least one section (model, data, train), "
                           f"or a recipe name (attnlab recipes)")
    if not isinstance(values, dict):
        raise AttnlabError(f"{where} must be a mapping of sections (model, data, train)")
    return values


def merge(base: dict, overrides: dict) -> dict:
    """Deep-merge `overrides` into a copy of `base`."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_value(raw: str, key: str):
    """A number as a number (YAML 1.1 would read '3e-4' as a string), else a YAML value."""
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise AttnlabError(f"--set {key}: cannot read value '{raw}'") from None


def parse_overrides(pairs: list[str], flag: str = "--set") -> dict:
    """['a=1', 'b.c=x'] -> {'a': 1, 'b': {'c': 'x'}}; `flag` names the option in errors."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise AttnlabError(f"{flag} takes key=value, got '{pair}'")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AttnlabError(f"--set {key}: '{part}' is already set to a value")
        node[leaf] = read_value(raw, key)
    return out


def load_run_config(recipe: str, overrides: list[str] | dict | None = None) -> RunConfig:
    """Recipe (name or YAML path) + overrides -> a validated `RunConfig`."""
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    return RunConfig.from_dict(merge(read_recipe(recipe), extra))
