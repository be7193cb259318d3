"""Train the shipped ``synthetic-demo`` model: glavitu-s on synthetic worlds, through the pipeline.

    python -m glacimap.synthetic.demo_model --out glacimap/weights/synthetic-demo.safetensors

For each training seed a synthetic world is generated and served by the local STAC API; for
each year the truth outlines of that year are the inventory, and ``fetch`` writes the chips a
user would get (Landsat for 2015, Sentinel-2 for 2023). The labelled chips of every world and
year train ``glavitu-s`` with the paper's recipe (focal loss, label smoothing, deep
supervision, cosine warm restarts, augmentation), the model is calibrated on the held-out
fold's pixels, and weights plus manifest are written. The model has only seen synthetic
scenes: it serves the offline demo and the tests, not real imagery.
"""

from __future__ import annotations

import argparse
import sys
import logging
import time
from datetime import date
from pathlib import Path
from typing import Any


from glacimap.errors import PartialFailureError

log = logging.getLogger(__name__)

TRAIN_SEEDS = (1, 2, 3)
YEARS = (2015, 2023)


def _fetch_world(seed: int, size_m: float, root: Path, extra_dates: tuple[str, ...] = ()) -> list[Any]:
    """Generate and serve one world; fetch its chips per year; return labelled samples.

    ``extra_dates`` (``MM-DD``) add, per year, the chips of the scenes nearest those dates
    (within 10 days) with the same labels: early-season scenes with more seasonal snow, or
    scenes after the first autumn snowfall, which the least-cloud choice rarely picks.
    """
    from glacimap.fetch import run_fetch
    from glacimap.settings import FetchSettings
    from glacimap.synthetic import WorldConfig, generate_world
    from glacimap.synthetic.serve import serve_catalog
    from glacimap.train import samples_from_workspace

    world = root / f"world-{seed}"
    if not (world / "world.json").exists():
        generate_world(WorldConfig(seed=seed, size_m=size_m), world, figure=False)
    samples = []
    with serve_catalog(world / "stac") as stac:
        for year in YEARS:
            for when in (None, *extra_dates):
                suffix = "" if when is None else "-" + when.replace("-", "")
                work = root / f"work-{seed}-{year}{suffix}"
                target = None if when is None else date.fromisoformat(f"{year}-{when}")
                settings = FetchSettings(inventory=world / "truth" / str(year) / "outlines.gpkg", year=year,
                                         stac_url=stac.stac_url, work=work, workers=1, target_date=target,
                                         days=10)
                try:
                    run_fetch(settings)
                except PartialFailureError as exc:  # cloudy glaciers have no chip; the others train
                    log.info("%s", exc)
                batch = samples_from_workspace(work, year)
                for sample in batch:
                    sample.sample_id = f"{seed}-{year}{suffix}-{sample.sample_id}"
                    sample.region = f"synthetic-{seed}"
                samples += batch
    return samples


def train_demo_model(out: Path, root: Path, seeds: tuple[int, ...] = TRAIN_SEEDS, size_m: float = 10_000.0,
                     epochs: int = 30, patches_per_epoch: int = 256, patch: int = 128, seed: int = 0,
                     export_only: bool = False, init: Path | None = None, margin_share: float = 0.0,
                     lr: float = 1e-3, hard_share: float = 0.0, extra_dates: tuple[str, ...] = ()) -> Any:
    """Build the training set from synthetic worlds and train ``glavitu-s`` (see module docstring).

    With ``export_only``, the best checkpoint of an interrupted run with the same arguments is
    exported instead. With ``init``, the model is fine-tuned from those weights at ``lr``.
    """
    from glacimap.train import TrainConfig, export_best_checkpoint, train_model

    started = time.perf_counter()
    samples = []
    for world_seed in seeds:
        samples += _fetch_world(world_seed, size_m, root, extra_dates)
    log.info("%d labelled chips from %d worlds in %.0f s", len(samples), len(seeds), time.perf_counter() - started)
    config = TrainConfig(epochs=epochs, batch_size=8, patch=patch, patches_per_epoch=patches_per_epoch,
                         lr=lr, finetune_lr=lr, margin_share=margin_share, hard_share=hard_share, seed=seed,
                         device="auto")
    strategy = "finetune" if init is not None else "global"
    if export_only:
        if init is not None:
            raise SystemExit("--export-only re-derives normalisation from the samples; it cannot export a fine-tuned run")
        return export_best_checkpoint(samples, out, root / "checkpoints", model="glavitu-s", config=config,
                                      folds=5, fold=0, overwrite=True)
    return train_model(samples, out, model="glavitu-s", strategy=strategy, config=config, folds=5, fold=0,
                       init=init, checkpoint_dir=root / "checkpoints", overwrite=True,
                       progress=_log_progress)


