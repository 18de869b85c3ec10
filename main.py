"""Train a TNCA, grow notes, render them and measure them against the recordings.

  python main.py --config=configs/violin.py:quick --workdir=runs/violin

Configs are Python files returning an ml_collections ConfigDict; its `job` says what it trains:
  configs/violin.py       note: one TNCA on one recording
  configs/instruments.py  instruments: one TNCA on many notes of several instruments
  configs/vocoder.py      vocoder: the music vocoder
A ":variant" after the file picks one (":quick" for a 2-core CPU). Override any value on the
command line, e.g.:
  --config.data.audio_path=/path/to/note.wav --config.train.iterations=2000
  --config.generate.best_of=8 --config.vocoder=music
  --config.generate.instrument=violin:0.7,flute:0.3 --config.generate.pitch=Bb4
(python -c "from configs.violin import get_config; print(get_config())" lists them all.)

Modes (--mode), each in --workdir (the vocoder job has train only):
  train     train, then render, measure and write report.html (default)
  evaluate  grow, render, measure and report a trained workdir again
  growth    growth.wav and growth.gif of a trained workdir: hear and watch it grow
  ceiling   the vocoder on the recordings' own features, before any training
  generate  render a trained workdir's note (instruments: generate's request) again

Several hosts (a TPU pod slice, GPU nodes) train together when every one runs the same command
with --distributed (JAX finds the cluster) or with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I; process 0 writes the workdir (docs/multihost.md).

Progress and one line per stage go to stderr, the JSON summary to stdout. Bad input stops
with one "error:" line and exit status 2 (--debug shows the traceback); Ctrl-C with one line
and exit status 130, a rerun resuming from the last checkpoint.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tnca_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, audio, metrics and figures.")
flags.DEFINE_enum("mode", "train", list(cli.MODE_NAMES), "What to do in the workdir (above).")
flags.DEFINE_bool("debug", False, "Show the full traceback on errors.")
flags.DEFINE_bool("distributed", False, "Train on several hosts, JAX finding the cluster "
                  "(TPU pod slice, SLURM); run the same command on every host.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 of a multi-process "
                    "run (with --num_processes and --process_id).")
flags.DEFINE_integer("num_processes", None, "How many processes train together.")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a command line that cannot be parsed (unknown or misspelled flag or
    config key, a value of the wrong type, a config file that fails) reported as one line,
    exit status 2."""
    try:
        remaining = FLAGS(argv)
        FLAGS.config.keys()  # a config file that could not be loaded raises here
    except BrokenPipeError:  # --help piped into head
        raise
    except (flags.Error, KeyError, AttributeError, OSError) as err:
        if "--debug" in argv:
            raise
        print(f"error: {cli.flag_error(err, argv)}", file=sys.stderr)
        sys.exit(2)
    return remaining


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.debug:
        logging.set_verbosity(logging.WARNING)  # Keep orbax's per-save INFO lines out.
    cluster = cli.Cluster(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                          auto=FLAGS.distributed)
    return cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, debug=FLAGS.debug, cluster=cluster)


if __name__ == "__main__":
    if {"-h", "--help", "-help", "--helpshort"} & set(sys.argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    app.run(main, flags_parser=parse_flags)
