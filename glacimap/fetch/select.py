"""The per-glacier scene choice (Diaconu & Bamber 2023, made explicit).

A candidate is eligible when its valid-data coverage of the glacier + buffer is at least
``min_coverage`` and its cloud fraction there at most ``max_cloud``. Among eligible candidates
the choice is lexicographic, each key compared at a stated precision so that near-equal values
tie and the next key decides:

1. cloud fraction over glacier + buffer, to 0.01 (1 % of the pixels);
2. seasonal-snow indicator (mean off-glacier NDSI), to 0.05; unknown counts as worst;
3. tile-wide cloud cover (``eo:cloud_cover``), to 1 percentage point; unknown counts as worst;
4. days from the target date (the window's centre, or ``--date``);
5. the scene id, so the choice never depends on the order the server returned items in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from glacimap.fetch.plan import CandidateScore, Scene

CLOUD_PRECISION = 0.01
SNOW_PRECISION = 0.05
TILE_CLOUD_PRECISION = 1.0


def _quantise(value: float, step: float) -> float:
    if value is None or math.isnan(value):
        return math.inf
    return round(value / step)


def selection_key(score: CandidateScore) -> tuple[float, float, float, int, str]:
    """Sort key of the rule above (smaller is better)."""
    return (
        _quantise(score.cloud_fraction, CLOUD_PRECISION),
        _quantise(score.snow_index, SNOW_PRECISION),
        _quantise(score.tile_cloud, TILE_CLOUD_PRECISION),
        abs(score.days_from_target),
        score.scene_id,
    )


def eligibility(coverage: float, cloud_fraction: float, min_coverage: float, max_cloud: float) -> str | None:
    """Why a candidate is not eligible, or None when it is."""
    if coverage < min_coverage:
        return f"coverage {coverage:.2f} < {min_coverage:.2f}"
    if cloud_fraction > max_cloud:
        return f"cloud {cloud_fraction:.2f} > {max_cloud:.2f}"
    return None


def candidate_score(
    glacier_id: str,
    scene: Scene,
    day: date,
    coverage: float,
    cloud_fraction: float,
    snow_index: float,
    target: date,
    min_coverage: float,
    max_cloud: float,
    rejected: str | None = None,
) -> CandidateScore:
    """A candidate's score as every backend records it: fractions to 4 decimals, unknown tile
    cloud as infinity, and the eligibility reason unless ``rejected`` already gives one."""
    return CandidateScore(
        glacier_id=glacier_id,
        scene_id=scene.id,
        coverage=round(coverage, 4),
        cloud_fraction=round(cloud_fraction, 4),
        snow_index=round(snow_index, 4) if math.isfinite(snow_index) else snow_index,
        tile_cloud=scene.tile_cloud if scene.tile_cloud is not None else float("inf"),
        days_from_target=(day - target).days,
        rejected=rejected or eligibility(coverage, cloud_fraction, min_coverage, max_cloud),
    )


def rank_candidates(scores: Sequence[CandidateScore]) -> list[CandidateScore]:
    """Eligible candidates, best first."""
    return sorted((s for s in scores if s.rejected is None), key=selection_key)
