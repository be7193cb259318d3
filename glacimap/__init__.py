"""glacimap: glacier inventories from open satellite data.

Each pipeline stage is a module named after its command (``glacimap.fetch``,
``glacimap.predict``, ``glacimap.outlines``, ``glacimap.divides``, ``glacimap.change``...)
and takes a validated settings object from :mod:`glacimap.settings`; the CLI in
:mod:`glacimap.cli` is a thin layer over them. Stages talk through files in a workspace
(:mod:`glacimap.workspace`, documented in docs/workspace.md).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glacimap")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
