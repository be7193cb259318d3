"""The area-change report: figures (matplotlib, Agg, no pyplot) and one self-contained HTML page.

Figures are written to ``figures/`` and embedded in ``report.html`` as base64 data URIs, so the
page can be mailed or archived alone. Every glacier id shown on the page is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Patch
from matplotlib.path import Path as MplPath
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from glacimap.workspace import safe_stem

if TYPE_CHECKING:
    from glacimap.change import ChangeResult

#: Units shown as before/after thumbnails (largest absolute change first).
N_THUMBNAILS = 6
#: Largest number of glacier rows printed in the page (all are in change.csv).
MAX_TABLE_ROWS = 500
_DPI = 110
_LOSS, _GAIN, _BOTH = "#d7301f", "#2b8cbe", "#c6dbef"


def write_report(result: ChangeResult, folder: Path) -> list[Path]:
    """Write ``figures/*.png`` and ``report.html`` into ``folder``; return the paths written."""
    folder = Path(folder)
    figures = make_figures(result)
    written = []
    for name, data in figures.items():
        path = folder / "figures" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    page = folder / "report.html"
    page.write_text(render_html(result, figures), encoding="utf-8")
    written.append(page)
    return written


def make_figures(result: ChangeResult) -> dict[str, bytes]:
    """PNG bytes by relative file name: the three overview figures, then the thumbnails."""
    figures = {
        "rates_by_size_class.png": _png(_rates_by_size(result)),
        "area_scatter.png": _png(_area_scatter(result)),
        "map_relative_change.png": _png(_change_map(result)),
    }
    for unit_id in largest_changes(result):
        figures[f"thumbnails/{safe_stem(unit_id)}.png"] = _png(_thumbnail(result, unit_id))
    return figures


def largest_changes(result: ChangeResult, count: int = N_THUMBNAILS) -> list[str]:
    """Ids of the comparable units with the largest absolute area change."""
    units = result.units[result.units["comparable"] & result.units["change_km2"].notna()]
    order = units["change_km2"].abs().sort_values(ascending=False, kind="stable")
    return [str(u) for u in order.index[:count]]


# -- figures --------------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _rates_by_size(result: ChangeResult) -> Figure:
    from glacimap.change import SIZE_CLASSES

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    kept = result.units[result.units["kept"] & result.units["rel_rate_pct_a"].notna()]
    labels, data = [], []
    for label in SIZE_CLASSES:
        values = kept.loc[kept["size_class"] == label, "rel_rate_pct_a"].to_numpy(dtype=float)
        labels.append(f"{label}\nn={len(values)}")
        data.append(values)
    positions = np.arange(1, len(data) + 1)
    filled = [i for i, values in enumerate(data) if len(values)]
    if filled:
        ax.boxplot([data[i] for i in filled], positions=positions[filled], widths=0.6, showfliers=False,
                   medianprops={"color": "black"})
        rng = np.random.default_rng(0)
        for i in filled:
            jitter = rng.uniform(-0.15, 0.15, len(data[i]))
            ax.plot(positions[i] + jitter, data[i], "o", ms=3, color=_GAIN, alpha=0.6)
        regional = result.regional["rel_rate_pct_a"]
        if regional is not None and math.isfinite(regional):
            ax.axhline(regional, color=_LOSS, ls="--", lw=1, label=f"regional {regional:+.2f} %/a")
            ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no glacier kept", transform=ax.transAxes, ha="center", va="center")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xticks(positions, labels, fontsize=7)
    ax.set_xlim(0.4, len(data) + 0.6)
    ax.set_xlabel("size class (km²)")
    ax.set_ylabel("relative area change (%/a)")
    ax.set_title(f"Relative change rate by size class, {result.year_from}-{result.year_to} (kept glaciers)", fontsize=10)
    return fig


def _area_scatter(result: ChangeResult) -> Figure:
    g = result.glaciers
    fig = Figure(figsize=(5.0, 4.6))
    ax = fig.add_subplot()
    if result.has_reference:
        year = result.params.reference_year or result.year_from
        tag = "from" if year == result.year_from else "to"
        x, y = g["reference_area_km2"], g[f"area_{tag}_km2"]
        xlabel, ylabel = "reference area (km²)", f"predicted area {year} (km²)"
        title = f"Predicted vs reference area ({year})"
    else:
        x, y = g["area_from_km2"], g["area_to_km2"]
        xlabel, ylabel = f"area {result.year_from} (km²)", f"area {result.year_to} (km²)"
        title = f"Area {result.year_to} vs {result.year_from}"
    shown = (x > 0) & (y > 0)
    kept = g["kept"].astype(bool)
    for mask, colour, label in ((shown & kept, _GAIN, "kept"), (shown & ~kept, "#fd8d3c", "dropped / not comparable")):
        if mask.any():
            ax.scatter(x[mask], y[mask], s=16, color=colour, label=label, alpha=0.8, edgecolor="none")
    hidden = int((~shown).sum())
    if shown.any():
        low = float(min(x[shown].min(), y[shown].min())) / 1.5
        high = float(max(x[shown].max(), y[shown].max())) * 1.5
        ax.plot([low, high], [low, high], color="grey", lw=0.8, label="1:1")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.legend(loc="upper left", fontsize=8)
    if hidden:
        title += f"\n({hidden} with zero or no area not shown)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal", adjustable="box")
    return fig


def _change_map(result: ChangeResult) -> Figure:
    layer = result.layers["glaciers"]
    minx, miny, maxx, maxy = layer.total_bounds if not layer.empty else (0.0, 0.0, 1.0, 1.0)
    aspect = (maxy - miny) / (maxx - minx) if maxx > minx else 1.0
    fig = Figure(figsize=(7.5, float(np.clip(6.0 * aspect, 2.5, 9.0)) + 1.0), layout="constrained")
    ax = fig.add_subplot()
    rates = layer["rel_rate_pct_a"].astype(float)
    kept = layer["kept"].astype(bool)
    finite = rates[kept & rates.notna()]
    limit = float(np.nanpercentile(np.abs(finite), 98)) if len(finite) else 1.0
    limit = limit if limit > 0 else 1.0
    norm = Normalize(-limit, limit)
    cmap = "RdBu"
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    colours = [mappable.to_rgba(r) if k and math.isfinite(r) else (0.85, 0.85, 0.85, 1.0) for r, k in zip(rates, kept)]
    _draw(ax, layer.geometry, facecolors=colours, edgecolors="#555555", linewidths=0.3)
    outline_to = result.layers["outline_to"]
    if not outline_to.empty:
        _draw(ax, outline_to.geometry, facecolors="none", edgecolors="black", linewidths=0.6)
    fig.colorbar(mappable, ax=ax, location="bottom", shrink=0.8, aspect=40,
                 label=f"relative change {result.year_from}-{result.year_to} (%/a)")
    ax.legend(handles=[Patch(facecolor=(0.85, 0.85, 0.85), edgecolor="#555555", label="dropped / not comparable"),
                       Patch(facecolor="none", edgecolor="black", label=f"outline {result.year_to}")],
              loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=2, fontsize=7, frameon=False)
    _km_axes(ax)
    ax.set_title(f"Relative area change {result.year_from}-{result.year_to}", fontsize=10, pad=22)
    return fig


def _thumbnail(result: ChangeResult, unit_id: str) -> Figure:
    unit = result.units.loc[unit_id]
    members = result.glaciers.index[result.glaciers["unit_id"] == unit_id]
    before = _union(result.layers["outline_from"], members)
    after = _union(result.layers["outline_to"], members)
    fig = Figure(figsize=(3.4, 3.4))
    ax = fig.add_subplot()
    both = shapely.intersection(before, after)
    for geom, colour in ((both, _BOTH), (shapely.difference(before, after), _LOSS), (shapely.difference(after, before), _GAIN)):
        _draw(ax, [geom], facecolors=colour, edgecolors="none", linewidths=0)
    _draw(ax, [before], facecolors="none", edgecolors="black", linewidths=0.6, linestyles="--")
    _draw(ax, [after], facecolors="none", edgecolors="black", linewidths=0.8)
    extent = shapely.union(before, after)
    if not extent.is_empty:
        minx, miny, maxx, maxy = extent.bounds
        pad = 0.05 * max(maxx - minx, maxy - miny, 1.0)
        ax.set_xlim(minx - pad, maxx + pad)
        ax.set_ylim(miny - pad, maxy + pad)
    _km_axes(ax, labels=False)
    rel = unit["rel_rate_pct_a"]
    rel_text = f", {rel:+.2f} %/a" if math.isfinite(rel) else ""
    title = f"{_short(unit_id)}\n{unit['change_km2']:+.3f} km²{rel_text}"
    if not unit["kept"]:
        title += f"\n(dropped: {unit['drop_reason']})"
    ax.set_title(title, fontsize=8)
    fig.legend(handles=[Patch(color=_BOTH, label="ice both years"), Patch(color=_LOSS, label="lost"),
                        Patch(color=_GAIN, label="gained")], loc="lower center", ncol=3, fontsize=6, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    return fig


def _union(layer: Any, ids: Iterable[str]) -> shapely.Geometry:
    rows = layer[layer["glacier_id"].isin(list(ids))]
    return shapely.union_all(rows.geometry.to_numpy()) if len(rows) else shapely.Polygon()


def _draw(ax: Any, geoms: Iterable[shapely.Geometry], **style: Any) -> None:
    patches = []
    facecolors = style.pop("facecolors")
    colour_list = isinstance(facecolors, list)
    colours = []
    for i, geom in enumerate(geoms):
        for path in _paths(geom):
            patches.append(PathPatch(path))
            if colour_list:
                colours.append(facecolors[i])
    if not patches:
        return
    collection = PatchCollection(patches, facecolors=colours if colour_list else facecolors, **style)
    ax.add_collection(collection)
    ax.autoscale_view()
    ax.set_aspect("equal")


def _paths(geom: shapely.Geometry | None) -> list[MplPath]:
    """One compound matplotlib path (exterior + holes) per polygon of ``geom``."""
    if geom is None or geom.is_empty:
        return []
    polygons = [p for p in getattr(geom, "geoms", [geom]) if p.geom_type == "Polygon"]
    polygons += [q for p in getattr(geom, "geoms", []) if p.geom_type == "MultiPolygon" for q in p.geoms]
    paths = []
    for polygon in polygons:
        vertices, codes = [], []
        for ring in (polygon.exterior, *polygon.interiors):
            coords = np.asarray(ring.coords)[:, :2]
            vertices.append(coords)
            ring_codes = np.full(len(coords), MplPath.LINETO, dtype=MplPath.code_type)
            ring_codes[0], ring_codes[-1] = MplPath.MOVETO, MplPath.CLOSEPOLY
            codes.append(ring_codes)
        paths.append(MplPath(np.concatenate(vertices), np.concatenate(codes)))
    return paths


def _km_axes(ax: Any, labels: bool = True) -> None:
    formatter = FuncFormatter(lambda value, _: f"{value / 1000:g}")
    ax.xaxis.set_major_formatter(formatter)
    ax.yaxis.set_major_formatter(formatter)
    ax.tick_params(labelsize=6 if not labels else 8)
    if labels:
        ax.set_xlabel("x (km, equal-area projection)", fontsize=8)
        ax.set_ylabel("y (km)", fontsize=8)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;min-width:10rem}
.card .v{font-size:1.5rem;font-weight:600}.card .k{font-size:.8rem;color:#555}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f3f3f3}td.t,th.t{text-align:left}tr.dropped td{color:#888}
figure{display:inline-block;margin:.5rem}figcaption{font-size:.8rem;color:#555;max-width:40rem}
img{max-width:100%}code{word-break:break-all}.thumbs figure{width:31%}.note{font-size:.85rem;color:#444}
"""


def render_html(result: ChangeResult, figures: dict[str, bytes]) -> str:
    """The self-contained report page (figures embedded as data URIs)."""
    r = result.regional
    y0, y1 = result.year_from, result.year_to
    sigma_rel = _pm(r["rel_rate_sigma_pct_a"], 3)
    sigma_abs = _pm(r["rate_sigma_km2_a"], 4)
    headline = result.headline()
    cards = [
        ("regional-rel-rate", f"{_num(r['rel_rate_pct_a'], 3, sign=True)}{sigma_rel}", "relative rate (%/a)"),
        ("regional-rate", f"{_num(r['rate_km2_a'], 4, sign=True)}{sigma_abs}", "rate (km²/a)"),
        ("regional-change", _num(r["change_km2"], 3, sign=True), f"area change {y0}-{y1} (km²)"),
        ("regional-area-from", _num(r["area_from_km2"], 3), f"area {y0} (km²)"),
        ("regional-area-to", _num(r["area_to_km2"], 3), f"area {y1} (km²)"),
        ("n-kept", f"{r['n_glaciers']} / {len(result.glaciers)}", "glaciers kept / listed"),
        ("share-covered", _num(100 * r["share_of_inventory_area"], 1), "% of glacierised area covered"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Glacier area change {y0}-{y1}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Glacier area change {y0}&ndash;{y1}</h1>",
        f'<p id="headline">{html.escape(headline)}</p>',
        '<div class="cards">',
        *(f'<div class="card"><div class="v" id="{cid}">{html.escape(value)}</div><div class="k">{html.escape(key)}</div></div>'
          for cid, value, key in cards),
        "</div>",
        f'<p class="note" id="uncertainty"><b>Uncertainty:</b> {html.escape(result.uncertainty)}.</p>',
        "<h2>Regional totals</h2>",
        _totals_table(result),
        "<h2>Filters</h2>",
        '<p class="note">Applied in this order; each removes from what the previous ones left. '
        "Dropped glaciers stay in the tables and in change.csv, flagged with the first filter they failed. "
        "Area: the inventory area (outlines form: the start-year area).</p>",
        _filters_table(result),
        "<h2>Glacier status</h2>",
        _status_table(result),
        "<h2>By size class</h2>",
        _classes_table(result),
        "<h2>Figures</h2>",
        _figure(figures, "rates_by_size_class.png", "Relative change rate of the kept glaciers per size class "
                "(boxes: quartiles; dots: glaciers; dashed: regional rate), as in Diaconu & Bamber (2023), Fig. 2."),
        _figure(figures, "area_scatter.png", "Predicted area at the reference year against the reference inventory area "
                "(recall filter)." if result.has_reference else "End-year against start-year area of each glacier."),
        _figure(figures, "map_relative_change.png", "Each glacier coloured by its relative change rate (red: loss); "
                "grey: dropped or not comparable; black: end-year outlines."),
        "<h2>Largest changes</h2>",
        '<div class="thumbs">',
        *(_figure(figures, f"thumbnails/{safe_stem(unit_id)}.png", f"{unit_id}: start-year outline dashed, end-year solid.")
          for unit_id in largest_changes(result)),
        "</div>",
        "<h2>Glaciers</h2>",
        _glacier_table(result),
        "<h2>Method</h2>",
        _method(result),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _num(value: Any, digits: int, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "n/a"
    return f"{number:+.{digits}f}" if sign else f"{number:.{digits}f}"


def _pm(sigma: Any, digits: int) -> str:
    return f" ± {float(sigma):.{digits}f}" if sigma is not None and math.isfinite(float(sigma)) else ""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1, row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f'<th class="{"t" if i < text_columns else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(f'<td class="{"t" if i < text_columns else ""}">{html.escape(str(c))}</td>' for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _totals_table(result: ChangeResult) -> str:
    rows = []
    for name, t in (("kept (after filters)", result.regional), ("all comparable (before filters)", result.before_filters)):
        rows.append([name, t["n_glaciers"], _num(t["area_from_km2"], 3), _num(t["area_to_km2"], 3),
                     _num(t["change_km2"], 3, True), _num(t["rate_km2_a"], 4, True), _num(t["rate_sigma_km2_a"], 4),
                     _num(t["rel_rate_pct_a"], 3, True), _num(t["rel_rate_sigma_pct_a"], 3),
                     _num(100 * t["share_of_inventory_area"], 1)])
    header = ["set", "glaciers", f"area {result.year_from} (km²)", f"area {result.year_to} (km²)", "change (km²)",
              "rate (km²/a)", "σ rate", "rel. rate (%/a)", "σ rel.", "% of inventory area"]
    return _table(header, rows)


def _filters_table(result: ChangeResult) -> str:
    rows = []
    for f in result.filters:
        if f.applied:
            rows.append([f.name, f.description, "applied", f.n_glaciers_removed, _num(f.area_removed_km2, 3),
                         _num(100 * f.share_of_area_removed, 1)])
        else:
            rows.append([f.name, f.description, f"skipped: {f.skipped_reason}", "-", "-", "-"])
    return _table(["filter", "rule", "state", "glaciers removed", "area removed (km²)", "% of area"], rows, text_columns=3)


def _status_table(result: ChangeResult) -> str:
    from glacimap.change import COMPARABLE, STATUS_TEXT

    counts = result.glaciers["status"].value_counts()
    rows = [[status, STATUS_TEXT[status], "yes" if status in COMPARABLE else "no", int(counts.get(status, 0))]
            for status in STATUS_TEXT if counts.get(status, 0)]
    return _table(["status", "meaning", "in totals", "glaciers"], rows, text_columns=3)


def _classes_table(result: ChangeResult) -> str:
    rows = []
    for label, c in result.size_classes.iterrows():
        rows.append([label, int(c["n_units"]), int(c["n_kept"]), _num(c["area_km2"], 3), _num(100 * c["share_of_inventory_area"], 1),
                     _num(c["kept_area_from_km2"], 3), _num(c["kept_area_to_km2"], 3), _num(c["rel_rate_pct_a"], 3, True),
                     _num(c["median_rel_rate_pct_a"], 3, True)])
    header = ["size class (km²)", "glaciers", "kept", "area (km²)", "% of area", f"kept area {result.year_from}",
              f"kept area {result.year_to}", "rel. rate (%/a)", "median rel. rate"]
    return _table(header, rows)


def _glacier_table(result: ChangeResult) -> str:
    g = result.glaciers
    note = ""
    if len(g) > MAX_TABLE_ROWS:
        order = g["change_km2"].abs().sort_values(ascending=False, na_position="last", kind="stable").index[:MAX_TABLE_ROWS]
        g = g.loc[order]
        note = f'<p class="note">The {MAX_TABLE_ROWS} largest absolute changes of {len(result.glaciers)} glaciers; all are in change.csv.</p>'
    rows, classes = [], []
    for gid, row in g.iterrows():
        rows.append([gid, row["status"], row["note"], row["drop_reason"] or "kept", _num(row["area_from_km2"], 3),
                     _num(row["area_to_km2"], 3), _num(row["change_km2"], 4, True), _num(row["rate_km2_a"], 5, True),
                     _num(row["rel_rate_pct_a"], 3, True), _num(row["rel_rate_sigma_pct_a"], 3)])
        classes.append("" if row["kept"] else "dropped")
    header = ["glacier", "status", "note", "kept / dropped", f"area {result.year_from} (km²)", f"area {result.year_to} (km²)",
              "change (km²)", "rate (km²/a)", "rel. rate (%/a)", "σ rel."]
    return note + _table(header, rows, text_columns=4, row_classes=classes)


def _figure(figures: dict[str, bytes], name: str, caption: str) -> str:
    data = base64.b64encode(figures[name]).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" data-file="figures/{html.escape(name)}">'
            f"<figcaption>{html.escape(caption)} <code>figures/{html.escape(name)}</code></figcaption></figure>")


def _method(result: ChangeResult) -> str:
    p = result.params
    items = [
        f"Areas are measured in a Lambert azimuthal equal-area projection centred on the region "
        f"(<code>{html.escape(result.area_crs.srs)}</code>), never in degrees.",
        ("Both years are clipped to each glacier's reference outline, so systematic mapping errors cancel."
         if result.has_reference and p.restrict == "inventory" else
         "Outlines are used as they are (no clipping to a reference outline)."),
        "Rate = (A_to - A_from) / (year_to - year_from); relative rate = rate / A_from, in %/a.",
        ("Masked share m of a glacier: A = A_observed / (1 - m), i.e. the masked part holds ice in the proportion "
         "seen on the unmasked part (recall-based correction)." if result.masks_available else
         "No masks in the inputs: masked-share filter and correction skipped."),
        f"Uncertainty: {html.escape(result.uncertainty)}.",
        f"Glaciers whose outlines overlap across the years under different ids (splits, merges) form one change unit "
        f"(overlap ≥ {p.link_share:g} of the smaller outline); their rates are the unit's.",
        "Method after Diaconu &amp; Bamber (2023), NeurIPS CCML workshop; computed by glacimap.",
    ]
    inputs = "".join(f"<li>{html.escape(str(k))}: <code>{html.escape(str(v))}</code></li>" for k, v in result.inputs.items())
    files = ("<li>Files beside this page: <code>change.gpkg</code> (layers glaciers, outline_from, outline_to, loss, gain), "
             "<code>change.csv</code>, <code>summary.json</code>, <code>figures/</code>.</li>")
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + inputs + files + "</ul>"
