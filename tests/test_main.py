"""main.py as a user runs it: a 3-step training smoke run, and bad input."""

import json
import subprocess
import sys

from tests.conftest import ROOT

QUICK_3_STEPS = ["--config.train.iterations=3", "--config.train.log_every=1",
                 "--config.train.min_steps=4",
                 "--config.train.max_steps=6", "--config.max_seconds=0.6",
                 "--config.generate.steps=8", "--config.train.pool_size=4"]


def run_main(*args):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_three_step_training_run_of_main(tmp_path):
    workdir = tmp_path / "violin"
    result = run_main("--config=configs/violin.py:quick", f"--workdir={workdir}",
                      *QUICK_3_STEPS)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["generated"]["mel_l1_db"] > 0
    for name in ("target.wav", "generated.wav", "metrics.json", "comparison.png", "growth.png"):
        assert (workdir / name).exists()
    lines = (workdir / "train_metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    # Re-running the same command resumes: nothing is trained again.
    again = run_main("--config=configs/violin.py:quick", f"--workdir={workdir}", *QUICK_3_STEPS)
    assert again.returncode == 0 and "Resuming from checkpoint at step 3" in again.stderr
    assert len((workdir / "train_metrics.jsonl").read_text().splitlines()) == 3


def test_missing_audio_is_one_line_and_exit_2(tmp_path):
    result = run_main("--config=configs/violin.py:quick", f"--workdir={tmp_path / 'w'}",
                      f"--config.audio_path={tmp_path / 'nope.wav'}")
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
                      f"--config.audio_path={silent}")
    assert result.returncode == 2 and "is silent" in result.stderr
    assert "Traceback" not in result.stderr
