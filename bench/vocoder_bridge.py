"""BigVGAN through the JAX<->torch bridge vs the same torch model called directly, in one run.

  python -m bench.vocoder_bridge                              # CPU: 0.25 s of audio, 3 repeats
  python -m bench.vocoder_bridge --seconds 10 --repeats 20    # GPU

Full-size BigVGAN v2 (1536 channels; random weights, weight norm removed, no CUDA kernel) on
the device JAX uses. "direct" calls the torch model under inference_mode on a tensor already on
that device; "bridge" calls the vocoder on the JAX array that tensor aliases (input checks,
DLPack both ways). Calls alternate, after one warm-up each. Prints JSON lines: each with
seconds per second of audio (median over repeats) and every timing, then "overhead"
(bridge / direct - 1 of the medians) and the DLPack round trip alone in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and torch share a GPU.

import jax

from tnca_jax.contract import PRESETS
from vocoders import bigvgan
from vocoders.torch_bridge import import_torch, to_jax, to_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="bigvgan_v2_22khz_80band",
                        choices=[name for name in PRESETS if name.startswith("bigvgan_")])
    parser.add_argument("--channels", type=int, default=1536,
                        help="upsample_initial_channel (1536: the released v2 size)")
    parser.add_argument("--seconds", type=float, default=0.25, help="audio per call")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch = import_torch()
    contract = PRESETS[args.preset]
    vocoder = bigvgan.from_config(bigvgan.v2_config(contract,
                                                    upsample_initial_channel=args.channels),
                                  name=args.preset)
    frames = max(1, round(args.seconds * contract.sample_rate / contract.hop_length))
    log_mel = jax.random.uniform(jax.random.key(0), (args.batch, contract.n_mels, frames),
                                 minval=contract.log_min, maxval=0.0)
    tensor = to_torch(log_mel)
    cuda = tensor.is_cuda

    def sync(out) -> None:
        if isinstance(out, jax.Array):
            out.block_until_ready()
        if cuda:
            torch.cuda.synchronize()

    def direct():
        with torch.inference_mode():
            return vocoder.generator(tensor)[:, 0]

    calls = {"direct": direct, "bridge": lambda: vocoder(log_mel)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        sync(call())  # warm-up (and moves the model to the device)
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            sync(call())
            times[name].append(time.perf_counter() - start)

    audio_seconds = args.batch * contract.num_samples(frames) / contract.sample_rate
    size = {"preset": args.preset, "channels": args.channels, "audio_seconds": audio_seconds,
            "frames": frames, "batch": args.batch,
            "params": sum(p.numel() for p in vocoder.generator.parameters()),
            "device": str(next(iter(log_mel.devices()))), "torch_device": str(tensor.device),
            "torch_threads": torch.get_num_threads()}
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(json.dumps({"impl": name, "s_per_audio_s": medians[name] / audio_seconds,
                          "times_s": [round(t, 4) for t in values], **size}), flush=True)

    output = direct()
    start = time.perf_counter()
    for _ in range(100):
        sync(to_jax(output, log_mel))
        to_torch(log_mel)
    crossing_us = (time.perf_counter() - start) / 100 * 1e6
    print(json.dumps({"impl": "overhead", "bridge_over_direct": medians["bridge"]
                      / medians["direct"] - 1, "dlpack_round_trip_us": crossing_us,
                      "device": size["device"]}), flush=True)


if __name__ == "__main__":
    main()
