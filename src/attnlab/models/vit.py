"""Vision Transformer (Dosovitskiy et al., 2021): an image cut into patches is a sequence of
tokens for the same bidirectional `TransformerStack` every attnlab model uses.

    x = [cls;] PatchEmbed(image) + Pos2d  ->  N Blocks (+ final norm)  ->  cls token or mean
      ->  Linear -> logits

With `pooling="cls"`, `image_positional="learned"`, post-final-norm head, GELU, pre-norm and
`norm_eps=1e-12` it is Hugging Face's `ViTForImageClassification` exactly (tests hold the two
equal on identical weights). Any registered attention mechanism can be used (`attention=`).

Departures from the paper: the head is one linear layer (the paper pre-trains with a hidden
layer and fine-tunes with one); fixed 2-D sine-cosine positions (`sincos2d`, as in MAE and
"Better plain ViT baselines") are the default, and then the class token carries no position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.layers.patch import PatchEmbed, check_patches, sincos_2d_table
from attnlab.models.config import TransformerConfig, _check_choice, check_positive
from attnlab.models.heads import classifier
from attnlab.models.transformer import ModelInfo, TransformerStack, init_gpt2_, linear_flops

IMAGE_POSITIONAL = ("sincos2d", "learned")


@dataclass
class VisionConfig(TransformerConfig):
    """A ViT. The stack's 1-D `positional` must stay "none": patches get 2-D positions, and
    `max_len` is set to the token count (patches + class token), which the image fixes.

    Args:
        image_size: side of the square input images.
        patch_size: side of a square patch; must divide `image_size`.
        channels: input channels (1 grey, 3 RGB).
        num_classes: classifier width; 0 = no head (features only).
        pooling: "cls" (a learned class token, prepended) or "mean" (over patch tokens).
        image_positional: "sincos2d" (fixed 2-D sine-cosine) or "learned" (one vector per
            token, the class token's included).
    """

    positional: str = "none"
    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    num_classes: int = 10
    pooling: str = "cls"
    image_positional: str = "sincos2d"

    def __post_init__(self):
        super().__post_init__()
        if self.positional != "none":
            raise ConfigError(f"a ViT takes 2-D positions (image_positional), not positional "
                              f"'{self.positional}'; leave positional at 'none'")
        check_positive(self, "image_size", "patch_size", "channels")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        check_patches(self.image_size, self.image_size, self.patch_size)
        _check_choice("pooling", self.pooling, ("cls", "mean"))
        _check_choice("image positional encoding", self.image_positional, IMAGE_POSITIONAL)
        if self.image_positional == "sincos2d" and self.d_model % 2:
            raise ConfigError(f"sincos2d positions need an even d_model, got {self.d_model}")
        self.max_len = self.n_tokens

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def n_tokens(self) -> int:
        return self.n_patches + (self.pooling == "cls")


class ViT(ModelInfo, nn.Module):
    """Vision Transformer. `forward_features` gives (B, T, d) tokens (the class token first
    when `pooling="cls"`), `forward_head` pools them and applies the classifier.

    Args:
        config: a `VisionConfig`.
    """

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.channels, c.d_model,
                                      bias=c.bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" \
            else None
        if c.image_positional == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, c.n_tokens, c.d_model))
        else:  # fixed: a buffer, not saved (it is a function of the config)
            rows, cols = self.patch_embed.grid
            self.register_buffer("pos_embed", sincos_2d_table(rows, cols, c.d_model)[None],
                                 persistent=False)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.head = classifier(c.d_model, c.num_classes)
        init_gpt2_(self, c.n_layers)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        if c.image_positional == "learned":
            nn.init.normal_(self.pos_embed, std=0.02)

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier with a fresh linear layer to `num_classes` (0: none)."""
        self.head = classifier(self.config.d_model, num_classes)

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, T, d): patch tokens with positions, the class token first."""
        x = self.patch_embed(images)  # (B, N, d)
        if self.config.image_positional == "sincos2d":
            x = x + self.pos_embed.to(x.dtype)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1).to(x.dtype), x], dim=1)
        if self.config.image_positional == "learned":
            x = x + self.pos_embed
        return self.drop(x)

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> tokens (B, T, d_model), after the final norm."""
        return self.stack(self.embed(images))

    def forward_head(self, h: Tensor, *, pre_logits: bool = False) -> Tensor:
        """(B, T, d) -> pooled (B, d) -> logits; `pre_logits` stops after pooling."""
        pooled = h[:, 0] if self.config.pooling == "cls" else h.mean(dim=1)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def forward_flops(self, seq_len: int | None = None) -> float:
        """Matmul FLOPs of one image (`seq_len` defaults to the model's token count)."""
        c = self.config
        n = c.n_tokens if seq_len is None else seq_len
        patch = 2.0 * self.patch_embed.proj.weight.numel() * c.n_patches
        return patch + self.stack.forward_flops(n, causal=False) + linear_flops(self.head)
