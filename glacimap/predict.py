"""``glacimap predict``: tiled inference on every chip of a year, with calibrated confidence.

Chips are read ahead in a background thread, normalised with the model manifest's statistics,
cut into overlapping tiles on each chip's own tile grid (:mod:`glacimap.tiling`) and run in
batches that mix tiles of many chips (small glaciers would otherwise leave the device idle);
each chip's tiles are blended with the smooth window and written, also in the background, as a
COG with bands ``probability`` (glacier class), ``confidence`` (calibrated) and, with Monte-Carlo
dropout, ``probability_std``. Pixels that are not valid (no data, cloud) are NaN in every band.

A chip smaller than the tile is run as one tile of its own size rounded up to a multiple of 32
pixels (chips of equal rounded size share batches), so small glaciers cost what they measure.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glacimap.errors import InputNotFoundError, InvalidInputError
from glacimap.parallel import Task, TaskOutcome, raise_if_failed, run_tasks
from glacimap.rasters import Grid, read_raster, write_cog
from glacimap.settings import PredictSettings
from glacimap.tiling import tile_starts, weight_window
from glacimap.workspace import Workspace, clean_stale_temporaries

log = logging.getLogger(__name__)

TILE_MULTIPLE = 32
CHIPS_IN_FLIGHT = 32  # chips held in memory at once (read ahead + being blended)


@dataclass(frozen=True)
class PredictResult:
    year: int
    chips: int
    predicted: int
    skipped: int
    failed: int
    invalid_fraction: float
    seconds: float
    megapixels_per_second: float
    device: str
    model: str
    output_dir: Path


@dataclass
class ChipInput:
    """A chip read and normalised for the model."""

    glacier_id: str
    grid: Grid
    inputs: np.ndarray  # (channels, H, W) float32, normalised, no NaN
    valid: np.ndarray  # (H, W) bool
    location: np.ndarray | None
    output: Path

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape


@dataclass
class _Accumulator:
    chip: ChipInput
    tile: int
    pending: int
    values: np.ndarray | None = field(init=False, default=None)  # allocated with the first tile
    weights: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.weights = np.zeros(self.chip.shape, dtype=np.float64)


# -- the model wrapper ------------------------------------------------------------------------------
class TilePredictor:
    """Runs a loaded model on batches of normalised tiles; returns glacier probabilities.

    Output channels: ``p`` (mean probability of the glacier class) and, with Monte-Carlo
    dropout, ``std`` (its standard deviation over the samples).
    """

    def __init__(self, loaded: Any, device: Any, precision: str = "auto", mc_samples: int = 0, tta: bool = False):
        import torch

        self.torch = torch
        self.loaded = loaded
        self.model = loaded.model
        self.device = device
        self.mc_samples = mc_samples
        self.tta = tta
        self.sources = [(name, len(bands)) for name, bands in loaded.manifest.sources.items()]
        self.dtype = _autocast_dtype(precision, device)
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def channels(self) -> int:
        return 2 if self.mc_samples else 1

    def _split(self, batch: Any) -> dict[str, Any]:
        out, start = {}, 0
        for name, count in self.sources:
            part = batch[:, start : start + count]
            if self.channels_last:
                part = part.contiguous(memory_format=self.torch.channels_last)
            out[name] = part
            start += count
        return out

    def _probabilities(self, batch: Any, location: Any) -> Any:
        torch = self.torch
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(self._split(batch), location) if location is not None else self.model(self._split(batch))
        if isinstance(logits, tuple):  # a model left in training mode returns deep supervision too
            logits = logits[0]
        return torch.softmax(logits.float(), dim=1)[:, 1]

    def _with_tta(self, batch: Any, location: Any) -> Any:
        if not self.tta:
            return self._probabilities(batch, location)
        torch = self.torch
        total = 0
        for flip in (False, True):
            x = torch.flip(batch, dims=(-1,)) if flip else batch
            for k in range(4):
                p = self._probabilities(torch.rot90(x, k, dims=(-2, -1)), location)
                p = torch.rot90(p, -k, dims=(-2, -1))
                total = total + (torch.flip(p, dims=(-1,)) if flip else p)
        return total / 8.0

    def __call__(self, batch_np: np.ndarray, locations: np.ndarray | None = None) -> np.ndarray:
        torch = self.torch
        batch = torch.from_numpy(np.ascontiguousarray(batch_np, dtype=np.float32))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        location = torch.from_numpy(locations).to(self.device) if locations is not None else None
        with torch.inference_mode():
            if not self.mc_samples:
                return self._with_tta(batch, location)[:, None].cpu().numpy()
            from glacimap.models.layers import mc_dropout

            with mc_dropout(self.model):
                samples = torch.stack([self._with_tta(batch, location) for _ in range(self.mc_samples)])
            return torch.stack([samples.mean(0), samples.std(0)], dim=1).cpu().numpy()


def _autocast_dtype(precision: str, device: Any) -> Any:
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


# -- reading and writing chips ------------------------------------------------------------------------
def read_chip(path: Path, glacier_id: str, loaded: Any, output: Path) -> ChipInput:
    """Read a chip, check its bands against the model and normalise it."""
    from pyproj import Transformer

    data, grid, names, nodata = read_raster(path)
    data = data.astype(np.float32)
    if nodata is not None and not math.isnan(nodata):
        data[data == nodata] = np.nan
    prepared = loaded.prepare(data, names, where=f"{path} (glacier {glacier_id})", allow_extra=True)
    inputs = np.concatenate([prepared.sources[name] for name in loaded.manifest.sources])
    location = None
    if loaded.manifest.location is not None and loaded.manifest.location.kind == "latlon":
        left, bottom, right, top = grid.bounds
        lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform((left + right) / 2, (bottom + top) / 2)
        location = loaded.location_vector(lat=lat, lon=lon)
    elif loaded.manifest.location is not None:
        location = loaded.location_vector(region=None)  # the "unseen" slot
    return ChipInput(glacier_id, grid, inputs, prepared.valid, location, output)


def finish_chip(acc: _Accumulator, calibration: Any, confidence_fn: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    """Blend, compute calibrated confidence, mask invalid pixels and write the chip's COG."""
    chip = acc.chip
    with np.errstate(invalid="ignore", divide="ignore"):
        blended = (acc.values / acc.weights).astype(np.float32)
    probability = np.clip(blended[0], 0.0, 1.0)
    confidence = confidence_fn(probability)
    if calibration is not None:
        confidence = calibration(confidence).astype(np.float32)
    layers, names = [probability, confidence], ["probability", "confidence"]
    if blended.shape[0] > 1:
        layers.append(blended[1])
        names.append("probability_std")
    stack = np.stack(layers)
    stack[:, ~chip.valid] = np.nan
    write_cog(chip.output, stack, chip.grid, names, nodata=float("nan"))
    return {
        "glacier_id": chip.glacier_id,
        "pixels": int(chip.valid.size),
        "invalid_pixels": int((~chip.valid).sum()),
    }


