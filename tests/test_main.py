"""main.py as a user runs it: a 3-step training smoke run, and bad input."""

import json
import subprocess
import sys

from tests.conftest import ROOT

QUICK_3_STEPS = ["--config.train.iterations=3", "--config.train.log_every=1",
                 "--config.train.min_growth_steps=4",
                 "--config.train.max_growth_steps=6", "--config.data.max_seconds=0.6",
                 "--config.generate.growth_steps=8", "--config.train.pool_size=4"]


def run_main(*args):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_three_step_training_run_of_main(tmp_path):
    workdir = tmp_path / "violin"
    result = run_main("--config=configs/violin.py:quick", f"--workdir={workdir}",
                      *QUICK_3_STEPS)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)  # stdout holds the JSON summary alone
    mel_l1 = summary["summary"]["seen"]["mel_l1_db"]["mean"]
    assert mel_l1 > 0 and summary["job"] == "note"
    # stderr: one line per stage with its time, warnings, the timings, the headline figures.
    stages = [line.split()[0].strip("[") for line in result.stderr.splitlines()
              if line.startswith("[")]
    assert stages == ["load", "train", "render", "measure", "report"]
    lines = result.stderr.splitlines()
    assert any(line.startswith("stages: load ") for line in lines)
    done = lines[-1]
    assert done.startswith("done in ") and done.endswith(f"open {workdir / 'report.html'}")
    assert f"mel L1 {mel_l1:.2f} dB" in done
    # Three iterations learn no time structure: the run says so.
    assert any(line.startswith("warning: the generated note is no better than the static "
                               "baseline") for line in lines), result.stderr
    for name in ("target.wav", "generated.wav", "metrics.json", "comparison.png", "growth.png"):
        assert (workdir / name).exists()
    lines = (workdir / "train_metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    # Re-running a command resumes: tests/test_faults.py (after kill -9, bit for bit).


def test_missing_audio_is_one_line_and_exit_2(tmp_path):
    result = run_main("--config=configs/violin.py:quick", f"--workdir={tmp_path / 'w'}",
                      f"--config.data.audio_path={tmp_path / 'nope.wav'}")
    assert result.returncode == 2
    missing = tmp_path / "nope.wav"
    assert result.stderr.strip().splitlines() == [f"error: audio file not found: {missing}"]
    assert not (tmp_path / "w").exists()


def test_silent_audio_is_refused(tmp_path):
    import numpy as np
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(22050, np.float32), 22050)
    result = run_main("--config=configs/violin.py:quick", f"--workdir={tmp_path / 'w'}",
                      f"--config.data.audio_path={silent}")
    assert result.returncode == 2 and "is silent" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_is_fast_useful_and_exits_0():
    import time

    from tnca_jax import cli
    from tnca_jax.modes import MODES

    assert set(cli.MODE_NAMES) == set(MODES)  # every mode of the TNCA jobs is a choice
    start = time.perf_counter()
    result = run_main("--help")
    assert result.returncode == 0 and time.perf_counter() - start < 10
    for text in ("--config.train.iterations", "configs/violin.py:quick", *MODES):
        assert text in result.stdout
