"""Every bench script runs end to end at a tiny size and prints the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT


def run_bench(module: str, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_throughput_compares_tnca_jax_with_the_torch_reference():
    pytest.importorskip("torch")
    rows = run_bench("throughput", "--bands", "16", "--frames", "16", "--batch", "2",
                     "--steps", "4", "--iterations", "1", "--rounds", "3", "--no-compile")
    by_impl = {row["impl"]: row for row in rows}
    assert set(by_impl) == {"tnca_jax", "torch_eager", "ratio", "generate_4s"}
    for impl in ("tnca_jax", "torch_eager"):
        row = by_impl[impl]
        assert len(row["round_seconds"]) == 3
        assert row["seconds_per_iteration"] == pytest.approx(np.median(row["round_seconds"]),
                                                             rel=1e-3)
        assert row["cell_updates_per_s"] == pytest.approx(2 * 4 * 16 * 16
                                                          / row["seconds_per_iteration"], rel=1e-9)
        # Measured in a process of its own (the runtime and libraries included).
        assert row["memory"] == "own_process_peak_rss" and row["peak_memory_bytes"] > 50e6
    ratio = by_impl["ratio"]
    assert ratio["of"] == "tnca_jax/torch_eager"  # no faster_torch without torch.compile
    rounds = (np.array(by_impl["torch_eager"]["round_seconds"])
              / np.array(by_impl["tnca_jax"]["round_seconds"]))
    np.testing.assert_allclose(ratio["rounds"], rounds, rtol=1e-9)
    assert ratio["ratio"] == pytest.approx(np.median(ratio["rounds"]))
    assert by_impl["generate_4s"]["frames"] == 172 and by_impl["generate_4s"]["seconds"] > 0


def test_ratio_lines_count_the_faster_torch_of_each_round():
    from bench.throughput import ratio_lines

    lines = {line["of"]: line for line in ratio_lines(
        {"tnca_jax": [1.0, 2.0, 1.0], "torch_eager": [1.5, 3.0, 2.5],
         "torch_compile": [2.0, 2.6, 1.2]})}
    assert lines["tnca_jax/torch_eager"]["rounds"] == [1.5, 1.5, 2.5]
    assert lines["tnca_jax/torch_compile"]["ratio"] == pytest.approx(1.3)
    # Round by round: eager, compile, compile were the faster.
    assert lines["tnca_jax/faster_torch"]["rounds"] == [1.5, 1.3, 1.2]
    assert lines["tnca_jax/faster_torch"]["ratio"] == pytest.approx(1.3)


def test_refinement_scores_best_of_n_and_every_postprocessing(trained_workdir, tmp_path):
    results = tmp_path / "refinement.json"
    rows = run_bench("refinement", f"--workdir={trained_workdir}", "--groups=1", "--n=2",
                     f"--results={results}", "--metrics=mel_l1_db,mrstft,rms_ratio")
    summary = json.loads(results.read_text())
    assert set(summary["best_of"]) == {"mel_l1_db", "mrstft"}  # those it measured
    assert set(summary["postprocessing"]["none"]) == {"mel_l1_db", "mrstft", "rms_ratio"}
    assert {row["option"] for row in rows if "option" in row} == set(summary["postprocessing"])
    assert summary["n"] == 2 and len(summary["candidates"]["none"][0]) == 2
    best = summary["best_of"]["mel_l1_db"]
    assert best["kept"]["mel_l1_db"] <= best["mean"]["mel_l1_db"] <= max(
        row["mel_l1_db"] for row in summary["candidates"]["none"][0])


def test_representations_measures_each_row_beside_its_ceiling(tmp_path):
    rows = run_bench("representations", "--rows=mel,mag_if+audio", "--iterations=1",
                     "--max-seconds=0.3", f"--workdir={tmp_path}")
    by_row = {row["row"]: row for row in rows if "row" in row}
    assert set(by_row) == {"mel", "mag_if+audio"}
    assert by_row["mag_if+audio"]["ceiling"]["mrstft"] < 0.01  # exact inverse
    assert "true_magnitude_grown_phase" in by_row["mag_if+audio"]
    summary = rows[-1]
    assert summary["mrstft_ratio_mel_over_mag_if_audio"] == pytest.approx(
        by_row["mel"]["generated"]["mrstft"] / by_row["mag_if+audio"]["generated"]["mrstft"])
    assert (tmp_path / "representations.png").stat().st_size > 0


def test_vocoder_bridge_times_bigvgan_direct_and_through_the_bridge():
    pytest.importorskip("bigvgan")
    rows = {row["impl"]: row for row in run_bench(
        "vocoder_bridge", "--channels=64", "--seconds=0.05", "--repeats=1")}
    assert rows["direct"]["s_per_audio_s"] > 0 and rows["bridge"]["s_per_audio_s"] > 0
    assert rows["overhead"]["dlpack_round_trip_us"] > 0


def test_playable_measures_held_out_notes_beside_the_real_instrument_floor(
        instruments_workdir):
    rows = run_bench("playable", f"--model={instruments_workdir}")
    notes, summary = rows[:-1], rows[-1]
    assert [n["note"] for n in notes] == ["violin/Violin.arco.ff.sulA.A5.stereo.flac"]
    [note] = notes
    # The A5 was recorded on the D and E strings too, but the tiny corpus holds the A string
    # only: its floor is the nearest other note.
    assert note["floor_kind"] == "nearest other pitch" and note["floor_mel_l1_db"] > 0
    assert summary["held_out_mel_l1_db"]["ratio"] == pytest.approx(
        note["generated_mel_l1_db"] / note["floor_mel_l1_db"])
    assert not note["beyond_range"] and "beyond_range_notes" not in summary
    assert not note["rendered"] and summary["real_notes"] == summary[
        "instrument_violin_notes"] == 1 and "two_strings_notes" not in summary


def test_vocoder_bench_puts_every_vocoder_side_by_side(tmp_path):
    out, figure = tmp_path / "vocoder.jsonl", tmp_path / "partials.png"
    shipped = "vocoders/music_vocoder.safetensors"
    rows = run_bench("vocoder", "--max-notes=2", "--repeats=1", f"--out={out}",
                     f"--compare=again={shipped}", f"--figure={figure}",
                     "--griffinlim-iterations=2", "--refine-iterations=0")
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    notes = {(row["vocoder"], row["note"]): row for row in rows if row["kind"] == "note"}
    assert {vocoder for vocoder, _ in notes} == {"music", "griffinlim", "again", "griffinlim_2",
                                                 "music_r0"}
    assert len(notes) == 10
    [comparison] = [row for row in rows if row["kind"] == "comparison"]
    # Griffin-Lim stopped after 2 iterations is measured beside, not counted as a contender;
    # the shipped weights rendered without refinement are, and their audio's mel strays further
    # from the recording's than with the 64 refinement iterations stored in the file.
    assert set(comparison["beats_griffinlim_notes"]) == {"music", "music_r0", "again"}
    assert comparison["compared"] == {"again": shipped}
    assert (comparison["griffinlim_2"]["mrstft_auraloss"]
            > comparison["griffinlim"]["mrstft_auraloss"])
    assert comparison["music_r0"]["mel_l1_db"] > comparison["music"]["mel_l1_db"]
    # The count of notes where each learned vocoder wins on all three measures, from the notes.
    for name in ("music", "again"):
        wins = sum(all(notes[name, note][key] < notes["griffinlim", note][key]
                       for key in comparison["beats_griffinlim_on"])
                   for vocoder, note in notes if vocoder == name)
        assert comparison["beats_griffinlim_notes"][name] == wins
    # The same weights measured twice under two names give the same figures.
    assert comparison["music"]["mrstft_auraloss"] == comparison["again"]["mrstft_auraloss"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [row["path"] for row in rows if row["kind"] == "figure"] == [str(figure)]
    for vocoder in ("music", "griffinlim"):
        assert comparison[vocoder]["mrstft_auraloss"] == pytest.approx(
            sum(notes[vocoder, n]["mrstft_auraloss"] for v, n in notes if v == vocoder) / 2)
        assert comparison[vocoder]["x_real_time_4s"] > 0


def test_step_profile_labels_each_operation_by_pass_and_primitive(tmp_path):
    """A profiled gradient of a two-layer product: its matrix products are found on both
    passes, by the primitive the HLO metadata names, and their shares add up."""
    import jax
    import jax.numpy as jnp

    from bench.step_profile import CONTROL_FLOW, hlo_labels, profile_events, summarise

    def loss(weights, inputs):
        return jnp.sum(jnp.tanh(inputs @ weights[0]) @ weights[1])

    step = jax.jit(jax.grad(loss)).lower(
        (jnp.ones((64, 64)), jnp.ones((64, 8))), jnp.ones((4096, 64))).compile()
    weights, inputs = (jnp.full((64, 64), 0.01), jnp.full((64, 8), 0.01)), jnp.ones((4096, 64))
    jax.block_until_ready(step(weights, inputs))
    jax.profiler.start_trace(str(tmp_path))
    for _ in range(3):
        jax.block_until_ready(step(weights, inputs))
    jax.profiler.stop_trace()
    labels = hlo_labels(step.as_text())
    times, calls = profile_events(tmp_path)
    groups, largest, op_ms = summarise(times, labels, calls, 3)
    passes = {g["pass"] for g in groups if g["primitive"] == "dot_general"}
    assert passes == {"forward", "backward"}  # x @ w forward; two products backward
    assert all(g["calls_per_iteration"] >= 1 for g in groups)
    assert sum(g["share"] for g in groups) == pytest.approx(1.0, abs=1e-3)
    assert op_ms > 0 and largest[0]["ms_per_iteration"] >= largest[-1]["ms_per_iteration"]
    assert not any(row.get("opcode") in CONTROL_FLOW for row in largest)


STAND_IN = {  # a tree whose quick job is a counter: iteration k's loss is 1 / k
    "configs/instruments.py": "def get_config(arg):\n    return arg\n",
    "tnca_jax/__init__.py": "",
    "tnca_jax/modes.py": "def load_notes(settings, inverse):\n    return None\n\n\n"
                         "def new_inverse(settings):\n    return None\n",
    "tnca_jax/settings.py": "def read_tnca(config):\n    print('a library speaking')\n"
                            "    return config\n",
    "tnca_jax/tnca_training.py": (
        "class Program:\n    def init(self):\n        return None, 0, 0\n\n"
        "    def step(self, state, carry):\n"
        "        return state + 1, carry, {'loss': 1 / (state + 1)}\n"
        "\n\ndef plan_training(settings, notes, writer):\n    return Program()\n"),
}


def test_step_speed_workers_take_turns_and_train_on(tmp_path):
    """A worker of `bench.step_speed` compiles, warms up, then times each turn's iterations,
    the model training on from turn to turn (what else it prints is skipped); a tree whose
    package fails to import ends the bench with one error line naming it."""
    from bench.step_speed import WARMUP, Worker

    for name, text in STAND_IN.items():
        (tmp_path / "good" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "good" / name).write_text(text)
    with (tmp_path / "errors").open("w+") as errors:
        worker = Worker(tmp_path / "good", "instruments", errors)
        worker.ready()
        turns = [worker.turn(2), worker.turn(3)]
        worker.close()
    assert worker.process.returncode == 0
    assert [len(turn["seconds"]) for turn in turns] == [2, 3]
    assert turns[0]["losses"] + turns[1]["losses"] == pytest.approx(
        [1 / k for k in range(WARMUP + 1, WARMUP + 6)])

    (tmp_path / "bad" / "tnca_jax").mkdir(parents=True)
    (tmp_path / "bad" / "tnca_jax" / "__init__.py").write_text("raise ImportError('broken')\n")
    with (tmp_path / "errors").open("w+") as errors, pytest.raises(SystemExit) as ended:
        Worker(tmp_path / "bad", "instruments", errors).ready()
    assert str(ended.value).startswith(f"error: the worker in {tmp_path / 'bad'} failed: ")
    assert str(ended.value).endswith("ImportError: broken")


def test_vocoder_oracles_average_both_formulas_over_the_notes():
    """`bench.vocoder.oracles`: every oracle scored by the project's and the anchors' MR-STFT,
    each the mean over the notes; the exact magnitude with Griffin-Lim's phase renders a
    harmonic note with a little noise closely by both."""
    from bench.vocoder import ORACLE_METRICS, oracles
    from tnca_jax.contract import get_contract

    contract = get_contract("griffinlim_22khz_128band")
    time = np.arange(int(0.5 * contract.sample_rate)) / contract.sample_rate
    noise = 0.01 * np.random.default_rng(1).standard_normal(len(time))
    notes = [({"name": str(f0)}, (0.3 * sum(np.sin(2 * np.pi * f0 * k * time) / k
                                             for k in range(1, 9)) + noise).astype(np.float32))
             for f0 in (220.0, 440.0)]
    both, first, second = oracles(notes, contract), oracles(notes[:1], contract), oracles(
        notes[1:], contract)
    assert set(both) == {"true_magnitude_griffinlim", "mel_magnitude_true_phase",
                         "true_partials_random_noise_phase"}
    for name, scores in both.items():
        assert set(scores) == set(ORACLE_METRICS)
        for metric, value in scores.items():
            assert value == pytest.approx((first[name][metric] + second[name][metric]) / 2,
                                          rel=1e-6)
            assert value > 0
    assert both["true_magnitude_griffinlim"]["mrstft_auraloss"] < 0.6
    assert (both["true_magnitude_griffinlim"]["mrstft_auraloss"]
            != both["true_magnitude_griffinlim"]["mrstft"])