def _log_progress(progress: Any) -> None:
    if progress.phase == "epoch" and progress.record is not None:
        record = progress.record
        log.info("epoch %d/%d loss %.4f val IoU %s (%.0f s)", progress.epoch + 1, progress.epochs,
                 record.train_loss, f"{record.val_iou:.3f}" if record.val_iou is not None else "-", record.seconds)


def compare_models(models: list[str], seed: int, size_m: float, root: Path) -> dict[str, dict[int, dict]]:
    """Predict a world never used in training with each model; score per surface type."""
    from glacimap.predict import run_predict
    from glacimap.settings import PredictSettings
    from glacimap.synthetic.assess import assess_predictions

    _fetch_world(seed, size_m, root)
    scores: dict[str, dict[int, dict]] = {}
    for model in models:
        for year in YEARS:
            work = root / f"work-{seed}-{year}"
            try:
                run_predict(PredictSettings(work=work, year=year, model=model, workers=1, overwrite=True))
            except PartialFailureError as exc:
                log.warning("%s", exc)
            scores.setdefault(model, {})[year] = assess_predictions(root / f"world-{seed}", work, year)
            log.info("%s %d: %s", model, year, {k: v for k, v in scores[model][year].items() if k != "pixels"})
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="weights file NAME.safetensors")
    parser.add_argument("--root", type=Path, default=Path("demo-model-work"), help="folder for worlds and chips")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TRAIN_SEEDS))
    parser.add_argument("--size", type=float, default=10_000.0, help="world size in metres")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patches-per-epoch", type=int, default=256)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--init", type=Path, default=None, help="fine-tune from these weights (strategy finetune)")
    parser.add_argument("--margin-share", type=float, default=0.0,
                        help="share of patches centred on glacier margins (where snow patches touch the ice)")
    parser.add_argument("--hard-share", type=float, default=0.0,
                        help="share of patches centred on pixels the model gets wrong (mined every 5 epochs)")
    parser.add_argument("--extra-dates", nargs="*", default=[], metavar="MM-DD",
                        help="also train on each year's scenes nearest these dates (e.g. 08-05 10-08)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (also the fine-tuning rate)")
    parser.add_argument("--export-only", action="store_true",
                        help="export the best checkpoint of an interrupted run with the same arguments")
    parser.add_argument("--assess-seed", type=int, default=None,
                        help="instead of training: compare --out with band-ratio on a world of this seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.assess_seed is not None:
        import json

        scores = compare_models([str(args.out), "band-ratio"], args.assess_seed, args.size, args.root)
        sys.stdout.write(json.dumps(scores, indent=1, default=str) + "\n")
        return 0
    result = train_demo_model(args.out, args.root, tuple(args.seeds), args.size, args.epochs,
                              args.patches_per_epoch, args.patch, export_only=args.export_only,
                              init=args.init, margin_share=args.margin_share, lr=args.lr,
                              hard_share=args.hard_share, extra_dates=tuple(args.extra_dates))
    if args.export_only:
        log.info("exported %s (validation %s)", args.out, result.validation)
        return 0
    best = result.best_record()
    log.info("best epoch %d, validation IoU %s; weights %s", result.best_epoch + 1,
             f"{best.val_iou:.3f}" if best and best.val_iou is not None else "-", result.weights_path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