# -- cross-chip batching -----------------------------------------------------------------------------
def effective_tile(shape: tuple[int, int], tile: int) -> int:
    """The tile a chip is run with: ``tile``, or the chip's size rounded up to 32 if smaller."""
    size = max(shape)
    return min(tile, int(math.ceil(size / TILE_MULTIPLE) * TILE_MULTIPLE))


def _tiles(chip: ChipInput, tile: int, overlap: float) -> list[tuple[int, int]]:
    stride = max(1, int(round(tile * (1.0 - overlap))))
    height, width = chip.shape
    return [(r, c) for r in tile_starts(height, tile, stride) for c in tile_starts(width, tile, stride)]


def _cut(chip: ChipInput, r0: int, c0: int, tile: int, layer: np.ndarray | None = None) -> np.ndarray:
    """A tile of the chip's inputs (or of ``layer``, shaped like them), padded by reflection."""
    part = (chip.inputs if layer is None else layer)[:, r0 : r0 + tile, c0 : c0 + tile]
    pad_r, pad_c = tile - part.shape[1], tile - part.shape[2]
    if pad_r or pad_c:
        mode = "reflect" if part.shape[1] > pad_r and part.shape[2] > pad_c else "edge"
        part = np.pad(part, ((0, 0), (0, pad_r), (0, pad_c)), mode=mode)
    return part


