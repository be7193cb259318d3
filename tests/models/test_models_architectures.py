"""Shapes, gradients, Monte-Carlo dropout and the band-ratio rule of every architecture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glacimap.errors import DeviceError, InputError, InvalidInputError
from glacimap.models import (
    MODEL_PRESETS,
    count_parameters,
    create_model,
    encode_latlon,
    encode_region,
    mc_dropout,
    model_names,
    resolve_device,
)

COMBINATIONS = {
    "optical+dem": {"optical": 6, "dem": 2},
    "optical+dem+sar": {"optical": 6, "dem": 2, "sar": 2},
}
LOCATIONS = {"none": 0, "region": 4, "latlon": 4}


def inputs_for(sources: dict[str, int], batch: int = 2, height: int = 40, width: int = 36, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(batch, c, height, width, generator=generator) for k, c in sources.items()}


@pytest.mark.parametrize("name", ["glavitu-s", "unet-resnet34"])
@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
@pytest.mark.parametrize("location", sorted(LOCATIONS))
def test_forward_backward_shapes(name: str, combination: str, location: str) -> None:
    torch.manual_seed(0)
    sources = COMBINATIONS[combination]
    dim = LOCATIONS[location]
    model = create_model(name, sources=sources, location_dim=dim)
    x = inputs_for(sources)  # 40 x 36: not a multiple of the patch size, padded internally
    loc = torch.rand(2, dim) if dim else None

    model.train()
    logits, aux = model(x, loc)
    assert logits.shape == (2, 2, 40, 36)
    assert all(a.shape == (2, 2, 40, 36) for a in aux)
    assert len(aux) == (1 if name.startswith("glavitu") else 0)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert without_grad == []
    if dim:
        assert model.location.net[0].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        out = model(x, loc)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 40, 36)


def test_paper_scale_glavitu_builds_and_runs() -> None:
    torch.manual_seed(0)
    model = create_model("glavitu").eval()
    assert model.transformer.patch == 16
    assert len(model.transformer.blocks) == 12
    assert model.transformer.blocks[0].attn.heads == 4
    assert model.transformer.blocks[0].mlp[0].out_features == 256
    assert count_parameters(model) == 10_223_844
    with torch.no_grad():
        out = model(inputs_for({"optical": 6, "dem": 2}, batch=1, height=48, width=48))
    assert out.shape == (1, 2, 48, 48)


def test_parameter_counts_against_the_papers_ratios() -> None:
    glavitu = count_parameters(create_model("glavitu"))
    unet = count_parameters(create_model("unet-resnet34"))
    # SETR-PUP with a ViT-B/16 encoder has about 97 M parameters.
    assert 8 < 97e6 / glavitu < 12
    assert unet / glavitu > 2.0
    assert count_parameters(create_model("glavitu-s")) < glavitu / 3


def test_unet_encoder_is_resnet34() -> None:
    """With 3 input channels the encoder has exactly torchvision's ResNet-34 size without fc."""
    model = create_model("unet-resnet34", sources={"rgb": 3})
    encoder = sum(p.numel() for p in model.stem.parameters()) + sum(p.numel() for p in model.stages.parameters())
    assert encoder == 21_797_672 - 513_000
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]


@pytest.mark.parametrize("name", ["glavitu-s", "unet-resnet34"])
def test_mc_dropout_varies_and_restores(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = inputs_for({"optical": 6, "dem": 2}, batch=1, height=32, width=32)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with torch.no_grad():
        plain = [model(x) for _ in range(2)]
        with mc_dropout(model):
            samples = [torch.softmax(model(x), dim=1) for _ in range(3)]
    assert torch.equal(plain[0], plain[1])
    assert not torch.allclose(samples[0], samples[1])
    assert not torch.allclose(samples[1], samples[2])
    assert not model.training and not any(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        if "running" in key:
            assert torch.equal(value, running[key]), key


def test_mc_dropout_needs_dropout() -> None:
    model = create_model("glavitu-s", dropout=0.0)
    with pytest.raises(InvalidInputError, match="no dropout"):
        with mc_dropout(model):
            pass


def test_input_errors_name_sources_and_shapes() -> None:
    model = create_model("glavitu-s").eval()
    with pytest.raises(InvalidInputError, match=r"\['dem', 'optical'\].*\['optical'\]"):
        model({"optical": torch.zeros(1, 6, 16, 16)})
    with pytest.raises(InvalidInputError, match=r"source 'dem' must have shape \(B, 2, H, W\)"):
        model({"optical": torch.zeros(1, 6, 16, 16), "dem": torch.zeros(1, 3, 16, 16)})
    with pytest.raises(InvalidInputError, match="no location input"):
        model({"optical": torch.zeros(1, 6, 16, 16), "dem": torch.zeros(1, 2, 16, 16)}, torch.zeros(1, 4))
    located = create_model("glavitu-s", location_dim=4).eval()
    with pytest.raises(InvalidInputError, match=r"needs a location input of shape \(B, 4\)"):
        located({"optical": torch.zeros(1, 6, 16, 16), "dem": torch.zeros(1, 2, 16, 16)})


def test_registry() -> None:
    assert model_names() == ["band-ratio", "glavitu", "glavitu-s", "unet-resnet34"]
    assert set(MODEL_PRESETS) == set(model_names())
    with pytest.raises(InputError, match="unknown model 'setr'"):
        create_model("setr")
    with pytest.raises(InvalidInputError, match="invalid arguments"):
        create_model("glavitu-s", colour="blue")
    with pytest.raises(InvalidInputError, match="power of two"):
        create_model("glavitu-s", patch=12)


def test_band_ratio_rule_and_outputs() -> None:
    model = create_model("band-ratio").eval()
    # pixels: ice; ratio 2.5 (too low); blue too dark; zero SWIR (ice); NaN red (not ice)
    blue = [0.30, 0.30, 0.10, 0.20, 0.30]
    red = [0.50, 0.50, 0.50, 0.20, math.nan]
    swir = [0.10, 0.20, 0.10, 0.00, 0.10]
    optical = torch.tensor([blue, red, swir], dtype=torch.float32).reshape(1, 3, 1, 5)
    with torch.no_grad():
        p = torch.softmax(model({"optical": optical}), dim=1)[0, :, 0]
    assert p[1].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert p[0].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    looser = create_model("band-ratio", ratio_threshold=2.0).eval()
    with torch.no_grad():
        ice = looser({"optical": optical}).argmax(dim=1)[0, 0]
    assert ice.tolist() == [1, 1, 0, 1, 0]
    assert count_parameters(model) == 0


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA requested but no GPU"):
            resolve_device("cuda")


def test_location_encodings() -> None:
    onehot = encode_region([0, 2, None, -1], n_regions=3)
    assert onehot.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    with pytest.raises(InvalidInputError):
        encode_region([3 + 1], n_regions=3)
    latlon = encode_latlon([0.0, 90.0], [180.0, -90.0])
    np.testing.assert_allclose(latlon, [[0, 1, 0, -1], [1, 0, -1, 0]], atol=1e-7)
    with pytest.raises(InvalidInputError, match="latitudes"):
        encode_latlon([95.0], [0.0])
