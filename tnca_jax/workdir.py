"""Writing into a workdir safely: a writability probe up front, whole-file replacement, and one
error for every failed write (disk full, read-only, permissions)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


class WorkdirWriteError(OSError):
    """Writing into the workdir failed; what was there before stays intact."""


def prepare_workdir(workdir: Path) -> None:
    """Create `workdir` and prove it writable with a probe file that is removed again."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir) as probe:
            probe.write(b"\0")
            probe.flush()
    except FileExistsError:
        raise WorkdirWriteError(f"workdir {workdir} is a file, not a directory; choose another "
                                "--workdir") from None
    except OSError as err:
        raise WorkdirWriteError(f"cannot write to workdir {workdir} ({reason(err)}); choose a "
                                "writable --workdir") from None


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
