"""Train a TNCA on a recording and render it.

  python main.py --config=configs/violin.py:quick --workdir=runs/violin
"""

from absl import app, flags, logging
from ml_collections import config_flags

from tnca_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (configs/*.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, audio, metrics and figures.")
flags.DEFINE_enum("mode", "train", list(cli.MODE_HELP), "What to do in the workdir.")
flags.DEFINE_bool("debug", False, "Show the full traceback on errors.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.debug:
        logging.set_verbosity(logging.WARNING)  # Keep orbax's per-save INFO lines out.
    return cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, debug=FLAGS.debug)


if __name__ == "__main__":
    app.run(main)
