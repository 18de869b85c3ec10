"""Copy the instrument corpus into data/ as mono FLAC at the original rate (lossless).

  python data/prepare.py /path/to/shared/data

Keeps the source layout and file names (`iowa_mis/violin/...`, `vsco2/<instrument>/...`,
`fluidr3_gm/...`), only the suffix becomes .flac. Mono 16-bit files are stored as they are;
stereo 16-bit files as the exact mean of their channels, (L + R) / 2, which needs 17 bits and
is stored as 24-bit FLAC (what `tnca_jax.audio.load_audio` computes from the stereo WAV, bit
for bit). Provenance and licences: data/NOTICE.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

SOURCES = ("iowa_mis", "vsco2", "fluidr3_gm")
DATA = Path(__file__).resolve().parent


def mono_flac(source: Path, destination: Path) -> None:
    """One WAV -> mono FLAC, losslessly (see the module docstring)."""
    info = sf.info(str(source))
    if info.subtype != "PCM_16":
        raise ValueError(f"{source}: expected 16-bit PCM, found {info.subtype}")
    samples, rate = sf.read(str(source), dtype="int16", always_2d=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if samples.shape[1] == 1:
        sf.write(str(destination), samples[:, 0], rate, subtype="PCM_16", format="FLAC")
        return
    if samples.shape[1] != 2:
        raise ValueError(f"{source}: expected mono or stereo, found {samples.shape[1]} channels")
    # int32 full scale is 2^31 (int16's 2^15): (L + R) / 2 * 2^16 = (L + R) * 2^15, whose low
    # 8 bits are zero, so 24-bit FLAC holds it exactly.
    mean = samples.sum(axis=1, dtype=np.int32) << 15
    sf.write(str(destination), mean, rate, subtype="PCM_24", format="FLAC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the shared corpus (holds iowa_mis/, ...)")
    args = parser.parse_args()
    count = 0
    for name in SOURCES:
        for wav in sorted((args.source / name).rglob("*.wav")):
            target = DATA / wav.relative_to(args.source).with_suffix(".flac")
            mono_flac(wav, target)
            count += 1
    print(f"wrote {count} FLAC files under {DATA}")


if __name__ == "__main__":
    main()
