"""Validated settings, one object per command, shared by the CLI and the Python API.

Values come from four places, later ones winning: the defaults below < a TOML config file
(top-level keys for every command, a ``[command]`` table for one command) < environment
variables ``GLACIMAP_<KEY>`` (e.g. ``GLACIMAP_WORK``) < command-line flags. Unknown keys in a
config file are errors that name the file and the key. Secrets are :class:`pydantic.SecretStr`
and are masked wherever settings are printed or logged (see :meth:`BaseSettings.public_dict`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
import datetime as dt
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from glacimap.errors import ConfigError, InputNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "GLACIMAP_"
Device = Literal["auto", "cpu", "cuda"]
Restrict = Literal["inventory", "territory", "none"]
_WINDOW = re.compile(r"^(\d{2})-(\d{2}):(\d{2})-(\d{2})$")


class BaseSettings(BaseModel):
    """Options every command shares."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    command: ClassVar[str] = ""

    work: Path = Field(Path("glacimap-work"), description="workspace folder")
    scheduler: str | None = Field(None, description="address of a dask.distributed scheduler")
    workers: int | None = Field(None, ge=1, le=1024, description="local dask workers (default: one per core)")
    overwrite: bool = Field(False, description="replace finished outputs instead of skipping them")

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values with every secret masked."""
        return self.model_dump(mode="json")


class FetchSettings(BaseSettings):
    """``glacimap fetch``: per-glacier scene selection and chips."""

    command: ClassVar[str] = "fetch"
    inventory: Path | None = None
    aoi: tuple[float, float, float, float] | None = Field(None, description="minlon,minlat,maxlon,maxlat")
    year: int = Field(..., ge=1982, le=2100)
    sensors: tuple[Literal["auto", "s2", "landsat", "s1"], ...] = ("auto",)
    window: str | None = Field(None, description="MM-DD:MM-DD acquisition window")
    target_date: dt.date | None = Field(None, description="target date, with days either side")
    days: int = Field(15, ge=0, le=183)
    candidates: int = Field(5, ge=1, le=100)
    max_cloud: float = Field(0.3, ge=0.0, le=1.0)
    max_tile_cloud: float = Field(80.0, ge=0.0, le=100.0, description="tiles cloudier than this (percent) are not candidates")
    min_coverage: float = Field(0.9, ge=0.0, le=1.0)
    buffer: float = Field(100.0, ge=0.0, le=10_000.0, description="metres around the outline for cloud scores")
    chip_margin: float = Field(500.0, ge=0.0, le=50_000.0)
    resolution: float = Field(10.0, gt=0.0, le=1000.0)
    backend: Literal["stac", "sentinelhub"] = "stac"
    stac_url: str = "https://earth-search.aws.element84.com/v1"
    profile: Literal["earth-search", "planetary-computer"] = "earth-search"
    id_column: str | None = None
    composite: bool = False
    aoi_tile: float = Field(10_000.0, ge=100.0, le=200_000.0, description="side of the square AOI tiles, metres (--aoi mode)")
    sh_client_id: str | None = None
    sh_client_secret: SecretStr | None = None
    sh_base_url: str | None = None

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _WINDOW.match(value)
        if not match:
            raise ValueError("expected MM-DD:MM-DD, e.g. 08-01:10-15")
        m1, d1, m2, d2 = (int(g) for g in match.groups())
        for month, day in ((m1, d1), (m2, d2)):
            dt.date(2001, month, day)  # raises ValueError for an impossible day
        return value

    @field_validator("aoi", mode="before")
    @classmethod
    def _parse_aoi(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            if len(parts) != 4:
                raise ValueError("expected four comma-separated numbers minlon,minlat,maxlon,maxlat")
            return tuple(parts)
        return value

    @field_validator("aoi")
    @classmethod
    def _check_aoi(cls, value: tuple[float, float, float, float] | None) -> Any:
        if value is None:
            return value
        minx, miny, maxx, maxy = value
        if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
            raise ValueError("expected minlon,minlat,maxlon,maxlat in degrees with min < max")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FetchSettings:
        if (self.inventory is None) == (self.aoi is None):
            raise ValueError("give exactly one of inventory or aoi")
        if self.window is not None and self.target_date is not None:
            raise ValueError("give either window or date/days, not both")
        cells = self.aoi_tile / self.resolution
        if self.aoi is not None and (abs(cells - round(cells)) > 1e-6 or round(cells) < 32):
            raise ValueError(
                f"aoi_tile ({self.aoi_tile:g} m) must be a whole number of at least 32 cells of "
                f"{self.resolution:g} m (resolution)"
            )
        return self


class PredictSettings(BaseSettings):
    """``glacimap predict``: tiled inference on the chips of one year."""

    command: ClassVar[str] = "predict"
    year: int = Field(..., ge=1982, le=2100)
    model: str = "synthetic-demo"
    device: Device = "auto"
    tile: int = Field(384, ge=32, le=4096)
    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    blend: Literal["cosine", "gaussian"] = "cosine"
    batch_size: int | Literal["auto"] = "auto"
    mc_samples: int = Field(0, ge=0, le=1000)
    tta: bool = False
    bias_optimisation: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'auto'")
        return value


class OutlinesSettings(BaseSettings):
    """``glacimap outlines``: vector outlines and confidence bands from predictions."""

    command: ClassVar[str] = "outlines"
    year: int = Field(..., ge=1982, le=2100)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    min_area: float = Field(0.01, ge=0.0, description="km2")
    simplify: float = Field(5.0, ge=0.0, description="metres")
    restrict: Restrict = "inventory"
    territory_buffer: float = Field(200.0, ge=0.0, description="metres")
    confidence_level: float = Field(0.95, gt=0.0, lt=1.0, description="confidence below which pixels form the band")
    split_divides: bool = False


class SplitSettings(BaseSettings):
    """``glacimap split``: split glacier complexes along ice divides."""

    command: ClassVar[str] = "split"
    outlines: Path
    dem: Path
    out: Path
    method: Literal["kienholz", "reference"] = "kienholz"
    reference: Path | None = None
    id_column: str | None = None
    #: overrides of glacimap.divides.KienholzParams fields (config file table [split.kienholz])
    kienholz: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kienholz")
    @classmethod
    def _check_kienholz(cls, value: dict[str, Any]) -> dict[str, Any]:
        from glacimap.divides import KienholzParams

        unknown = sorted(set(value) - set(KienholzParams.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown Kienholz parameters {unknown}")
        KienholzParams(**value)  # raises ConfigError naming a bad value
        return value

    @model_validator(mode="after")
    def _reference_given(self) -> SplitSettings:
        if self.method == "reference" and self.reference is None:
            raise ValueError("method 'reference' needs reference (a reference inventory)")
        return self


class ChangeSettings(BaseSettings):
    """``glacimap change``: area change between two years."""

    command: ClassVar[str] = "change"
    year_from: int = Field(..., ge=1850, le=2100)
    year_to: int = Field(..., ge=1850, le=2100)
    restrict: Literal["inventory", "territory"] = "inventory"
    min_recall: float = Field(0.75, ge=0.0, le=1.0)
    max_masked: float = Field(0.2, ge=0.0, le=1.0)
    drop_extreme: float = Field(0.05, ge=0.0, lt=1.0)
    outlines_from: Path | None = None
    outlines_to: Path | None = None
    out: Path | None = None
    id_column: str | None = None
    year_column: str = Field("year", description="column selecting each year's rows in the outlines form")
    reference_year: int | None = Field(None, ge=1850, le=2100, description="year of the reference inventory (recall filter)")

    @model_validator(mode="after")
    def _years_and_sources(self) -> ChangeSettings:
        if self.year_from >= self.year_to:
            raise ValueError(f"--from ({self.year_from}) must be before --to ({self.year_to})")
        if (self.outlines_from is None) != (self.outlines_to is None):
            raise ValueError("give both outlines_from and outlines_to, or neither")
        return self


class TrainSettings(BaseSettings):
    """``glacimap train``: train a segmentation model on the workspace's chips."""

    command: ClassVar[str] = "train"
    year: int = Field(..., ge=1982, le=2100)
    model: str = "glavitu-s"
    out: Path
    epochs: int = Field(40, ge=1, le=10_000)
    patch: int = Field(384, ge=32, le=4096)
    batch_size: int = Field(8, ge=1, le=4096)
    folds: int = Field(5, ge=2, le=100)
    fold: int | None = Field(None, ge=0)
    strategy: Literal["global", "regional", "finetune", "region-encoding", "coordinate-encoding"] = "global"
    init: Path | None = None
    region: str | None = Field(None, description="region to train on (strategy regional)")
    patches_per_epoch: int = Field(512, ge=1, le=10_000_000)
    margin_share: float = Field(0.0, ge=0.0, le=1.0, description="share of patches centred on glacier margins")
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: Device = "auto"
    seed: int = 0

    @model_validator(mode="after")
    def _fold_in_range(self) -> TrainSettings:
        if self.fold is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is out of range for {self.folds} folds (0..{self.folds - 1})")
        if self.strategy == "finetune" and self.init is None:
            raise ValueError("strategy 'finetune' needs init (the weights to start from)")
        if self.strategy == "regional" and self.region is None:
            raise ValueError("strategy 'regional' needs region (the region to train on)")
        return self


