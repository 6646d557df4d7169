"""Positional encodings: the cached RoPE tables follow the caller's precision."""

import torch

from attnlab.layers import RotaryPositional


def test_rope_tables_are_recomputed_when_the_precision_changes():
    # A model used in float32 and then in float64 (or the other way) must not keep the first
    # call's tables: float32 angles are off by ~1e-4 at position 20,000.
    x64 = torch.randn(1, 2, 3, 8, dtype=torch.float64)
    fresh = RotaryPositional(8).rotate(x64, start=20_000)
    reused = RotaryPositional(8)
    reused.rotate(torch.randn(1, 2, 3, 8), start=20_000)  # float32 tables built first
    torch.testing.assert_close(reused.rotate(x64, start=20_000), fresh, atol=1e-12, rtol=0)
