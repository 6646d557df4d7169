"""Run directories: create, resume, train, load and evaluate.

A run directory is the unit users handle:

    config.json       the resolved RunConfig (vocab size filled in from the tokenizer or data)
    tokenizer.json    the tokenizer (never pickled); language modeling only
    metrics.jsonl     one JSON row per log / evaluation
    loss.png          training curves
    last/             resumable checkpoint: weights, optimizer, step, RNG states
    best/             weights with the best validation loss
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from attnlab.errors import AttnlabError
from attnlab.files import atomic_write, sha256_file
from attnlab.models.swap import with_attention
from attnlab.tasks.classify import SequenceClassificationRun
from attnlab.tasks.config import RunConfig, load_run_config, merge, parse_overrides
from attnlab.tasks.forecast import ForecastRun
from attnlab.tasks.icl_regression import InContextRegressionRun
from attnlab.tasks.lm import LanguageModelingRun
from attnlab.tasks.rl import OfflineRLRun
from attnlab.tasks.seq2seq import Seq2SeqLMRun, Seq2SeqRun
from attnlab.tasks.sequences import SequenceTransductionRun
from attnlab.tasks.text_classify import TextClassificationRun
from attnlab.tasks.vision import ImageClassificationRun
from attnlab.train import distributed
from attnlab.train.checkpoint import load_model_weights, resolve
from attnlab.train.trainer import Trainer, native_bf16, pick_device
from attnlab.viz.curves import plot_training

#: task name -> how its run is built, reloaded and evaluated. A kind has `model_class`,
#: `sized_fields` (model fields its data fill in), `build(cfg, run_dir, device=, dist=, fresh=)
#: -> (task, tokenizer or None)`, `load_tokenizer(run_dir)`, `describe(task)`,
#: `evaluate(model, tokenizer, cfg, batches=)` and `bounded_eval` (whether that evaluation
#: honours `batches`); tasks.config.TASK_MODELS names its model config.
TASKS = {"lm": LanguageModelingRun(), "classify": SequenceClassificationRun(),
         "icl-regression": InContextRegressionRun(), "seq2seq": Seq2SeqRun(),
         "seq2seq-lm": Seq2SeqLMRun(), "text-classify": TextClassificationRun(),
         "image-classify": ImageClassificationRun(),
         "forecast": ForecastRun(), "rl": OfflineRLRun(),
         "rnn-seq": SequenceTransductionRun()}


def default_run_dir(recipe: str) -> Path:
    name = Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _differences(a: dict, b: dict, prefix: str = ""):
    """(key, "key is x there, y here") for every leaf where `a` and `b` differ, sorted."""
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            yield f"{prefix}{key}", f"{prefix}{key} is {x!r} there, {y!r} here"


def _first_difference(a: dict, b: dict, prefix: str = "",
                      typed: frozenset = frozenset()) -> str | None:
    """The first difference, one in a `typed` key first (a field derived from it, such as a
    ViT's max_len from its patch_size, would name what the user never wrote)."""
    found = list(_differences(a, b, prefix))
    first = [text for key, text in found if key in typed] or [text for _, text in found]
    return first[0] if first else None


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise AttnlabError(f"{run_dir} is not an attnlab run directory (no config.json)")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AttnlabError(f"{path} is corrupt (not JSON)") from None
    try:
        return RunConfig.from_dict(values)
    except AttnlabError as e:  # name the file: the user did not type this config
        raise AttnlabError(f"{path}: {e}") from None


def prepare_run(recipe: str | None, overrides: list[str], out: Path | None, *,
                resume: bool) -> tuple[RunConfig, Path]:
    """Resolve the config and the run directory; refuse to touch a user's directory wrongly.

    Args:
        recipe: a recipe name or a YAML / JSON path; None on resume (the run's own config).
        overrides: "key=value" strings, as `--set` takes them.
        out: the run directory; None picks runs/<recipe>-<time> for a new run.
        resume: continue the run in `out`: its config, changed only by `overrides`.

    Returns:
        (config, run directory).
    """
    if resume:
        if out is None:
            raise AttnlabError("--resume needs --out RUN_DIR, the run to continue")
        out = Path(out)
        stored = read_run_config(out)
        if resolve(out / "last") is None:
            raise AttnlabError(f"--resume: no checkpoint in {out}; nothing to resume")
        cfg = stored
        if recipe is not None or overrides:
            asked = load_run_config(recipe, overrides) if recipe else RunConfig.from_dict(
                merge(stored.to_dict(), parse_overrides(overrides)))
            diff = run_config_difference(stored, asked)
            if diff:
                raise AttnlabError(f"{out} holds another {diff.split('.')[0]}: {diff}; "
                                   f"resume it as it is or start a new run")
            # Only what was typed changes how the run trains on: a recipe's train section
            # starts runs, and would silently replace the run's own settings.
            typed = RunConfig.from_dict(merge(stored.to_dict(), parse_overrides(overrides)))
            cfg = dataclasses.replace(stored, train=typed.train)
        return cfg, out
    if recipe is None:
        raise AttnlabError("give a recipe name or a YAML config (see `attnlab recipes`)")
    cfg = load_run_config(recipe, overrides)
    out = Path(out) if out is not None else default_run_dir(recipe)
    if out.exists() and not out.is_dir():
        raise AttnlabError(f"{out} is a file; a run directory goes there (give another --out)")
    if out.exists() and any(out.iterdir()):
        raise _not_empty(out)
    return cfg, out


def run_config_difference(stored: RunConfig, asked: RunConfig,
                          sections: tuple[str, ...] = ("model", "data")) -> str | None:
    """The first field of `sections` where `asked` differs from a run's `stored` config, as
    "model.d_model is 64 there, 128 here", or None. The model fields the run's data filled in
    count only where `asked` gave them (a recipe leaves them at their defaults)."""
    filled = {k: v for k, v in _data_sized(stored).items() if k not in asked.given}
    asked = dataclasses.replace(asked, model=dataclasses.replace(asked.model, **filled))
    if asked.data.sha256 is None:  # recorded by the run from its text, not asked for
        asked = dataclasses.replace(asked, data=dataclasses.replace(asked.data,
                                                                    sha256=stored.data.sha256))
    for section in sections:
        diff = _first_difference(dataclasses.asdict(getattr(stored, section)),
                                 dataclasses.asdict(getattr(asked, section)),
                                 typed=asked.given if section == "model" else frozenset())
        if diff:
            return f"{section}.{diff}"
    return None


def _data_sized(cfg: RunConfig) -> dict:
    """The model fields a run fills in from its data rather than from the recipe."""
    return {name: getattr(cfg.model, name) for name in TASKS[cfg.task].sized_fields}


def build_task(cfg: RunConfig, run_dir: Path, *, device, dist=None, fresh: bool):
    """The run's task with its model (and its tokenizer, or None where the data are ids)."""
    return TASKS[cfg.task].build(cfg, run_dir, device=device, dist=dist or distributed.Dist(),
                                 fresh=fresh)


def train_run(cfg: RunConfig, run_dir: Path, *, resume: bool, progress: bool = True,
              log=print) -> dict:
    """Train (or continue) the run; write every file of the run directory.

    A new run that fails or is interrupted before its first checkpoint leaves nothing behind:
    its directory was new or empty (`prepare_run` checks), so what is in it is this run's
    config, tokenizer and metrics, which would only block a retry (and there is nothing to
    resume). From the first checkpoint on, the directory stays for `--resume`.

    Args:
        cfg, run_dir: from `prepare_run`.
        resume: continue from run_dir/last.
        progress: show the tqdm bar.
        log: where the run's one-line reports go.

    Returns:
        The last metrics (losses, baselines, step).
    """
    device = pick_device(cfg.train.device)
    dist = distributed.setup(device.type)
    claimed = created = False
    try:
        if dist.main and not resume:
            created = _claim(run_dir)
            claimed = True
        distributed.barrier(dist)
        cfg.data = check_data(cfg, fresh=not resume)
        asked = {name: getattr(cfg.model, name) for name in TASKS[cfg.task].sized_fields
                 if name in cfg.given}
        task, tokenizer = build_task(cfg, run_dir, device=device, dist=dist, fresh=not resume)
        for name, value in asked.items():
            if getattr(cfg.model, name) != value:
                raise AttnlabError(f"model.{name}={value!r} does not fit the data, which give "
                                   f"{getattr(cfg.model, name)!r}; leave it out (task "
                                   f"{cfg.task} fills it in from the data)")
        if dist.main and not resume:
            if tokenizer is not None:
                tokenizer.save(run_dir / "tokenizer.json")
            atomic_write(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
        baselines = task.baselines()
        if dist.main and not resume:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": 0, **baselines}) + "\n")
        model = task.model
        if dist.main:
            data = TASKS[cfg.task].describe(task)
            log(f"run {run_dir}: {model.num_parameters():,} parameters, {data}, "
                f"vocab {cfg.model.vocab_size}, device {device}, {dist.world} process(es)")
        trainer = Trainer(task, run_dir, cfg.train, dist=dist, device=device, resume=resume,
                          progress=progress)
        if dist.main and resume and trainer.step < cfg.train.max_steps:
            _continue_records(run_dir, cfg, trainer.step, log)
        if dist.main:
            log(f"precision {trainer.precision} (train.precision={cfg.train.precision}; native "
                f"bf16 matmul on {device.type}: {native_bf16(device)})")
        summary = trainer.fit(tokens_per_sequence=cfg.model.max_len)
        summary.update(baselines)
        if dist.main:
            plot_training(run_dir / "metrics.jsonl", run_dir / "loss.png", title=str(run_dir))
        return summary
    except BaseException:  # KeyboardInterrupt too
        if claimed and resolve(run_dir / "last") is None:
            _remove_unfinished(run_dir, created)
        raise
    finally:
        if claimed:
            (run_dir / _CLAIM).unlink(missing_ok=True)
        distributed.teardown(dist)


#: Held in a new run's directory while that run trains (removed when it ends).
_CLAIM = ".attnlab-claim"


def check_data(cfg: RunConfig, *, fresh: bool):
    """The run's data section with `sha256` filled in (new runs) or checked (resumed and
    evaluated ones): the hash of a data file, or of a folder's files and names. A named data
    set (a corpus, co2, ...) is pinned by the checksums it is built from, so `sha256` is
    None."""
    found = _source_sha256(cfg.data.source)
    pinned = cfg.data.sha256
    if pinned is not None and found is None:
        raise AttnlabError(f"data.sha256 pins a data file, but '{cfg.data.source}' is a named "
                           f"data set (its own checksums pin it); drop data.sha256")
    if pinned is not None and found != pinned:
        said = "data.sha256 asks for" if fresh else "the run was trained on data with sha256"
        raise AttnlabError(f"{cfg.data.source} has sha256 {found[:12]}..., but {said} "
                           f"{pinned[:12]}...; restore those data, or start a new run")
    return dataclasses.replace(cfg.data, sha256=found) if fresh else cfg.data


def _source_sha256(source: str) -> str | None:
    path = Path(source).expanduser()
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _claim(run_dir: Path) -> bool:
    """Make `run_dir` this new run's alone; return whether it was created here. Two runs
    started at once on one directory (the same --out, or default names within one second)
    would both pass `prepare_run`'s emptiness check and write into it together: creating the
    claim file is atomic, so exactly one of them goes on."""
    try:
        run_dir.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    try:
        os.close(os.open(run_dir / _CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        raise AttnlabError(f"{run_dir} is taken by another run starting in it; give another "
                           f"--out") from None
    if any(p.name != _CLAIM for p in run_dir.iterdir()):  # a run that came and went before
        (run_dir / _CLAIM).unlink()
        raise _not_empty(run_dir)
    return created


def _not_empty(out: Path) -> AttnlabError:
    return AttnlabError(f"{out} exists and is not empty; a new run never writes into it (use "
                        f"--resume to continue a run there, or another --out)")


def _continue_records(run_dir: Path, cfg: RunConfig, step: int, log) -> None:
    """Before a resumed run's first step: say which training settings changed, keep them in
    config.json, and drop the metrics rows of steps after the checkpoint (a killed run logged
    them, and the resumed run logs those steps again)."""
    before = read_run_config(run_dir).train
    changed = [f.name for f in dataclasses.fields(before)
               if getattr(before, f.name) != getattr(cfg.train, f.name)]
    if changed:
        log("resuming with " + ", ".join(f"train.{k} {getattr(before, k)!r} -> "
                                          f"{getattr(cfg.train, k)!r}" for k in changed))
        if cfg.train.schedule == "cosine" and {"max_steps", "schedule"} & set(changed):
            log(f"note: the cosine schedule now decays over {cfg.train.max_steps} steps, so the "
                f"learning rate from step {step} on is not the one the run had, and the result "
                f"is not what a straight run of this length would give")
        if getattr(TASKS[cfg.task], "paced_by_max_steps", False) and "max_steps" in changed:
            log(f"note: task {cfg.task} paces its curriculum by train.max_steps, so from step "
                f"{step} on it is not the run it was, nor a straight run of this length")
        atomic_write(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text("utf-8").splitlines(keepends=True)
        kept = [x for x in lines if x.endswith("\n") and _step_of(x) <= step]
        if len(kept) < len(lines):
            atomic_write(metrics, "".join(kept))


def _step_of(row: str) -> float:
    """A metrics row's step; a row a kill cut short counts as after every checkpoint."""
    try:
        return json.loads(row).get("step", 0)
    except ValueError:
        return float("inf")


def _remove_unfinished(run_dir: Path, created: bool) -> None:
    """Empty a new run's directory (remove it too if this run created it)."""
    if not run_dir.is_dir():
        return
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in run_dir.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def load_run(run_dir: Path, *, checkpoint: str = "best", device="cpu"):
    """(model, tokenizer, config) of a run directory, weights from `best/` or `last/`.
    A run whose data are token ids already (classify) has no tokenizer (None).

    Args:
        run_dir: the run directory.
        checkpoint: "best" (falls back to last/ when no validation has run yet) or "last".
        device: where the model goes.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    kind = TASKS[cfg.task]
    tokenizer = kind.load_tokenizer(run_dir)
    found = resolve(run_dir / checkpoint) or (resolve(run_dir / "last")
                                              if checkpoint == "best" else None)
    if found is None:
        raise AttnlabError(f"{run_dir} has no weights ({checkpoint}/ checkpoint missing)")
    model = kind.model_class(cfg.model)
    load_model_weights(model, found / "model.safetensors")
    return model.to(device).eval(), tokenizer, cfg


def predict_run(run_dir: Path, texts: list[str], *, checkpoint: str = "best") -> list[dict]:
    """The label (and probabilities) a classifier run gives each text; a run whose task does
    not classify text (no `predict` on its kind) is an error."""
    task = read_run_config(run_dir).task
    if not hasattr(TASKS[task], "predict"):
        raise AttnlabError(f"{run_dir} is a '{task}' run; predict needs a text "
                           f"classifier run (task text-classify)")
    model, tokenizer, cfg = load_run(run_dir, checkpoint=checkpoint)
    return TASKS[task].predict(model, tokenizer, cfg, texts)


def evaluate_run(run_dir: Path, *, checkpoint: str = "best", batches: int | None = None,
                 attention: str | None = None, options: dict | None = None) -> dict:
    """Validation loss, perplexity and bits per character of a language model; validation
    and test loss and accuracy of a classifier. With `attention`, the run's weights are
    evaluated under that mechanism instead (`attnlab.models.swap.with_attention`).

    Args:
        run_dir: the run directory; its data must be those it was trained on (sha256).
        checkpoint: "best" or "last".
        batches: bounds the batches evaluated (default: the run's train.eval_batches), for
            the tasks whose evaluation takes a bound (`bounded_eval`); the others score their
            whole splits and refuse it.
        attention, options: a mechanism (and its options) to evaluate the weights under.
    """
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int)
                                or batches < 1):
        raise AttnlabError(f"batches must be an integer >= 1 (or None), got {batches!r}")
    model, tokenizer, cfg = load_run(run_dir, checkpoint=checkpoint)
    if batches is not None and not TASKS[cfg.task].bounded_eval:
        bounded = ", ".join(name for name, kind in TASKS.items() if kind.bounded_eval)
        raise AttnlabError(f"a {cfg.task} run is evaluated on its whole splits; batches "
                           f"(--batches) bounds the evaluation of {bounded} runs only")
    check_data(cfg, fresh=False)
    if attention is not None:
        model = with_attention(model, attention, options).model
        cfg.model = model.config
    return TASKS[cfg.task].evaluate(model, tokenizer, cfg, batches=batches)
