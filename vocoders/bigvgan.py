"""BigVGAN (NVIDIA, the `bigvgan` package of the `vocoders` extra) as a vocoder.

`path` is a Hugging Face id (e.g. "nvidia/bigvgan_v2_24khz_100band_256x", fetched once into the
hub cache) or a local directory holding `config.json` and `bigvgan_generator.pt`
({"generator": state_dict}). The contract comes from the config. The files are fetched with
`hf_hub_download` and loaded here: `BigVGAN.from_pretrained` passes arguments that
huggingface_hub >= 1.0 removed, and a hub snapshot would also fetch the discriminator.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from tnca_jax.contract import MelContract
from tnca_jax.errors import MissingExtraError, MissingFileError, VocoderError
from vocoders.base import contract_from_config, read_config
from vocoders.torch_bridge import INSTALL_HINT, TorchVocoder, import_torch, load_generator_state

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "bigvgan_generator.pt"

# The generator of the released v2 checkpoints (configs of nvidia/bigvgan_v2_*_256x).
V2_GENERATOR = {
    "resblock": "1",
    "upsample_rates": [4, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "activation": "snakebeta",
    "snake_logscale": True,
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
}
# The 512x model (44 kHz, hop 512) upsamples 8x first.
V2_512X_UPSAMPLING = {"upsample_rates": [8, 4, 2, 2, 2, 2],
                      "upsample_kernel_sizes": [16, 8, 4, 4, 4, 4]}


def v2_config(contract: MelContract, **generator) -> dict:
    """A BigVGAN v2 config.json for a BigVGAN contract (a preset), with generator values
    overridden by `generator` (e.g. upsample_initial_channel=64 for a tiny test model)."""
    upsampling = V2_512X_UPSAMPLING if contract.hop_length == 512 else {}
    return {**V2_GENERATOR, **upsampling, **generator,
            "sampling_rate": contract.sample_rate, "n_fft": contract.n_fft,
            "hop_size": contract.hop_length, "win_size": contract.win_length,
            "num_mels": contract.n_mels, "fmin": contract.fmin, "fmax": contract.fmax}


def _import_bigvgan():
    try:
        from bigvgan.bigvgan import BigVGAN
        from bigvgan.env import AttrDict
    except ImportError as err:
        raise MissingExtraError(f"the bigvgan vocoder needs the bigvgan package: "
                                f"{INSTALL_HINT}") from err
    return BigVGAN, AttrDict


def _fetch(path: str) -> tuple[Path, str]:
    """(a local directory holding both files, the model's name): `path` itself, or the hub's
    copy of id `path`."""
    local = Path(path).expanduser()
    if local.is_dir():
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (local / name).is_file():
                raise MissingFileError(f"BigVGAN directory {local} has no {name} (it needs "
                                        f"{CONFIG_FILE} and {WEIGHTS_FILE})")
        return local, local.resolve().name
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise MissingFileError(f"no BigVGAN directory {path} (a directory with {CONFIG_FILE} "
                                f"and {WEIGHTS_FILE}, or a hub id like "
                                "nvidia/bigvgan_v2_24khz_100band_256x)")
    from huggingface_hub import hf_hub_download

    try:
        files = [hf_hub_download(repo_id=path, filename=name)
                 for name in (CONFIG_FILE, WEIGHTS_FILE)]
    except Exception as err:  # Offline, unknown id, network: all mean "not available".
        raise MissingFileError(f"no local directory {path}, and the Hugging Face hub could "
                                f"not provide it ({type(err).__name__}: {err})") from None
    return Path(files[0]).parent, path.split("/")[1]


def _build(config: dict, use_cuda_kernel: bool):
    """BigVGAN from its config; with `use_cuda_kernel`, its fused CUDA activation if a GPU is
    present and the kernel builds, else the torch activation with a warning."""
    BigVGAN, AttrDict = _import_bigvgan()
    if use_cuda_kernel and not import_torch().cuda.is_available():
        warnings.warn("BigVGAN: use_cuda_kernel needs a CUDA device; using the torch activation",
                      stacklevel=3)
        use_cuda_kernel = False
    with warnings.catch_warnings():  # BigVGAN's use of the deprecated weight_norm: not ours.
        warnings.filterwarnings("ignore", message=r".*torch\.nn\.utils\.weight_norm",
                                category=FutureWarning)
        if use_cuda_kernel:
            try:
                return BigVGAN(AttrDict(config), use_cuda_kernel=True)
            except Exception as err:  # The JIT build's failures are of many kinds.
                warnings.warn(f"BigVGAN: the CUDA kernel did not build ({type(err).__name__}: "
                              f"{err}); using the torch activation (its build flags include "
                              "sm_70, which CUDA 13's nvcc rejects)", stacklevel=3)
        return BigVGAN(AttrDict(config), use_cuda_kernel=False)


def from_config(config: dict, *, name: str, state_dict: dict | None = None,
                use_cuda_kernel: bool = False) -> TorchVocoder:
    """A BigVGAN vocoder from a config.json dict and a generator state dict (None: random
    weights, for tests and benchmarks), weight norm removed for inference."""
    contract = contract_from_config(config, name, f"BigVGAN config {name!r}")
    model = _build(config, use_cuda_kernel)
    with contextlib.redirect_stdout(io.StringIO()):  # BigVGAN prints as it removes norms.
        if state_dict is None:
            model.remove_weight_norm()
        else:
            try:
                model.load_state_dict(state_dict)
                model.remove_weight_norm()
            except RuntimeError:  # A checkpoint saved without weight norm.
                model.remove_weight_norm()
                try:
                    model.load_state_dict(state_dict)
                except RuntimeError as err:
                    raise VocoderError(f"BigVGAN {name!r}: the weights do not fit its config "
                                     f"({err})") from None
    return TorchVocoder("bigvgan", model, contract)


def load(path: str, *, use_cuda_kernel: bool = False) -> TorchVocoder:
    """BigVGAN from a hub id or a local directory; its contract is named after the id or the
    directory (e.g. "bigvgan_v2_24khz_100band_256x")."""
    _import_bigvgan()  # A missing extra fails before anything is fetched.
    directory, name = _fetch(str(path))
    config = read_config(directory / CONFIG_FILE)
    return from_config(config, name=name, state_dict=load_generator_state(directory / WEIGHTS_FILE),
                       use_cuda_kernel=use_cuda_kernel)
