"""Exceptions raised by glacimap.

Every error derives from :class:`GlacimapError` and, where one fits, from the matching builtin
(``InputNotFoundError`` is also a ``FileNotFoundError``), so callers of the Python API can catch
either. Each class carries the process exit code that the CLI uses for it; nothing here imports
the CLI framework.

Exit codes: 0 success; 1 the run failed; 2 bad usage or bad input; 3 partial success.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3


class GlacimapError(Exception):
    """Root of all glacimap errors: the run failed (exit code 1)."""

    exit_code: int = EXIT_FAILED


class InputError(GlacimapError):
    """Bad usage or bad input data (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError, ValueError):
    """A settings value, config file key or environment variable is invalid."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A required input file or workspace product does not exist."""


class InvalidInputError(InputError, ValueError):
    """An input file exists but its content is not what was expected."""


class BandMismatchError(InputError, ValueError):
    """A raster's bands do not match those a model or stage needs."""


class CRSMismatchError(InputError, ValueError):
    """Two inputs that must share a coordinate reference system do not."""


class UnsafeIdError(InputError, ValueError):
    """A glacier id cannot be turned into a safe file name (empty, duplicated...)."""


class OutputExistsError(InputError, FileExistsError):
    """An output exists and ``overwrite`` was not requested."""


class DeviceError(InputError, RuntimeError):
    """The requested compute device (e.g. CUDA) is not available."""


class NotImplementedYetError(InputError, NotImplementedError):
    """A command of the CLI contract that is not implemented yet."""


class FetchError(GlacimapError, OSError):
    """Remote data could not be read after retries."""


class PartialFailureError(GlacimapError):
    """Some items (glaciers, chips) failed while all others were written (exit code 3)."""

    exit_code = EXIT_PARTIAL

    def __init__(self, message: str, failed: int, total: int, report: str | None = None, result: object = None):
        super().__init__(message)
        self.failed = failed
        self.total = total
        self.report = report
        self.result = result  # what the run produced for the items that succeeded
