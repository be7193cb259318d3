"""Digital numbers to physical values, and cloud masks, for each product.

- Sentinel-2 L2A: reflectance = (DN - offset) / 10000 with offset 1000 from processing baseline
  04.00 on (25 January 2022); decided from ``s2:processing_baseline`` (or the date when the
  property is missing), not from ``earthsearch:boa_offset_applied``, which is wrong on some
  items. DN 0 is no data.
- Landsat Collection 2 Level 2: reflectance = DN * 0.0000275 - 0.2; DN 0 is fill.
- Cloud: SCL classes 3 (cloud shadow), 8, 9 (cloud medium/high probability) and 10 (cirrus);
  QA_PIXEL bits 1 (dilated cloud), 2 (cirrus), 3 (cloud), 4 (cloud shadow). Snow (SCL 11,
  QA bit 5) is never cloud.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

import numpy as np

log = logging.getLogger(__name__)

S2_SCALE = 1e-4
S2_OFFSET_DN = 1000
S2_OFFSET_START = date(2022, 1, 25)
LANDSAT_SCALE = 2.75e-5
LANDSAT_OFFSET = -0.2
SCL_CLOUD_CLASSES = (3, 8, 9, 10)
SCL_NODATA_CLASSES = (0, 1)  # no data, saturated/defective
QA_CLOUD_BITS = (1, 2, 3, 4)
QA_FILL_BIT = 0
#: Landsat 7's scan-line corrector failed on 31 May 2003; later scenes have no-data stripes.
L7_SLC_OFF = date(2003, 5, 31)


def s2_offset(processing_baseline: str | None, acquired: date) -> int:
    """DN offset of a Sentinel-2 L2A item: 1000 from baseline 04.00 on, else 0."""
    if processing_baseline:
        try:
            major, minor = (int(part) for part in str(processing_baseline).split(".")[:2])
        except ValueError:
            log.warning("unreadable s2:processing_baseline %r; deciding by date", processing_baseline)
        else:
            return S2_OFFSET_DN if (major, minor) >= (4, 0) else 0
    return S2_OFFSET_DN if acquired >= S2_OFFSET_START else 0


def s2_reflectance(dn: np.ndarray, offset: int) -> np.ndarray:
    """Sentinel-2 L2A DNs to float32 reflectance; DN 0 becomes NaN."""
    out = (dn.astype(np.float32) - np.float32(offset)) * np.float32(S2_SCALE)
    out[dn == 0] = np.nan
    return out


def landsat_reflectance(dn: np.ndarray) -> np.ndarray:
    """Landsat C2 L2 surface-reflectance DNs to float32 reflectance; DN 0 becomes NaN."""
    out = dn.astype(np.float32) * np.float32(LANDSAT_SCALE) + np.float32(LANDSAT_OFFSET)
    out[dn == 0] = np.nan
    return out


def scl_masks(scl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid data, cloud) boolean masks from a Sentinel-2 scene classification layer."""
    valid = ~np.isin(scl, SCL_NODATA_CLASSES)
    cloud = np.isin(scl, SCL_CLOUD_CLASSES) & valid
    return valid, cloud


def qa_pixel_masks(qa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid data, cloud) boolean masks from a Landsat QA_PIXEL band."""
    qa = qa.astype(np.uint16)
    valid = ((qa >> QA_FILL_BIT) & 1) == 0
    valid &= qa != 0  # outside the scene, QA itself is 0/nodata in some products
    cloud = np.zeros(qa.shape, dtype=bool)
    for bit in QA_CLOUD_BITS:
        cloud |= ((qa >> bit) & 1) == 1
    return valid, cloud & valid


def is_slc_off(platform: str | None, acquired: date) -> bool:
    """True for Landsat 7 scenes with scan-line gaps."""
    return (platform or "").lower().replace("_", "-") == "landsat-7" and acquired > L7_SLC_OFF


def to_db(linear: np.ndarray) -> np.ndarray:
    """Linear backscatter to dB; non-positive values become NaN."""
    out = np.full(linear.shape, np.nan, dtype=np.float32)
    positive = linear > 0
    out[positive] = 10.0 * np.log10(linear[positive])
    return out


def parse_datetime(value: str) -> datetime:
    """An item's ISO 8601 datetime (with ``Z``) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
