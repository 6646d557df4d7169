import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.errors import AttnlabError
from attnlab.layers.patch import PatchEmbed, check_patches, sincos_2d_table


def test_patch_embedding_equals_unfold_and_one_linear_map():
    torch.manual_seed(0)
    embed = PatchEmbed(image_size=12, patch_size=4, channels=3, d_model=10)
    images = torch.randn(2, 3, 12, 12)
    # the twin: cut 4x4 patches row-major, flatten each (channel, row, col), one matrix
    patches = F.unfold(images, kernel_size=4, stride=4).transpose(1, 2)  # (B, 9, 48)
    w = embed.proj.weight.reshape(10, -1)  # (d, C*P*P) in the same (channel, row, col) order
    expected = patches @ w.T + embed.proj.bias
    got = embed(images)
    assert got.shape == (2, 9, 10) and embed.n_patches == 9
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # and by hand for one patch: token 5 is patch row 1, column 2
    patch = images[1, :, 4:8, 8:12].reshape(-1)
    torch.testing.assert_close(got[1, 5], w @ patch + embed.proj.bias, rtol=1e-5, atol=1e-5)


def test_image_sides_the_patch_size_does_not_divide_are_one_clear_error():
    with pytest.raises(AttnlabError, match=r"image size 10x10 is not divisible by the patch "
                                           r"size 4"):
        PatchEmbed(image_size=10, patch_size=4, channels=1, d_model=8)
    with pytest.raises(AttnlabError, match="28x30 is not divisible by the patch size 4"):
        check_patches(28, 30, 4)
    embed = PatchEmbed(image_size=8, patch_size=4, channels=1, d_model=8)
    with pytest.raises(AttnlabError, match="9x9 is not divisible"):
        embed(torch.zeros(1, 1, 9, 9))
    with pytest.raises(AttnlabError, match="images are 12x12, the model is built for 8x8"):
        embed(torch.zeros(1, 1, 12, 12))
    with pytest.raises(AttnlabError, match="3 channels, the model takes 1"):
        embed(torch.zeros(1, 3, 8, 8))
    with pytest.raises(AttnlabError, match="shaped \\(batch, channels, height, width\\)"):
        embed(torch.zeros(8, 8))


def test_2d_sincos_positions_match_the_formula_by_hand():
    rows, cols, dim = 3, 4, 8
    table = sincos_2d_table(rows, cols, dim)
    assert table.shape == (12, 8)
    half = dim // 2
    for r in range(rows):
        for c in range(cols):
            token = r * cols + c
            for i in range(half // 2):
                freq = 1.0 / 10000 ** (2 * i / half)
                expected = [math.sin(r * freq), math.cos(r * freq),
                            math.sin(c * freq), math.cos(c * freq)]
                got = [table[token, 2 * i], table[token, 2 * i + 1],
                       table[token, half + 2 * i], table[token, half + 2 * i + 1]]
                for g, e in zip(got, expected, strict=True):
                    assert float(g) == pytest.approx(e, abs=1e-6)
    with pytest.raises(AttnlabError, match="even width"):
        sincos_2d_table(2, 2, 7)