def predict_chips(
    chips: Iterable[ChipInput],
    predictor: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    tile: int,
    overlap: float,
    batch_size: int,
    window: str = "cosine",
) -> Iterator[_Accumulator]:
    """Run tiles of many chips in shared batches; yield each chip's accumulator when complete."""
    queues: dict[int, list[tuple[_Accumulator, int, int]]] = defaultdict(list)
    windows: dict[int, np.ndarray] = {}

    def run(size: int, items: list[tuple[_Accumulator, int, int]]) -> Iterator[_Accumulator]:
        batch = np.stack([_cut(acc.chip, r0, c0, size) for acc, r0, c0 in items])
        locations = [acc.chip.location for acc, _, _ in items]
        loc = np.stack(locations).astype(np.float32) if locations[0] is not None else None
        out = predictor(batch, loc)
        weights = windows.setdefault(size, weight_window(size, window))
        for (acc, r0, c0), result in zip(items, out):
            height, width = acc.chip.shape
            rr, cc = min(size, height - r0), min(size, width - c0)
            if acc.values is None:
                acc.values = np.zeros((result.shape[0], height, width), dtype=np.float64)
            acc.values[:, r0 : r0 + rr, c0 : c0 + cc] += result[:, :rr, :cc] * weights[:rr, :cc]
            acc.weights[r0 : r0 + rr, c0 : c0 + cc] += weights[:rr, :cc]
            acc.pending -= 1
            if acc.pending == 0:
                yield acc

    for chip in chips:
        size = effective_tile(chip.shape, tile)
        positions = _tiles(chip, size, overlap)
        acc = _Accumulator(chip, size, len(positions))
        queue = queues[size]
        queue.extend((acc, r0, c0) for r0, c0 in positions)
        while len(queue) >= batch_size:
            items, queues[size] = queue[:batch_size], queue[batch_size:]
            queue = queues[size]
            yield from run(size, items)
    for size, queue in queues.items():
        for start in range(0, len(queue), batch_size):
            yield from run(size, queue[start : start + batch_size])


# -- the stage --------------------------------------------------------------------------------------------
def _jobs(settings: PredictSettings, workspace: Workspace) -> list[Task]:
    from glacimap.fetch import read_manifest

    manifest = read_manifest(workspace, settings.year)
    tasks = []
    for row in manifest.itertuples():
        if row.status != "ok":
            continue
        chip = workspace.chip(settings.year, row.glacier_id)
        if not chip.exists():
            raise InputNotFoundError(f"{chip}: chip of glacier {row.glacier_id} listed in the manifest is missing")
        tasks.append(Task(row.glacier_id, workspace.prediction(settings.year, row.glacier_id), {"chip": str(chip)}))
    return tasks


