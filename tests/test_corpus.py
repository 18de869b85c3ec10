from pathlib import Path

import pytest

from tnca_jax import corpus

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.parametrize(("note", "midi"), [
    ("A4", 69), ("Bb4", 70), ("C#5", 73), ("Db5", 73), ("As3", 58), ("Ds4", 63), ("C-1", 0),
    ("E7", 100), ("B3", 59), ("Gb5", 78),
])
def test_note_to_midi(note, midi):
    assert corpus.note_to_midi(note) == midi


@pytest.mark.parametrize("bad", ["H4", "sulA", "A", "Bb", "stereo", "m36"])
def test_note_to_midi_refuses_other_words(bad):
    with pytest.raises(ValueError, match="not a note name"):
        corpus.note_to_midi(bad)


@pytest.mark.parametrize(("name", "midi"), [
    ("Violin.arco.ff.sulA.Bb4.stereo.wav", 70),
    ("Violin.arco.ff.sulE.A5.stereo", 81),
    ("As3.flac", 58),
    ("cello_C2_m36.wav", 36),
    ("violin_phrase_legato.wav", None),
])
def test_midi_from_name(name, midi):
    assert corpus.midi_from_name(name) == midi


def test_held_out_rule_is_every_fourth_semitone_from_a():
    held = [note for note in ("A4", "Bb4", "B4", "C5", "C#5", "D5", "Eb5", "E5", "F5", "Gb5",
                              "G5", "Ab5") if corpus.is_held_out(corpus.note_to_midi(note))]
    assert held == ["A4", "C#5", "F5"]


def test_shipped_corpus_is_labelled_and_split():
    recordings = corpus.find_files([DATA / "iowa_mis", DATA / "vsco2", DATA / "fluidr3_gm"])
    assert len(recordings) == 129
    by_name = {f"{r.path.parent.name}/{r.path.stem}": r for r in recordings}
    assert by_name["violin/Violin.arco.ff.sulE.A5.stereo"].held_out  # the shipped note
    assert by_name["flute/A4"] == corpus.LabelledFile(by_name["flute/A4"].path, "flute", 69)
    assert by_name["trumpet/As3"] == corpus.LabelledFile(
        by_name["trumpet/As3"].path, "trumpet", 58)
    assert by_name["fluidr3_gm/cello_C2_m36"].instrument == "cello"
    assert by_name["fluidr3_gm/violin_phrase_legato"].held_out
    held_out = [r for r in recordings if corpus.is_held_out_file(r, "pitch")]
    training = [r for r in recordings if not corpus.is_held_out_file(r, "pitch")]
    assert (len(training), len(held_out)) == (93, 36)
    assert [r.path.name for r in recordings if corpus.is_held_out_file(
        r, ("*/flute/*4.flac",))] == ["A4.flac", "C4.flac", "E4.flac"]
    assert all(r.midi is not None and r.midi % 4 != 1 for r in training)
    assert {r.instrument for r in recordings} == {"violin", "flute", "trumpet", "cello",
                                                  "clarinet"}


def test_find_files_names_what_it_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        corpus.find_files([tmp_path])


def test_the_instrument_corpus_of_the_shipped_model_is_labelled_from_its_names():
    files = corpus.find_files([DATA / "tonejs", DATA / "musescore"])
    by_name = {f"{f.path.parent.name}/{f.path.stem}": f for f in files}
    assert len(files) == 80 + 84
    assert by_name["cello/As2"] == corpus.LabelledFile(by_name["cello/As2"].path, "cello", 46)
    assert by_name["contrabass/G1"].midi == 31 and by_name["saxophone/Cs5"].midi == 73
    assert by_name["clarinet/clarinet_m50_v64"] == corpus.LabelledFile(
        by_name["clarinet/clarinet_m50_v64"].path, "clarinet", 50)
    counts = {name: sum(f.instrument == name for f in files)
              for name in ("cello", "contrabass", "saxophone", "clarinet")}
    assert counts == {"cello": 35, "contrabass": 13, "saxophone": 32, "clarinet": 84}
