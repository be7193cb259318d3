"""Focal loss values, label smoothing, deep supervision and loss masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glacimap.errors import InvalidInputError
from glacimap.losses import SegmentationLoss, focal_loss


def one_pixel(logit_ice: float) -> torch.Tensor:
    return torch.tensor([0.0, logit_ice]).reshape(1, 2, 1, 1)


def test_focal_loss_known_values() -> None:
    target = torch.ones(1, 1, 1, dtype=torch.long)
    # p = 0.5: -(0.5)^2 log 0.5, whatever the smoothing (both classes weigh the same)
    assert float(focal_loss(one_pixel(0.0), target, gamma=2, label_smoothing=0.0)) == pytest.approx(0.25 * math.log(2))
    assert float(focal_loss(one_pixel(0.0), target, gamma=2, label_smoothing=0.1)) == pytest.approx(0.25 * math.log(2))
    # p_ice = 0.75, q = (0.05, 0.95)
    expected = -(0.05 * 0.75**2 * math.log(0.25) + 0.95 * 0.25**2 * math.log(0.75))
    assert float(focal_loss(one_pixel(math.log(3.0)), target)) == pytest.approx(expected, rel=1e-6)


def test_gamma_zero_without_smoothing_is_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 5, 4, generator=generator)
    target = torch.randint(0, 2, (2, 5, 4), generator=generator)
    assert float(focal_loss(logits, target, gamma=0.0, label_smoothing=0.0)) == pytest.approx(
        float(F.cross_entropy(logits, target)), rel=1e-6
    )


def test_masked_pixels_are_excluded() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 6, 6, generator=generator, requires_grad=True)
    target = torch.randint(0, 2, (2, 6, 6), generator=generator)
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[:, 1:4, 2:5] = True
    loss = focal_loss(logits, target, mask)
    loss.backward()
    # equals the mean over the kept pixels alone
    kept = focal_loss(
        logits.detach().permute(0, 2, 3, 1)[mask].T.reshape(1, 2, -1, 1), target[mask].reshape(1, -1, 1)
    )
    assert float(loss.detach()) == pytest.approx(float(kept), rel=1e-6)
    assert torch.all(logits.grad.permute(0, 2, 3, 1)[~mask] == 0)
    assert torch.any(logits.grad.permute(0, 2, 3, 1)[mask] != 0)
    # garbage (NaN logits, impossible labels) under the mask changes nothing
    dirty = logits.detach().clone()
    dirty.permute(0, 2, 3, 1)[~mask] = float("nan")
    dirty_target = target.clone()
    dirty_target[~mask] = 255
    assert float(focal_loss(dirty, dirty_target, mask)) == pytest.approx(float(loss.detach()), rel=1e-6)


def test_fully_masked_batch_gives_zero_with_gradient_path() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = focal_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(logits.grad == 0)


def test_deep_supervision_adds_weighted_aux_loss() -> None:
    generator = torch.Generator().manual_seed(3)
    main, aux = torch.randn(2, 2, 2, 4, 4, generator=generator)
    target = torch.randint(0, 2, (2, 4, 4), generator=generator)
    criterion = SegmentationLoss(aux_weight=0.5)
    expected = focal_loss(main, target) + 0.5 * focal_loss(aux, target)
    assert float(criterion(main, [aux], target)) == pytest.approx(float(expected))
    assert float(criterion(main, [], target)) == pytest.approx(float(focal_loss(main, target)))


def test_shape_errors() -> None:
    with pytest.raises(InvalidInputError, match="do not match"):
        focal_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="label_smoothing"):
        focal_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), label_smoothing=1.0)