def _batch_size(settings: PredictSettings, device: Any) -> int:
    if settings.batch_size != "auto":
        return int(settings.batch_size)
    if device.type != "cuda":
        return 4
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    # ~ 60 MB of activations per 384^2 tile for glavitu in bf16 (measured on CPU in fp32: x2)
    per_tile = 60e6 * (settings.tile / 384) ** 2
    return int(max(1, min(64, free * 0.5 // per_tile)))


def predict_group(tasks: list[Task], settings: PredictSettings, progress: Callable[[TaskOutcome, int], None] | None = None, total: int = 0) -> list[TaskOutcome]:
    """Predict a group of chips in this process (one model load); one outcome per task."""
    from glacimap.confidence import binary_confidence
    from glacimap.models import resolve_device
    from glacimap.models.weights import load_model

    device = resolve_device(settings.device)
    loaded = load_model(settings.model, device)
    predictor = TilePredictor(loaded, device, settings.precision, settings.mc_samples, settings.tta)
    if settings.bias_optimisation:
        _check_bias_optimisation(loaded)
    calibration = loaded.calibration_map()
    if calibration is None:
        log.warning("model %s has no calibration map: confidence is uncalibrated (run glacimap calibrate)", settings.model)
    batch = _batch_size(settings, device)
    outcomes: dict[str, TaskOutcome] = {}

    def report(outcome: TaskOutcome) -> None:
        outcomes[outcome.key] = outcome
        if progress:
            progress(outcome, total or len(tasks))

    def inputs() -> Iterator[ChipInput]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chip-reader") as reader:
            futures: list[tuple[Task, Future]] = []
            pending = list(tasks)
            while pending or futures:
                while pending and len(futures) < CHIPS_IN_FLIGHT:
                    task = pending.pop(0)
                    futures.append((task, reader.submit(read_chip, Path(task.payload["chip"]), task.key, loaded, task.output)))
                task, future = futures.pop(0)
                # A chip that does not fit the model (bands) or cannot be read is bad input:
                # the run stops (exit code 2); chips already written are complete and kept.
                chip = future.result()
                if settings.bias_optimisation:
                    chip.location = _optimise_region(predictor, chip, settings)
                yield chip

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chip-writer") as writer:
        writes: list[tuple[str, Future]] = []
        for acc in predict_chips(inputs(), predictor, settings.tile, settings.overlap, batch, settings.blend):
            writes.append((acc.chip.glacier_id, writer.submit(finish_chip, acc, calibration, binary_confidence)))
            writes = _drain(writes, report, block=False)
        _drain(writes, report, block=True)
    return [outcomes[t.key] for t in tasks if t.key in outcomes]


def _drain(writes: list[tuple[str, Future]], report: Callable[[TaskOutcome], None], block: bool) -> list[tuple[str, Future]]:
    left = []
    for key, future in writes:
        if not block and not future.done():
            left.append((key, future))
            continue
        try:
            report(TaskOutcome(key, "ok", value=future.result()))
        except (OSError, ValueError, InvalidInputError) as exc:
            report(TaskOutcome(key, "failed", f"{type(exc).__name__}: {exc}"))
    return left


def _check_bias_optimisation(loaded: Any) -> None:
    spec = loaded.manifest.location
    if spec is None or spec.kind != "region":
        raise InvalidInputError(
            f"--bias-optimisation needs a region-encoding model; '{loaded.manifest.name}' has "
            f"{'no location input' if spec is None else 'a latlon encoding'}"
        )


def _optimise_region(predictor: TilePredictor, chip: ChipInput, settings: PredictSettings) -> np.ndarray:
    """Region vector minimising the prediction entropy on the chip (GlaViTU eqs. 1-2)."""
    import torch

    from glacimap.train import bias_optimise

    size = effective_tile(chip.shape, settings.tile)
    positions = _tiles(chip, size, settings.overlap)[:8]  # up to 8 tiles of the scene
    valid = chip.valid[np.newaxis].astype(np.float32)
    batch = torch.from_numpy(np.stack([_cut(chip, r, c, size) for r, c in positions])).to(predictor.device)
    mask = torch.from_numpy(np.stack([_cut(chip, r, c, size, valid)[0] > 0 for r, c in positions]))
    result = bias_optimise(predictor.model, predictor._split(batch), mask=mask.to(predictor.device))
    return result.vector.detach().float().cpu().numpy()


def _group_task(payload: dict[str, Any], output: Path) -> list[TaskOutcome]:
    return predict_group(payload["tasks"], payload["settings"])


def run_predict(settings: PredictSettings, progress: Callable[[TaskOutcome, int], None] | None = None) -> PredictResult:
    """Predict every chip of ``settings.year`` (see module docstring)."""
    workspace = Workspace(settings.work)
    started = time.perf_counter()
    tasks = _jobs(settings, workspace)
    out_dir = workspace.predictions_dir(settings.year)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out_dir)
    todo = [t for t in tasks if settings.overwrite or not t.output.exists()]
    skipped = [TaskOutcome(t.key, "skipped", "output exists") for t in tasks if t not in todo]
    for outcome in skipped:
        if progress:
            progress(outcome, len(tasks))
    if settings.scheduler or (settings.workers or 1) > 1:
        outcomes = _distributed(todo, settings)
    else:
        outcomes = predict_group(todo, settings, progress, len(tasks)) if todo else []
    seconds = time.perf_counter() - started
    done = [o for o in outcomes if o.status == "ok"]
    pixels = sum(o.value["pixels"] for o in done)
    invalid = sum(o.value["invalid_pixels"] for o in done)
    from glacimap.models import resolve_device

    result = PredictResult(
        year=settings.year,
        chips=len(tasks),
        predicted=len(done),
        skipped=len(skipped),
        failed=sum(o.status == "failed" for o in outcomes),
        invalid_fraction=invalid / pixels if pixels else 0.0,
        seconds=seconds,
        megapixels_per_second=pixels / 1e6 / seconds if seconds > 0 else 0.0,
        device=str(resolve_device(settings.device)),
        model=settings.model,
        output_dir=out_dir,
    )
    raise_if_failed([*outcomes, *skipped], "chips", result=result)
    return result


def _distributed(tasks: list[Task], settings: PredictSettings) -> list[TaskOutcome]:
    """Split the chips into one group per worker; each worker loads the model once."""
    from glacimap.parallel import default_workers

    groups = max(1, min(len(tasks), settings.workers or default_workers()))
    chunks = [tasks[i::groups] for i in range(groups)]
    # A group writes one file per chip (each chip's own task output), not one file of its own:
    # it always runs (overwrite=True), so its nominal output path is never checked.
    folder = tasks[0].output.parent if tasks else Path(settings.work)
    group_tasks = [
        Task(f"group-{i}", folder, {"tasks": chunk, "settings": settings})
        for i, chunk in enumerate(chunks) if chunk
    ]
    results = run_tasks(group_tasks, _group_task, overwrite=True, scheduler=settings.scheduler, workers=settings.workers)
    outcomes = []
    for result in results:
        if result.status == "failed":
            raise InvalidInputError(f"a prediction worker failed: {result.reason}")
        outcomes += result.value
    return outcomes
