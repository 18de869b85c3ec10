"""Build the corpus in data/ from its sources (provenance and licences: data/NOTICE.md).

  python data/prepare.py shared /path/to/shared/data      # iowa_mis/, vsco2/, fluidr3_gm/
  python data/prepare.py tonejs /path/to/unpacked/npm/packages   # tonejs/<instrument>/
  python data/prepare.py render                           # musescore/clarinet/ (fluidsynth)

`shared` keeps the source layout and file names (`iowa_mis/violin/...`, `vsco2/<instrument>/
...`, `fluidr3_gm/...`), only the suffix becomes .flac: mono 16-bit files as they are, stereo
16-bit files as the exact mean of their channels, (L + R) / 2, which needs 17 bits and is
stored as 24-bit FLAC (what `tnca_jax.audio.load_audio` computes from the stereo WAV, bit for
bit). `tonejs` takes the unpacked npm packages tonejs-instrument-{cello,contrabass,saxophone}-wav
1.1.0 (`npm pack`, then `tar xzf`; a folder per package holding `package/*.wav`) and stores each
note at 22050 Hz (the rate every model here uses), its first `KEEP_SECONDS` with a 100 ms
fade-out (the models read at most 4 s of a note). `render` renders every semitone of the
clarinet's range at two velocities from the MuseScore General soundfont (Debian
musescore-general-soundfont; `apt-get install fluidsynth musescore-general-soundfont`).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SOURCES = ("iowa_mis", "vsco2", "fluidr3_gm")
TONEJS = ("cello", "contrabass", "saxophone")
DATA = Path(__file__).resolve().parent
RATE = 22050
KEEP_SECONDS = 5.0
FADE_SECONDS = 0.1
SOUNDFONT = Path("/usr/share/sounds/sf3/MuseScore_General.sf3")
# (instrument, General MIDI program, lowest and highest MIDI note rendered)
RENDERS = (("clarinet", 71, 50, 91),)
VELOCITIES = (64, 112)
NOTE_SECONDS = 2.0  # held, then released: the renders hold the release too


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


def shortened_flac(audio: np.ndarray, rate: int, destination: Path) -> None:
    """Mono audio -> 22050 Hz, its first KEEP_SECONDS faded out over FADE_SECONDS, 16-bit
    FLAC."""
    import librosa

    audio = librosa.resample(np.asarray(audio, np.float32), orig_sr=rate, target_sr=RATE)
    keep = min(len(audio), round(KEEP_SECONDS * RATE))
    audio = audio[:keep].copy()
    fade = min(keep, round(FADE_SECONDS * RATE))
    audio[keep - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    destination.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(destination), np.clip(audio, -1, 1), RATE, subtype="PCM_16", format="FLAC")


def from_shared(source: Path) -> int:
    count = 0
    for name in SOURCES:
        for wav in sorted((source / name).rglob("*.wav")):
            mono_flac(wav, DATA / wav.relative_to(source).with_suffix(".flac"))
            count += 1
    return count


def from_tonejs(packages: Path) -> int:
    count = 0
    for instrument in TONEJS:
        folder = packages / f"tonejs-instrument-{instrument}-wav-1.1.0" / "package"
        for wav in sorted(folder.glob("*.wav")):
            if " " in wav.stem:  # a second take ("F2 v2"): one take per note
                continue
            audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
            shortened_flac(audio.mean(axis=1), rate, DATA / "tonejs" / instrument
                           / f"{wav.stem}.flac")
            count += 1
    return count


def midi_file(path: Path, program: int, note: int, velocity: int) -> None:
    """A one-note MIDI file: `note` held NOTE_SECONDS at `velocity`, then released."""
    import mido

    track = mido.MidiTrack([mido.Message("program_change", program=program, time=0),
                            mido.Message("note_on", note=note, velocity=velocity, time=0),
                            mido.Message("note_off", note=note, velocity=0,
                                         time=round(NOTE_SECONDS * 960))])
    file = mido.MidiFile(ticks_per_beat=480, tracks=[track])  # 120 bpm: 960 ticks a second
    file.save(str(path))


def render() -> int:
    count = 0
    with tempfile.TemporaryDirectory() as scratch:
        for instrument, program, low, high in RENDERS:
            for note in range(low, high + 1):
                for velocity in VELOCITIES:
                    midi, wav = Path(scratch) / "note.mid", Path(scratch) / "note.wav"
                    midi_file(midi, program, note, velocity)
                    subprocess.run(["fluidsynth", "-niq", "-R", "0", "-C", "0", "-g", "0.6",
                                    "-T", "wav", "-r", str(RATE), "-F", str(wav),
                                    str(SOUNDFONT), str(midi)], check=True)
                    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
                    shortened_flac(audio.mean(axis=1), rate, DATA / "musescore" / instrument
                                   / f"{instrument}_m{note}_v{velocity}.flac")
                    count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("shared", "tonejs", "render"))
    parser.add_argument("source", type=Path, nargs="?", help="the shared corpus, or the "
                        "folder holding the unpacked tonejs packages")
    args = parser.parse_args()
    if args.what != "render" and args.source is None:
        parser.error(f"{args.what} needs the source folder")
    count = {"shared": from_shared, "tonejs": from_tonejs,
             "render": lambda _: render()}[args.what](args.source)
    print(f"wrote {count} FLAC files under {DATA}")


if __name__ == "__main__":
    main()
