"""The errors a user can act on.

Every exception the command line reports as one `error:` line (exit status 2) derives from
`UserError`; anything else is a bug and keeps its traceback. Each also derives from the built-in
type callers would expect (ValueError, FileNotFoundError, ...), so library users can catch
either.
"""

from __future__ import annotations

import os
import sys


class UserError(Exception):
    """A failure caused by the input (files, config, workdir, environment), with a message that
    names what happened and what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency (an extra of the package) is not installed; says how to get it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named (recording, workdir, checkpoint, weights) is not
    there."""


class VocoderError(UserError, ValueError):
    """Vocoder weights or their config that cannot be used (corrupt, mismatched, wrong format)."""


def warn(message: str) -> None:
    """A notice the user should see that does not stop the run: one line on stderr (on a line
    of its own above a progress bar, which is drawn again below it)."""
    from tqdm.auto import tqdm

    tqdm.write(" ".join(message.split()), file=sys.stderr)


class WorkdirWriteError(UserError, OSError):
    """Writing into the workdir failed; what was there before stays intact."""


class WorkdirError(UserError, ValueError):
    """The workdir holds something that cannot be used (damaged run.json, another run)."""


class CheckpointError(WorkdirError):
    """A checkpoint that cannot be read: damaged, or written by an incompatible version."""

    def __init__(self, step: int, directory: os.PathLike, why: str):
        super().__init__(f"checkpoint {step} in {directory} cannot be read ({why})")
        self.step, self.why = step, why


class WorkdirInUseError(WorkdirError):
    """Another live process holds the workdir's lock."""
