"""``glacimap calibrate``: fit a model's confidence calibration map on labelled chips.

The model runs on the chips of ``year`` exactly as ``predict`` runs it; labels are the
workspace inventory's outlines (as in training). Pixels count where the chip is valid.
Glaciers are split into two contiguous geographic halves: the map is fitted on one and its
ECE (100 bins) measured on the other, held-out half, before and after calibration; the map
stored in the manifest is then refitted on all pixels. A reliability diagram is written to
``WORK/calibration/``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glacimap.errors import InputError
from glacimap.settings import CalibrateSettings
from glacimap.workspace import Workspace, atomic_path, write_json_atomic

log = logging.getLogger(__name__)

MAX_PIXELS = 2_000_000  # per half; a random subsample beyond this keeps fitting fast


@dataclass(frozen=True)
class CalibrateResult:
    model: str
    method: str
    pixels: int
    ece_before: float
    ece_after: float
    manifest: Path
    diagram: Path
    report: Path


def _labelled_pixels(settings: CalibrateSettings, loaded: Any, device: Any) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(confidence per chip, correctness per chip, chip centres) over valid pixels."""
    from glacimap.confidence import binary_confidence
    from glacimap.predict import TilePredictor, predict_chips, read_chip
    from glacimap.train import samples_from_workspace

    workspace = Workspace(settings.work)
    samples = {s.sample_id: s for s in samples_from_workspace(settings.work, settings.year)}
    predictor = TilePredictor(loaded, device, "auto", 0, False)
    chips = (read_chip(workspace.chip(settings.year, gid), gid, loaded, Path(gid)) for gid in samples)
    confidences, corrects, centres = [], [], []
    for acc in predict_chips(chips, predictor, settings.tile, 0.5, 4):
        sample = samples[acc.chip.glacier_id]
        with np.errstate(invalid="ignore", divide="ignore"):
            probability = (acc.values[0] / acc.weights).astype(np.float32)
        use = acc.chip.valid & (sample.mask if sample.mask is not None else True)
        confidences.append(binary_confidence(probability[use]))
        corrects.append((probability[use] >= 0.5) == (sample.label[use] > 0))
        centres.append((sample.lon, sample.lat))
    if not confidences:
        raise InputError(f"no labelled chips for {settings.year} in {settings.work}")
    return confidences, corrects, np.asarray(centres, dtype=float)


def _subsample(values: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if values.size <= MAX_PIXELS:
        return values, other
    pick = rng.choice(values.size, MAX_PIXELS, replace=False)
    return values[pick], other[pick]


def run_calibrate(settings: CalibrateSettings) -> CalibrateResult:
    """Fit, evaluate on held-out glaciers, store the map and draw the reliability diagram."""
    from glacimap.confidence import fit_calibration, plot_reliability, reliability_curve
    from glacimap.models import resolve_device
    from glacimap.models.weights import BUILTIN_MODELS, load_model, weights_paths, with_calibration, write_manifest
    from glacimap.train import geographic_folds

    if settings.model in BUILTIN_MODELS:
        raise InputError(f"'{settings.model}' is a built-in model without a manifest file to store a calibration in")
    device = resolve_device("auto")
    loaded = load_model(settings.model, device)
    confidences, corrects, centres = _labelled_pixels(settings, loaded, device)
    halves = geographic_folds(centres, 2) if len(centres) >= 2 else np.zeros(len(centres), dtype=int)
    rng = np.random.default_rng(0)

    def gather(which: int | None) -> tuple[np.ndarray, np.ndarray]:
        picked = [i for i in range(len(confidences)) if which is None or halves[i] == which]
        conf = np.concatenate([confidences[i] for i in picked]) if picked else np.zeros(0)
        ok = np.concatenate([corrects[i] for i in picked]) if picked else np.zeros(0, dtype=bool)
        return _subsample(conf, ok, rng)

    fit_conf, fit_ok = gather(0)
    test_conf, test_ok = gather(1)
    if test_conf.size == 0:  # a single chip: evaluate in-sample, and say so
        log.warning("only one glacier: ECE is measured on the pixels the map was fitted on")
        test_conf, test_ok = fit_conf, fit_ok
    held_out_map = fit_calibration(fit_conf, fit_ok, method=settings.method, bins=settings.bins)
    before = reliability_curve(test_conf, test_ok, bins=settings.bins)
    after = reliability_curve(held_out_map(test_conf), test_ok, bins=settings.bins)
    all_conf, all_ok = gather(None)
    final = fit_calibration(all_conf, all_ok, method=held_out_map.method, bins=settings.bins)

    manifest_path = _manifest_target(settings, loaded, weights_paths, Workspace(settings.work))
    write_manifest(manifest_path, with_calibration(loaded.manifest, final), overwrite=True)
    out_dir = Workspace(settings.work).root / "calibration"
    stem = f"{loaded.manifest.name}_{settings.year}"
    diagram = plot_reliability(before, after, out_dir / f"{stem}.png", title=f"{loaded.manifest.name} on {settings.year}")
    report = write_json_atomic(out_dir / f"{stem}.json", {
        "model": settings.model,
        "manifest": str(manifest_path),
        "year": settings.year,
        "method": final.method,
        "pixels": int(all_conf.size),
        "held_out_pixels": int(test_conf.size),
        "ece_before": before.ece,
        "ece_after": after.ece,
        "bins": settings.bins,
    })
    return CalibrateResult(settings.model, final.method, int(all_conf.size), before.ece, after.ece, manifest_path, diagram, report)


def _manifest_target(settings: CalibrateSettings, loaded: Any, weights_paths: Any, workspace: Workspace) -> Path:
    """The manifest to update: the model file's own, or a workspace copy for packaged weights."""
    from glacimap.models.weights import packaged_weights_dir

    source = Path(loaded.path)
    if source.parent.resolve() != packaged_weights_dir().resolve():
        return weights_paths(source)[1]
    # Packaged weights are read-only: copy them into the workspace and calibrate the copy.
    target = workspace.root / "models" / source.name
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    log.info("calibrating a copy of the packaged model: %s (use --model %s)", target, target)
    return weights_paths(target)[1]
