"""Images as token sequences (Dosovitskiy et al., 2021): cut into non-overlapping patches, each
flattened and linearly projected, plus the fixed 2-D sine-cosine position table.

A patch embedding is a Conv2d whose kernel and stride are the patch size: the same function as
unfolding the image into patches and multiplying each by one (C * P * P, d) matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError
from attnlab.layers.positional import sinusoid_table


def check_patches(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """(rows, cols) of patches; an image side the patch size does not divide is an error."""
    if height % patch_size or width % patch_size:
        raise AttnlabError(f"image size {height}x{width} is not divisible by the patch size "
                           f"{patch_size}; resize the images or pick a patch size that divides "
                           f"both sides")
    return height // patch_size, width // patch_size


class PatchEmbed(nn.Module):
    """(B, C, H, W) images -> (B, N, d) patch tokens, N = (H / P) * (W / P), row-major.

    Args:
        image_size: side of the square images the model is built for.
        patch_size: side P of a square patch; must divide `image_size`.
        channels: input channels C.
        d_model: token width d.
        bias: bias in the projection.
    """

    def __init__(self, image_size: int, patch_size: int, channels: int, d_model: int, *,
                 bias: bool = True):
        super().__init__()
        self.grid = check_patches(image_size, image_size, patch_size)
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.proj = nn.Conv2d(channels, d_model, kernel_size=patch_size, stride=patch_size,
                              bias=bias)

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise AttnlabError(f"images must be shaped (batch, channels, height, width), got "
                               f"{tuple(images.shape)}")
        _, c, h, w = images.shape
        if c != self.channels:
            raise AttnlabError(f"images have {c} channels, the model takes {self.channels}")
        check_patches(h, w, self.patch_size)
        if (h, w) != (self.image_size, self.image_size):
            raise AttnlabError(f"images are {h}x{w}, the model is built for "
                               f"{self.image_size}x{self.image_size}")
        x = self.proj(images)  # (B, d, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, d)


def sincos_2d_table(rows: int, cols: int, dim: int) -> Tensor:
    """(rows * cols, dim) fixed 2-D positions, row-major: the first dim/2 features are the 1-D
    sinusoids (`sinusoid_table`) of the row index, the last dim/2 those of the column index
    (the MAE / "simple ViT" layout, up to their sin/cos ordering). `dim` must be even."""
    if dim % 2:
        raise AttnlabError(f"2-D sine-cosine positions need an even width, got {dim}")
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    half = dim // 2
    return torch.cat([sinusoid_table(r.flatten(), half), sinusoid_table(c.flatten(), half)], 1)
