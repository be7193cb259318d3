"""The workspace: the folder through which pipeline stages talk (layout in docs/workspace.md).

This module owns every path inside a workspace, turns untrusted glacier ids into safe file
names, writes files atomically (temp file in the same folder, then ``os.replace``) and keeps
the run log ``runs.jsonl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glacimap.errors import InputError, OutputExistsError, UnsafeIdError

#: Characters allowed in a file stem derived from a glacier id.
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 100
#: File names Windows refuses whatever the extension.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def safe_stem(glacier_id: object) -> str:
    """Return a file-name stem for an untrusted glacier id.

    ASCII letters, digits, ``.``, ``_`` and ``-`` are kept; anything else (path separators,
    ``..``, non-ASCII) is replaced, and a short hash of the original id is appended whenever
    the stem differs from the id, so two different ids never share a file. Raises
    :class:`UnsafeIdError` for an empty or missing id.
    """
    if glacier_id is None:
        raise UnsafeIdError("glacier id is missing (None); every glacier needs a non-empty id")
    text = str(glacier_id)
    if not text.strip():
        raise UnsafeIdError("glacier id is empty; every glacier needs a non-empty id")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    stem = _SAFE_CHARS.sub("_", ascii_text).strip("._-")
    stem = stem[:_MAX_STEM]
    if stem != text or stem.lower() in _RESERVED or not stem:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
        stem = f"{stem}_{digest}" if stem else f"id_{digest}"
    return stem


def check_unique_ids(ids: list[object], source: str) -> None:
    """Raise :class:`UnsafeIdError` if ids are empty, or duplicated (also after sanitising)."""
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for gid in ids:
        stem = safe_stem(gid)
        if stem in seen:
            duplicates.append(str(gid))
        seen[stem] = str(gid)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        raise UnsafeIdError(
            f"{source}: duplicated glacier ids {shown}{more}; ids must be unique "
            "(choose another column with --id-column)"
        )


def _year_text(year: int) -> str:
    if not isinstance(year, int) or not 1900 <= year <= 2200:
        raise InputError(f"year must be an integer between 1900 and 2200, got {year!r}")
    return str(year)


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace folder; creating the object touches nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    # -- layout -----------------------------------------------------------------------------
    @property
    def inventory(self) -> Path:
        return self.root / "inventory.gpkg"

    @property
    def aoi(self) -> Path:
        """The wall-to-wall (``fetch --aoi``) grid and tiles of the workspace."""
        return self.root / "aoi.json"

    @property
    def runs_log(self) -> Path:
        return self.root / "runs.jsonl"

    def chips_dir(self, year: int) -> Path:
        return self.root / "chips" / _year_text(year)

    def chip(self, year: int, glacier_id: object) -> Path:
        return self._inside(self.chips_dir(year) / f"{safe_stem(glacier_id)}.tif")

    def manifest(self, year: int) -> Path:
        return self.chips_dir(year) / "manifest.parquet"

    def candidates(self, year: int) -> Path:
        return self.chips_dir(year) / "candidates.parquet"

    def predictions_dir(self, year: int) -> Path:
        return self.root / "predictions" / _year_text(year)

    def prediction(self, year: int, glacier_id: object) -> Path:
        return self._inside(self.predictions_dir(year) / f"{safe_stem(glacier_id)}.tif")

    def outlines(self, year: int) -> Path:
        return self.root / "outlines" / f"{_year_text(year)}.gpkg"

    def change_dir(self, year_from: int, year_to: int) -> Path:
        return self.root / "change" / f"{_year_text(year_from)}_{_year_text(year_to)}"

    def _inside(self, path: Path) -> Path:
        """Return ``path`` after checking it resolves inside the workspace."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise UnsafeIdError(f"refusing to write outside the workspace {self.root}: {path}")
        return path

    # -- run log ----------------------------------------------------------------------------
    def log_run(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``runs.jsonl`` (creating the workspace if needed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(dict(record), default=str, sort_keys=True)
        # A single write() of one line in append mode keeps concurrent runs' lines whole.
        with open(self.runs_log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def read_runs(self) -> list[dict[str, Any]]:
        """All records of ``runs.jsonl`` (empty if none)."""
        if not self.runs_log.exists():
            return []
        with open(self.runs_log, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


def utc_now() -> str:
    """Current time as an ISO-8601 UTC string."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def atomic_path(final: Path | str, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; move it onto ``final`` only on success.

    The temporary file keeps ``final``'s suffix so GDAL and OGR pick the right driver. On an
    exception the temporary file is removed and ``final`` is left as it was. With
    ``overwrite=False`` an existing ``final`` raises :class:`OutputExistsError` up front.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} exists; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers such as GDAL want to create the file themselves
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"nothing was written to the temporary file for {final}")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(final: Path | str, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def write_json_atomic(final: Path | str, data: Any, overwrite: bool = True) -> Path:
    """Write ``data`` as indented JSON to ``final`` atomically."""
    return write_text_atomic(final, json.dumps(data, indent=2, default=str) + "\n", overwrite)


def clean_stale_temporaries(folder: Path) -> int:
    """Remove temporary files left by an interrupted run in ``folder``; return how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(".*.tmp*"):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed
