"""`performer`: FAVOR+ linear attention with positive orthogonal random features
(Choromanski et al., 2021, "Rethinking Attention with Performers").

The softmax kernel is an expectation over Gaussian w of positive features,

    exp(q'.k') = E_w[ exp(w.q' - |q'|^2 / 2) exp(w.k' - |k'|^2 / 2) ],   x' = x * Dh^(-1/4),

so with m random rows w_r, phi(x)_r = exp(w_r.x' - |x'|^2 / 2) / sqrt(m) gives
phi(q).phi(k) ~ exp(q.k / sqrt(Dh)), and attention is computed right to left without any
(Tq, Tk) matrix:

    non-causal: out = phi(Q) (phi(K)^T V) / (phi(Q) (phi(K)^T 1))            O(n m Dh)
    causal:     the same with prefix sums over keys, computed in chunks: inside a chunk the
                masked (C x C) quadratic form, across chunks a running (m x (Dh + 1)) state.

The rows w are orthogonal random features: blocks of Dh orthonormal Gaussian directions (QR of
a Gaussian matrix, signs fixed so each block is Haar-distributed), each row rescaled by an
independent chi(Dh)-distributed norm so that it is marginally Gaussian. Orthogonality lowers
the estimator's variance (the paper's Theorem 2).

Numerical stabilization (the reference implementation subtracts a max before `exp`), arranged
so it cancels exactly in the ratio:
  - a query's features are divided by their own largest value: a per-row constant that
    appears in both the numerator and the denominator of that query;
  - a key's features are split as exp(c_j) * exp(a_j - c_j), c_j its largest logit, and the
    exp(c_j) factors are applied relative to a shared offset M: the maximum of c over the keys
    the query may see (non-causal: all real keys; causal: a running maximum, carried across
    chunks and rescaling the state like an online softmax). Every factor is then <= 1, and the
    offset never depends on keys a causal query may not see.
The stabilizers are detached: the output does not depend on them.

Masking: padded keys' features are zeroed (and excluded from the offset), so they contribute
nothing; a query with no key to attend has a zero denominator and outputs zeros, not NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import dense_keep_mask, keep_mask
from attnlab.attention.registry import register
from attnlab.errors import AttnlabError, ConfigError


def orthogonal_gaussian_features(m: int, d: int, generator: torch.Generator) -> Tensor:
    """(m, d) orthogonal random features: ceil(m / d) blocks of d orthonormal rows, each row
    scaled by a chi(d) norm (the norm of an independent d-dim Gaussian vector). float64, CPU."""
    blocks = []
    for _ in range(-(-m // d)):
        g = torch.randn(d, d, generator=generator, dtype=torch.float64)
        qm, r = torch.linalg.qr(g)
        # Multiplying columns by sign(diag(R)) makes Q Haar-distributed (Mezzadri, 2007);
        # plain QR output is biased by the sign convention of the decomposition.
        qm = qm * torch.sign(torch.diagonal(r))
        blocks.append(qm.T)  # rows are orthonormal directions
    directions = torch.cat(blocks)[:m]  # (m, d)
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)  # chi(d)
    return directions * norms[:, None]


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den where den > 0, else 0; gradients stay finite in both branches."""
    pos = den > 0
    return torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)),
                       torch.zeros_like(num))


