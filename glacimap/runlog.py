"""Running a pipeline stage: settings in, result out, one line in ``runs.jsonl`` either way.

:func:`run_stage` is what the CLI calls for every command and what a Python user may call
too; it records version, settings (secrets masked), start, end and status of every run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from glacimap import __version__
from glacimap.errors import EXIT_OK, GlacimapError
from glacimap.settings import BaseSettings
from glacimap.workspace import Workspace, utc_now

log = logging.getLogger(__name__)
T = TypeVar("T")

_SECRET_NAME = re.compile(r"(secret|token|password|passwd|key|sig|signature|credential|auth)", re.I)
MASK = "***"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")
# a query parameter named like a secret, also in a URL without scheme (e.g. urllib3's "/stac?token=...")
_SECRET_PARAM = re.compile(r"([?&][^=&\s]*" + _SECRET_NAME.pattern + r"[^=&\s]*=)[^&\s'\"()<>]+", re.I)


def mask_url(url: str) -> str:
    """Remove a URL's password and mask query parameters that look like credentials."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = urlencode(
        [(k, MASK if _SECRET_NAME.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str) -> str:
    """Mask credentials in every URL inside a free text (e.g. an error message)."""
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group()), text)
    return _SECRET_PARAM.sub(lambda match: match.group(1) + MASK, text)


class MaskCredentials(logging.Filter):
    """A handler filter that masks credentials in URLs of every message it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_secrets(values: Any, key: str = "") -> Any:
    """Recursively mask values whose key names a secret and credentials inside URLs."""
    if isinstance(values, Mapping):
        return {k: mask_secrets(v, str(k)) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [mask_secrets(v, key) for v in values]
    if values is not None and key and _SECRET_NAME.search(key) and not key.endswith("_id"):
        return MASK
    if isinstance(values, str) and "://" in values:
        return mask_text(values)
    return values


def run_stage(
    settings: BaseSettings,
    function: Callable[[BaseSettings], T],
    log_run: bool = True,
) -> T:
    """Call ``function(settings)`` and append the run's record to the workspace's run log."""
    workspace = Workspace(settings.work)
    record: dict[str, Any] = {
        "glacimap_version": __version__,
        "command": settings.command,
        "settings": mask_secrets(settings.public_dict()),
        "start": utc_now(),
    }
    started = time.perf_counter()
    status, exit_code, message = "failed", 1, None
    try:
        result = function(settings)
        status, exit_code = "ok", EXIT_OK
        return result
    except GlacimapError as exc:
        exit_code = exc.exit_code
        status = {1: "failed", 2: "bad_input", 3: "partial"}.get(exit_code, "failed")
        message = str(exc)
        raise
    except KeyboardInterrupt:
        status, message = "interrupted", "interrupted by the user"
        raise
    finally:
        if log_run:
            record.update(
                end=utc_now(),
                seconds=round(time.perf_counter() - started, 3),
                status=status,
                exit_code=exit_code,
                error=mask_secrets(message, "error") if message else None,
            )
            try:
                workspace.log_run(record)
            except OSError as exc:  # the log must never hide the run's own outcome
                log.warning("could not append to %s: %s", workspace.runs_log, exc)
