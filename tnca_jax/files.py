"""Writing files so that a failed or killed write loses nothing, and naming why a write failed."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` only once complete, so
    a failed or killed write leaves `path` as it was."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def reason(err: BaseException) -> str:
    """The OS's words for a failed write: `strerror`, or the `os_error_code` that orbax's
    tensorstore writer puts in its (ValueError) message; else the message itself."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    code = re.search(r"os_error_code='?(\d+)", str(err))
    return os.strerror(int(code[1])) if code else " ".join(str(err).split())
