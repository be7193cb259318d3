"""U-Net with a ResNet-34 encoder: the Diaconu & Bamber baseline, in plain PyTorch.

The encoder is ResNet-34 (He et al. 2016): a 7 x 7 stride-2 stem, max pooling and four stages
of basic residual blocks (3, 4, 6, 3 blocks; 64, 128, 256, 512 channels). All input sources are
stacked into one image (early fusion) before the stem. The decoder upsamples five times by 2,
joining the encoder features of matching resolution (U-Net skip connections), with two
3 x 3 convolutions and spatial dropout per step. Weights start random: no ImageNet weights
exist for these 8+ channel inputs, and glacimap downloads none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glacimap.errors import InvalidInputError
from glacimap.models.layers import LocationEmbedding, check_inputs, conv_bn_relu, pad_to_multiple, source_channels

#: Residual blocks per encoder stage of ResNet-34.
RESNET34_BLOCKS: tuple[int, ...] = (3, 4, 6, 3)
RESNET_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3 x 3 convolutions and a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def resnet_stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(c_in, c_out, stride)]
    layers += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DecoderBlock(nn.Module):
    """Upsample by 2, concatenate the skip features, two 3 x 3 convolutions, spatial dropout."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, dropout: float):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(c_in + c_skip, c_out), conv_bn_relu(c_out, c_out))
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.drop(self.convs(x))


class UNetResNet34(nn.Module):
    """U-Net with a ResNet-34 encoder (see the module docstring).

    ``sources`` maps each input source to its number of channels; ``location_dim`` > 0 adds a
    location input whose embedding is added to the stem features.
    """

    multiple = 32

    def __init__(
        self,
        sources: Mapping[str, int] | None = None,
        *,
        num_classes: int = 2,
        decoder_widths: Sequence[int] = (256, 128, 64, 32, 16),
        dropout: float = 0.1,
        location_dim: int = 0,
        location_hidden: int = 64,
    ):
        super().__init__()
        sources = source_channels(sources)
        if len(decoder_widths) != 5:
            raise InvalidInputError(f"decoder_widths needs five values, got {list(decoder_widths)}")
        self._config: dict[str, Any] = dict(
            sources={k: int(v) for k, v in sources.items()},
            num_classes=num_classes,
            decoder_widths=[int(w) for w in decoder_widths],
            dropout=dropout,
            location_dim=location_dim,
            location_hidden=location_hidden,
        )
        self.sources = self._config["sources"]
        self.location_dim = location_dim
        c_in = sum(self.sources.values())
        self.stem = nn.Sequential(
            nn.Conv2d(c_in, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.location = LocationEmbedding(location_dim, 64, location_hidden) if location_dim else None
        stages = []
        previous = 64
        for index, (blocks, width) in enumerate(zip(RESNET34_BLOCKS, RESNET_WIDTHS)):
            stages.append(resnet_stage(previous, width, blocks, stride=1 if index == 0 else 2))
            previous = width
        self.stages = nn.ModuleList(stages)
        skips = (256, 128, 64, 64, 0)
        decoder = []
        for width, skip in zip(decoder_widths, skips):
            decoder.append(DecoderBlock(previous, skip, width, dropout))
            previous = width
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(previous, num_classes, 3, padding=1)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as JSON values (stored in the weights manifest)."""
        return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def forward(
        self, inputs: Mapping[str, Tensor], location: Tensor | None = None
    ) -> Tensor | tuple[Tensor, tuple[Tensor, ...]]:
        check_inputs(inputs, self.sources, location, self.location_dim)
        x = torch.cat([inputs[name] for name in self.sources], dim=1)
        x, (height, width) = pad_to_multiple(x, self.multiple)
        stem = self.stem(x)  # 1/2
        if self.location is not None:
            stem = stem + self.location(location.to(stem.dtype))
        features = [stem]
        y = F.max_pool2d(stem, 3, stride=2, padding=1)  # 1/4
        for stage in self.stages:
            y = stage(y)
            features.append(y)  # 1/4, 1/8, 1/16, 1/32
        skips = [features[3], features[2], features[1], features[0], None]
        y = features[4]
        for block, skip in zip(self.decoder, skips):
            y = block(y, skip)
        logits = self.head(y)[..., :height, :width]
        if not self.training:
            return logits
        return logits, ()
