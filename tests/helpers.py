"""Shared test utilities."""

import torch
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces inside the block."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def assert_same_values_and_gradients(out, ref, inputs, *, atol: float) -> None:
    """`out` equals `ref`, and so do their gradients with respect to `inputs` under one random
    upstream gradient."""
    assert torch.allclose(out, ref, atol=atol)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((out * g).sum(), inputs, retain_graph=True)
    ref_grads = torch.autograd.grad((ref * g).sum(), inputs, retain_graph=True)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, atol=atol)


def random_qkv_with_padding(data, B, H, Tq, Tk, Dh):
    """Float64 q (B, H, Tq, Dh), k, v (B, H, Tk, Dh) that require grad, and a hypothesis-drawn
    key padding mask (B, Tk)."""
    q = torch.randn(B, H, Tq, Dh, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(B, H, Tk, Dh, dtype=torch.float64, requires_grad=True) for _ in "kv")
    bits = data.draw(st.lists(st.booleans(), min_size=B * Tk, max_size=B * Tk))
    return q, k, v, torch.tensor(bits).view(B, Tk)


@torch.no_grad()
def decoding_gpt(vocab_size: int, max_len: int, *, perturb_vectors: bool = False, **kw):
    """A tiny random GPT for decoding tests, its matrices re-drawn at a scale where greedy
    decoding does not collapse at once onto one token and sampling is neither uniform nor
    near-greedy; `perturb_vectors` also moves norms and biases off their 1 / 0 init."""
    from attnlab.models import GPT, GPTConfig

    torch.manual_seed(0)
    base = dict(vocab_size=vocab_size, d_model=32, n_heads=4, n_layers=2, max_len=max_len,
                tie_embeddings=False)
    model = GPT(GPTConfig(**{**base, **kw})).eval()
    for name, p in model.named_parameters():
        if p.dim() == 2:
            emb = "tok_emb" in name or "positional" in name
            p.normal_(0.0, 1.0 if emb else p.shape[1] ** -0.5)
        elif perturb_vectors:
            p.add_(0.1 * torch.randn_like(p))
    return model
