"""Swap the attention mechanism of a built (e.g. pretrained) model, keeping every weight.

Every mechanism sits behind the same projections (q, k, v, out), so a model trained with full
attention can run with `local`, `longformer`, `performer`, `bigbird` or `lsh` attention over
the very same weights: the model is rebuilt from its config with the new `attention` and
`attention_options` and the old state dict is loaded into it. What that costs in quality is
an experiment (benchmarks/swap_attention.py measures perplexity of SmolLM2-135M-Instruct).

Two things can differ and are reported, never hidden:
- parameters the new mechanism owns (e.g. Linformer's projections) have no pretrained value
  and keep their fresh initialization;
- a shared-QK mechanism (lsh with shared_qk=True) has no key projection, so the pretrained
  `k_proj` weights are dropped and keys become the queries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from attnlab.errors import AttnlabError


@dataclasses.dataclass
class Swap:
    """What `with_attention` did.

    Args:
        model: the rebuilt model (same class, same weights, new mechanism; in the train or
            eval mode of the model it came from).
        new: parameter names that kept their fresh initialization (buffers a mechanism draws
            for itself, like hash seeds, are not listed).
        dropped: pretrained parameter names the new model has no place for.
    """

    model: nn.Module
    new: list[str]
    dropped: list[str]

    def notes(self) -> list[str]:
        out = []
        if self.new:
            out.append(f"{len(self.new)} tensors of the new mechanism are freshly initialized "
                       f"(e.g. {self.new[0]})")
        if self.dropped:
            out.append(f"{len(self.dropped)} pretrained tensors are unused by it "
                       f"(e.g. {self.dropped[0]})")
        return out


def with_attention(model: nn.Module, attention: str,
                   options: dict[str, Any] | None = None) -> Swap:
    """`model` rebuilt with another registered mechanism and loaded with its weights.

    Args:
        model: an attnlab model whose `config` has `attention` and `attention_options`
            (GPT, Encoder).
        attention: the registered mechanism name (see `attnlab.attention.available()`).
        options: that mechanism's options, e.g. {"window": 64}; invalid ones are an error.
    """
    config = getattr(model, "config", None)
    # The RNN seq2seq config has an `attention` field too, but it names a Luong/Bahdanau
    # decoder, not a registered mechanism: only configs with mechanism options swap.
    if config is None or not hasattr(config, "attention_options"):
        raise AttnlabError(f"{type(model).__name__} has no attention mechanism to swap "
                           f"(models with one: GPT, Encoder, EncoderDecoder, ...)")
    # the config validates the name, its options and causality for a decoder
    new_config = dataclasses.replace(config, attention=attention,
                                     attention_options=dict(options or {}))
    rebuilt = type(model)(new_config)  # tensors the old model lacks keep this initialization
    old, targets = model.state_dict(), rebuilt.state_dict()
    # a mechanism's own buffers (hash seeds, random features) are its state, not missing weights
    fresh = sorted(set(dict(rebuilt.named_parameters())) - set(old))
    dropped = sorted(set(old) - set(targets))
    kept = {k: v for k, v in old.items() if k in targets}
    for name, tensor in kept.items():
        target = targets[name]
        if target.numel() and target.shape != tensor.shape:
            raise AttnlabError(f"attention '{attention}' needs {name} of shape "
                               f"{tuple(target.shape)}, the model has {tuple(tensor.shape)}")
    rebuilt.load_state_dict(kept, strict=False)
    device = next(model.parameters()).device
    return Swap(rebuilt.to(device).train(model.training), fresh, dropped)
