"""The errors a user can act on.

Every exception the command line reports as one `error:` line (exit status 2) derives from
`UserError`; anything else is a bug and keeps its traceback. Each also derives from the built-in
type callers would expect (ValueError, FileNotFoundError, ...), so library users can catch
either.
"""

from __future__ import annotations

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
    """A notice the user should see that does not stop the run: one line on stderr."""
    print(" ".join(message.split()), file=sys.stderr, flush=True)
