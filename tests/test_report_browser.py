"""The change report in a real headless browser (Debian chromium): it loads, shows the headline
numbers, and every embedded figure decodes. Skips when chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from glacimap.change import ChangeParams, ChangeResult, compute_change, write_outputs
from glacimap.report import largest_changes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get update && apt-get install -y chromium)"
)

#: Appended to a copy of the page: after load, write each image's decoded width into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const widths = Array.from(document.images, (img) => (img.complete ? img.naturalWidth : 0));
  const out = document.createElement('pre');
  out.id = 'image-probe';
  out.textContent = JSON.stringify(widths);
  document.body.appendChild(out);
});
</script>"""


def small_change(tmp_path: Path) -> tuple[Path, ChangeResult]:
    """Four glaciers with confidence bands (UTM 32N, 47 deg N), written as a report folder."""
    x0, y0 = 495_000.0, 5_200_000.0
    boxes = {"RGI60-11.00001": 2000, "RGI60-11.00002": 1000, "RGI60-11.00003": 600, "<b>odd id</b>": 300}
    starts, ends = [], []
    for i, (gid, width) in enumerate(boxes.items()):
        x = x0 + 3000 * i
        starts.append((gid, shapely.box(x, y0, x + width, y0 + 1000)))
        ends.append((gid, shapely.box(x, y0, x + 0.9 * width, y0 + 950)))

    def frame(rows: list[tuple[str, shapely.Polygon]]) -> gpd.GeoDataFrame:
        areas = [geom.area / 1e6 for _, geom in rows]
        return gpd.GeoDataFrame(
            {"glacier_id": [gid for gid, _ in rows], "area_km2": areas,
             "area_low_km2": [a * 0.97 for a in areas], "area_high_km2": [a * 1.03 for a in areas]},
            geometry=[geom for _, geom in rows], crs="EPSG:32632",
        )

    result = compute_change(frame(starts), frame(ends), None, 2015, 2023, ChangeParams(drop_extreme=0.0))
    out = tmp_path / "report"
    write_outputs(result, out)
    return out, result


def test_report_loads_in_chromium_with_numbers_and_images(tmp_path: Path) -> None:
    out, result = small_change(tmp_path)
    page = (out / "report.html").read_text(encoding="utf-8")
    # Self-contained: every image is a data URI and nothing is fetched from elsewhere.
    assert re.findall(r'<img[^>]+src="(?!data:image/png;base64,)', page) == []
    assert "<link" not in page and "<script" not in page and "url(" not in page
    n_images = page.count("<img ")
    assert n_images == 3 + len(largest_changes(result)) == 7

    probe_page = out / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
        probe_page.as_uri(),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout

    regional = result.regional
    expected = f"{regional['rel_rate_pct_a']:+.3f} ± {regional['rel_rate_sigma_pct_a']:.3f}"
    match = re.search(r'id="regional-rel-rate">([^<]*)<', dom)
    assert match and match.group(1) == expected
    assert regional["rel_rate_pct_a"] == pytest.approx(-1.8125, abs=1e-3)  # 1 - 0.9 * 0.95 over 8 years
    assert re.search(r'id="n-kept">4 / 4<', dom)
    assert "&lt;b&gt;odd id&lt;/b&gt;" in dom and "<b>odd id</b>" not in dom  # ids are escaped

    widths = json.loads(re.search(r'id="image-probe">([^<]*)<', dom).group(1))
    assert len(widths) == n_images and all(w > 100 for w in widths), widths
