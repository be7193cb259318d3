"""Model weights files: ``NAME.safetensors`` plus a ``NAME.json`` manifest.

The safetensors file holds only tensors (no pickle, nothing executable). The manifest says how
to rebuild and feed the model: architecture and constructor arguments, the input bands per
source with their normalisation statistics, the location encoding, a training-data summary,
validation metrics, the confidence calibration map (written later by ``glacimap calibrate``,
JSON numbers only), the glacimap version and the SHA-256 of the weights file. Loading checks
the manifest's schema version and the hash before any tensor is read into a model.

Format reference: docs/models.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors
import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

import glacimap
from glacimap.errors import (
    BandMismatchError,
    InputNotFoundError,
    InvalidInputError,
    OutputExistsError,
)
from glacimap.models import (
    ARCHITECTURES,
    AUXILIARY_BANDS,
    LATLON_DIM,
    MODEL_PRESETS,
    count_parameters,
    encode_latlon,
    encode_region,
    resolve_device,
)
from glacimap.models.band_ratio import BAND_RATIO_BANDS, BandRatio
from glacimap.workspace import atomic_path, utc_now, write_json_atomic

#: Version of the manifest layout; bumped on any incompatible change.
SCHEMA_VERSION = 1
#: Names that need no weights file.
BUILTIN_MODELS: tuple[str, ...] = ("band-ratio",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BandStats(_Strict):
    """Normalisation of one band: ``standard`` (x - mean) / std, ``minmax`` (x - low) / (high -
    low), or ``none``. ``transform="db"`` first applies 10 log10(x) (SAR backscatter given as
    linear sigma0); non-positive values become missing."""

    method: Literal["standard", "minmax", "none"]
    mean: float | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    transform: Literal["none", "db"] = "none"

    @model_validator(mode="after")
    def _complete(self) -> BandStats:
        if self.method == "standard" and (self.mean is None or self.std is None or not self.std > 0):
            raise ValueError("method 'standard' needs mean and a positive std")
        if self.method == "minmax" and (self.low is None or self.high is None or not self.high > self.low):
            raise ValueError("method 'minmax' needs low < high")
        return self


class LocationSpec(_Strict):
    """Location input: ``region`` one-hot over ``regions`` plus an "unseen" slot, or ``latlon``."""

    kind: Literal["region", "latlon"]
    regions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _regions(self) -> LocationSpec:
        if self.kind == "region" and not self.regions:
            raise ValueError("a region encoding needs the list of region names")
        if self.kind == "region" and len(set(self.regions)) != len(self.regions):
            raise ValueError(f"duplicated region names in {self.regions}")
        if self.kind == "latlon" and self.regions:
            raise ValueError("a latlon encoding takes no region names")
        return self

    @property
    def dim(self) -> int:
        return len(self.regions) + 1 if self.kind == "region" else LATLON_DIM


class TrainingSummary(_Strict):
    """What a model was trained on."""

    regions: list[str] = Field(default_factory=list)
    years: list[int] = Field(default_factory=list)
    n_glaciers: int = Field(0, ge=0)
    n_samples: int = Field(0, ge=0)
    n_pixels: int = Field(0, ge=0)
    strategy: str | None = None
    epochs: int | None = None
    folds: int | None = None
    fold: int | None = None
    seed: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Strict):
    """The JSON manifest next to a weights file."""

    schema_version: int = SCHEMA_VERSION
    name: str
    architecture: str
    preset: str | None = None
    arguments: dict[str, Any]
    sources: dict[str, list[str]]
    normalisation: dict[str, BandStats]
    location: LocationSpec | None = None
    training: TrainingSummary | None = None
    validation: dict[str, float] = Field(default_factory=dict)
    #: ``glacimap.confidence.CalibrationMap.to_dict()`` output, written by ``glacimap calibrate``
    calibration: dict[str, Any] | None = None
    n_parameters: int = Field(0, ge=0)
    glacimap_version: str = glacimap.__version__
    created: str = Field(default_factory=utc_now)
    weights_sha256: str | None = None

    @field_validator("architecture")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture '{value}' (known: {sorted(ARCHITECTURES)})")
        return value

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from glacimap.confidence import CalibrationMap

            CalibrationMap.from_dict(value, source="calibration")  # raises InvalidInputError
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        channels = {k: len(v) for k, v in self.sources.items()}
        if self.arguments.get("sources") != channels:
            raise ValueError(f"arguments.sources {self.arguments.get('sources')} != band counts {channels}")
        bands = self.bands
        if len(set(bands)) != len(bands):
            raise ValueError(f"a band appears in two sources: {bands}")
        missing = [b for b in bands if b not in self.normalisation]
        if missing:
            raise ValueError(f"no normalisation statistics for bands {missing}")
        expected = self.location.dim if self.location else 0
        if int(self.arguments.get("location_dim", 0)) != expected:
            raise ValueError(f"arguments.location_dim {self.arguments.get('location_dim', 0)} != {expected} of the location spec")
        return self

    @property
    def bands(self) -> list[str]:
        """Every input band, in source order."""
        return [band for names in self.sources.values() for band in names]


# -- paths and hashes ----------------------------------------------------------------------------
def weights_paths(path: Path | str) -> tuple[Path, Path]:
    """(NAME.safetensors, NAME.json) for a path to either file or to NAME without suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (safetensors-ready)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def architecture_of(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise InvalidInputError(f"{type(model).__name__} is not a glacimap architecture")


# -- manifests ------------------------------------------------------------------------------------
def build_manifest(
    model: nn.Module,
    name: str,
    sources: Mapping[str, Sequence[str]],
    normalisation: Mapping[str, BandStats | Mapping[str, Any]],
    *,
    preset: str | None = None,
    location: LocationSpec | None = None,
    training: TrainingSummary | None = None,
    validation: Mapping[str, float] | None = None,
) -> Manifest:
    """A manifest describing ``model`` (its architecture and arguments come from the model)."""
    try:
        return Manifest(
            name=name,
            architecture=architecture_of(model),
            preset=preset,
            arguments=model.config(),
            sources={k: list(v) for k, v in sources.items()},
            normalisation={k: v if isinstance(v, BandStats) else BandStats(**v) for k, v in normalisation.items()},
            location=location,
            training=training,
            validation=dict(validation or {}),
            n_parameters=count_parameters(model),
        )
    except ValidationError as exc:
        raise InvalidInputError(f"manifest for '{name}' is inconsistent: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    message = err.get("msg", "invalid").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_manifest(data: Mapping[str, Any], where: str) -> Manifest:
    """Validate manifest JSON; ``where`` names the file in errors."""
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{where}: a manifest must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        hint = "upgrade glacimap" if isinstance(version, int) and version > SCHEMA_VERSION else "re-export the model"
        raise InvalidInputError(
            f"{where}: manifest schema version {version!r}, this glacimap ({glacimap.__version__}) "
            f"reads version {SCHEMA_VERSION}; {hint}"
        )
    try:
        return Manifest.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidInputError(f"{where}: invalid manifest ({_first_error(exc)})") from None


def read_manifest(path: Path | str) -> Manifest:
    """Read and validate ``NAME.json`` (``path`` may name either file of the pair)."""
    _, json_path = weights_paths(path)
    if not json_path.is_file():
        raise InputNotFoundError(f"{json_path}: weights manifest not found")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{json_path}: not valid JSON ({exc})") from exc
    return parse_manifest(data, str(json_path))


def write_manifest(path: Path | str, manifest: Manifest, overwrite: bool = True) -> Path:
    """Write ``NAME.json`` atomically (e.g. after adding a calibration map)."""
    _, json_path = weights_paths(path)
    return write_json_atomic(json_path, manifest.model_dump(mode="json"), overwrite=overwrite)


def with_calibration(manifest: Manifest, calibration: Any) -> Manifest:
    """A copy of ``manifest`` holding ``calibration`` (a :class:`glacimap.confidence.CalibrationMap`
    or its ``to_dict()`` form); write it back with :func:`write_manifest`."""
    data = calibration.to_dict() if hasattr(calibration, "to_dict") else dict(calibration)
    try:
        return Manifest.model_validate({**manifest.model_dump(mode="json"), "calibration": data})
    except ValidationError as exc:
        raise InvalidInputError(f"invalid calibration map for '{manifest.name}': {_first_error(exc)}") from None


def calibration_map(manifest: Manifest) -> Any:
    """The manifest's :class:`glacimap.confidence.CalibrationMap` (identity when none is fitted)."""
    from glacimap.confidence import CalibrationMap

    if manifest.calibration is None:
        return CalibrationMap.identity()
    return CalibrationMap.from_dict(manifest.calibration, source=f"manifest of '{manifest.name}'")


# -- saving and loading ---------------------------------------------------------------------------
def save_weights(model: nn.Module, manifest: Manifest, path: Path | str, overwrite: bool = False) -> Manifest:
    """Write ``NAME.safetensors`` and ``NAME.json`` atomically; return the stored manifest.

    The manifest's architecture and arguments must describe ``model``; its hash is filled in.
    """
    weights_path, json_path = weights_paths(path)
    if not overwrite:
        for existing in (weights_path, json_path):
            if existing.exists():
                raise OutputExistsError(f"{existing} exists; pass --overwrite to replace it")
    if manifest.architecture != architecture_of(model) or manifest.arguments != model.config():
        raise InvalidInputError(f"manifest '{manifest.name}' does not describe the model being saved")
    metadata = {"format": "pt", "architecture": manifest.architecture, "glacimap_version": glacimap.__version__}
    blob = safetensors.torch.save(state_tensors(model), metadata=metadata)
    stored = manifest.model_copy(update={"weights_sha256": sha256_bytes(blob), "n_parameters": count_parameters(model)})
    with atomic_path(weights_path) as tmp:
        tmp.write_bytes(blob)
    write_manifest(json_path, stored)
    return stored


@dataclass
class PreparedInputs:
    """Normalised model inputs of one chip: float32 (C, H, W) per source, and validity."""

    sources: dict[str, np.ndarray]
    valid: np.ndarray  # bool (H, W): every input band finite (and the chip's valid band set)

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Source tensors with a batch axis of one."""
        return {k: torch.from_numpy(v)[None].to(device) for k, v in self.sources.items()}


@dataclass
class LoadedModel:
    """A model ready for inference, with the manifest that describes its inputs."""

    model: nn.Module
    manifest: Manifest
    path: Path | None = None

    def prepare(
        self, array: np.ndarray, band_names: Sequence[str], where: str = "chip", allow_extra: bool = False
    ) -> PreparedInputs:
        return prepare_inputs(array, band_names, self.manifest, where=where, allow_extra=allow_extra)

    def location_vector(
        self, region: str | None = None, lat: float | None = None, lon: float | None = None
    ) -> np.ndarray | None:
        return location_vector(self.manifest, region=region, lat=lat, lon=lon)

    def calibration_map(self) -> Any:
        return calibration_map(self.manifest)


def read_weights_file(path: Path | str, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, after checking its SHA-256 (when one is expected)."""
    weights_path, _ = weights_paths(path)
    if not weights_path.is_file():
        raise InputNotFoundError(f"{weights_path}: weights file not found")
    blob = weights_path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(blob) != expected_sha256:
        raise InvalidInputError(
            f"{weights_path}: SHA-256 {sha256_bytes(blob)[:16]}... does not match the manifest's "
            f"{expected_sha256[:16]}...; the file is corrupt or belongs to another manifest"
        )
    try:
        return safetensors.torch.load(blob)
    except safetensors.SafetensorError as exc:
        raise InvalidInputError(f"{weights_path}: not a valid safetensors file ({exc})") from exc


def build_from_manifest(manifest: Manifest, where: str) -> nn.Module:
    """An untrained model with the manifest's architecture and arguments."""
    try:
        return ARCHITECTURES[manifest.architecture](**manifest.arguments)
    except TypeError as exc:
        raise InvalidInputError(f"{where}: arguments do not fit architecture '{manifest.architecture}' ({exc})") from exc


def load_weights(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load ``NAME.safetensors`` + ``NAME.json`` (hash and schema checked) in evaluation mode."""
    weights_path, json_path = weights_paths(path)
    manifest = read_manifest(json_path)
    model = build_from_manifest(manifest, str(json_path))
    if manifest.weights_sha256 is None:
        raise InvalidInputError(f"{json_path}: manifest has no weights_sha256; refusing unverified weights")
    tensors = read_weights_file(weights_path, manifest.weights_sha256)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        raise InvalidInputError(f"{weights_path}: tensors do not fit '{manifest.architecture}': {exc}") from exc
    target = device if isinstance(device, torch.device) else resolve_device(device)
    return LoadedModel(model.to(target).eval(), manifest, weights_path)


def builtin_manifest(name: str) -> Manifest:
    """Manifest of a model that needs no weights file (``band-ratio``)."""
    if name != "band-ratio":
        raise InputNotFoundError(f"'{name}' is not a built-in model; built-ins: {list(BUILTIN_MODELS)}")
    model = BandRatio()
    return build_manifest(
        model,
        "band-ratio",
        {"optical": list(BAND_RATIO_BANDS)},
        {band: BandStats(method="none") for band in BAND_RATIO_BANDS},
        preset="band-ratio",
    )


def packaged_weights_dir() -> Path:
    """Folder of weights shipped inside the glacimap package."""
    return Path(glacimap.__file__).parent / "weights"


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A built-in model by name, packaged weights by name, or a weights file by path."""
    text = str(name_or_path)
    target = device if isinstance(device, torch.device) else resolve_device(device)
    if text in BUILTIN_MODELS:
        manifest = builtin_manifest(text)
        return LoadedModel(build_from_manifest(manifest, text).to(target).eval(), manifest, None)
    path = Path(text)
    if path.suffix in (".safetensors", ".json") or path.exists() or weights_paths(path)[0].exists():
        return load_weights(path, target)
    packaged = packaged_weights_dir() / f"{text}.safetensors"
    if packaged.exists():
        return load_weights(packaged, target)
    shipped = sorted(p.stem for p in packaged_weights_dir().glob("*.safetensors"))
    raise InputNotFoundError(
        f"model '{text}' not found: not a built-in ({list(BUILTIN_MODELS)}), not packaged "
        f"({shipped}) and no file {weights_paths(path)[0]}; architectures to train: {sorted(MODEL_PRESETS)}"
    )


# -- inputs ---------------------------------------------------------------------------------------
def check_bands(
    available: Sequence[str], manifest: Manifest, where: str = "chip", allow_extra: bool = False
) -> list[int]:
    """Index in ``available`` of each band the model needs, in the manifest's order.

    Missing bands, or bands the model does not use (unless ``allow_extra``), raise
    :class:`BandMismatchError` naming both lists. :data:`AUXILIARY_BANDS` are never extra.
    """
    available = list(available)
    needed = manifest.bands
    missing = [b for b in needed if b not in available]
    extra = [b for b in available if b not in needed and b not in AUXILIARY_BANDS]
    duplicated = sorted({b for b in available if available.count(b) > 1})
    if missing or duplicated or (extra and not allow_extra):
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra and not allow_extra:
            problems.append(f"not used by the model {extra}")
        if duplicated:
            problems.append(f"duplicated {duplicated}")
        raise BandMismatchError(
            f"{where}: bands {available} do not match model '{manifest.name}', which needs "
            f"{needed}: {'; '.join(problems)}"
        )
    return [available.index(b) for b in needed]


def normalise_band(values: np.ndarray, stats: BandStats) -> np.ndarray:
    """Normalised float32 copy of one band (missing values stay NaN)."""
    x = np.asarray(values, dtype=np.float32)
    if stats.transform == "db":
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(x > 0, 10.0 * np.log10(np.where(x > 0, x, 1.0)), np.nan).astype(np.float32)
    if stats.method == "standard":
        return ((x - stats.mean) / stats.std).astype(np.float32)
    if stats.method == "minmax":
        return ((x - stats.low) / (stats.high - stats.low)).astype(np.float32)
    return x.astype(np.float32, copy=True)


def prepare_inputs(
    array: np.ndarray,
    band_names: Sequence[str],
    manifest: Manifest,
    where: str = "chip",
    allow_extra: bool = False,
) -> PreparedInputs:
    """Select, order and normalise a chip's (bands, H, W) array for a model.

    Non-finite values (turn the chip's nodata into NaN before calling) become 0 after
    normalisation, as in training. ``valid`` is False where any input band is missing or the
    chip's ``valid`` band is 0 (cloud, no data), so callers can mask those pixels.
    """
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[0] != len(band_names):
        raise BandMismatchError(f"{where}: array of shape {array.shape} but {len(band_names)} band names")
    indexes = check_bands(band_names, manifest, where, allow_extra)
    valid = np.ones(array.shape[1:], dtype=bool)
    if "valid" in band_names:
        valid &= array[list(band_names).index("valid")] > 0
    sources: dict[str, np.ndarray] = {}
    cursor = 0
    for source, names in manifest.sources.items():
        layers = []
        for band in names:
            layer = normalise_band(array[indexes[cursor]], manifest.normalisation[band])
            finite = np.isfinite(layer)
            valid &= finite
            layer[~finite] = 0.0
            layers.append(layer)
            cursor += 1
        sources[source] = np.stack(layers)
    return PreparedInputs(sources, valid)


def location_vector(
    manifest: Manifest, region: str | None = None, lat: float | None = None, lon: float | None = None
) -> np.ndarray | None:
    """The model's location input (L,) for one scene, or None for a model without one.

    A region the model was not trained on maps to the "unseen" slot.
    """
    spec = manifest.location
    if spec is None:
        return None
    if spec.kind == "region":
        index = spec.regions.index(region) if region in spec.regions else None
        return encode_region([index], len(spec.regions))[0]
    if lat is None or lon is None:
        raise InvalidInputError(f"model '{manifest.name}' needs the latitude and longitude of the scene")
    return encode_latlon([lat], [lon])[0]
