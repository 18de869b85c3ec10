import html
import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tests.browser import find_browser, open_page
from tests.conftest import tiny_config
from tnca_jax import cli, metrics, report
from tnca_jax.growth import CROSSFADE_SECONDS, crossfade_join
from tnca_jax.records import RunMetrics
from tnca_jax.workdir import METRICS_FILE


def stored(workdir) -> RunMetrics:
    return RunMetrics.from_dict(json.loads((workdir / METRICS_FILE).read_text()))

CELL = re.compile(r'data-section="(\w+)" data-metric="(\w+)" data-value="([^"]*)"')
# The page's audio durations and decoded image widths; inside the notebook iframe if there is one.
CHECK_PAGE = """(async () => {
  const frame = document.querySelector('iframe');
  if (frame && frame.contentDocument.readyState !== 'complete') {
    await new Promise((ok) => frame.addEventListener('load', ok));
  }
  const doc = frame ? frame.contentDocument : document;
  const wait = (a) => new Promise((ok) => {
    if (a.readyState >= 1) return ok(a.duration);
    a.addEventListener('loadedmetadata', () => ok(a.duration));
    a.addEventListener('error', () => ok(-1));
    setTimeout(() => ok(-2), 20000);
  });
  const audio = [...doc.querySelectorAll('audio')];
  const durations = await Promise.all(audio.map(wait));
  const decoded = await Promise.all([...doc.images].map(
    (i) => i.decode().then(() => i.naturalWidth, () => 0)));
  return {names: audio.map((a) => a.dataset.name), durations, images: decoded};
})()"""


def test_training_writes_a_report_whose_numbers_are_metrics_json(trained_workdir):
    page = (trained_workdir / report.REPORT_FILE).read_text()
    run = stored(trained_workdir)
    cells = CELL.findall(page)
    assert len(cells) == len(metrics.METRICS) * len(report.SECTIONS)
    for section, name, value in cells:
        assert html.unescape(value) == repr(getattr(getattr(run.note, section), name)), (
            section, name)
    # The 0.6 s tiny target is too short for ViSQOL: the page says n/a and why.
    assert run.note.generated.visqol_moslqo is None
    assert "ViSQOL cannot score this audio" in html.unescape(page)
    # target, generated, ceiling, and the same note and ceiling through the music vocoder
    assert page.count('src="data:audio/wav;base64,') == 5
    music = run.other_vocoders["music"]
    assert set(music["generated"]) == set(music["ceiling"]) == {
        "mel_l1_db", "mrstft", "mrstft_auraloss", "rms_ratio"}
    assert all((trained_workdir / file).exists() for file in music["files"])
    assert f"mrstft {report.format_value(music['ceiling']['mrstft'])}" in page
    assert page.count('src="data:image/png;base64,') == 3  # comparison, growth, training
    assert "<script" not in page and 'src="http' not in page and "href=\"http" not in page


def test_evaluate_and_growth_modes(trained_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    config = tiny_config()
    config.generate.best_of = 3
    assert cli.run("evaluate", config, str(workdir)) == 0
    run = stored(workdir)
    assert run.best_of["n"] == 3 and run.refinement["best_of"] == 3
    # The kept candidate is the one scored: same audio, same metric, same number.
    assert run.note.generated.mel_l1_db == run.best_of["best"]
    page = (workdir / report.REPORT_FILE).read_text()
    assert "3 candidates grown in one batch" in page and 'data-name="growth"' not in page

    assert cli.run("growth", config, str(workdir)) == 0
    audio, rate = sf.read(workdir / "growth.wav")
    stages, note = config.generate.num_stages, json.loads(
        (workdir / "run.json").read_text())["grid_frames"] * 512
    overlap = round(CROSSFADE_SECONDS * rate)
    assert len(audio) == stages * note - (stages - 1) * overlap and np.abs(audio).max() > 0
    assert Image.open(workdir / "growth.gif").n_frames == stages
    page = (workdir / report.REPORT_FILE).read_text()
    assert 'data-name="growth"' in page and "data:image/gif;base64," in page


def test_crossfade_join():
    clips = np.stack([np.full(100, 1.0), np.full(100, 2.0), np.full(100, 3.0)])
    joined = crossfade_join(clips, 10)
    assert joined.shape == (280,)
    np.testing.assert_array_equal(joined[:90], 1.0)
    np.testing.assert_array_equal(joined[100:180], 2.0)
    np.testing.assert_array_equal(joined[190:], 3.0)
    fade = np.sin(0.5 * np.pi * (np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(joined[90:100], fade[::-1] + 2 * fade, rtol=1e-6)


def test_report_needs_an_evaluated_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no metrics\.json"):
        report.write_report(tmp_path)


def test_show_embeds_the_page_for_a_notebook(trained_workdir):
    shown = report.show(trained_workdir)._repr_html_()
    srcdoc = re.fullmatch(r'<iframe srcdoc="([^"]*)" style="[^"]*"></iframe>', shown)
    assert html.unescape(srcdoc[1]) == (trained_workdir / report.REPORT_FILE).read_text()


def test_report_plays_and_renders_in_headless_chromium(trained_workdir, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium on this machine: `apt-get install -y chromium` (Debian) runs "
                    "this test; .ci/run installs it")
    seconds = stored(trained_workdir).extra["target_seconds"]
    # The page itself, and the page as a notebook shows it (report.show's output cell).
    notebook = tmp_path / "notebook.html"
    notebook.write_text('<!doctype html><html><head><link rel="icon" href="data:,"></head><body>'
                        f"{report.show(trained_workdir)._repr_html_()}</body></html>")
    for path in (trained_workdir / report.REPORT_FILE, notebook):
        errors, page = open_page(path, CHECK_PAGE, browser)
        assert errors == [], path.name
        assert page["names"] == ["target", "generated", "ceiling", "generated_music",
                                 "ceiling_music"]
        assert page["durations"] == pytest.approx([seconds] * 5, abs=0.05)
        assert len(page["images"]) == 3 and min(page["images"]) > 500
