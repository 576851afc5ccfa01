"""Generator, discriminator and encoder under MirroredStrategy on 2 logical CPUs (tests/distribute_build.py,
in a fresh process: logical devices are set up once per process)."""

from helpers import run_script


def test_models_build_and_sync_batch_norm_under_mirrored_strategy():
    run_script("distribute_build.py")
