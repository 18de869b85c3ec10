"""HiFi-GAN (Kong et al. 2020) as a vocoder: the generator in torch, reading the original
checkpoints of jik876/hifi-gan.

`path` is a directory holding `config.json` and one generator checkpoint (a file named
`generator*` or `g_<step>`, holding {"generator": state_dict}), or that checkpoint itself with
`config.json` beside it: the released LJ_V1 (`generator_v1` + `config.json`, V1 below) is the
speech baseline, a vocoder trained on one speaker's voice. The contract comes from the config;
for V1 it is the preset `hifigan_v1_22khz` (22050 Hz, 80 bands, fmax 8000, natural log).

speechbrain's LJSpeech HiFi-GAN (`speechbrain/tts-hifigan-ljspeech`) has the same generator
sizes and log-mel, but frames it with torchaudio's `center=True` (L // hop + 1 frames, contract
padding "center", without the 1e-9 inside the magnitude) and pads 5 frames on each side at
inference; its checkpoints use speechbrain's module names and are not read here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from tnca_jax.errors import MissingFileError, VocoderError
from vocoders.base import contract_from_config, read_config
from vocoders.torch_bridge import TorchVocoder, import_torch, load_generator_state

torch = import_torch()
nn = torch.nn
F = torch.nn.functional

CONFIG_FILE = "config.json"
LRELU_SLOPE = 0.1
# jik876's config_v1.json: the generator and its log-mel.
V1 = {
    "resblock": "1",
    "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 512,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "num_mels": 80, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
    "sampling_rate": 22050, "fmin": 0, "fmax": 8000,
}
# Weight norm as saved by torch.nn.utils.weight_norm, and by its parametrization.
WEIGHT_NORM_SUFFIXES = ((".weight_g", ".weight_v"),
                        (".parametrizations.weight.original0",
                         ".parametrizations.weight.original1"))


def _padding(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) // 2


class ResBlock(nn.Module):
    """Residual stacks of leaky-ReLU + dilated convolution at one width: [B, C, T] -> same.

    Type "1" follows each dilated convolution with an undilated one (`convs1`, `convs2`);
    type "2" has the dilated ones only (`convs`).
    """

    def __init__(self, channels: int, kernel: int, dilations: list[int], kind: str):
        super().__init__()
        dilated = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d,
                                          padding=_padding(kernel, d)) for d in dilations)
        if kind == "1":
            self.convs1 = dilated
            self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel,
                                                  padding=_padding(kernel)) for _ in dilations)
            self.stacks = list(zip(self.convs1, self.convs2, strict=True))
        else:
            self.convs = dilated
            self.stacks = [(conv,) for conv in self.convs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stack in self.stacks:
            residual = x
            for conv in stack:
                residual = conv(F.leaky_relu(residual, LRELU_SLOPE))
            x = x + residual
        return x


class Generator(nn.Module):
    """HiFi-GAN generator (weight norm folded): log-mel [B, num_mels, T] -> audio
    [B, 1, T * prod(upsample_rates)] in [-1, 1]. Parameter names follow jik876's."""

    def __init__(self, config: Mapping):
        super().__init__()
        if config["resblock"] not in ("1", "2"):
            raise VocoderError(f"HiFi-GAN resblock must be '1' or '2', got {config['resblock']!r}")
        channels = config["upsample_initial_channel"]
        self.num_kernels = len(config["resblock_kernel_sizes"])
        self.conv_pre = nn.Conv1d(config["num_mels"], channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(config["upsample_rates"], config["upsample_kernel_sizes"],
                                strict=True):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate,
                                               padding=(kernel - rate) // 2))
            channels //= 2
            self.resblocks.extend(
                ResBlock(channels, k, d, config["resblock"])
                for k, d in zip(config["resblock_kernel_sizes"],
                                config["resblock_dilation_sizes"], strict=True))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # Default slope here, as jik876.


def fold_weight_norm(state_dict: Mapping) -> dict:
    """Weight-normed parameters (g, v) replaced by their weight g * v / ||v||, the norm taken
    over all dimensions but the first (weight_norm's default dim=0)."""
    folded = dict(state_dict)
    for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
        for key in [key for key in state_dict if key.endswith(g_suffix)]:
            prefix = key[: -len(g_suffix)]
            if prefix + v_suffix in folded:
                g, v = folded.pop(key), folded.pop(prefix + v_suffix)
                norm = v.norm(dim=tuple(range(1, v.ndim)), keepdim=True)
                folded[prefix + ".weight"] = g * v / norm
    return folded


def _checkpoint(path: Path) -> Path:
    """The generator checkpoint that `path` names: the file itself, or the one in a directory."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise MissingFileError(f"no HiFi-GAN checkpoint or directory {path}")
    found = sorted(p for p in path.iterdir()
                   if p.is_file() and (p.name.startswith("generator")
                                       or re.fullmatch(r"g_\d+", p.name)))
    if not found:
        raise MissingFileError(f"HiFi-GAN directory {path} has no generator checkpoint (a file "
                                f"named generator* or g_<step>, beside {CONFIG_FILE})")
    if len(found) > 1:
        raise VocoderError(f"HiFi-GAN directory {path} holds {len(found)} generator checkpoints "
                         f"({', '.join(p.name for p in found)}); pass the one to use")
    return found[0]


def load(path: str) -> TorchVocoder:
    """HiFi-GAN from a jik876 checkpoint or its directory; the contract is named after the
    directory (e.g. "LJ_V1")."""
    checkpoint = _checkpoint(Path(path).expanduser())
    config_file = checkpoint.parent / CONFIG_FILE
    if not config_file.is_file():
        raise MissingFileError(f"HiFi-GAN checkpoint {checkpoint} has no {CONFIG_FILE} beside it")
    config = read_config(config_file)
    missing = [key for key in V1 if key not in config]
    if missing:
        raise VocoderError(f"{config_file} lacks {', '.join(missing)}: not a HiFi-GAN config")
    name = checkpoint.parent.resolve().name
    contract = contract_from_config(config, name, f"HiFi-GAN config {config_file}")
    generator = Generator(config)
    try:
        generator.load_state_dict(fold_weight_norm(load_generator_state(checkpoint)))
    except RuntimeError as err:
        raise VocoderError(f"HiFi-GAN {checkpoint}: the weights do not fit {config_file} ({err})"
                         ) from None
    return TorchVocoder("hifigan", generator, contract)
