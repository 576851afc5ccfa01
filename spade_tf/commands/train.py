"""Train SPADE: `python train.py --config synthetic [section.field=value ...]`.

Resumes the run in <train.checkpoints_dir>/<name> when it holds a checkpoint; `--fresh` starts a
new run in <name>-2 (-3, ...) instead, leaving the old one untouched. Multi-worker training: set
TF_CONFIG on every worker (see README); each worker runs this same command.
"""

import argparse
import logging
import sys


def main(argv=None, prog=None) -> int:
    from spade_tf.config import ConfigError, add_config_arguments, config_from_args  # no TensorFlow yet
    from spade_tf.training.memory import release_freed_memory

    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--fresh", action="store_true", help="start a new run (<name>-2, ...) instead of resuming")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # one INFO line per checkpoint otherwise
    try:
        cfg = config_from_args(args)
    except ConfigError as error:
        parser.error(str(error))
    release_freed_memory(cfg.train.low_memory)  # before TensorFlow allocates anything

    from spade_tf.training.preemption import Preempted
    from spade_tf.training.trainer import NonFiniteLossError, Trainer

    try:
        run = Trainer(cfg).train(fresh=args.fresh)
    except (NonFiniteLossError, ValueError, FileNotFoundError) as error:
        logging.getLogger("train").error("%s", error)
        return 1
    except Preempted as stop:  # SIGTERM: 42, so that the Job restarts the pod; SIGINT: 130
        logging.getLogger("train").warning("%s; exit code %d", stop, stop.exit_code)
        return stop.exit_code
    except KeyboardInterrupt:
        logging.getLogger("train").warning("interrupted")
        return 130
    print(f"run folder: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
