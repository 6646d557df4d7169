"""Autoregressive generation from a GPT: greedy or sampled, KV-cached by default.

Each step turns the last position's logits into one token per row:

    logits -> repetition penalty -> / temperature -> top-k -> top-p -> sample (or argmax)

Batched prompts are left-padded, with a key padding mask and per-row positions, so every row
computes what it would alone. The cached path (prefill once, then one token per step) and the
uncached path (recompute everything each step) produce the same tokens, beyond the model's
context too; the tests hold them equal.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention
from attnlab.errors import AttnlabError, ConfigError, unknown
from attnlab.models import flat_decoder

__all__ = [
    "GenerationConfig",
    "apply_repetition_penalty",
    "generate",
    "generate_text",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]


#: GenerationConfig.decoder values.
DECODERS = ("auto", "flat", "modules")


@dataclass
class GenerationConfig:
    """How to generate.

    Args:
        max_new_tokens: tokens to generate per prompt (at most).
        temperature: divides the logits; 0 means greedy (argmax).
        top_k: sample only among the k most likely tokens (None: all).
        top_p: nucleus sampling: only the smallest set of tokens whose probability reaches p.
        repetition_penalty: CTRL-style penalty (> 1 discourages) on every token already in the
            row, prompt included: positive logits are divided by it, negative ones multiplied.
        seed: seeds the sampling; None draws a fresh nondeterministic seed.
        eos_id: a row ends after producing this token (or any of these tokens).
        stop: stop strings; a row ends once its decoded text contains one (`generate_text`
            only: `generate` works on token ids and ignores them).
        use_cache: KV-cached decoding; False recomputes the whole sequence every step.
        decoder: how cached steps run. "modules" calls the model as usual; "flat" runs them as
            flat functional calls on the model's weights (`attnlab.models.flat_decoder`:
            1.3-1.6x faster at batch 1 on a CPU, same tokens), and raises when the model is not
            a plain GPT it accepts; "auto" is "flat" when accepted (eval-mode GPT of standard
            parts, no hooks), "modules" otherwise.
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    eos_id: int | tuple[int, ...] | None = None
    stop: tuple[str, ...] = ()
    use_cache: bool = True
    decoder: str = "auto"

    def __post_init__(self):
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be an integer >= 0, got "
                              f"{self.max_new_tokens!r}")
        _check_temperature(self.temperature)
        _check_top_k(self.top_k)
        _check_top_p(self.top_p)
        if not _is_num(self.repetition_penalty) or not self.repetition_penalty > 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off), got "
                              f"{self.repetition_penalty!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer or None, got {self.seed!r}")
        if self.eos_id is not None:
            ids = (self.eos_id,) if _is_int(self.eos_id) else self.eos_id
            if (not isinstance(ids, (list, tuple)) or not ids
                    or not all(_is_int(i) and i >= 0 for i in ids)):
                raise ConfigError(f"eos_id must be a token id >= 0, a list of them, or None, "
                                  f"got {self.eos_id!r}")
            self.eos_id = ids[0] if len(ids) == 1 else tuple(ids)
        # A bare string would otherwise be iterated into one stop string per character.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise ConfigError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        self.stop = stop
        if not isinstance(self.use_cache, bool):
            raise ConfigError(f"use_cache must be True or False, got {self.use_cache!r}")
        if self.decoder not in DECODERS:
            raise unknown("decoder", self.decoder, DECODERS)
        if self.decoder == "flat" and not self.use_cache:
            raise ConfigError('decoder="flat" is a KV-cached decoder; it needs use_cache=True')

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def eos_ids(self) -> frozenset[int]:
        """The ids that end a row (empty without `eos_id`)."""
        if self.eos_id is None:
            return frozenset()
        return frozenset((self.eos_id,) if isinstance(self.eos_id, int) else self.eos_id)


