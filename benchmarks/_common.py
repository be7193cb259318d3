"""Helpers shared by the benchmark scripts: machine description, tables, JSON output.

A benchmark's ``main(argv)`` may return a dict with a ``tables`` list of
``{"title": str, "columns": [str, ...], "rows": [[value, ...], ...]}``; ``run_all.py`` renders
those as Markdown. Values are formatted by :func:`fmt` (floats to 3 significant digits).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glacimap.workspace import write_json_atomic

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def total_ram_gib() -> float | None:
    """Physical memory in GiB, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, RAM, Python, torch, GPU, date."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(total_ram_gib() or 0.0, 1) or None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        info["monai"] = None
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One-line description of :func:`machine_info`'s output."""
    ram = f", {info['ram_gib']:.0f} GiB RAM" if info.get("ram_gib") else ""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    return (
        f"{info['cpu']}, {info['cores']} cores{ram}{gpu}; Python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} threads); {info['date']}"
    )


def fmt(value: Any) -> str:
    """A table cell: floats to 3 significant digits (no exponent below 1e6), None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            digits = max(0, 2 - int(f"{abs(value):e}".split("e")[1])) if value else 0
            return f"{value:,.{digits}f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value)


def text_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table for the terminal: first column left-aligned, the others right."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (columns of numbers right-aligned)."""

    def numeric(index: int) -> bool:
        values = [row[index] for row in rows if row[index] is not None]
        return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

    align = ["---:" if numeric(i) else "---" for i in range(len(columns))]
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        out.append("| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(out)


def write_result(name: str, data: dict[str, Any], path: Path | None = None) -> Path:
    """Write a benchmark's result atomically to ``path`` (default ``benchmarks/out/NAME.json``)."""
    return write_json_atomic(path or OUT_DIR / f"{name}.json", data)


def print_and_write(name: str, result: dict[str, Any], path: Path | None = None, notes: Sequence[str] = ()) -> Path:
    """Print a benchmark result (machine, tables, notes, summary) and write its JSON."""
    print(machine_line(result["machine"]))
    for table in result["tables"]:
        print(f"\n{table['title']}\n{text_table(table['columns'], table['rows'])}")
    for note in notes:
        print(f"\n{note}")
    print("\n" + "\n".join(f"{k}: {v}" for k, v in result["summary"].items()))
    written = write_result(name, result, path)
    print(f"\nwrote {written}")
    return written
