"""GlaViTU: a hybrid convolutional-transformer network for glacier mapping.

Our PyTorch implementation of the architecture described by Maslov et al. (2025, Nature
Communications; IGARSS 2023):

1. *Fusion block*: one convolutional branch per input source (optical, DEM, SAR...), each
   ending in a squeeze-and-excitation block; the branches are concatenated and fused by a
   1 x 1 convolution into ``width`` low-level feature maps. An optional location vector (region
   one-hot or sin/cos of latitude and longitude) goes through a small feed-forward network and
   is added to these features.
2. *Transformer subnet* (SETR-like): non-overlapping patch embedding, learnable position
   embedding (interpolated for other input sizes), ``depth`` pre-norm ViT blocks, then a
   progressive-upsampling (PUP) decoder back to full resolution. A deep-supervision head turns
   the PUP output into logits during training.
3. *Residual U-Net subnet*: takes the fused low-level features together with the PUP output
   and recovers fine detail (``len(unet_widths) - 1`` down/up steps); a 1 x 1 convolution gives
   the class logits.

Dropout in the transformer and the U-Net can be switched on at inference for Monte-Carlo
sampling (:func:`glacimap.models.layers.mc_dropout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glacimap.errors import InvalidInputError
from glacimap.models.layers import (
    LocationEmbedding,
    SqueezeExcitation,
    check_inputs,
    source_channels,
    conv_bn_relu,
    lcm,
    pad_to_multiple,
)


class SourceBranch(nn.Module):
    """Two 3 x 3 convolutions and a squeeze-and-excitation block for one input source."""

    def __init__(self, c_in: int, c_out: int, se_reduction: int = 4):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))
        self.se = SqueezeExcitation(c_out, se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        return self.se(self.convs(x))


class FusionBlock(nn.Module):
    """One branch per source, concatenated and fused by a 1 x 1 convolution."""

    def __init__(self, sources: Mapping[str, int], width: int, se_reduction: int = 4):
        super().__init__()
        self.branches = nn.ModuleDict({name: SourceBranch(c, width, se_reduction) for name, c in sources.items()})
        self.fuse = conv_bn_relu(width * len(sources), width, kernel=1)

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        features = [branch(inputs[name]) for name, branch in self.branches.items()]
        return self.fuse(torch.cat(features, dim=1))


class Attention(nn.Module):
    """Multi-head self-attention (scaled dot product)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise InvalidInputError(f"width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.drop(self.proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: attention and a GELU MLP, each with a residual connection."""

    def __init__(self, dim: int, heads: int, mlp_width: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_width), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_width, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerSubnet(nn.Module):
    """Patch embedding, ViT blocks and a progressive-upsampling decoder to full resolution."""

    def __init__(
        self, width: int, patch: int, depth: int, heads: int, mlp_width: int, dropout: float, img_size: int
    ):
        super().__init__()
        if patch < 2 or patch & (patch - 1):
            raise InvalidInputError(f"patch size must be a power of two >= 2, got {patch}")
        self.patch = patch
        self.embed = nn.Conv2d(width, width, kernel_size=patch, stride=patch)
        grid = max(1, img_size // patch)
        self.position = nn.Parameter(torch.zeros(1, width, grid, grid))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(TransformerBlock(width, heads, mlp_width, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        steps = patch.bit_length() - 1
        self.decoder = nn.ModuleList(conv_bn_relu(width, width) for _ in range(steps))

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x)
        b, d, gh, gw = tokens.shape
        position = self.position
        if position.shape[-2:] != (gh, gw):
            position = F.interpolate(position, size=(gh, gw), mode="bilinear", align_corners=False)
        tokens = self.drop(tokens + position).flatten(2).transpose(1, 2)
        tokens = self.norm(self.blocks(tokens))
        y = tokens.transpose(1, 2).reshape(b, d, gh, gw)
        for conv in self.decoder:
            y = F.interpolate(conv(y), scale_factor=2, mode="bilinear", align_corners=False)
        return y


class ResidualBlock(nn.Module):
    """Two 3 x 3 convolutions with batch norm and an identity (or 1 x 1) shortcut."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResUNet(nn.Module):
    """Residual U-Net: ``len(widths) - 1`` max-pool downsamplings and bilinear upsamplings."""

    def __init__(self, c_in: int, widths: Sequence[int], dropout: float):
        super().__init__()
        widths = list(widths)
        self.stem = ResidualBlock(c_in, widths[0])
        self.down = nn.ModuleList(
            ResidualBlock(widths[i], widths[i + 1], dropout if i == len(widths) - 2 else 0.0)
            for i in range(len(widths) - 1)
        )
        self.up = nn.ModuleList(
            ResidualBlock(widths[i + 1] + widths[i], widths[i], dropout) for i in reversed(range(len(widths) - 1))
        )

    @property
    def factor(self) -> int:
        return 2 ** len(self.down)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return y


class GlaViTU(nn.Module):
    """GlaViTU segmentation network (see the module docstring).

    ``sources`` maps each input source to its number of channels, e.g.
    ``{"optical": 6, "dem": 2}``; ``location_dim`` > 0 adds the location input.
    """

    def __init__(
        self,
        sources: Mapping[str, int] | None = None,
        *,
        num_classes: int = 2,
        width: int = 64,
        patch: int = 16,
        depth: int = 12,
        heads: int = 4,
        mlp_width: int = 256,
        unet_widths: Sequence[int] = (64, 128, 256, 512),
        dropout: float = 0.1,
        location_dim: int = 0,
        location_hidden: int = 64,
        se_reduction: int = 4,
        img_size: int = 384,
    ):
        super().__init__()
        sources = source_channels(sources)
        if len(unet_widths) < 2:
            raise InvalidInputError(f"unet_widths needs at least two levels, got {list(unet_widths)}")
        self._config: dict[str, Any] = dict(
            sources={k: int(v) for k, v in sources.items()},
            num_classes=num_classes,
            width=width,
            patch=patch,
            depth=depth,
            heads=heads,
            mlp_width=mlp_width,
            unet_widths=[int(w) for w in unet_widths],
            dropout=dropout,
            location_dim=location_dim,
            location_hidden=location_hidden,
            se_reduction=se_reduction,
            img_size=img_size,
        )
        self.sources = self._config["sources"]
        self.location_dim = location_dim
        self.fusion = FusionBlock(self.sources, width, se_reduction)
        self.location = LocationEmbedding(location_dim, width, location_hidden) if location_dim else None
        self.transformer = TransformerSubnet(width, patch, depth, heads, mlp_width, dropout, img_size)
        self.aux_head = nn.Conv2d(width, num_classes, 1)
        self.unet = ResUNet(2 * width, unet_widths, dropout)
        self.head = nn.Conv2d(unet_widths[0], num_classes, 1)
        self.multiple = lcm(patch, self.unet.factor)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON values (stored in the weights manifest)."""
        return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def forward(
        self, inputs: Mapping[str, Tensor], location: Tensor | None = None
    ) -> Tensor | tuple[Tensor, tuple[Tensor, ...]]:
        check_inputs(inputs, self.sources, location, self.location_dim)
        padded = {}
        for name, x in inputs.items():
            padded[name], size = pad_to_multiple(x, self.multiple)
        height, width = size
        low = self.fusion(padded)
        if self.location is not None:
            low = low + self.location(location.to(low.dtype))
        context = self.transformer(low)
        logits = self.head(self.unet(torch.cat([low, context], dim=1)))[..., :height, :width]
        if not self.training:
            return logits
        aux = self.aux_head(context)[..., :height, :width]
        return logits, (aux,)
