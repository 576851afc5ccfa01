"""The `eval` config section on the command line: its seeds check, and the flags it replaced.

Synthesis and evaluation options are config fields (`eval.batch_size=4`, `eval.extractor=...`),
read like every other option; the flags they replaced fail with the override to write instead.
"""

import argparse

from spade_tf.config import ConfigError

RETIRED_FLAGS = {  # flag -> the override that replaced it, with {} for the flag's value
    "--split": "eval.split={}",
    "--how_many": "eval.how_many={}",
    "--seeds": "eval.seeds=[{}]",
    "--batch_size": "eval.batch_size={}",
    "--precision": "export.precision={}",
    "--segmenter": "eval.segmenter={}",
    "--extractor": "eval.extractor={}",
    "--inception_graph": "eval.inception_graph={}",
    "--weights": "eval.keras_inception_weights={}",
    "--kid_subsets": "eval.kid_subsets={}",
    "--kid_subset_size": "eval.kid_subset_size={}",
}


class _Retired(argparse.Action):
    def __init__(self, option_strings, dest, override, **kwargs):
        self.override = override
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now a config override: write {self.override.format(values)}")


def retire_flags(parser: argparse.ArgumentParser, flags) -> None:
    """Makes each of `flags` (keys of RETIRED_FLAGS) an error naming the override that replaced it."""
    for flag in flags:
        parser.add_argument(flag, action=_Retired, override=RETIRED_FLAGS[flag])


def check(options) -> None:
    """ConfigError unless `eval.seeds` are distinct and non-negative (ranges of the other fields are the config's)."""
    seeds = options.seeds
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"'eval.seeds' must be distinct non-negative integers, e.g. eval.seeds=[0,1,2]; got {seeds}")
