"""Silencing C-level output of libraries that offer no switch for it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the duration of the block.

    richdem's C++ core draws a progress bar on stderr with no way to turn it off, and library
    code must not write to the user's terminal. Not thread-safe: other threads' stderr output
    during the block is lost too.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a descriptor
        fd = 2
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)