@register("performer")
class PerformerAttention(Attention):
    """FAVOR+ attention: positive orthogonal random features, linear in the sequence length.

    The features are a buffer `features` (m, Dh), not a parameter. Dh is only known at the
    first call, so the first call draws them (a buffer loaded from a state dict is resized to
    fit, so checkpoints round-trip before any call). Draw number t uses a generator seeded from
    (`seed`, t), and the buffer `feature_rng` = [seed, draws so far] is saved with the model,
    so features and their redraws are reproducible, also after resuming.

    KV cache: correct with the standard `KVCache` (queries are the last Tq positions of the
    cached keys), but each decoding step recomputes the features of every cached key. A
    recurrent cache of the (m x (Dh + 1)) running state would make a step O(m Dh); it is not
    implemented here.

    Departures from the paper and its reference code:
      - Stabilization: the reference subtracts a max over all keys (and adds eps = 1e-4 inside
        the features, which does not cancel); here the key offset is a running max over the
        keys a query may see and there is no eps, so the result is exactly FAVOR+ and a causal
        output never depends on future keys, not even through rounding.
      - Redraw: the paper redraws features periodically during training; `redraw=True` redraws
        on every training forward (never in eval mode).
      - Causal prefix sums run in chunks with a running state instead of the paper's full
        prefix-sum tensor (n x m x Dh): O(n m + C^2 + m Dh) memory per head in the forward.
        Autograd keeps one (m x (Dh + 1)) state per chunk for the backward pass.
      - `need_weights=True` switches to an explicit O(Tq Tk) path that forms the normalized
        kernel matrix phi(Q) phi(K)^T; it returns the same output (tested) and the weights.
      - No attention dropout: there are no weights to drop in the linear path.

    Args:
        nb_features: m, the number of random features; the kernel estimate's error falls as
            1 / sqrt(m).
        redraw: draw new features on every forward in training mode; fixed in eval mode.
        seed: seed of the feature draws; default: drawn from torch's global generator at
            construction (so `torch.manual_seed` makes a model reproducible).
        chunk_size: positions per chunk of the causal prefix sums.
        scale: softmax temperature; default 1 / sqrt(head_dim), i.e. x' = x * sqrt(scale).
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=True, kv_cache=True,
                                bias=False, weights=True, exact=False,
                                permutation_equivariant=True, shift_invariant=True)

    def __init__(self, *, nb_features: int = 256, redraw: bool = False, seed: int | None = None,
                 chunk_size: int = 64, scale: float | None = None):
        super().__init__(scale=scale)
        if not isinstance(nb_features, int) or nb_features < 1:
            raise ConfigError(f"attention 'performer': nb_features must be an integer >= 1, "
                              f"got {nb_features!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"attention 'performer': chunk_size must be an integer >= 1, "
                              f"got {chunk_size!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                                 or not 0 <= seed < 2**63):
            raise ConfigError(f"attention 'performer': seed must be an integer >= 0 (and "
                              f"< 2**63), got {seed!r}")
        if not isinstance(redraw, bool):
            raise ConfigError(f"attention 'performer': redraw must be true or false, "
                              f"got {redraw!r}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()))
        self.nb_features, self.redraw, self.chunk_size = nb_features, redraw, chunk_size
        self.register_buffer("features", torch.empty(0))  # (m, Dh) once drawn
        self.register_buffer("feature_rng", torch.tensor([seed, 0]))  # [seed, draws so far]

    def extra_repr(self) -> str:
        return (f"nb_features={self.nb_features}, redraw={self.redraw}, "
                f"seed={int(self.feature_rng[0])}, chunk_size={self.chunk_size}")

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        # In units of 4 * Dh FLOPs per query: phi(Q) and phi(Q) S cost m each per query, phi(K)
        # and phi(K)^T V cost m each per key. Causal adds the in-chunk (C x C) form, about
        # C (m + Dh) / (2 Dh) units (Dh taken from the features, 64 before the first draw).
        m = self.nb_features
        units = m * (1 + n_keys / max(n_queries, 1))
        if causal:
            dh = self.features.shape[1] if self.features.dim() == 2 else 64
            units += min(self.chunk_size, n_keys) * (m + dh) / (2 * dh)
        return float(units)

    # -- features ---------------------------------------------------------------------------

    def draw_features(self, head_dim: int, device=None) -> None:
        """Draw a new (m, head_dim) feature matrix into the buffer (draw t from (seed, t))."""
        seed, draws = (int(x) for x in self.feature_rng.tolist())
        generator = torch.Generator().manual_seed(
            (seed * 6364136223846793005 + draws * 1442695040888963407) % 2**63)
        w = orthogonal_gaussian_features(self.nb_features, head_dim, generator)
        # Buffers made under inference_mode could never be used for training afterwards.
        with torch.inference_mode(False), torch.no_grad():
            self.features = w.to(device=device or self.features.device,
                                 dtype=self.features.dtype)
            self.feature_rng = torch.tensor([seed, draws + 1], device=self.feature_rng.device)

    def current_features(self, head_dim: int, device=None) -> Tensor:
        """The (m, head_dim) features for this call: drawn on first use, redrawn if asked."""
        if self.features.numel() == 0:
            self.draw_features(head_dim, device)
        elif self.features.shape[1] != head_dim:
            raise AttnlabError(f"attention 'performer': features were drawn for head dim "
                               f"{self.features.shape[1]}, called with head dim {head_dim}")
        elif self.redraw and self.training:
            self.draw_features(head_dim, device)
        return self.features

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffer's shape is only known once drawn: take the checkpoint's.
        key = prefix + "features"
        if key in state_dict and state_dict[key].shape != self.features.shape:
            self.features = self.features.new_empty(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _logits(self, x: Tensor, w: Tensor) -> Tensor:
        """w.x' for every feature, x' = x * sqrt(scale): (B, H, T, Dh) -> (B, H, T, m)."""
        # x' w^T == x (sqrt(scale) w)^T: scaling the m x Dh features, not the T x m logits
        return x @ (w * self.softmax_scale(x.shape[-1]) ** 0.5).T

    def _half_norm(self, x: Tensor) -> Tensor:
        """|x'|^2 / 2: (B, H, T, Dh) -> (B, H, T, 1)."""
        return x.square().sum(-1, keepdim=True) * (self.softmax_scale(x.shape[-1]) / 2)

    def positive_features(self, x: Tensor) -> Tensor:
        """phi(x) = exp(w.x' - |x'|^2 / 2) / sqrt(m), unstabilized: (B, H, T, Dh) -> (B, H, T, m).

        For inspection and references; `attend` uses the stabilized equivalent.
        """
        w = self.current_features(x.shape[-1], x.device).to(x.dtype)
        return torch.exp(self._logits(x, w) - self._half_norm(x)) / math.sqrt(self.nb_features)

    # -- attention --------------------------------------------------------------------------

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        B, H, _, Dh = q.shape
        Tk = k.shape[2]
        w = self.current_features(Dh, q.device).to(q.dtype)  # (m, Dh)
        lowest = torch.finfo(q.dtype).min  # finite: "no key yet" offsets subtract to 0, not NaN

        # The (T, m) feature tensors are made in place from their logits, one buffer each (the
        # logits' matmul does not need its output for backward; exp_ keeps its own).
        # Queries: |q'|^2 / 2 and the max (and the 1/sqrt(m) of phi) are per-query constants,
        # which cancel in that query's ratio.
        qa = self._logits(q, w)  # (B, H, Tq, m)
        qf = qa.sub_(qa.detach().amax(-1, keepdim=True)).exp_()  # (B, H, Tq, m), max 1
        ka, half_norm = self._logits(k, w), self._half_norm(k)  # (B, H, Tk, m), (B, H, Tk, 1)
        # c_j, key j's largest logit: phi(k_j) = exp(c_j) kf_j (times 1/sqrt(m)), kf_j <= 1
        c = ka.detach().amax(-1, keepdim=True) - half_norm.detach()  # (B, H, Tk, 1)
        real = None if key_padding_mask is None else key_padding_mask[:, None, :, None]
        if real is not None:
            c = c.masked_fill(~real, lowest)  # padded keys do not move the offset
        # Keys are exponentiated relative to an offset. Non-causal: the one offset all queries
        # share, the largest c over the real keys, so kf is final at once. Causal (and the
        # weights path): each key's own c_j, brought to each query's running max later.
        per_key = causal or need_weights
        shift = half_norm + (c if per_key else c.amax(-2, keepdim=True))  # (B, H, Tk, 1)
        if real is not None:
            shift = shift.masked_fill(~real, float("inf"))  # padded keys: exp(-inf) = 0
        kf = ka.sub_(shift).exp_()  # (B, H, Tk, m), every factor <= 1
        c = c.squeeze(-1)  # (B, H, Tk)
        v1 = torch.cat([v, v.new_ones(B, H, Tk, 1)], -1)  # (B, H, Tk, Dh + 1): last = denominator

        if need_weights:
            return self._dense(qf, kf, c, v, causal, key_padding_mask)
        if causal:
            nd = self._causal_chunked(qf, kf, c, v1, lowest)
        else:
            nd = qf @ (kf.transpose(-2, -1) @ v1)  # (B, H, Tq, m) @ (B, H, m, Dh + 1)
        return _safe_ratio(nd[..., :Dh], nd[..., Dh:]), None  # (B, H, Tq, Dh)

    def _causal_chunked(self, qf, kf, c, v1, lowest) -> Tensor:
        """Prefix sums over keys chunk by chunk: (B, H, Tq, Dh + 1) numerators|denominators.

        Query i (at key position p_i) needs sum_{j <= p_i} exp(c_j - M_i) (qf_i . kf_j) v1_j with
        M_i the running max of c up to p_i. Keys of earlier chunks are folded into `state`
        (sum of exp(c_j - M) kf_j v1_j^T, kept relative to the running max M); keys of the
        query's own chunk enter through the masked (Cq x C) form.
        """
        B, H, Tq, m = qf.shape
        Tk, D1 = v1.shape[2], v1.shape[3]
        C = self.chunk_size
        off = Tk - Tq if Tk >= Tq else 0  # queries are the last Tq key positions
        state = qf.new_zeros(B, H, m, D1)  # (B, H, m, Dh + 1)
        run_max = c.new_full((B, H), lowest)  # (B, H): max of c over the folded keys
        outs = []
        for s in range(0, max(Tk, off + Tq), C):
            e = s + C
            ks, ke = min(s, Tk), min(e, Tk)
            qs, qe = min(max(s - off, 0), Tq), min(max(e - off, 0), Tq)
            if ke > ks:
                cc = c[:, :, ks:ke]  # (B, H, Ck)
                key_max = torch.maximum(cc.cummax(-1).values, run_max[..., None])  # (B, H, Ck)
            if qe > qs:
                qc = qf[:, :, qs:qe]  # (B, H, Cq, m)
                q_pos = torch.arange(off + qs, off + qe, device=qf.device)
                if ke > ks:
                    # the running max at each query's position (queries past the keys: all)
                    q_max = key_max[..., (q_pos.clamp(max=ke - 1) - ks)]  # (B, H, Cq)
                else:
                    q_max = run_max[..., None].expand(B, H, qe - qs)
                # Folded keys, rescaled from their offset to the query's (factor <= 1).
                nd = (qc @ state) * torch.exp(run_max[..., None] - q_max)[..., None]
                if ke > ks:
                    k_pos = torch.arange(ks, ke, device=qf.device)
                    allowed = keep_mask(q_pos, k_pos, causal=True)  # (1, 1, Cq, Ck)
                    expo = cc[:, :, None, :] - q_max[..., None]  # (B, H, Cq, Ck), <= 0 if allowed
                    expo = expo.masked_fill(~allowed, float("-inf"))  # future keys: factor 0
                    a = (qc @ kf[:, :, ks:ke].transpose(-2, -1)) * torch.exp(expo)
                    nd = nd + a @ v1[:, :, ks:ke]  # (B, H, Cq, Dh + 1)
                outs.append(nd)
            if ke > ks:  # fold this chunk's keys into the state, relative to the new max
                new_max = key_max[..., -1]  # (B, H)
                kc = kf[:, :, ks:ke] * torch.exp(cc - new_max[..., None])[..., None]
                state = (state * torch.exp(run_max - new_max)[..., None, None]
                         + kc.transpose(-2, -1) @ v1[:, :, ks:ke])  # (B, H, m, Dh + 1)
                run_max = new_max
        return torch.cat(outs, dim=2)  # (B, H, Tq, Dh + 1)

    def _dense(self, qf, kf, c, v, causal, key_padding_mask):
        """The explicit O(Tq Tk) path: normalized phi(Q) phi(K)^T as weights (B, H, Tq, Tk)."""
        Tq, Tk = qf.shape[2], kf.shape[2]
        keep = dense_keep_mask(Tq, Tk, causal=causal, key_padding_mask=key_padding_mask,
                               device=qf.device)
        cm = c[:, :, None, :]  # (B, H, 1, Tk)
        if keep is not None:
            cm = cm.masked_fill(~keep, torch.finfo(c.dtype).min)  # (B, H, Tq, Tk)
        expo = cm - cm.amax(-1, keepdim=True)  # per-row offset over the keys it may see
        if keep is not None:
            expo = expo.masked_fill(~keep, float("-inf"))
        kernel = (qf @ kf.transpose(-2, -1)) * torch.exp(expo)  # (B, H, Tq, Tk), >= 0
        weights = _safe_ratio(kernel, kernel.sum(-1, keepdim=True))
        return weights @ v, weights

