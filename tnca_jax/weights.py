"""A model's weights as one safetensors file: its arrays (float32, named by their path in the
module: "blocks.0.expand.kernel") and JSON metadata (what the model is: contract, sizes,
labels). Written whole, then renamed into place; a file with a non-finite value is never
written, and one read back is refused (`WeightsError`, one line naming the file): the music
vocoder's weights (`vocoders.music`) and the shipped instruments model
(`tnca_jax.pretrained`) both live in such files.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnca_jax.errors import MissingFileError, VocoderError
from tnca_jax.files import replacing

# A weights file that is unreadable, corrupt, of another kind or another model: one line.
WeightsError = VocoderError


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"blocks": {0: {"expand": {"kernel": x}}}} -> {"blocks.0.expand.kernel": x}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save(state: nnx.State, path: str | os.PathLike, metadata: dict[str, str], *,
         what: str) -> None:
    """Write `state`'s arrays with `metadata` to `path` (`what` names the model in errors)."""
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {name: np.ascontiguousarray(value, np.float32)
               for name, value in _flatten(nnx.to_pure_dict(state)).items()}
    bad = sorted(name for name, value in tensors.items() if not np.all(np.isfinite(value)))
    if bad:
        raise WeightsError(f"{what}'s {bad[0]} holds NaN or Inf: not written to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        tmp.chmod(0o644)  # readable as any other file (the writer makes it private)


def read(path: str | os.PathLike, kind: str, *, what: str, missing_hint: str
         ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a weights file whose metadata "format" is `kind` (`what`: the
    model, in words). MissingFileError (with `missing_hint`) when it is not there;
    WeightsError when it cannot be read or is of another kind."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} weights not found: {path} ({missing_hint})")
    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types and OSError.
        raise WeightsError(f"cannot read {what} weights {path}: not a valid safetensors file "
                           f"({' '.join(str(err).split())})") from None
    if metadata.get("format") != kind:
        raise WeightsError(f"{path} is not a {what} weights file (format "
                           f"{metadata.get('format')!r}, expected {kind!r})")
    return tensors, metadata


def fill(state: nnx.State, tensors: dict[str, np.ndarray], path: str | os.PathLike,
         what: str) -> None:
    """Put the file's arrays into `state` (in place); WeightsError when they are not exactly
    the state's (names and shapes) or hold NaN or Inf."""
    like = _flatten(nnx.to_pure_dict(state))
    expected = {name: tuple(np.shape(value)) for name, value in like.items()}
    found = {name: tuple(value.shape) for name, value in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        shapes = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
        raise WeightsError(f"{path} does not match its {what}: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}, wrong shape {shapes[:3]}")
    bad = sorted(name for name, value in tensors.items() if not np.all(np.isfinite(value)))
    if bad:
        raise WeightsError(f"{path} is damaged: {bad[0]} holds NaN or Inf")

    def filled(tree, prefix: str):
        return {key: filled(value, f"{prefix}{key}.") if isinstance(value, dict)
                else jnp.asarray(tensors[f"{prefix}{key}"], jnp.float32)
                for key, value in tree.items()}

    nnx.replace_by_pure_dict(state, filled(nnx.to_pure_dict(state), ""))
