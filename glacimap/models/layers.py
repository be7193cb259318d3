"""Building blocks shared by the segmentation networks.

Conventions every model in :mod:`glacimap.models` follows:

- ``forward(inputs, location=None)`` takes a mapping of *source* tensors (``"optical"``:
  (B, 6, H, W), ``"dem"``: (B, 2, H, W), optionally ``"sar"``: (B, k, H, W)) and an optional
  location vector (B, L);
- in evaluation mode it returns logits (B, classes, H, W); in training mode it returns
  ``(logits, aux)`` where ``aux`` is a tuple of deep-supervision logits (empty when the
  architecture has none);
- any H and W work: inputs are padded internally to the multiple the architecture needs and
  the outputs cropped back.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glacimap.errors import InvalidInputError


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    """Convolution (same padding, no bias) + batch norm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al. 2018): global average pool, bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class LocationEmbedding(nn.Module):
    """Small feed-forward network turning a location vector into a per-channel bias.

    The output (B, channels, 1, 1) is added to low-level feature maps, so the same location
    shifts every pixel of the patch.
    """

    def __init__(self, location_dim: int, channels: int, hidden: int = 64):
        super().__init__()
        self.location_dim = location_dim
        self.net = nn.Sequential(nn.Linear(location_dim, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, location: Tensor) -> Tensor:
        return self.net(location)[:, :, None, None]


#: Input sources of the networks when none are given: optical bands and DEM (elevation, slope).
DEFAULT_SOURCES: dict[str, int] = {"optical": 6, "dem": 2}


def source_channels(sources: Mapping[str, int] | None) -> dict[str, int]:
    """Validated source name -> channel count mapping (the default when ``sources`` is empty)."""
    sources = dict(sources or DEFAULT_SOURCES)
    if any(int(c) < 1 for c in sources.values()):
        raise InvalidInputError(f"sources must map names to channel counts >= 1, got {sources}")
    return sources


def check_inputs(
    inputs: Mapping[str, Tensor], sources: Mapping[str, int], location: Tensor | None, location_dim: int
) -> tuple[int, int, int]:
    """Validate the source tensors and location of a forward call; return (B, H, W)."""
    if set(inputs) != set(sources):
        raise InvalidInputError(
            f"the model expects input sources {sorted(sources)} but got {sorted(inputs)}"
        )
    shapes = set()
    for name, channels in sources.items():
        x = inputs[name]
        if x.ndim != 4 or x.shape[1] != channels:
            raise InvalidInputError(
                f"source '{name}' must have shape (B, {channels}, H, W), got {tuple(x.shape)}"
            )
        shapes.add((x.shape[0], x.shape[2], x.shape[3]))
    if len(shapes) != 1:
        raise InvalidInputError(f"all sources must share batch size and H, W; got {sorted(shapes)}")
    batch, height, width = shapes.pop()
    if location_dim and location is None:
        raise InvalidInputError(f"this model needs a location input of shape (B, {location_dim})")
    if not location_dim and location is not None:
        raise InvalidInputError("this model has no location input; pass location=None")
    if location is not None and tuple(location.shape) != (batch, location_dim):
        raise InvalidInputError(
            f"location must have shape ({batch}, {location_dim}), got {tuple(location.shape)}"
        )
    return batch, height, width


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom and right to a multiple of ``multiple`` (edge values).

    Returns the padded tensor and the original (H, W) for cropping the output back.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)


def lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Every dropout layer of ``model``."""
    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    return [m for m in model.modules() if isinstance(m, kinds)]


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Monte-Carlo dropout: evaluation mode with only the dropout layers sampling.

    Batch norm keeps its running statistics; the model's previous modes are restored on
    exit. Each forward pass inside the block draws a new dropout mask, so N passes give N
    samples of the predictive distribution.
    """
    modes = {m: m.training for m in model.modules()}
    drops = dropout_modules(model)
    if not any(getattr(m, "p", 0.0) > 0.0 for m in drops):
        raise InvalidInputError(
            f"{type(model).__name__} has no dropout with p > 0; Monte-Carlo dropout needs it"
        )
    model.eval()
    for module in drops:
        module.train()
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.train(mode)
