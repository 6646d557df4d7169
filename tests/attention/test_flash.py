import pytest
import torch

from attnlab.attention import build
from attnlab.errors import CapabilityError
from attnlab.layers import ALiBiPositional


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flash_equals_eager_softmax_attention_and_reports_its_kernel(causal, padded, dtype):
    q, k, v = torch.randn(3, 2, 3, 11, 8, dtype=dtype).unbind(0)
    mask = None
    if padded:
        mask = torch.ones(2, 11, dtype=torch.bool)
        mask[0, 8:] = False
    bias = ALiBiPositional(3).attention_bias
    attn = build("flash")
    assert attn.backend is None
    out, w = attn(q, k, v, causal=causal, key_padding_mask=mask, bias=bias)
    ref, _ = build("full", impl="eager")(q, k, v, causal=causal, key_padding_mask=mask,
                                         bias=bias)
    assert w is None and attn.backend in ("flash", "efficient")
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(out, ref, atol=tol)


def test_flash_never_returns_weights():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(CapabilityError, match="'flash' cannot do returning attention weights"):
        build("flash")(q, q, q, need_weights=True)


def test_no_fused_kernel_is_an_error_not_a_math_fallback(monkeypatch):
    from attnlab.attention import flash

    # PyTorch has no memory-efficient kernel on CPU: allowed only that one, flash must refuse
    monkeypatch.setattr(flash, "FUSED", {"efficient": flash.FUSED["efficient"]})
    q = torch.randn(1, 1, 4, 8)
    attn = build("flash")
    with pytest.raises(CapabilityError, match="no fused SDPA kernel accepts these inputs"):
        attn(q, q, q)
    assert attn.backend is None
