"""Training losses: masked focal loss with label smoothing, and deep supervision.

Pixels whose loss mask is False (cloud, no data, outside the labelled extent, padding) add
nothing to the loss or its gradient; the loss is the mean over the remaining pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glacimap.errors import InvalidInputError


def focal_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    gamma: float = 2.0,
    label_smoothing: float = 0.1,
) -> Tensor:
    """Mean focal loss (Lin et al. 2017) over the pixels where ``mask`` is True.

    ``logits`` (B, C, H, W); ``target`` (B, H, W) class indices; ``mask`` (B, H, W) bool.
    With label smoothing ``e`` the target distribution is ``(1 - e) one_hot + e / C`` and the
    loss per pixel is ``-sum_c q_c (1 - p_c)^gamma log p_c``. Returns 0 (with a gradient path)
    when no pixel counts.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise InvalidInputError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    if mask is not None and mask.shape != target.shape:
        raise InvalidInputError(f"mask {tuple(mask.shape)} does not match target {tuple(target.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise InvalidInputError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    classes = logits.shape[1]
    log_p = F.log_softmax(logits.float(), dim=1)
    q = F.one_hot(target.long().clamp(0, classes - 1), classes).permute(0, 3, 1, 2).float()
    q = q * (1.0 - label_smoothing) + label_smoothing / classes
    weight = (1.0 - log_p.exp()).clamp(min=0.0).pow(gamma) if gamma else 1.0
    per_pixel = -(q * weight * log_p).sum(dim=1)
    if mask is None:
        return per_pixel.mean()
    mask = mask.bool()
    count = mask.sum()
    # where() rather than multiplying, so NaN/inf at masked pixels cannot leak in.
    total = torch.where(mask, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / count.clamp(min=1)


class SegmentationLoss(nn.Module):
    """Focal loss on the main logits plus ``aux_weight`` times the same loss on each
    deep-supervision output (the recipe of Maslov et al. 2025)."""

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.1, aux_weight: float = 1.0):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight

    def forward(
        self, logits: Tensor, aux: Sequence[Tensor], target: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        loss = focal_loss(logits, target, mask, self.gamma, self.label_smoothing)
        for extra in aux:
            loss = loss + self.aux_weight * focal_loss(extra, target, mask, self.gamma, self.label_smoothing)
        return loss
