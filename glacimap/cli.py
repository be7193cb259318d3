"""The ``glacimap`` command line: a thin typer layer over the Python API.

Each command turns its flags into a settings object (:mod:`glacimap.settings`, which merges
defaults, ``--config`` and ``GLACIMAP_*`` variables), calls one library function through
:func:`glacimap.runlog.run_stage`, and prints the result. Errors become one line on stderr and
an exit code: 0 success, 1 the run failed, 2 bad usage or bad input, 3 partial success.
Heavy libraries (torch, dask) are imported inside the stage functions so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from glacimap import __version__
from glacimap.errors import EXIT_BAD_INPUT, EXIT_FAILED, GlacimapError
from glacimap.settings import (
    BaseSettings,
    CalibrateSettings,
    ChangeSettings,
    DemoSettings,
    EvaluateSettings,
    FetchSettings,
    OutlinesSettings,
    PredictSettings,
    SplitSettings,
    TrainSettings,
    VelocitySettings,
    resolve_settings,
)

app = typer.Typer(
    name="glacimap",
    help="Glacier inventories from open satellite data: fetch scenes, map ice, draw outlines, "
    "split complexes along ice divides and report area change.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("glacimap")

# -- shared options (rasterio's rio/options.py idea: define once, use everywhere) -----------------
Work = Annotated[Optional[Path], typer.Option("--work", help="Workspace folder. \\[default: ./glacimap-work]")]
Config = Annotated[
    Optional[Path],
    typer.Option("--config", help="TOML file with option values (the command line wins over it)."),
]
Scheduler = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Address of a dask.distributed scheduler. \\[default: a local cluster]"),
]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Local dask workers. \\[default: one per core]")]
Overwrite = Annotated[
    Optional[bool], typer.Option("--overwrite/--no-overwrite", help="Replace finished outputs instead of skipping them.")
]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only print warnings and errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Print debug messages.")]
Year = Annotated[Optional[int], typer.Option("--year", help="Year of the acquisitions (required).")]
IdColumn = Annotated[
    Optional[str],
    typer.Option("--id-column", help="Column with glacier ids. \\[default: auto: glacier_id, RGIId, rgi_id, GLIMSId, glac_id, id]"),
]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda. \\[default: auto]")]

_CLI_ONLY = ("config", "debug", "quiet", "verbose")


def _configure_logging(quiet: bool, verbose: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    from glacimap.runlog import MaskCredentials

    handler = RichHandler(console=_stderr_console(), show_path=False, show_time=False, markup=False)
    handler.addFilter(MaskCredentials())
    root = logging.getLogger("glacimap")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # HTTP retries log the URL they retry, query string included: same handler, same masking
    http = logging.getLogger("urllib3")
    http.handlers[:] = [handler]
    http.setLevel(logging.WARNING)
    http.propagate = False


def _stderr_console():  # noqa: ANN202 - rich type kept out of module import
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[Any, int], None]]:
    """A rich progress bar counting done / failed / skipped items; yields the callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counts = {"ok": 0, "failed": 0, "skipped": 0}
    with Progress(
        TextColumn(f"{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(), console=_stderr_console(), disable=quiet, transient=False,
    ) as bar:
        task = bar.add_task(label, total=None, counts="")

        def advance(outcome: Any, total: int) -> None:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            text = f"done {counts['ok']} failed {counts['failed']} skipped {counts['skipped']}"
            bar.update(task, total=total, advance=1, counts=text)

        yield advance


def _execute(
    cls: type[BaseSettings],
    values: dict[str, Any],
    stage: Callable[[BaseSettings], Any],
    report: Callable[[Any], None] | None = None,
) -> None:
    """Resolve settings from the command's flags, run the stage, map errors to exit codes."""
    debug = bool(values.get("debug"))
    _configure_logging(bool(values.get("quiet")), bool(values.get("verbose")))
    cli = {k: v for k, v in values.items() if k not in _CLI_ONLY}
    try:
        settings = resolve_settings(cls, cli, values.get("config"))
        from glacimap.runlog import run_stage

        result = run_stage(settings, stage)
    except GlacimapError as exc:
        _fail(cls.command, str(exc), exc.exit_code, debug)
    except (OSError, ValueError, RuntimeError) as exc:
        # Unexpected: still one line, but say it is probably a bug.
        _fail(cls.command, f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", EXIT_FAILED, debug)
    if report is not None:
        report(result)


def _fail(command: str, message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    from glacimap.runlog import mask_text

    typer.echo(f"glacimap {command}: error: {mask_text(message)}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"glacimap {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Glacier inventories from open satellite data.

    Exit codes: 0 success, 1 the run failed, 2 bad usage or bad input,
    3 partial success (some glaciers failed; the others were written).
    """


@app.command()
def fetch(
    inventory: Annotated[Optional[Path], typer.Option("--inventory", help="Reference outlines (any OGR format).")] = None,
    aoi: Annotated[Optional[str], typer.Option("--aoi", help="Area of interest 'minlon,minlat,maxlon,maxlat' (wall-to-wall mode).")] = None,
    year: Year = None,
    sensor: Annotated[Optional[list[str]], typer.Option("--sensor", help="auto, s2, landsat or s1; repeat for several. \\[default: auto]")] = None,
    window: Annotated[Optional[str], typer.Option("--window", help="Acquisition window MM-DD:MM-DD. \\[default: the hemisphere's end of melt season]")] = None,
    date: Annotated[Optional[str], typer.Option("--date", help="Target date YYYY-MM-DD (with --days).")] = None,
    days: Annotated[Optional[int], typer.Option("--days", help="Days either side of --date. \\[default: 15]")] = None,
    candidates: Annotated[Optional[int], typer.Option("--candidates", help="Least-cloudy tiles scored per glacier. \\[default: 5]")] = None,
    max_cloud: Annotated[Optional[float], typer.Option("--max-cloud", help="Largest cloud fraction over a glacier to accept. \\[default: 0.3]")] = None,
    max_tile_cloud: Annotated[Optional[float], typer.Option("--max-tile-cloud", help="Tiles cloudier than this percentage are not candidates. \\[default: 80.0]")] = None,
    buffer: Annotated[Optional[float], typer.Option("--buffer", help="Metres around the outline scored for cloud. \\[default: 100]")] = None,
    chip_margin: Annotated[Optional[float], typer.Option("--chip-margin", help="Metres around the outline's bounding box in a chip. \\[default: 500]")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="stac or sentinelhub. \\[default: stac]")] = None,
    stac_url: Annotated[Optional[str], typer.Option("--stac-url", help="STAC API root. \\[default: Earth Search v1]")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="earth-search or planetary-computer. \\[default: earth-search]")] = None,
    sh_base_url: Annotated[Optional[str], typer.Option("--sh-base-url", help="Sentinel Hub deployment, e.g. https://sh.dataspace.copernicus.eu (credentials: SH_CLIENT_ID / SH_CLIENT_SECRET).")] = None,
    composite: Annotated[Optional[bool], typer.Option("--composite/--no-composite", help="Fill cloud gaps per pixel from the next best scenes (on by default with --aoi).")] = None,
    aoi_tile: Annotated[Optional[float], typer.Option("--aoi-tile", help="Side of the square tiles an --aoi is cut into, metres (a whole number of at least 32 cells). \\[default: 10000]")] = None,
    id_column: IdColumn = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Choose the least-cloudy scene per glacier and write 10 m analysis-ready chips."""
    values = dict(locals())
    values["sensors"] = values.pop("sensor")
    values["target_date"] = values.pop("date")

    def stage(settings: FetchSettings) -> Any:
        from glacimap.fetch import run_fetch

        with _progress("glaciers", quiet) as advance:
            return run_fetch(settings, progress=advance)

    _execute(FetchSettings, values, stage, _report_fetch)


def _report_fetch(result: Any) -> None:
    typer.echo(
        f"fetched {result.year}: {result.ok} {result.unit} written, {result.skipped} already done, "
        f"{result.failed} without a chip (of {result.glaciers})\n"
        f"mean cloud over {result.unit}: {result.mean_cloud_chosen:.2%} chosen per {result.unit[:-1]}, "
        f"{result.mean_cloud_naive:.2%} with the least-cloudy tile\n"
        f"manifest: {result.manifest}"
    )


@app.command()
def predict(
    year: Year = None,
    model: Annotated[Optional[str], typer.Option("--model", help="synthetic-demo, band-ratio or a .safetensors file. \\[default: synthetic-demo]")] = None,
    device: Device = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tile size in pixels. \\[default: 384]")] = None,
    overlap: Annotated[Optional[float], typer.Option("--overlap", help="Tile overlap fraction. \\[default: 0.5]")] = None,
    blend: Annotated[Optional[str], typer.Option("--blend", help="Tile blending window: cosine or gaussian (GlaViTU's). \\[default: cosine]")] = None,
    batch_size: Annotated[Optional[str], typer.Option("--batch-size", help="Tiles per batch or 'auto'. \\[default: auto]")] = None,
    mc_samples: Annotated[Optional[int], typer.Option("--mc-samples", help="Monte-Carlo dropout samples (0: plain softmax). \\[default: 0]")] = None,
    tta: Annotated[Optional[bool], typer.Option("--tta/--no-tta", help="8x flip/rotation test-time augmentation.")] = None,
    bias_optimisation: Annotated[Optional[bool], typer.Option("--bias-optimisation/--no-bias-optimisation", help="Adapt region logits to the scene (region-encoding models).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="auto, fp32, bf16 or fp16. \\[default: auto]")] = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Map glacier ice on every chip of a year with tiled inference and calibrated confidence."""
    values = dict(locals())
    if values["batch_size"] not in (None, "auto"):
        values["batch_size"] = _int_option("--batch-size", values["batch_size"])

    def stage(settings: PredictSettings) -> Any:
        from glacimap.predict import run_predict

        with _progress("chips", quiet) as advance:
            return run_predict(settings, progress=advance)

    _execute(PredictSettings, values, stage, _report_predict)


def _report_predict(result: Any) -> None:
    typer.echo(
        f"predicted {result.year} with {result.model} on {result.device}: {result.predicted} chips written, "
        f"{result.skipped} already done, {result.failed} failed (of {result.chips}); "
        f"{result.invalid_fraction:.1%} of pixels invalid; {result.megapixels_per_second:.2f} Mpx/s\n"
        f"predictions: {result.output_dir}"
    )


@app.command()
def outlines(
    year: Year = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Glacier probability threshold. \\[default: 0.5]")] = None,
    min_area: Annotated[Optional[float], typer.Option("--min-area", help="Smallest glacier or hole kept, km2. \\[default: 0.01]")] = None,
    simplify: Annotated[Optional[float], typer.Option("--simplify", help="Topology-preserving simplification tolerance, m. \\[default: 5]")] = None,
    restrict: Annotated[Optional[str], typer.Option("--restrict", help="inventory, territory or none. \\[default: inventory]")] = None,
    territory_buffer: Annotated[Optional[float], typer.Option("--territory-buffer", help="Metres a glacier may advance beyond its reference outline. \\[default: 200]")] = None,
    confidence_level: Annotated[Optional[float], typer.Option("--confidence-level", help="Pixels with calibrated confidence below this form the confidence band. \\[default: 0.95]")] = None,
    split_divides: Annotated[Optional[bool], typer.Option("--split-divides/--no-split-divides", help="Write the ice divides between glaciers of a complex (layer divides); glaciers keep their reference divides.")] = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Vectorise predictions into glacier outlines with 95 % confidence bands."""
    values = dict(locals())  # the options only: taken before any local definition

    def stage(settings: OutlinesSettings) -> Any:
        from glacimap.outlines import run_outlines

        return run_outlines(settings)

    def report(result: Any) -> None:
        typer.echo(
            f"outlines {result.year}: {result.mapped} of {result.glaciers} glaciers mapped, "
            f"{result.total_area_km2:.3f} km2 in total\noutlines: {result.path}"
        )

    _execute(OutlinesSettings, values, stage, report)


@app.command()
def split(
    outlines: Annotated[Optional[Path], typer.Option("--outlines", help="Glacier complexes to split (required).")] = None,
    dem: Annotated[Optional[Path], typer.Option("--dem", help="DEM covering the complexes (required).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output GeoPackage (required).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="kienholz or reference. \\[default: kienholz]")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="Reference inventory (method reference).")] = None,
    id_column: IdColumn = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Split glacier complexes into glaciers along ice divides (Kienholz et al. 2013).

    Kienholz parameters can be overridden in the config file's [split.kienholz] table.
    """
    _execute(SplitSettings, dict(locals()), _run_split, _print_split)


def _run_split(settings: SplitSettings) -> Any:
    from glacimap.divides import KienholzParams, run_split

    return run_split(settings, KienholzParams(**settings.kienholz))


def _print_split(result: Any) -> None:
    typer.echo(
        f"split ({result.method}): {result.n_complexes} complexes -> {result.n_glaciers} glaciers "
        f"({result.n_split} complexes split) in {result.seconds:.1f} s\noutput: {result.out}"
    )


@app.command()
def change(
    year_from: Annotated[Optional[int], typer.Option("--from", help="Start year (required).")] = None,
    year_to: Annotated[Optional[int], typer.Option("--to", help="End year (required).")] = None,
    restrict: Annotated[Optional[str], typer.Option("--restrict", help="inventory or territory. \\[default: inventory]")] = None,
    min_recall: Annotated[Optional[float], typer.Option("--min-recall", help="Drop glaciers mapped with lower recall. \\[default: 0.75]")] = None,
    max_masked: Annotated[Optional[float], typer.Option("--max-masked", help="Drop glaciers with more masked area. \\[default: 0.2]")] = None,
    drop_extreme: Annotated[Optional[float], typer.Option("--drop-extreme", help="Share of most extreme rates dropped. \\[default: 0.05]")] = None,
    outlines_from: Annotated[Optional[Path], typer.Option("--outlines-from", help="Start-year outlines (outlines form).")] = None,
    outlines_to: Annotated[Optional[Path], typer.Option("--outlines-to", help="End-year outlines (outlines form).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder. \\[default: WORK/change/FROM_TO]")] = None,
    year_column: Annotated[Optional[str], typer.Option("--year-column", help="Column selecting each year's rows when one file holds several years. \\[default: year]")] = None,
    reference_year: Annotated[Optional[int], typer.Option("--reference-year", help="Year of the reference inventory, for the recall filter.")] = None,
    id_column: IdColumn = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Report per-glacier and regional area change between two years."""
    _execute(ChangeSettings, dict(locals()), _run_change, _print_change)


def _run_change(settings: ChangeSettings) -> Any:
    from glacimap.change import run_change

    return run_change(settings)


def _print_change(result: Any) -> None:
    typer.echo(f"{result.headline()}\nreport: {result.out_dir}")


@app.command()
def train(
    year: Year = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Architecture: glavitu-s, glavitu or unet-resnet34. \\[default: glavitu-s]")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Weights file NAME.safetensors (required).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs. \\[default: 40]")] = None,
    patch: Annotated[Optional[int], typer.Option("--patch", help="Patch size in pixels. \\[default: 384]")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Patches per batch. \\[default: 8]")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", help="Geographic folds. \\[default: 5]")] = None,
    fold: Annotated[Optional[int], typer.Option("--fold", help="Fold held out for validation.")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="global, regional, finetune, region-encoding or coordinate-encoding. \\[default: global]")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Weights to start from.")] = None,
    region: Annotated[Optional[str], typer.Option("--region", help="Region to train on (strategy regional; from the inventory's 'region' column).")] = None,
    patches_per_epoch: Annotated[Optional[int], typer.Option("--patches-per-epoch", help="Training patches drawn per epoch. \\[default: 512]")] = None,
    margin_share: Annotated[Optional[float], typer.Option("--margin-share", help="Share of patches centred within 100 m (10 px) of a glacier outline, where snow patches touch the ice and termini retreat. \\[default: 0.0]")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Initial learning rate (Adam). \\[default: 0.0005]")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="auto, fp32, bf16 or fp16 (mixed precision on CUDA). \\[default: auto]")] = None,
    device: Device = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed. \\[default: 0]")] = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train a glacier segmentation model on the workspace's chips and inventory.

    Labels are the inventory's outlines rasterised onto the chips of --year: train on the
    inventory's own year. Resumes from OUT's checkpoints folder when interrupted.
    """
    values = dict(locals())  # the options only: taken before any local definition

    def stage(settings: TrainSettings) -> Any:
        from glacimap.train import run_train

        with _train_progress(quiet) as callback:
            return run_train(settings, progress=callback)

    _execute(TrainSettings, values, stage, _report_train)


@contextmanager
def _train_progress(quiet: bool) -> Iterator[Callable[[Any], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f} val IoU {task.fields[iou]}"), TimeElapsedColumn(),
                  console=_stderr_console(), disable=quiet) as bar:
        task = bar.add_task("train", total=None, epoch="-", loss=float("nan"), iou="-")

        def callback(p: Any) -> None:
            iou = getattr(p.record, "val_iou", None) if p.record is not None else None
            fields = {"epoch": f"{p.epoch + 1}/{p.epochs}", "loss": p.loss}
            if iou is not None:
                fields["iou"] = f"{iou:.3f}"
            bar.update(task, total=p.steps, completed=p.step, **fields)

        yield callback


def _report_train(result: Any) -> None:
    best = f"{result.best_iou:.3f}" if result.best_iou is not None else "n/a"
    typer.echo(
        f"trained on {result.device} in {result.seconds:.0f} s: best validation IoU {best} "
        f"(epoch {result.best_epoch + 1})\nweights: {result.weights_path}"
    )


@app.command()
def calibrate(
    year: Year = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name or .safetensors file (required).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="auto, kernel-ridge or isotonic. \\[default: auto]")] = None,
    bins: Annotated[Optional[int], typer.Option("--bins", help="Reliability-curve bins. \\[default: 100]")] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tile size in pixels. \\[default: 384]")] = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fit a model's confidence calibration map on labelled chips (labels: the inventory).

    The map is stored in the model's manifest (a workspace copy for packaged models); ECE is
    measured on held-out glaciers and a reliability diagram written to WORK/calibration/.
    """
    _execute(CalibrateSettings, dict(locals()), _run_calibrate, _report_calibrate)


def _run_calibrate(settings: CalibrateSettings) -> Any:
    from glacimap.calibrate import run_calibrate

    return run_calibrate(settings)


def _report_calibrate(result: Any) -> None:
    typer.echo(
        f"calibrated {result.model} ({result.method}) on {result.pixels} pixels: ECE on held-out glaciers "
        f"{result.ece_before:.4f} before, {result.ece_after:.4f} after\nmanifest: {result.manifest}\n"
        f"reliability diagram: {result.diagram}"
    )


@app.command()
def evaluate(
    pred: Annotated[Optional[Path], typer.Option("--pred", help="Predicted outlines (.gpkg) or raster (.tif) (required).")] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Reference outlines or raster (required).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="JSON report file.")] = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Accuracy of predicted outlines: IoU, detection F1, area deviation, PoLiS, ECE."""
    _execute(EvaluateSettings, dict(locals()), _run_evaluate, _print_evaluation)


def _run_evaluate(settings: EvaluateSettings) -> Any:
    from glacimap.metrics import run_evaluate

    return run_evaluate(settings)


def _print_evaluation(report: Any) -> None:
    from glacimap.metrics import format_table

    typer.echo(format_table(report))


@app.command()
def velocity(
    image_a: Annotated[Optional[Path], typer.Option("--image-a", help="First image (file form; single band, or pick one with --band).")] = None,
    image_b: Annotated[Optional[Path], typer.Option("--image-b", help="Second image, on the first one's grid (file form).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (file form): velocity.tif, velocity.png, velocity.json.")] = None,
    from_date: Annotated[Optional[str], typer.Option("--from-date", help="Date of the first image YYYY-MM-DD. \\[default: the file's tags or MTL]")] = None,
    to_date: Annotated[Optional[str], typer.Option("--to-date", help="Date of the second image YYYY-MM-DD. \\[default: the file's tags or MTL]")] = None,
    sensor: Annotated[Optional[str], typer.Option("--sensor", help="s2 or landsat (workspace form). \\[default: s2]")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="ncc (template matching); raft is not implemented yet. \\[default: ncc]")] = None,
    template: Annotated[Optional[int], typer.Option("--template", help="Template side, pixels. \\[default: 32]")] = None,
    step: Annotated[Optional[int], typer.Option("--step", help="Spacing of the points, pixels. \\[default: 16]")] = None,
    band: Annotated[Optional[str], typer.Option("--band", help="nir or pan: the band tracked in multi-band files.")] = None,
    preprocess: Annotated[Optional[str], typer.Option("--preprocess", help="orientation (GIV) or gradient images. \\[default: orientation]")] = None,
    max_speed: Annotated[Optional[float], typer.Option("--max-speed", help="Largest speed searched, m/a. \\[default: 10000]")] = None,
    min_quality: Annotated[Optional[float], typer.Option("--min-quality", help="Smallest normalised cross-correlation peak kept. \\[default: 0.3]")] = None,
    median_size: Annotated[Optional[int], typer.Option("--median-size", help="Neighbourhood of the median outlier test, points (odd). \\[default: 9]")] = None,
    smooth: Annotated[Optional[int], typer.Option("--smooth", help="Median smoothing of the field, points (odd; 1: none). \\[default: 3]")] = None,
    coregister: Annotated[Optional[bool], typer.Option("--coregister/--no-coregister", help="Remove the median displacement of stable ground (co-registration); on unless --no-coregister.")] = None,
    stable: Annotated[Optional[Path], typer.Option("--stable", help="Stable-ground (bedrock) polygons for the error estimate and co-registration (otherwise: off-glacier points, with --inventory).")] = None,
    inventory: Annotated[Optional[Path], typer.Option("--inventory", help="Glacier outlines: flow kept on them plus --glacier-buffer.")] = None,
    glacier_buffer: Annotated[Optional[float], typer.Option("--glacier-buffer", help="Metres around the outlines where flow is kept. \\[default: 200]")] = None,
    work: Work = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="FFT threads. \\[default: one per core]")] = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Glacier surface velocity by feature tracking between two images (m/a, with errors).

    File form: --image-a A.tif --image-b B.tif --out DIR on any co-registered pair (same CRS,
    pixel size and lattice). Writes a COG (vx, vy, speed, quality, valid), a quick-look PNG
    and a JSON summary with the stable-ground error (median and NMAD of speed).
    """
    _execute(VelocitySettings, dict(locals()), _run_velocity, _print_velocity)


def _run_velocity(settings: VelocitySettings) -> Any:
    from glacimap.velocity import run_velocity

    return run_velocity(settings)


def _print_velocity(result: Any) -> None:
    typer.echo(f"{result.headline()}\noutput: {result.out_dir}")


@app.command()
def demo(
    generate_only: Annotated[Optional[bool], typer.Option("--generate-only/--full", help="Only generate the synthetic world and its figure.")] = None,
    small: Annotated[Optional[bool], typer.Option("--small/--default-size", help="A few-km region (seconds) instead of about 20 x 20 km.")] = None,
    size_km: Annotated[Optional[float], typer.Option("--size-km", help="Side of the square world in km, 2 to 50 (overrides --small).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the synthetic world. \\[default: 42]")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model the demo predicts with: synthetic-demo, band-ratio or a weights file. \\[default: synthetic-demo]")] = None,
    work: Annotated[Optional[Path], typer.Option("--work", help="Demo folder. \\[default: ./glacimap-demo]")] = None,
    config: Config = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = None,
    debug: Debug = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run the whole chain offline on a synthetic glacier world served by a local STAC API.

    Generates the world in WORK/world (reused when it exists), serves it over a local STAC API
    and runs fetch, predict, outlines, change and evaluate on it exactly as against Earth Search.
    """
    values = dict(locals())  # the options only: taken before any local definition

    def stage(settings: DemoSettings) -> Any:
        from glacimap.demo import run_demo

        return run_demo(settings)

    _execute(DemoSettings, values, stage, _report_demo)


def _report_demo(result: Any) -> None:
    from glacimap.demo import format_summary

    typer.echo(format_summary(result))


def _int_option(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        typer.echo(f"glacimap: error: {flag} expects an integer or 'auto', got {value!r}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
