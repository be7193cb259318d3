"""The classical band-ratio glacier classifier, with the same interface as the networks.

A pixel is ice when ``red / swir16 > ratio_threshold`` and ``blue > blue_threshold``
(defaults 3.2 and 0.17, the baseline of Maslov et al. 2025, tuned there on top-of-atmosphere
reflectance; glacimap's chips hold surface reflectance, so the thresholds are configurable).
The ratio test is written as ``red > ratio_threshold * swir16`` so a zero SWIR never divides;
pixels with a missing (NaN) band are not ice.

Outputs are logits like the networks': ``+/- logit / 2`` per class (logit 200 by default), so
the softmax probabilities are exactly 0 and 1 in float32 (exp(-200) underflows). Confidence: the normalised-entropy confidence
of a 0/1 probability is 1 everywhere, so an uncalibrated band-ratio map has no 95 % band;
``glacimap calibrate`` maps that single confidence value to the method's observed accuracy.
The model has no weights and needs raw reflectance (its manifest normalises nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from glacimap.errors import InvalidInputError
from glacimap.models.layers import check_inputs

#: Bands the rule reads, in the order the ``optical`` source must hold them.
BAND_RATIO_BANDS: tuple[str, ...] = ("blue", "red", "swir16")


class BandRatio(nn.Module):
    """Red/SWIR1 and blue thresholds as a two-class segmentation "model" without weights."""

    def __init__(
        self,
        sources: Mapping[str, int] | None = None,
        *,
        bands: Sequence[str] = BAND_RATIO_BANDS,
        ratio_threshold: float = 3.2,
        blue_threshold: float = 0.17,
        logit: float = 200.0,
        num_classes: int = 2,
        location_dim: int = 0,
    ):
        super().__init__()
        sources = dict(sources or {"optical": len(bands)})
        bands = list(bands)
        if set(sources) != {"optical"} or sources["optical"] != len(bands):
            raise InvalidInputError(
                f"band-ratio reads one 'optical' source holding {bands}; got sources {sources}"
            )
        missing = [b for b in BAND_RATIO_BANDS if b not in bands]
        if missing:
            raise InvalidInputError(f"band-ratio needs bands {list(BAND_RATIO_BANDS)}; {missing} not in {bands}")
        if num_classes != 2 or location_dim:
            raise InvalidInputError("band-ratio has two classes and no location input")
        if logit <= 0:
            raise InvalidInputError(f"logit must be positive, got {logit}")
        self._config: dict[str, Any] = dict(
            sources={"optical": len(bands)},
            bands=bands,
            ratio_threshold=float(ratio_threshold),
            blue_threshold=float(blue_threshold),
            logit=float(logit),
        )
        self.sources = self._config["sources"]
        self.location_dim = 0
        self.index = {name: bands.index(name) for name in BAND_RATIO_BANDS}

    def config(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in self._config.items()}

    def ice_mask(self, optical: Tensor) -> Tensor:
        """Boolean (B, H, W): the rule applied to raw reflectance (B, bands, H, W)."""
        blue = optical[:, self.index["blue"]]
        red = optical[:, self.index["red"]]
        swir = optical[:, self.index["swir16"]]
        return (red > self._config["ratio_threshold"] * swir) & (blue > self._config["blue_threshold"])

    def forward(
        self, inputs: Mapping[str, Tensor], location: Tensor | None = None
    ) -> Tensor | tuple[Tensor, tuple[Tensor, ...]]:
        check_inputs(inputs, self.sources, location, 0)
        optical = inputs["optical"]
        sign = self.ice_mask(optical).to(optical.dtype) * 2.0 - 1.0
        half = self._config["logit"] / 2.0
        logits = torch.stack([-half * sign, half * sign], dim=1)
        if not self.training:
            return logits
        return logits, ()
