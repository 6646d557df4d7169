"""Decision Transformer (Chen et al., 2021): offline RL as causal sequence modeling.

A trajectory window of K steps becomes 3K tokens, interleaved per step

    R_1, s_1, a_1, R_2, s_2, a_2, ..., R_K, s_K, a_K        (R = return-to-go)

each token a linear embedding of its value (a learned embedding for discrete actions) plus a
learned embedding of the step's timestep in the episode, then a LayerNorm. A causal stack of
Blocks (any registered mechanism that can be causal) reads them, and the action at step t is
predicted from the hidden state of s_t, which sees R_<=t, s_<=t and a_<t only.

`condition_on_return=False` is behaviour cloning with the same network: the R tokens are
dropped (2K tokens s_1, a_1, ...), everything else is identical.

Departures from the paper: states are normalized by dataset statistics held as buffers of the
model (saved with its weights), so a run directory is self-contained; returns-to-go are divided
by `return_scale`; no positional encoding by default (the timestep embedding plays its part,
as in the paper, where GPT-2's own positions are also present).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError, ConfigError
from attnlab.models.config import TransformerConfig, check_positive
from attnlab.models.transformer import (
    ModelInfo,
    TransformerStack,
    init_gpt2_,
    interleave,
    linear_flops,
    positional_from_config,
)


@dataclass
class DecisionConfig(TransformerConfig):
    """A Decision Transformer (or, with condition_on_return=False, behaviour cloning).

    Args:
        state_dim: observation size (filled in from the dataset).
        act_dim: number of actions (discrete) or action vector size (continuous).
        discrete: discrete actions (cross-entropy) or continuous in [-1, 1] (tanh, MSE).
        max_ep_len: longest episode: the timestep embedding's size.
        context: K, steps per window (3K tokens; 2K without returns).
        return_scale: returns-to-go are divided by it before their embedding.
        condition_on_return: False = behaviour cloning (no return tokens).
        eval_targets: comma-separated target returns rolled out by `attnlab eval`; empty =
            the dataset's best episode return.
        eval_episodes: episodes per target (environment seeds 0..N-1).
        sample_actions: discrete actions sampled from the predicted distribution (as the
            paper does for Atari) rather than taken greedily; continuous ones are always the
            prediction itself.
    """

    positional: str = "none"
    state_dim: int = 4
    act_dim: int = 2
    discrete: bool = True
    max_ep_len: int = 1000
    context: int = 20
    return_scale: float = 500.0
    condition_on_return: bool = True
    eval_targets: str = ""
    eval_episodes: int = 10
    sample_actions: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "state_dim", "act_dim", "max_ep_len", "context", "eval_episodes")
        if self.return_scale <= 0:
            raise ConfigError(f"return_scale must be > 0, got {self.return_scale}")
        if self.context > self.max_ep_len:  # a window longer than any episode is all padding
            raise ConfigError(f"context {self.context} is longer than an episode can be "
                              f"(max_ep_len {self.max_ep_len}); give context <= max_ep_len")
        if self.positional == "learned" and self.max_len < self.tokens_per_window:
            raise ConfigError(f"learned positions need max_len >= {self.tokens_per_window} "
                              f"tokens per window, got {self.max_len}")
        self.targets()  # a malformed list fails here

    @property
    def tokens_per_step(self) -> int:
        return 3 if self.condition_on_return else 2

    @property
    def tokens_per_window(self) -> int:
        return self.tokens_per_step * self.context

    def targets(self) -> list[float]:
        """eval_targets as numbers ([] = the dataset's best return)."""
        try:
            return [float(t) for t in self.eval_targets.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"eval_targets must be comma-separated numbers like '500,250', "
                              f"got '{self.eval_targets}'") from None


class DecisionTransformer(ModelInfo, nn.Module):
    """(returns-to-go, states, actions, timesteps) windows -> action predictions per step.

    Args:
        config: a `DecisionConfig`.
    """

    def __init__(self, config: DecisionConfig):
        super().__init__()
        self.config = c = config
        self.embed_timestep = nn.Embedding(c.max_ep_len, c.d_model)
        self.embed_return = nn.Linear(1, c.d_model) if c.condition_on_return else None
        self.embed_state = nn.Linear(c.state_dim, c.d_model)
        self.embed_action = (nn.Embedding(c.act_dim, c.d_model) if c.discrete
                             else nn.Linear(c.act_dim, c.d_model))
        self.embed_norm = nn.LayerNorm(c.d_model)
        self.positional = positional_from_config(c)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.head = nn.Linear(c.d_model, c.act_dim)
        # dataset statistics (set_state_stats): part of the state dict, so saved with weights
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        init_gpt2_(self, c.n_layers)

    @torch.no_grad()
    def set_state_stats(self, mean, std) -> None:
        """Normalize states by these (dataset) statistics; std is floored at 1e-6."""
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def _check(self, states: Tensor, actions: Tensor, returns_to_go: Tensor | None,
               timesteps: Tensor) -> None:
        c = self.config
        b, k = timesteps.shape
        if states.shape != (b, k, c.state_dim):
            raise AttnlabError(f"states must be (batch, steps, {c.state_dim}), got "
                               f"{tuple(states.shape)}")
        want = (b, k) if c.discrete else (b, k, c.act_dim)
        if actions.shape != want:
            raise AttnlabError(f"actions must be shaped {want}, got {tuple(actions.shape)}")
        if c.condition_on_return and (returns_to_go is None or returns_to_go.shape != (b, k)):
            raise AttnlabError("a return-conditioned model needs returns_to_go shaped "
                               f"{(b, k)}")
        if k > c.context:
            raise AttnlabError(f"windows hold at most context={c.context} steps, got {k}")
        if timesteps.numel() and (int(timesteps.min()) < 0 or
                                  int(timesteps.max()) >= c.max_ep_len):
            raise AttnlabError(f"timesteps must lie in [0, max_ep_len={c.max_ep_len})")

    def forward_features(self, states: Tensor, actions: Tensor, returns_to_go: Tensor | None,
                         timesteps: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """Hidden states of the state tokens, (B, K, d): what each action is predicted from.

        Args:
            states: (B, K, state_dim) raw observations.
            actions: (B, K) ids (discrete) or (B, K, act_dim); the action at a step cannot
                influence that step's own prediction (causal), so rollouts pass a placeholder.
            returns_to_go: (B, K) returns still to collect (ignored without conditioning).
            timesteps: (B, K) step index in the episode.
            mask: (B, K) True = real step (left padding of short windows is False).
        """
        self._check(states, actions, returns_to_go, timesteps)
        c = self.config
        time = self.embed_timestep(timesteps)  # (B, K, d)
        s = self.embed_state((states - self.state_mean) / self.state_std) + time
        a = self.embed_action(actions if c.discrete else actions.to(s.dtype)) + time
        if c.condition_on_return:
            r = self.embed_return((returns_to_go / c.return_scale).unsqueeze(-1).to(s.dtype))
            x = interleave(r + time, s, a)  # (B, 3K, d)
        else:
            x = interleave(s, a)  # (B, 2K, d)
        x = self.drop(self.positional.embed(self.embed_norm(x)))
        pad = None if mask is None else mask.repeat_interleave(c.tokens_per_step, dim=1)
        h = self.stack(x, causal=True, key_padding_mask=pad, positional=self.positional)
        return h[:, c.tokens_per_step - 2::c.tokens_per_step]  # the state tokens, (B, K, d)

    def forward_head(self, h: Tensor) -> Tensor:
        """(B, K, d) -> action logits (B, K, n_actions) or actions in [-1, 1] (B, K, act_dim)."""
        out = self.head(h)
        return out if self.config.discrete else torch.tanh(out)

    def forward(self, states: Tensor, actions: Tensor, returns_to_go: Tensor | None,
                timesteps: Tensor, *, mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(states, actions, returns_to_go,
                                                       timesteps, mask=mask))

    def forward_flops(self, seq_len: int | None = None) -> float:
        """FLOPs of one window of `seq_len` tokens (default: a full window)."""
        n = self.config.tokens_per_window if seq_len is None else seq_len
        embed = linear_flops(self.embed_state) + (
            0.0 if self.config.discrete else linear_flops(self.embed_action))
        return (n * embed + self.stack.forward_flops(n, causal=True)
                + n * linear_flops(self.head) / self.config.tokens_per_step)
