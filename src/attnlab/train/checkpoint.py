"""Checkpoints: safetensors weights and optimizer state, JSON trainer state, written atomically.

A checkpoint is a directory (model.safetensors, optimizer.safetensors, trainer.json). It is
written whole into a temporary sibling, every file fsync'ed, then swapped in with two renames:

    ckpt -> ckpt.old,   ckpt.tmp -> ckpt,   remove ckpt.old

A kill at any moment leaves either the new checkpoint or the previous one complete: if it lands
between the two renames, `ckpt` is missing and `ckpt.old` is whole, and `resolve` picks it.
Nothing is ever unpickled: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from attnlab.errors import AttnlabError
from attnlab.files import fsync_dir, save_safetensors


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with tied ones stored once (safetensors refuses shared storage)."""
    seen: dict[int, str] = {}
    out = {}
    for name, t in model.state_dict(keep_vars=False).items():
        key = t.data_ptr() if t.numel() else id(t)
        if key in seen:
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`; every mismatch is one clear line."""
    tensors = read_safetensors(path)
    expected = model.state_dict()
    tied = {n for n in expected if n not in unique_state_dict(model)}
    missing = [n for n in expected if n not in tensors and n not in tied]
    unexpected = [n for n in tensors if n not in expected]
    if missing or unexpected:
        what = (f"missing {missing[:3]}" if missing else "") + (
            f" unexpected {unexpected[:3]}" if unexpected else "")
        raise AttnlabError(f"{path} does not hold this model's weights: {what.strip()}")
    for name, t in tensors.items():
        if t.is_floating_point() != expected[name].is_floating_point():  # int8 weights, ...
            raise AttnlabError(f"{path}: tensor '{name}' is {t.dtype}, the model expects "
                               f"{expected[name].dtype}")
        lazy = expected[name].numel() == 0  # a buffer drawn at first use (performer's features)
        if t.shape != expected[name].shape and not lazy:
            raise AttnlabError(f"{path}: tensor '{name}' has shape {tuple(t.shape)}, the model "
                               f"expects {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"no weights file at {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AttnlabError(f"{path} is not a readable safetensors file ({e}); it may be "
                           f"truncated or corrupt") from None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(tensors, json-able rest) of an optimizer's state dict."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    # JSON turned tuples (betas) into lists; give the optimizer back what it saved
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _fault_pause(point: str, replacing: Path) -> None:
    """Fault injection for the kill-during-checkpoint test: sleep at a named point of a write
    that replaces an existing checkpoint (the case where there is something to lose)."""
    if os.environ.get("ATTNLAB_CHECKPOINT_FAULT") == point and replacing.exists():
        print(f"checkpoint fault point: {point}", flush=True)
        time.sleep(600)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict, rng: dict[str, torch.Tensor] | None = None) -> None:
    """Write a checkpoint directory atomically (see the module docstring).

    Args:
        path: the checkpoint directory (e.g. run/last).
        model: its weights go to model.safetensors.
        optimizer: its state goes to optimizer.safetensors (+ JSON in trainer.json).
        state: JSON-able trainer state (step, best loss, ...).
        rng: RNG and generator states as uint8 tensors, stored with the optimizer tensors.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(unique_state_dict(model), tmp / "model.safetensors")
    meta = dict(state)
    if optimizer is not None or rng:
        tensors, opt_meta = optimizer_tensors(optimizer) if optimizer is not None else ({}, None)
        tensors.update({f"rng.{k}": v for k, v in (rng or {}).items()})
        save_safetensors(tensors, tmp / "optimizer.safetensors")
        meta["optimizer"] = opt_meta
    (tmp / "trainer.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    _fault_pause("before_swap", path)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        _fault_pause("mid_swap", old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def resolve(path: Path) -> Path | None:
    """The complete checkpoint at `path`, or its predecessor if a kill interrupted the swap."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / "trainer.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    return None


def load_checkpoint(path: Path, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None):
    """Load weights (and optimizer state) from checkpoint dir `path`; return (state, rng).

    Given an optimizer, the checkpoint must hold that optimizer's state: resuming without it
    would silently restart Adam's moments.
    """
    found = resolve(path)
    if found is None:
        raise AttnlabError(f"no checkpoint at {path}")
    try:
        meta = json.loads((found / "trainer.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AttnlabError(f"{found / 'trainer.json'} is corrupt ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise AttnlabError(f"{found / 'trainer.json'} is corrupt (no step count)")
    load_model_weights(model, found / "model.safetensors")
    rng = {}
    saved = found / "optimizer.safetensors"
    if optimizer is not None and (not saved.is_file() or meta.get("optimizer") is None):
        raise AttnlabError(f"{found} holds no optimizer state ({saved.name} is missing); it "
                           f"cannot be resumed")
    if saved.is_file():
        tensors = read_safetensors(saved)
        rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
        if optimizer is not None:
            opt = {k: v for k, v in tensors.items() if not k.startswith("rng.")}
            try:
                restore_optimizer(optimizer, opt, meta["optimizer"])
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                raise AttnlabError(f"{saved} does not hold this run's optimizer state "
                                   f"({type(e).__name__}: {e}); the checkpoint is "
                                   f"damaged") from None
            _check_state(optimizer, saved)
    return meta, rng


def _check_state(optimizer: torch.optim.Optimizer, saved: Path) -> None:
    """`load_state_dict` takes per-parameter state with keys missing or of any shape; either
    would only fail (or broadcast) inside a later step."""
    keys = {frozenset(state) for state in optimizer.state.values() if state}
    if len(keys) > 1:
        raise AttnlabError(f"{saved}: the parameters' optimizer states hold different entries "
                           f"({' / '.join(sorted(', '.join(sorted(k)) for k in keys))}); the "
                           f"checkpoint is damaged")
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                    raise AttnlabError(f"{saved}: optimizer state '{key}' has shape "
                                       f"{tuple(value.shape)} for a parameter of shape "
                                       f"{tuple(p.shape)}; the checkpoint is damaged")