class CalibrateSettings(BaseSettings):
    """``glacimap calibrate``: fit the confidence calibration map of a model."""

    command: ClassVar[str] = "calibrate"
    year: int = Field(..., ge=1982, le=2100)
    model: str
    method: Literal["auto", "kernel-ridge", "isotonic"] = "auto"
    bins: int = Field(100, ge=5, le=10_000)
    tile: int = Field(384, ge=32, le=4096)


class EvaluateSettings(BaseSettings):
    """``glacimap evaluate``: accuracy metrics of predicted outlines or rasters."""

    command: ClassVar[str] = "evaluate"
    pred: Path
    ref: Path
    out: Path | None = None


class VelocitySettings(BaseSettings):
    """``glacimap velocity``: glacier surface velocity by feature tracking between two images."""

    command: ClassVar[str] = "velocity"
    image_a: Path | None = Field(None, description="first image (file form)")
    image_b: Path | None = Field(None, description="second image, on the first one's grid (file form)")
    out: Path | None = Field(None, description="output folder (file form)")
    from_date: dt.date | None = Field(None, description="date of the first acquisition")
    to_date: dt.date | None = Field(None, description="date of the second acquisition")
    sensor: Literal["s2", "landsat"] = "s2"
    method: Literal["ncc", "raft"] = "ncc"
    band: Literal["nir", "pan"] | None = Field(None, description="band to track in multi-band files")
    template: int = Field(32, ge=8, le=512, description="template side, pixels")
    step: int = Field(16, ge=1, le=512, description="spacing of the points, pixels")
    preprocess: Literal["orientation", "gradient"] = "orientation"
    max_speed: float = Field(10_000.0, gt=0.0, le=100_000.0, description="largest speed searched, m/a")
    min_quality: float = Field(0.3, ge=-1.0, le=1.0, description="smallest NCC peak kept")
    median_size: int = Field(9, ge=3, le=51, description="median test neighbourhood, points")
    smooth: int = Field(3, ge=1, le=51, description="median smoothing of the field, points (1: none)")
    coregister: bool = Field(True, description="remove the median stable-ground displacement")
    stable: Path | None = Field(None, description="stable-ground (bedrock) polygons")
    inventory: Path | None = Field(None, description="glacier outlines: flow kept on them + glacier_buffer")
    glacier_buffer: float = Field(200.0, ge=0.0, le=50_000.0, description="metres around the outlines")

    @model_validator(mode="after")
    def _dates_and_sources(self) -> VelocitySettings:
        if self.from_date is not None and self.to_date is not None and self.from_date >= self.to_date:
            raise ValueError(f"--from-date ({self.from_date}) must be before --to-date ({self.to_date})")
        if (self.image_a is None) != (self.image_b is None):
            raise ValueError("give both image_a and image_b (file form), or neither (workspace form)")
        if self.image_a is not None and self.out is None:
            raise ValueError("the file form (image_a, image_b) needs out (an output folder)")
        for name in ("median_size", "smooth"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd, got {getattr(self, name)}")
        return self


class DemoSettings(BaseSettings):
    """``glacimap demo``: the whole chain on the synthetic world, offline."""

    command: ClassVar[str] = "demo"
    work: Path = Path("glacimap-demo")
    generate_only: bool = False
    small: bool = False
    size_km: float | None = Field(None, ge=2.0, le=50.0, description="side of the world in km (overrides small)")
    seed: int = 42
    model: str = Field("synthetic-demo", description="model the demo predicts with")


SETTINGS_BY_COMMAND: dict[str, type[BaseSettings]] = {
    cls.command: cls
    for cls in (
        FetchSettings,
        PredictSettings,
        OutlinesSettings,
        SplitSettings,
        ChangeSettings,
        TrainSettings,
        CalibrateSettings,
        EvaluateSettings,
        DemoSettings,
        VelocitySettings,
    )
}


def read_config(path: Path, command: str) -> dict[str, Any]:
    """Read the keys that apply to ``command`` from a TOML config file.

    Top-level keys apply to every command that knows them; a ``[command]`` table applies to
    that command only. Keys unknown to every command are errors naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"config file {path} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from exc

    cls = SETTINGS_BY_COMMAND[command]
    known_anywhere = set().union(*(c.model_fields for c in SETTINGS_BY_COMMAND.values()))
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in SETTINGS_BY_COMMAND:
            for sub_key in value:
                if sub_key.replace("-", "_") not in SETTINGS_BY_COMMAND[key].model_fields:
                    raise ConfigError(f"config file {path}: unknown key '{sub_key}' in [{key}]")
            if key == command:
                values.update({k.replace("-", "_"): v for k, v in value.items()})
            continue
        name = key.replace("-", "_")
        if name not in known_anywhere:
            raise ConfigError(f"config file {path}: unknown key '{key}'")
        if name in cls.model_fields:
            values.setdefault(name, value)
    return values


def read_environment(cls: type[BaseSettings], environ: Mapping[str, str]) -> dict[str, str]:
    """Values for ``cls``'s fields from ``GLACIMAP_<KEY>`` environment variables."""
    values = {}
    for name in cls.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            values[name] = environ[key]
    return values


def _split_env_lists(cls: type[BaseSettings], values: dict[str, Any]) -> dict[str, Any]:
    """Environment strings for tuple fields are comma-separated lists."""
    out = dict(values)
    for name, value in values.items():
        annotation = str(cls.model_fields[name].annotation)
        if isinstance(value, str) and annotation.startswith("tuple"):
            out[name] = [part.strip() for part in value.split(",") if part.strip()]
    return out


def resolve_settings(
    cls: type[BaseSettings],
    cli: Mapping[str, Any] | None = None,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> BaseSettings:
    """Build validated settings: defaults < config file < environment < ``cli`` values.

    ``cli`` holds only the flags the user gave (``None`` values are ignored). Errors become one
    :class:`ConfigError` line saying which key, from where, and what was expected.
    """
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    if config is not None:
        layers.append((f"config file {config}", read_config(Path(config), cls.command)))
    layers.append(("environment", _split_env_lists(cls, read_environment(cls, environ))))
    layers.append(("command line", {k: v for k, v in (cli or {}).items() if v is not None}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            merged[key] = value
            origin[key] = source
    try:
        return cls(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc, origin)) from None


def _describe(cls: type[BaseSettings], exc: ValidationError, origin: Mapping[str, str]) -> str:
    """One line for the first validation problem, naming key, source and expectation."""
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ()) if not isinstance(part, int)]
    key = loc[0] if loc else None
    message = err.get("msg", "invalid value").removeprefix("Value error, ")
    if key is None:
        return f"{cls.command}: {message}"
    source = origin.get(key, "defaults")
    if err.get("type") == "missing":
        return f"{cls.command}: missing required option '{key.replace('_', '-')}'"
    if err.get("type") == "extra_forbidden":
        return f"{cls.command}: unknown option '{key}' (from {source})"
    shown = "***" if "secret" in key else repr(err.get("input"))
    return f"{cls.command}: invalid value {shown} for '{key.replace('_', '-')}' (from {source}): {message}"
