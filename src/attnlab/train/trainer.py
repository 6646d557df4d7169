"""The training loop, for any task that can give a batch, a loss and an evaluation.

A task provides:
    task.model                                   the nn.Module to train
    task.train_batch(generator, n, part) -> b    the `part` slice of a global batch of n
    task.loss(model, batch) -> scalar tensor
    task.evaluate(model) -> dict of metrics      (must include "val_loss"; no RNG use)

Determinism: initialization, data order (one torch.Generator) and dropout (the global RNG) all
derive from `seed`. Learning rates are a pure function of the step, and so is the global RNG
at the start of each step: it is seeded from (seed, rank, step), which gives every process of
a distributed run its own dropout masks (one shared seed would repeat them on every rank, as
if the global batch were B / world rows repeated). A checkpoint stores the weights, the
optimizer, the step and the data generator's state, so N steps and N/2 + resume + N/2 give
bit-identical weights, with no global RNG state to carry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from attnlab.errors import AttnlabError
from attnlab.train import distributed
from attnlab.train.checkpoint import load_checkpoint, resolve, save_checkpoint
from attnlab.train.optim import build_optimizer, lr_at


def step_seed(seed: int, rank: int, step: int) -> int:
    """The global RNG's seed for optimizer step `step` of process `rank`: a hash, so that
    neighbouring (rank, step) pairs give unrelated streams."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _model_config(model: nn.Module) -> dict | None:
    """The model's config as JSON gives it back (checkpoints record it, so that weights of
    the same shapes from another model, say 2 heads instead of 4, are not resumed)."""
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        return None
    return json.loads(json.dumps(dataclasses.asdict(config), default=repr))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AttnlabError("train.device=cuda but no GPU is visible; use auto or cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run in hardware here. Without AVX512-BF16 or AMX a CPU emulates
    them, and bf16 autocast is several times slower than fp32 (measured on such a Xeon)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the hardware computes it natively, else fp32; fp16 needs a GPU."""
    if precision == "fp16" and device.type != "cuda":
        raise AttnlabError("train.precision=fp16 needs a GPU (CPUs here have no fast fp16); "
                           "use bf16 on CPU")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast (CPU or GPU), fp16 autocast (GPU only), or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    resolve_precision(precision, device)  # fp16 on a CPU is refused there
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class Trainer:
    """Train `task.model` in `run_dir` with settings `cfg` (a TrainConfig).

    Args:
        task: see the module docstring.
        run_dir: where metrics.jsonl and the checkpoints (last/, best/) go.
        cfg: a `TrainConfig`.
        dist: the process group (`distributed.setup`).
        device: where the model already is.
        resume: continue from run_dir/last.
        progress: show a tqdm bar (main process only).
    """

    def __init__(self, task, run_dir: Path, cfg, *, dist: distributed.Dist,
                 device: torch.device, resume: bool = False, progress: bool = True):
        self.task, self.cfg, self.dist, self.device = task, cfg, dist, device
        self.precision = resolve_precision(cfg.precision, device)
        self.run_dir = Path(run_dir)
        self.model: nn.Module = task.model
        self.optimizer = build_optimizer(self.model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         betas=(cfg.beta1, cfg.beta2))
        self.scaler = torch.amp.GradScaler(enabled=self.precision == "fp16")
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.best = float("inf")
        self.progress = progress and dist.main
        if resume:
            self._resume()
        if cfg.batch_size % dist.world:
            raise AttnlabError(f"train.batch_size {cfg.batch_size} must divide evenly among "
                               f"{dist.world} processes")
        self.train_model = self.ddp = self.model
        if dist.active:
            self.train_model = self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)

    # -- state -------------------------------------------------------------------------------
    def _rng(self) -> dict[str, torch.Tensor]:
        # The data order only: the global RNG is seeded afresh at every step (step_seed).
        return {"data": self.generator.get_state()}

    def _resume(self) -> None:
        if resolve(self.run_dir / "last") is None:
            raise AttnlabError(f"--resume: no checkpoint in {self.run_dir} (expected "
                               f"{self.run_dir / 'last'}); start a new run instead")
        state, rng = load_checkpoint(self.run_dir / "last", self.model, self.optimizer)
        written_by, this = state.get("model"), _model_config(self.model)
        if written_by is not None and this is not None and written_by != this:
            key = next(k for k in sorted(set(written_by) | set(this))
                       if written_by.get(k) != this.get(k))
            raise AttnlabError(f"{self.run_dir / 'last'} holds another model's weights "
                               f"({key} is {written_by.get(key)!r} there, {this.get(key)!r} "
                               f"here); it cannot be resumed as this run")
        self.step, self.best = state["step"], state.get("best_val_loss", float("inf"))
        try:  # without it the resumed run would draw other batches
            self.generator.set_state(rng["data"])
        except (KeyError, RuntimeError, TypeError):
            raise AttnlabError(f"{self.run_dir / 'last'} holds no usable RNG state; it cannot "
                               f"be resumed exactly") from None

    def save(self, which: str = "last", metrics: dict | None = None) -> None:
        """Checkpoint (main process only); `best` keeps weights and metrics, no optimizer."""
        if self.dist.main:
            state = {"step": self.step, "best_val_loss": self.best, **(metrics or {}),
                     "model": _model_config(self.model)}
            if which == "last":
                save_checkpoint(self.run_dir / "last", self.model, self.optimizer, state,
                                self._rng())
            else:
                save_checkpoint(self.run_dir / "best", self.model, None, state)
        distributed.barrier(self.dist)

    def log(self, row: dict) -> None:
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    # -- loop --------------------------------------------------------------------------------
    def _evaluate(self) -> dict:
        self.model.eval()
        with torch.no_grad(), autocast_context(self.precision, self.device):
            metrics = self.task.evaluate(self.model)
        self.model.train()
        self.log({"step": self.step, **metrics})
        if metrics["val_loss"] < self.best:
            self.best = metrics["val_loss"]
            self.save("best", metrics)
        return metrics

    def train_step(self) -> float:
        cfg, d = self.cfg, self.dist
        torch.manual_seed(step_seed(cfg.seed, d.rank, self.step))  # dropout, random features
        lr = lr_at(self.step, schedule=cfg.schedule, lr=cfg.lr, min_lr=cfg.min_lr,
                   warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                   d_model=getattr(getattr(self.model, "config", None), "d_model", None))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        per = cfg.batch_size // d.world
        part = slice(d.rank * per, (d.rank + 1) * per)
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            batch = self.task.train_batch(self.generator, cfg.batch_size, part)
            sync = micro == cfg.grad_accum - 1 or not d.active
            # One context around forward and backward: DDP's no_sync() is a one-shot context
            # manager (it cannot be entered twice), and gradients reduce once, at the last.
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with autocast_context(self.precision, self.device):
                    loss = self.task.loss(self.train_model, batch) / cfg.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.lr = lr
        return float(distributed.mean(total, d))

    def fit(self, tokens_per_sequence: int = 0) -> dict:
        """Train to `cfg.max_steps` (or the time limit); return the last metrics."""
        cfg = self.cfg
        if self.step >= cfg.max_steps:
            raise AttnlabError(f"the run is already at step {self.step} of {cfg.max_steps}; "
                               f"raise train.max_steps (--max-steps) to continue it")
        start = time.perf_counter()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
        self.model.train()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not self.progress,
                   desc="train", unit="step", dynamic_ncols=True)
        last_eval: dict = {}
        window_t, window_steps = time.perf_counter(), 0
        stopped_early = False
        while self.step < cfg.max_steps:
            loss = self.train_step()
            window_steps += 1
            tokens = tokens_per_sequence * cfg.batch_size * cfg.grad_accum * window_steps
            tok_s = tokens / max(time.perf_counter() - window_t, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lr:.2e}", tok_s=f"{tok_s:,.0f}")
            out_of_time = deadline is not None and distributed.any_true(
                time.perf_counter() > deadline, self.dist, self.device)
            final = self.step == cfg.max_steps or out_of_time
            if self.step % cfg.log_interval == 0 or final:
                self.log({"step": self.step, "loss": loss, "lr": self.lr,
                          "tokens_per_s": tok_s, "elapsed_s": time.perf_counter() - start})
                window_t, window_steps = time.perf_counter(), 0
            if self.step % cfg.eval_interval == 0 or final:
                last_eval = self._evaluate()
                if self.dist.main:  # every process evaluates; one reports
                    bar.write(f"step {self.step}: val_loss {last_eval['val_loss']:.4f}")
            if self.step % cfg.checkpoint_interval == 0 or final:
                self.save("last", last_eval)
            if out_of_time:
                stopped_early = True
                if self.dist.main:
                    bar.write(f"time limit of {cfg.max_minutes} min reached at step "
                              f"{self.step}")
                break
        bar.close()
        return {"step": self.step, "best_val_loss": self.best, "stopped_early": stopped_early,
                "elapsed_s": time.perf_counter() - start, **last_eval}