# ---------------------------------------------------------------------------------------------
# Sampling helpers: pure functions on (B, V) logits, which check their settings as
# GenerationConfig does (they are public).


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_temperature(t) -> None:
    # `not t >= 0` also rejects NaN; inf would sample uniformly, ignoring the model.
    if not _is_num(t) or not t >= 0 or t == float("inf"):
        raise ConfigError(f"temperature must be >= 0 and finite (0 = greedy), got {t!r}")


def _check_top_k(k) -> None:
    if k is not None and (not _is_int(k) or k < 1):
        raise ConfigError(f"top_k must be an integer >= 1 or None, got {k!r}")


def _check_top_p(p) -> None:
    if p is not None and (not _is_num(p) or not 0 < p <= 1):
        raise ConfigError(f"top_p must be in (0, 1] or None, got {p!r}")


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's repetition penalty (Keskar et al., 2019).

    Args:
        logits: (B, V) next-token logits.
        seen: (B, V) bool, True for tokens already in the row (prompt included).
        penalty: > 1 discourages repeats; a seen token's logit l becomes l / penalty if l > 0,
            else l * penalty (dividing a negative logit would raise it).

    Returns:
        (B, V) penalized logits.
    """
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: Tensor, k: int | None) -> Tensor:
    """Keep exactly the `k` largest logits per row (ties broken by `topk`), the rest -inf.

    Args:
        logits: (B, V).
        k: tokens to keep; None or >= V keeps all.
    """
    _check_top_k(k)
    if k is None or k >= logits.shape[-1]:
        return logits
    # Scatter the top-k indices rather than compare with the k-th value: a threshold would
    # keep more than k tokens when values tie.
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: Tensor, p: float | None) -> Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens
    whose probability mass reaches `p` (always at least one token), the rest -inf.

    Args:
        logits: (B, V).
        p: in (0, 1]; None or 1 keeps all.
    """
    _check_top_p(p)
    if p is None or p >= 1.0:  # 1 keeps all: rounding must not drop tiny tail tokens
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    # A token is kept while the mass ranked strictly above it is still short of p: this keeps
    # the token that crosses p, and always the first (mass above it is 0 < p).
    above = F.pad(probs.cumsum(dim=-1)[..., :-1], (1, 0))
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, above < p)
    return logits.masked_fill(~keep, float("-inf"))


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """One token per row from (B, V) logits.

    Args:
        logits: (B, V) next-token logits (already penalized, if at all).
        temperature: 0 = argmax; else the logits are divided by it before filtering.
        top_k, top_p: filters applied in that order (see `top_k_filter`, `top_p_filter`).
        generator: a CPU `torch.Generator`, or one per row so that a row's draws do not depend
            on the other rows; None uses torch's global RNG.

    Returns:
        (B,) token ids (long), on the device of `logits`.

    Raises:
        AttnlabError: logits that give no distribution (NaN, or -inf everywhere).
    """
    _check_temperature(temperature)
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Less the row's maximum first: a tiny temperature then sends the others to -inf, not the
    # maximum to +inf (whose softmax is NaN).
    logits = logits.float()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    probs = logits.softmax(dim=-1)
    B = logits.shape[0]
    if isinstance(generator, Sequence):
        if len(generator) != B:
            raise ValueError(f"need one generator per row: {B} rows, {len(generator)} generators")
        u = torch.cat([torch.rand(1, generator=g) for g in generator])
    else:
        u = torch.rand(B, generator=generator)
    # Inverse CDF with one uniform per row: the first token whose cumulative mass reaches
    # (1 - u) * total. 1 - u lies in (0, 1], so the target is > 0 and a zero-probability
    # (filtered) token is never picked: the cumulative mass must jump to reach the target.
    cdf = probs.cumsum(dim=-1)
    if not bool(torch.isfinite(cdf[:, -1]).all()):
        raise AttnlabError("the next-token logits give no distribution (NaN, or -inf for every "
                           "token); is the model's output finite?")
    target = (1.0 - u.to(cdf.device)) * cdf[:, -1]
    index = (cdf < target[:, None]).sum(dim=-1)
    return index.clamp(max=logits.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------
# Token-level generation


def generate(
    model,
    prompts: Sequence[Sequence[int]] | Tensor,
    config: GenerationConfig | None = None,
    *,
    on_token: Callable[[int, int], Any] | None = None,
    **overrides,
) -> list[list[int]]:
    """Continue each prompt; return the new tokens per prompt.

    Rows are independent: prompts of different lengths are left-padded with a key padding
    mask and per-row positions, so a row generates exactly what it would alone (greedy). When
    sampling, row b draws from its own generator seeded with `seed + b`, so a seeded call is
    reproducible and a row's tokens do not depend on the other rows. A model whose attention
    pattern is tied to absolute indices (a mechanism without `shift_invariant`: longformer,
    bigbird, linformer, luong-local) would see padding move it, so prompts of different
    lengths then run one row at a time, with the same tokens; `on_token` hears the rows in turn.

    The context is `model.config.max_len`. Once a row's sequence outgrows it, the model sees
    only the last `max_len` tokens (nanoGPT's cropping). The uncached path crops every step;
    the cached path must give the same tokens, so from then on it rebuilds the cache from the
    last `max_len - 1` tokens before every step (exact but costly: O(max_len) per token).

    Args:
        model: an attnlab `GPT` (anything with `new_cache()`, `config.max_len` and
            `model(idx, key_padding_mask=, positions=, cache=)`). It runs in eval mode under
            `torch.inference_mode()`; every module's previous mode is restored afterwards.
        prompts: a list of token-id lists (lengths may differ) or a (B, T) integer tensor.
        config: a `GenerationConfig` (default: its defaults).
        on_token: called as `on_token(row, token_id)` for each token as it is produced
            (streaming), the eos token included.
        **overrides: `GenerationConfig` fields that replace those of `config`.

    Returns:
        One list of new token ids per prompt, ending with `eos_id` if the row stopped there.

    Raises:
        AttnlabError: an empty prompt or one longer than the context, a model that is not an
            attnlab language model or whose weights are on the meta device.
        CapabilityError: `use_cache=True` with an attention mechanism that has no KV cache, or
            `decoder="flat"` with a model the flat decoder does not accept.
    """
    config = _configure(config, overrides)
    return _generate(model, _prompt_rows(prompts), config, on_token=on_token)


def _configure(config: GenerationConfig | None, overrides: dict) -> GenerationConfig:
    if config is None:
        config = GenerationConfig()
    elif not isinstance(config, GenerationConfig):
        raise ConfigError(f"config must be a GenerationConfig, got {type(config).__name__}")
    names = [f.name for f in dataclasses.fields(GenerationConfig)]
    for key in overrides:
        if key not in names:
            raise unknown("generation option", key, names)
    # replace() runs __post_init__ again: overrides are validated, and so is a config whose
    # fields were assigned after it was built.
    return dataclasses.replace(config, **overrides)


def _prompt_rows(prompts) -> list[list[int]]:
    """Prompts as plain lists of ints, whatever container they came in."""
    if isinstance(prompts, Tensor):
        if (prompts.dim() != 2 or prompts.is_floating_point() or prompts.is_complex()
                or prompts.dtype == torch.bool):
            raise AttnlabError(f"a prompts tensor must hold integer ids shaped (batch, length), "
                               f"got {prompts.dtype} {tuple(prompts.shape)}")
        return prompts.tolist()
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise AttnlabError(f"prompts must be a list of token-id lists, got "
                           f"{type(prompts).__name__}")
    rows = []
    for row in prompts:
        if isinstance(row, Tensor):
            row = row.tolist()
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise AttnlabError("prompts must be a list of token-id lists; wrap a single prompt "
                               "as [prompt]")
        try:
            rows.append([operator.index(t) for t in row])  # index() rejects floats
        except TypeError:
            raise AttnlabError(f"prompt tokens must be integer ids, got {row!r:.60}") from None
    return rows


def _generate(
    model,
    rows: list[list[int]],
    config: GenerationConfig,
    *,
    on_token: Callable[[int, int], Any] | None = None,
    finished: Callable[[int, list[int]], bool] | None = None,
) -> list[list[int]]:
    """Check the request, then decode. `finished(row, new_tokens)` may end a row after any
    token."""
    _check_model(model)
    if on_token is not None and not callable(on_token):
        raise AttnlabError(f"on_token must be callable as on_token(row, token_id), got "
                           f"{type(on_token).__name__}")
    max_len, vocab = model.config.max_len, model.config.vocab_size
    for b, row in enumerate(rows):
        where = f" (prompt {b})" if len(rows) > 1 else ""
        if not row:
            raise AttnlabError(f"empty prompt{where}")
        if len(row) > max_len:
            raise AttnlabError(f"prompt has {len(row)} tokens but the model's context is "
                               f"{max_len}; shorten it{where}")
    outside = sorted(i for i in config.eos_ids if i >= vocab)
    if outside:
        raise ConfigError(f"eos_id {outside[0]} is not a token of this model (vocabulary "
                          f"{vocab})")
    if not rows or config.max_new_tokens == 0:
        return [[] for _ in rows]
    if len({len(row) for row in rows}) > 1 and not _left_padding_is_exact(model):
        return _one_row_at_a_time(model, rows, config, on_token, finished)
    return _decode(model, rows, config, on_token, finished)


def _check_model(model) -> None:
    cfg = getattr(model, "config", None)
    if not (isinstance(model, torch.nn.Module) and hasattr(cfg, "max_len")
            and hasattr(cfg, "vocab_size") and callable(getattr(model, "new_cache", None))):
        hint = (" (a Hugging Face GPT-2 or LLaMA converts with attnlab.interop.gpt_from_hf)"
                if type(model).__module__.startswith("transformers") else "")
        raise AttnlabError(f"generate needs an attnlab language model such as GPT, got "
                           f"{type(model).__name__}{hint}")
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "meta":
        raise AttnlabError("the model's weights are on the meta device (never loaded); load or "
                           "materialize them before generating")


def _left_padding_is_exact(model) -> bool:
    """Whether every attention mechanism of `model` ignores masked keys put before the
    sequence (`Capabilities.shift_invariant`), so that a left-padded row computes what it
    would alone."""
    return all(m.capabilities.shift_invariant for m in model.modules()
               if isinstance(m, Attention))


def _one_row_at_a_time(model, rows, config, on_token, finished) -> list[list[int]]:
    """`_decode` of each row alone, with the seed row b would have in the batch (`seed + b`):
    the tokens are the batch's as if padding were invisible, which it is not for these
    mechanisms."""
    base = config.seed if config.seed is not None else torch.Generator().seed()
    out = []
    for b, row in enumerate(rows):
        alone = dataclasses.replace(config, seed=(base + b) % 2**64)
        out += _decode(model, [row], alone,
                       None if on_token is None else lambda _, t, b=b: on_token(b, t),
                       None if finished is None else lambda _, ids, b=b: finished(b, ids))
    return out


#: Token columns allocated before the first growth: a large `max_new_tokens` that eos ends
#: early costs no more than this.
_FIRST_ROOM = 512


def _decode(model, rows, config, on_token, finished) -> list[list[int]]:
    """The decoding loop over a left-padded batch."""
    out: list[list[int]] = [[] for _ in rows]
    device = next(model.parameters()).device
    max_len = model.config.max_len
    B, width = len(rows), max(len(r) for r in rows)
    # Room for the new tokens: each step writes one column and passes views of the filled
    # part, instead of copying the whole sequence into a new tensor. The room doubles when
    # full (amortized O(1) per token).
    total = width + config.max_new_tokens
    tokens = torch.zeros(B, min(total, width + _FIRST_ROOM), dtype=torch.long,
                         device=device)  # left-padded with id 0
    real = torch.zeros_like(tokens, dtype=torch.bool)  # True = a real token
    # The tokens already in each row, for the repetition penalty (not tracked when it is off).
    penalize = config.repetition_penalty != 1.0
    seen = (torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
            if penalize else None)
    for b, row in enumerate(rows):
        ids = torch.tensor(row, dtype=torch.long, device=device)
        tokens[b, width - len(row):width] = ids
        real[b, width - len(row):width] = True
        if penalize:
            seen[b, ids] = True

    generators = None
    if not config.greedy:
        base = config.seed if config.seed is not None else torch.Generator().seed()
        generators = [torch.Generator().manual_seed((base + b) % 2**64) for b in range(B)]

    done = [False] * B
    eos = config.eos_ids
    rows_index = torch.arange(B, device=device)
    # Every module's own mode, restored after: a model may hold submodules in another mode
    # than its top (a frozen, eval-mode encoder inside a training model).
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            decoder = _Decoder(model, config, capacity=min(max_len, total))
            n = width  # columns filled
            logits = decoder.start(tokens[:, :n], real[:, :n])
            for step in range(config.max_new_tokens):
                if penalize:
                    logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
                nxt = sample_next(logits, temperature=config.temperature, top_k=config.top_k,
                                  top_p=config.top_p, generator=generators)
                if penalize:
                    seen[rows_index, nxt] = True
                for b, t in enumerate(nxt.tolist()):
                    if done[b]:  # finished rows stay in the batch; their tokens are ignored
                        continue
                    out[b].append(t)
                    if on_token is not None:
                        on_token(b, t)
                    if t in eos or (finished is not None and finished(b, out[b])):
                        done[b] = True
                if all(done) or step == config.max_new_tokens - 1:
                    break
                if n == tokens.shape[1]:
                    room = min(total, 2 * n)
                    tokens = torch.cat([tokens, tokens.new_zeros(B, room - n)], dim=1)
                    real = torch.cat([real, real.new_zeros(B, room - n)], dim=1)
                tokens[:, n], real[:, n] = nxt, True
                n += 1
                logits = decoder.step(tokens[:, :n], real[:, :n])
    finally:
        for module, training in modes:
            module.training = training
    return out


def _positions(real: Tensor) -> Tensor:
    """Each row's own positions under left padding: 0 at its first real token."""
    return (real.long().cumsum(dim=1) - 1).clamp(min=0)


class _Decoder:
    """Last-position logits of the growing (left-padded) sequence, cached or recomputed.

    Cached steps run through a `FlatDecoder` when `config.decoder` asks for one (or allows
    one and the model is accepted), through the model's modules otherwise."""

    def __init__(self, model, config: GenerationConfig, capacity: int):
        self.model, self.use_cache, self.capacity = model, config.use_cache, capacity
        self.max_len = model.config.max_len
        self.flat = None
        if config.decoder == "flat" or (config.decoder == "auto" and config.use_cache
                                        and flat_decoder.unsupported(model) is None):
            self.flat = flat_decoder.FlatDecoder(model)
        self.cache = None

    def _new_cache(self, batch: int):
        return (self.flat.new_cache(batch, self.capacity) if self.flat is not None
                else self.model.new_cache())

    def _run(self, tokens: Tensor, real: Tensor, cache=None) -> Tensor:
        # Neither mask nor positions when nothing is padded: a row alone then runs exactly as
        # an unbatched call (positions 0, 1, ... after the cache).
        if bool(real.all()):
            return self._last_logits(tokens, cache)
        return self._last_logits(tokens, cache, key_padding_mask=real, positions=_positions(real))

    def _last_logits(self, tokens: Tensor, cache, **kwargs) -> Tensor:
        if cache is not None and self.flat is not None:
            return self.flat(tokens, cache=cache, **kwargs)
        return self.model(tokens, cache=cache, **kwargs)[:, -1]

    def start(self, tokens: Tensor, real: Tensor) -> Tensor:
        """Logits after the prompts (B, T <= max_len)."""
        self.padded = not bool(real.all())
        if self.use_cache:
            self.cache = self._new_cache(tokens.shape[0])
        return self._run(tokens, real, self.cache)

    def step(self, tokens: Tensor, real: Tensor) -> Tensor:
        """Logits after `tokens`, whose last column is new since the previous call."""
        tokens, real = tokens[:, -self.max_len:], real[:, -self.max_len:]  # nanoGPT's crop
        if not self.use_cache:
            return self._run(tokens, real)
        if tokens.shape[1] == self.max_len and self.cache.seen >= self.max_len:
            # The window slid: every cached key sits at a position that is now wrong (and the
            # oldest token has left the context), so rebuild the cache from the window.
            self.cache = self._new_cache(tokens.shape[0])
            self._run(tokens[:, :-1], real[:, :-1], self.cache)
        # The new token's position: its row's count of real tokens, less one. Without padding
        # that is the cache's count, the model's default, and costs nothing per step.
        positions = real.sum(dim=1, keepdim=True) - 1 if self.padded else None
        return self._last_logits(tokens[:, -1:], self.cache, positions=positions)


# ---------------------------------------------------------------------------------------------
# Text-level generation


class Tokenizer(Protocol):
    """What `generate_text` needs of a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def generate_text(
    model,
    tokenizer: Tokenizer,
    prompt: str | list[str],
    config: GenerationConfig | None = None,
    *,
    stream: TextIO | None = None,
    **overrides,
) -> str | list[str]:
    """Continue text prompt(s); return the continuation text (without the prompt).

    A row ends at `eos_id` (not part of the text), after `max_new_tokens`, or as soon as its
    decoded continuation contains one of the `stop` strings; the text is then cut before it.

    Args:
        model: an attnlab `GPT` (see `generate`).
        tokenizer: has `encode(str) -> list[int]` and `decode(list[int]) -> str`.
        prompt: one string, or a list of strings generated as one batch.
        config: a `GenerationConfig` (default: its defaults).
        stream: a text file (e.g. `sys.stdout`) that receives the continuation as it is
            produced; single prompt only. The last `len(longest stop) - 1` characters are held
            back until they cannot begin a stop string, so nothing past a stop is written, and
            so is a trailing U+FFFD (an incomplete multi-byte character). Everything written
            adds up to the returned text whenever decoding a longer token list extends the
            decoding of a shorter one.
        **overrides: `GenerationConfig` fields that replace those of `config`.

    Returns:
        The continuation: a string for a string prompt, else a list of strings.
    """
    config = _configure(config, overrides)
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise AttnlabError(f"prompt must be a string or a list of strings, got {prompt!r:.60}")
    if stream is not None and len(prompts) != 1:
        raise AttnlabError(f"stream takes a single prompt, got {len(prompts)}")
    if not (callable(getattr(tokenizer, "encode", None))
            and callable(getattr(tokenizer, "decode", None))):
        raise AttnlabError(f"tokenizer must have encode(text) and decode(ids), got "
                           f"{type(tokenizer).__name__}")
    rows = [list(tokenizer.encode(p)) for p in prompts]
    eos, stops = config.eos_ids, config.stop
    hold = max((len(s) for s in stops), default=1) - 1
    written = 0

    def text_of(ids: list[int]) -> tuple[str, bool]:
        """Decoded continuation (eos dropped), cut before the first stop; whether it stopped."""
        if ids and ids[-1] in eos:
            ids = ids[:-1]
        text = tokenizer.decode(ids)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        return (text[:cut], True) if cut >= 0 else (text, False)

    def write(text: str) -> None:
        nonlocal written
        if len(text) > written:
            stream.write(text[written:])
            stream.flush()
            written = len(text)

    def finished(row: int, ids: list[int]) -> bool:
        text, stopped = text_of(ids)
        if stream is not None and not stopped:
            # Hold back what could still turn out to start a stop string.
            write(text[:max(0, len(text) - hold)].rstrip("\ufffd"))
        return stopped

    # Without stop strings or a stream there is nothing to check per token: skip decoding.
    needs_check = bool(stops) or stream is not None
    out = _generate(model, rows, config, finished=finished if needs_check else None)
    texts = [text_of(ids)[0] for ids in out]
    if stream is not None:
        write(texts[0])  # the held-back tail, now final
    return texts[0] if isinstance(prompt, str) else texts
