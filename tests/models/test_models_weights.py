"""Weights files: manifest round trip, hash and schema checks, band matching, normalisation."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from glacimap.errors import BandMismatchError, InputNotFoundError, InvalidInputError, OutputExistsError
from glacimap.models.weights import (
    SCHEMA_VERSION,
    BandStats,
    LocationSpec,
    TrainingSummary,
    build_manifest,
    calibration_map,
    check_bands,
    load_model,
    load_weights,
    location_vector,
    prepare_inputs,
    read_manifest,
    save_weights,
    with_calibration,
    write_manifest,
)
from model_testdata import BANDS, SOURCES, tiny_glavitu

STATS = {b: BandStats(method="standard", mean=0.5, std=0.25) for b in BANDS}


def saved_model(tmp_path: Path, location: LocationSpec | None = None):
    torch.manual_seed(0)
    model = tiny_glavitu(location_dim=location.dim if location else 0).eval()
    manifest = build_manifest(
        model, "tiny", SOURCES, STATS, preset="glavitu-s", location=location,
        training=TrainingSummary(regions=["alps"], years=[2020], n_glaciers=12, n_samples=6, n_pixels=9000),
        validation={"iou": 0.8},
    )
    stored = save_weights(model, manifest, tmp_path / "tiny.safetensors")
    return model, stored


def test_manifest_round_trip(tmp_path: Path) -> None:
    model, stored = saved_model(tmp_path)
    weights = tmp_path / "tiny.safetensors"
    assert stored.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    data = json.loads((tmp_path / "tiny.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["architecture"] == "glavitu"
    assert data["sources"] == SOURCES
    assert data["training"]["n_glaciers"] == 12
    assert b"pickle" not in weights.read_bytes()[:2000]

    loaded = load_weights(tmp_path / "tiny.json")
    assert loaded.manifest == stored
    assert not loaded.model.training
    x = {"optical": torch.rand(1, 6, 24, 24), "dem": torch.rand(1, 2, 24, 24)}
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert read_manifest(tmp_path / "tiny").bands == BANDS


def test_hash_mismatch_is_refused(tmp_path: Path) -> None:
    saved_model(tmp_path)
    weights = tmp_path / "tiny.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # flip the bits of the last weight byte
    weights.write_bytes(bytes(blob))
    with pytest.raises(InvalidInputError, match=r"tiny\.safetensors: SHA-256 .* does not match"):
        load_weights(weights)


def test_schema_version_is_checked(tmp_path: Path) -> None:
    saved_model(tmp_path)
    path = tmp_path / "tiny.json"
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="schema version 2.*upgrade glacimap"):
        load_weights(path)
    del data["schema_version"]
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="schema version None"):
        read_manifest(path)


def test_unknown_manifest_keys_and_inconsistencies_are_errors(tmp_path: Path) -> None:
    saved_model(tmp_path)
    path = tmp_path / "tiny.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "colour": "blue"}))
    with pytest.raises(InvalidInputError, match="colour"):
        read_manifest(path)
    broken = dict(data)
    broken["normalisation"] = {k: v for k, v in data["normalisation"].items() if k != "slope"}
    path.write_text(json.dumps(broken))
    with pytest.raises(InvalidInputError, match=r"no normalisation statistics for bands \['slope'\]"):
        read_manifest(path)


def test_overwrite_is_explicit(tmp_path: Path) -> None:
    model, stored = saved_model(tmp_path)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_weights(model, stored, tmp_path / "tiny.safetensors")
    save_weights(model, stored, tmp_path / "tiny.safetensors", overwrite=True)


def test_band_mismatch_names_both_lists(tmp_path: Path) -> None:
    _, manifest = saved_model(tmp_path)
    chip = ["blue", "green", "red", "nir", "swir16", "swir22", "elevation", "vv_asc", "valid"]
    with pytest.raises(BandMismatchError) as info:
        check_bands(chip, manifest, where="chips/2020/G1.tif")
    message = str(info.value)
    assert "chips/2020/G1.tif" in message
    assert str(chip) in message and str(BANDS) in message
    assert "missing ['slope']" in message and "not used by the model ['vv_asc']" in message
    # the valid band is never extra; order in the chip does not matter
    shuffled = ["valid", *reversed(BANDS)]
    assert check_bands(shuffled, manifest) == [len(BANDS) - i for i in range(len(BANDS))]
    assert check_bands([*BANDS, "vv_asc"], manifest, allow_extra=True) == list(range(len(BANDS)))


def test_prepare_inputs_normalises_and_masks(tmp_path: Path) -> None:
    _, manifest = saved_model(tmp_path)
    names = [*BANDS, "valid"]
    array = np.full((len(names), 2, 3), 0.75, dtype=np.float32)
    array[0, 0, 0] = np.nan  # missing blue
    array[-1] = 1.0
    array[-1, 1, 2] = 0.0  # outside the chip's valid data
    prepared = prepare_inputs(array, names, manifest)
    assert prepared.sources["optical"].shape == (6, 2, 3)
    assert prepared.sources["dem"].shape == (2, 2, 3)
    assert prepared.valid.tolist() == [[False, True, True], [True, True, False]]
    assert prepared.sources["dem"][0, 0, 1] == pytest.approx(1.0)  # (0.75 - 0.5) / 0.25
    assert prepared.sources["optical"][:, 0, 0].tolist() == [0.0] + [1.0] * 5  # only the NaN is zeroed
    assert prepared.sources["dem"][:, 1, 2].tolist() == [1.0, 1.0]  # cloud keeps its values, marked invalid
    assert prepared.tensors()["optical"].shape == (1, 6, 2, 3)


def test_decibel_transform() -> None:
    from glacimap.models.weights import normalise_band

    stats = BandStats(method="standard", mean=-10.0, std=5.0, transform="db")
    out = normalise_band(np.array([0.1, 1.0, 0.0, -1.0]), stats)
    assert out[:2].tolist() == pytest.approx([0.0, 2.0])
    assert np.isnan(out[2:]).all()


def test_band_ratio_needs_no_weights() -> None:
    loaded = load_model("band-ratio")
    assert loaded.path is None and loaded.manifest.weights_sha256 is None
    assert loaded.manifest.bands == ["blue", "red", "swir16"]
    names = ["blue", "green", "red", "nir", "swir16", "swir22", "elevation", "slope", "valid"]
    array = np.zeros((len(names), 1, 2), dtype=np.float32)
    array[names.index("blue")] = [[0.3, 0.3]]
    array[names.index("red")] = [[0.5, 0.5]]
    array[names.index("swir16")] = [[0.1, 0.2]]
    array[names.index("valid")] = 1
    prepared = loaded.prepare(array, names, allow_extra=True)
    with torch.no_grad():
        ice = loaded.model(prepared.tensors()).argmax(dim=1)
    assert ice.tolist() == [[[1, 0]]]


def test_unknown_model_name() -> None:
    with pytest.raises(InputNotFoundError, match="model 'no-such-model' not found"):
        load_model("no-such-model")


def test_location_and_calibration_in_manifest(tmp_path: Path) -> None:
    from glacimap.confidence import CalibrationMap

    _, manifest = saved_model(tmp_path, LocationSpec(kind="region", regions=["alps", "andes"]))
    assert location_vector(manifest, region="andes").tolist() == [0, 1, 0]
    assert location_vector(manifest, region="himalaya").tolist() == [0, 0, 1]  # unseen slot
    assert calibration_map(manifest) == CalibrationMap.identity()
    cmap = CalibrationMap("kernel-ridge", (0.0, 0.5, 1.0), (0.0, 0.8, 1.0), {"ece_before": 0.2})
    write_manifest(tmp_path / "tiny.json", with_calibration(manifest, cmap))
    loaded = load_weights(tmp_path / "tiny.safetensors")  # the weights' hash still matches
    assert loaded.manifest.calibration["knots_y"] == [0.0, 0.8, 1.0]
    assert loaded.calibration_map()(np.array([0.25, 0.75])).tolist() == pytest.approx([0.4, 0.9])
    bad = {**cmap.to_dict(), "knots_x": [0.0, 0.7, 0.5]}
    with pytest.raises(InvalidInputError, match="knots_x must rise strictly"):
        with_calibration(manifest, bad)


def test_no_pickle_loading_in_the_package() -> None:
    """torch.load may appear only with weights_only=True; pickle is never imported."""
    package = Path(__file__).resolve().parents[2] / "glacimap"
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in re.findall(r"(?<![\w.])torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"^\s*(import pickle|from pickle)", text, re.M), path
